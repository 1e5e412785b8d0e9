"""Training-step cost of GGM vs LoRA vs full fine-tuning (graphopt/bench/peft.py, `graphopt bench peft`)."""
from graphopt.bench import run_script

if __name__ == "__main__":  # the guard matters where runs happen in spawned workers
    raise SystemExit(run_script(__file__, "graphopt.bench.peft"))
