"""Graphical lasso solver benchmark; see graphopt/bench/solvers.py (`graphopt bench solvers`)."""
from graphopt.bench.solvers import main

if __name__ == "__main__":  # the guard matters: solver runs happen in spawned workers
    raise SystemExit(main())
