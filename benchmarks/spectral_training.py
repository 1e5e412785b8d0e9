"""Spectral coordination evidence (issue 5); the logic lives in graphopt.bench.spectral_training."""
from graphopt.bench.spectral_training import main
raise SystemExit(main())
