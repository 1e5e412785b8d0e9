"""Per-problem convergence histories of a batched solve, in one convention.

A history holds ``"iteration"`` (the checks, increasing) and, per recorded quantity, one row
per check with one value per problem of the batch. A problem that was not evaluated at a
check (it had already stopped, or its own checks fell elsewhere) reads NaN there; the
caller forward-fills (see ``graphical_lasso._sum_histories``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["scatter", "stack_histories"]


def scatter(values: torch.Tensor, active: torch.Tensor, B: int) -> torch.Tensor:
    """Per-problem values of length B (float64): ``values`` at the problems ``active`` still
    in the solver's batch, NaN at the others."""
    full = torch.full((B,), math.nan, dtype=torch.float64, device=values.device)
    full[active] = values.double()
    return full


def stack_histories(records: Sequence[dict], keys: Sequence[str]) -> dict[str, list]:
    """One batch history from the problems' own records (each with ``"iteration"`` and a
    list per key, one value per own check), over the union of their checks."""
    steps = sorted({it for rec in records for it in rec["iteration"]})
    history: dict[str, list] = {"iteration": steps}
    where = [dict(zip(rec["iteration"], range(len(rec["iteration"])))) for rec in records]
    for key in keys:
        history[key] = [[rec[key][at[t]] if t in at else math.nan
                         for rec, at in zip(records, where)] for t in steps]
    return history
