"""Benchmark of the l2,g-coupled GGM solver; see graphopt/bench/l2g.py."""
from graphopt.bench.l2g import main

raise SystemExit(main())
