"""Benchmark of the l2,g-coupled GGM solver (graphopt/bench/l2g.py, `graphopt bench l2g`)."""
from graphopt.bench import run_script

if __name__ == "__main__":  # the guard matters where runs happen in spawned workers
    raise SystemExit(run_script(__file__, "graphopt.bench.l2g"))
