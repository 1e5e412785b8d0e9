"""Gaussian graphical model solvers: exact references and fast batched torch solvers."""

from __future__ import annotations

from ..exceptions import ConvergenceWarning, RegularizationWarning
from ._result import GraphicalLassoResult, L2gGGMResult
from .objectives import glasso_objective, l2g_objective

__all__ = [
    "ConvergenceWarning",
    "RegularizationWarning",
    "GraphicalLassoResult",
    "L2gGGMResult",
    "glasso_objective",
    "l2g_objective",
]
