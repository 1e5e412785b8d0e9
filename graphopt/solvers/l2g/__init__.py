"""The ℓ2,g-regularised coupled Gaussian graphical model (docs/algorithms.md §2).

    minimise_{Ω ≻ 0, Δ}  F(Ω, Δ) = −log det Ω + tr(SΩ) + τ Σ_{j∈J} ‖Δ_{I,j}‖₂^g + λ‖Ω − Δ‖²_F

with I the important nodes, J their complement, 0 < g ≤ 1; with ``important=None`` (no
important nodes) the groups are the off-diagonal parts of all columns, τ Σ_j ‖Δ_{−j,j}‖₂^g.

:func:`l2g_ggm` validates the input, makes the problem well posed (ridge on a singular S),
picks a row of :data:`L2G_METHODS` (:func:`resolve_l2g_method`) and returns an
``L2gGGMResult`` with the stationarity residual. One module per part:

- ``problem``: the problem, its group structure (``ImportantLinks`` / ``OffDiagonalColumns``)
  and the regularisation that keeps F bounded below;
- ``steps``: the closed-form Δ- and Ω-steps, F and the stationarity residual;
- ``reduced``, ``admm``, ``bcd``, ``released``: one algorithm each;
- ``registry``: the table of algorithms; ``solver``: :func:`l2g_ggm`.
"""

from __future__ import annotations

from .problem import (
    DEFAULT_RIDGE,
    ImportantLinks,
    L2gProblem,
    MethodOutput,
    OffDiagonalColumns,
    resolve_regularization,
)
from .registry import L2G_METHODS, OMEGA_STEPS, L2gMethod, resolve_l2g_method
from .solver import l2g_ggm

__all__ = [
    "l2g_ggm",
    "L2G_METHODS",
    "L2gMethod",
    "OMEGA_STEPS",
    "resolve_l2g_method",
    "DEFAULT_RIDGE",
    "resolve_regularization",
    "L2gProblem",
    "ImportantLinks",
    "OffDiagonalColumns",
    "MethodOutput",
]
