"""Benchmarks reachable from the CLI (`graphopt bench <name>`); `benchmarks/*.py` wrap these."""
