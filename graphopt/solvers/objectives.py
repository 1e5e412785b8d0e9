"""Objective functions of the problems graphopt solves, evaluated exactly.

These are the numbers every solver and every reference is judged by; they are written
once here so that the fast solvers, the references, the tests and the benchmarks all
measure the same thing. Both accept NumPy arrays or torch tensors, single or batched.
"""

from __future__ import annotations

import numpy as np
import torch

from .._linalg import logdet_pd
from .._tensor import ArrayLike, check_square, to_tensor
from ._certificates import penalty_mask, primal_objective
from .l2g.problem import offdiag

__all__ = [
    "glasso_objective",
    "l2g_objective",
    "offdiag_l1",
    "group_norms",
    "complement_indices",
]


def _as_scalar_or_array(value: torch.Tensor) -> float | np.ndarray:
    value = value.detach().cpu()
    return float(value) if value.ndim == 0 else value.numpy()


def offdiag_l1(theta: torch.Tensor, penalize_diagonal: bool = False) -> torch.Tensor:
    """Σ_{i≠j} |Θ_ij| (Σ_{ij} |Θ_ij| when ``penalize_diagonal``), batched over leading dims."""
    total = theta.abs().sum(dim=(-2, -1))
    if penalize_diagonal:
        return total
    return total - theta.diagonal(dim1=-2, dim2=-1).abs().sum(-1)


def glasso_objective(
    S: ArrayLike,
    precision: ArrayLike,
    alpha: float | ArrayLike,
    penalize_diagonal: bool = False,
) -> float | np.ndarray:
    """Graphical-lasso objective f(Θ) = −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij|.

    With ``penalize_diagonal=True`` the sum runs over all entries. Returns +inf where Θ is
    not positive definite. Batched inputs (B, p, p) give an array of B values; ``alpha``
    may then be a scalar or one value per problem.
    """
    S_t, _ = to_tensor(S, name="S", dtype=torch.float64)
    theta, _ = to_tensor(precision, name="precision", dtype=torch.float64, device=S_t.device)
    check_square(S_t, "S")
    check_square(theta, "precision")
    if S_t.shape[-1] != theta.shape[-1]:
        raise ValueError(
            f"precision has shape {tuple(theta.shape)} but S has shape {tuple(S_t.shape)}"
        )
    alpha_t = torch.as_tensor(alpha, dtype=torch.float64, device=S_t.device)
    value = primal_objective(S_t, theta, alpha_t, penalty_mask(
        S_t.shape[-1], penalize_diagonal, dtype=S_t.dtype, device=S_t.device))
    return _as_scalar_or_array(value)


def complement_indices(important: torch.Tensor, p: int) -> torch.Tensor:
    """J = {0..p−1} \\ I as a sorted index tensor on ``important``'s device."""
    mask = torch.ones(p, dtype=torch.bool, device=important.device)
    mask[important] = False
    return torch.nonzero(mask, as_tuple=False).flatten()


def group_norms(delta: torch.Tensor, important: torch.Tensor | None) -> torch.Tensor:
    """‖Δ_{I,j}‖₂ for every j ∈ J (the groups of the ℓ2,g penalty), shape (|J|,).

    ``important=None`` (no important nodes): ‖Δ_{−j,j}‖₂ for every column j, shape (p,).
    """
    p = delta.shape[-1]
    if important is None:
        return torch.linalg.vector_norm(offdiag(delta), dim=-2)
    rest = complement_indices(important, p)
    block = delta.index_select(-2, important).index_select(-1, rest)
    return torch.linalg.vector_norm(block, dim=-2)


def l2g_objective(
    S: ArrayLike,
    omega: ArrayLike,
    delta: ArrayLike,
    important: ArrayLike | None,
    *,
    tau: float,
    lam: float,
    g: float,
) -> float:
    """Coupled ℓ2,g objective (docs/algorithms.md §2).

    F(Ω, Δ) = −log det Ω + tr(SΩ) + τ Σ_{j∈J} ‖Δ_{I,j}‖₂^g + λ ‖Ω − Δ‖_F²,
    with J the complement of the important set I (``important=None``: the groups are
    Δ_{−j,j} for every column j). Returns +inf where Ω is not positive definite.
    """
    S_t, _ = to_tensor(S, name="S", dtype=torch.float64)
    om, _ = to_tensor(omega, name="omega", dtype=torch.float64, device=S_t.device)
    de, _ = to_tensor(delta, name="delta", dtype=torch.float64, device=S_t.device)
    idx = None if important is None else torch.as_tensor(
        np.asarray(important), dtype=torch.long, device=S_t.device).flatten()
    norms = group_norms(de, idx)
    value = (
        -logdet_pd(om)
        + (S_t * om).sum(dim=(-2, -1))
        + tau * norms.pow(g).sum(-1)
        + lam * (om - de).pow(2).sum(dim=(-2, -1))
    )
    return _as_scalar_or_array(value)
