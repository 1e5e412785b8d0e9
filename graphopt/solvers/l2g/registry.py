"""The table of ℓ2,g algorithms ``l2g_ggm`` dispatches to, and the one rule that picks a row.

Each row says what runs for each group structure (important links, or every column's
off-diagonal part; ``None`` where the algorithm does not apply), its iteration cap and its
Ω-update. Every solver takes a validated ``L2gProblem``, a positive definite start Ω⁰, the
tolerance on the stationarity residual and an iteration cap, and returns a ``MethodOutput``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .admm import solve_admm_columns, solve_admm_links
from .bcd import solve_bcd
from .problem import L2gProblem, MethodOutput
from .reduced import solve_reduced
from .released import RELEASED_GST_ITERS, solve_released

__all__ = ["L2gMethod", "L2G_METHODS", "OMEGA_STEPS", "resolve_l2g_method"]

Solver = Callable[[L2gProblem, torch.Tensor, float, int], MethodOutput]

#: The values of ``l2g_ggm``'s ``omega_step`` argument.
OMEGA_STEPS = ("exact", "released")


@dataclass(frozen=True)
class L2gMethod:
    """One algorithm: its solver per group structure, iteration cap and Ω-update.

    ``links`` solves the groups Δ_{I,j} (important nodes given), ``columns`` the groups
    Δ_{−j,j} (``important=None``; ``None`` if the algorithm needs important nodes).
    ``default_max_iter`` is the cap for ``max_iter=None``; ``omega_step`` the Ω-update it
    uses (reported in the result), ``gst_iters`` the GST iterations (None: exact GST).
    """

    links: Solver
    columns: Solver | None
    default_max_iter: int
    omega_step: str = "exact"
    gst_iters: int | None = None


#: name -> algorithm. ``"reduced"``: accelerated proximal gradient on Ω_IJ after eliminating
#: Δ, Ω_II and Ω_JJ (the default with important nodes); ``"admm"``: safeguarded ADMM (the
#: default without); ``"bcd"``: plain alternating minimisation, the published algorithm;
#: ``"released"``: the released code's loop (gradient Ω-step, 5-iteration GST, its stopping
#: rule and its 50 iterations), a compatibility mode. The caps let each reach tol = 1e-6.
L2G_METHODS: dict[str, L2gMethod] = {
    "reduced": L2gMethod(links=solve_reduced, columns=None, default_max_iter=5000),
    "admm": L2gMethod(links=solve_admm_links, columns=solve_admm_columns, default_max_iter=2000),
    "bcd": L2gMethod(links=solve_bcd, columns=solve_bcd, default_max_iter=20000),
    "released": L2gMethod(links=solve_released, columns=solve_released, default_max_iter=50,
                          omega_step="released", gst_iters=RELEASED_GST_ITERS),
}


def resolve_l2g_method(method: str | None = None, omega_step: str = "exact", *,
                       with_important: bool = True) -> str:
    """The row of ``L2G_METHODS`` that ``l2g_ggm(method=..., omega_step=...)`` runs.

    ``method=None`` picks ``"released"`` for ``omega_step="released"``, else ``"reduced"``
    with important nodes and ``"admm"`` without (``with_important=False``).
    ``omega_step="released"`` is the released loop, so it accepts only ``method="released"``
    or, as the name it had before, ``"bcd"``. Raises ``ValueError`` naming the argument.
    """
    if omega_step not in OMEGA_STEPS:
        raise ValueError(f"omega_step must be 'exact' or 'released', got {omega_step!r}")
    if method is None:
        method = "released" if omega_step == "released" else "reduced" if with_important else "admm"
    if method not in L2G_METHODS:
        raise ValueError(f"method must be one of {sorted(L2G_METHODS)}, got {method!r}")
    if omega_step == "released":
        if method not in ("released", "bcd"):
            raise ValueError("omega_step='released' is the released plain alternation: use "
                             "method='released' (or 'bcd')")
        method = "released"
    if not with_important and L2G_METHODS[method].columns is None:
        others = [name for name, m in L2G_METHODS.items() if m.columns is not None]
        raise ValueError(f"method={method!r} needs important nodes; with important=None use "
                         f"one of {others}")
    return method
