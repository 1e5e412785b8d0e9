"""Batched, Jacobi-preconditioned conjugate gradient for ``(I + aL) Y = X`` (Tikhonov filter).

Every column of X is an independent SPD system with the same matrix A = I + aL (L a
Laplacian, so A ≻ 0 with spectrum in [1, 1 + aλ_max]); all columns advance together, one
product with L per iteration, each with its own step lengths. Preconditioner: diag(A).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._linop import diagonal, matmul

__all__ = ["CGInfo", "tikhonov_cg"]


@dataclass(frozen=True)
class CGInfo:
    """Outcome of a CG solve: iterations used, worst relative residual, converged flag."""

    iterations: int
    residual: float
    converged: bool


def tikhonov_cg(
    L: torch.Tensor, X: torch.Tensor, a: float, *, tol: float, max_iter: int
) -> tuple[torch.Tensor, CGInfo]:
    """Solve ``(I + aL) Y = X`` for X of shape (n, d); stop when every column has
    ``‖X − (I + aL)Y‖ ≤ tol · ‖X‖``."""
    if a == 0.0:
        return X.clone(), CGInfo(0, 0.0, True)

    def A(V: torch.Tensor) -> torch.Tensor:
        return V + a * matmul(L, V)

    minv = (1.0 + a * diagonal(L)).reciprocal()[:, None]
    bnorm = X.norm(dim=0).clamp_min(torch.finfo(X.dtype).tiny)
    Y = X * minv  # the preconditioned right-hand side is a good start
    R = X - A(Y)
    Z = minv * R
    P = Z
    rz = (R * Z).sum(dim=0)
    rel = R.norm(dim=0) / bnorm
    it = 0
    # Checking convergence every few iterations keeps host synchronisation off the hot path.
    check_every = 5
    while it < max_iter:
        if it % check_every == 0 and bool((rel <= tol).all()):
            break
        AP = A(P)
        pap = (P * AP).sum(dim=0)
        alpha = torch.where(pap > 0, rz / pap.clamp_min(torch.finfo(X.dtype).tiny), 0.0)
        Y = Y + alpha * P
        R = R - alpha * AP
        Z = minv * R
        rz_new = (R * Z).sum(dim=0)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(torch.finfo(X.dtype).tiny), 0.0)
        P = Z + beta * P
        rz = rz_new
        rel = R.norm(dim=0) / bnorm
        it += 1
    worst = float(rel.max()) if rel.numel() else 0.0
    return Y, CGInfo(it, worst, worst <= tol)
