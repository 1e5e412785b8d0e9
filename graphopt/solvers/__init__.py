"""Gaussian graphical model solvers: exact references and fast batched torch solvers.

- :func:`graphical_lasso` / :func:`graphical_lasso_path`: ADMM and BCD, batched, certified.
- :class:`GraphicalLasso` / :class:`GraphicalLassoCV`: scikit-learn estimators around them.
- :func:`l2g_ggm`: the ℓ2,g-coupled GGM of Zheng & Cao (package :mod:`graphopt.solvers.l2g`,
  algorithms in :data:`L2G_METHODS`, chosen by :func:`resolve_l2g_method`), with :func:`gst`,
  :func:`group_prox` and :func:`select_nodes`.
- :mod:`graphopt.solvers.reference`: cvxpy and scikit-learn references.
"""

from __future__ import annotations

from ..exceptions import ConvergenceWarning, RegularizationWarning
from ._result import GraphicalLassoResult, L2gGGMResult
from .estimators import GraphicalLasso, GraphicalLassoCV
from .graphical_lasso import graphical_lasso, graphical_lasso_path
from .l2g import L2G_METHODS, l2g_ggm, resolve_l2g_method
from .objectives import glasso_objective, l2g_objective
from .prox import group_prox, gst, gst_threshold, weighted_group_prox
from .selection import NodeSelection, select_nodes

__all__ = [
    "ConvergenceWarning",
    "RegularizationWarning",
    "GraphicalLassoResult",
    "L2gGGMResult",
    "GraphicalLasso",
    "GraphicalLassoCV",
    "graphical_lasso",
    "graphical_lasso_path",
    "l2g_ggm",
    "L2G_METHODS",
    "resolve_l2g_method",
    "glasso_objective",
    "l2g_objective",
    "gst",
    "gst_threshold",
    "group_prox",
    "weighted_group_prox",
    "NodeSelection",
    "select_nodes",
]
