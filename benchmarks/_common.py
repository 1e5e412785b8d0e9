"""Small helpers shared by the benchmark scripts (not part of the installed package)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

__all__ = ["mean_std", "RESULTS_DIR", "REPO_ROOT"]


def mean_std(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of the values that are
    not None or NaN (a run that never reached a threshold); (NaN, NaN) if none are left."""
    v = [float(x) for x in values if x is not None and not math.isnan(x)]
    if not v:
        return math.nan, math.nan
    mean = math.fsum(v) / len(v)
    if len(v) == 1:
        return mean, 0.0
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in v) / (len(v) - 1))

#: Where every benchmark writes its JSON by default: beside the scripts, whatever the
#: working directory.
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: The repository root (default home of ``runs/``).
REPO_ROOT = Path(__file__).resolve().parent.parent
