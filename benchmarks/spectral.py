"""Spectral filter benchmark: see graphopt/bench/spectral.py (also `graphopt bench spectral`)."""
from graphopt.bench.spectral import main

raise SystemExit(main())
