"""Benchmarks reachable from the CLI (`graphopt bench <name>`); `benchmarks/*.py` wrap these."""

from __future__ import annotations

import importlib
import math
import os
import sys
from collections.abc import Iterable

__all__ = ["run_script", "mean_std"]


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


def run_script(script_file: str, module: str) -> int:
    """Run ``module.main()`` for a wrapper script ``benchmarks/<name>.py``; return its status.

    Python puts a script's own folder first on ``sys.path``, and ``benchmarks/peft.py`` there
    would shadow Hugging Face's ``peft`` (which transformers imports). The folder is dropped
    from the path before the benchmark module is imported.
    """
    here = os.path.dirname(os.path.abspath(script_file))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    return int(importlib.import_module(module).main() or 0)
