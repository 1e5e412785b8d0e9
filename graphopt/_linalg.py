"""Small batched linear algebra on symmetric matrices, shared by every layer.

One place for the three operations the solvers and certificates repeat: the symmetric part
of a matrix, the log-determinant of a positive definite matrix, and its inverse. All act on
the last two dimensions, so a batch (B, p, p) works as well as one (p, p) matrix.
"""

from __future__ import annotations

from typing import TypeVar

import torch

__all__ = ["symmetrize", "logdet_pd", "spd_inverse", "spd_inverse_logdet"]

ArrayT = TypeVar("ArrayT")

# Below this size, log-determinants and inverses go through eigvalsh/eigh: torch's CPU Cholesky
# of tiny float64 matrices can stall for ~20 ms under multi-thread contention (measured on the
# 2-core CI machine), while the eigen-route costs microseconds there and is as accurate.
_SMALL = 32


def symmetrize(a: ArrayT) -> ArrayT:
    """(A + Aᵀ) / 2 over the last two dimensions, for a torch tensor or a NumPy array."""
    return 0.5 * (a + a.swapaxes(-1, -2))  # type: ignore[operator, attr-defined]


def logdet_pd(A: torch.Tensor) -> torch.Tensor:
    """log det A of the symmetric part of A, batched; −inf where it is not positive definite.

    By Cholesky, log det A = 2 Σ_i log L_ii; by eigenvalues for p ≤ 32 (see above).
    """
    A = symmetrize(A)
    if A.shape[-1] <= _SMALL:
        ev = torch.linalg.eigvalsh(A)
        value = torch.log(ev.clamp_min(torch.finfo(A.dtype).tiny)).sum(-1)
        return torch.where(ev[..., 0] > 0, value, torch.full_like(value, -float("inf")))
    chol, info = torch.linalg.cholesky_ex(A)
    value = 2.0 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
    return torch.where(info == 0, value, torch.full_like(value, -float("inf")))


def spd_inverse(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A⁻¹, is_pd) for a batch of symmetric matrices; the inverse is garbage where not PD."""
    inv, _, ok = spd_inverse_logdet(A)
    return inv, ok


def spd_inverse_logdet(A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A⁻¹, log det A, is_pd) for a batch of symmetric matrices from one factorisation
    (Cholesky, or eigh for p ≤ 32); log det is −inf and the inverse garbage where not PD."""
    if A.shape[-1] <= _SMALL:
        ev, Q = torch.linalg.eigh(A)
        ok = ev[..., 0] > 0
        safe = ev.clamp_min(torch.finfo(A.dtype).tiny)
        inv = symmetrize((Q / safe.unsqueeze(-2)) @ Q.transpose(-1, -2))
        logdet = torch.log(safe).sum(-1)
    else:
        chol, info = torch.linalg.cholesky_ex(A)
        ok = info == 0
        inv = torch.cholesky_inverse(chol)
        logdet = 2.0 * torch.log(chol.diagonal(dim1=-2, dim2=-1)).sum(-1)
    return inv, torch.where(ok, logdet, torch.full_like(logdet, -float("inf"))), ok
