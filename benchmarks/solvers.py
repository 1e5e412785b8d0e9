"""Graphical lasso solver benchmark (graphopt/bench/solvers.py, `graphopt bench solvers`)."""
from graphopt.bench import run_script

if __name__ == "__main__":  # the guard matters where runs happen in spawned workers
    raise SystemExit(run_script(__file__, "graphopt.bench.solvers"))
