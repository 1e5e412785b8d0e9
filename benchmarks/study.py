"""Methods x settings x seeds study of graphopt finetune (graphopt/bench/study.py, `graphopt bench study`)."""
from graphopt.bench import run_script

if __name__ == "__main__":  # the guard matters where runs happen in spawned workers
    raise SystemExit(run_script(__file__, "graphopt.bench.study"))
