"""Optimality certificates of the graphical lasso, batched in torch (ALGORITHMS.md §1).

Primal:  f(Θ) = −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij|        (all i, j when penalised)
Dual:    d(W) = log det W + p,   W = S + Y,  |Y_ij| ≤ α (i ≠ j),  Y_ii = 0 (|Y_ii| ≤ α if penalised)

Weak duality gives f(Θ) − f* ≤ f(Θ) − d(W) for every positive definite Θ and every feasible W,
so ``gap_bound`` below is a certificate a user can check without trusting the solver: it
bounds how far the returned objective is from the optimum. At a primal-dual optimal pair
(W = Θ⁻¹) it equals the scikit-learn style gap tr(SΘ) − p + α Σ|Θ_ij| (``dual_gap``).
Everything is evaluated in float64 (on the input's device), because a float32 log-determinant
cannot resolve the 1e-6 relative accuracy the solvers certify.
"""

from __future__ import annotations

import torch

from graphopt._linalg import logdet_pd, spd_inverse

__all__ = [
    "penalty_mask",
    "logdet_pd",
    "spd_inverse",
    "primal_objective",
    "dual_objective",
    "project_dual",
    "sklearn_gap",
    "kkt_violation",
    "relative_gap",
]


def penalty_mask(p: int, penalize_diagonal: bool, *, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """1 where an entry is ℓ1-penalised, 0 elsewhere: the off-diagonal (plus diagonal if asked)."""
    mask = torch.ones(p, p, dtype=dtype, device=device)
    if not penalize_diagonal:
        mask.fill_diagonal_(0.0)
    return mask


def _alpha3(alpha: torch.Tensor) -> torch.Tensor:
    return alpha.reshape(-1, 1, 1)


def primal_objective(S: torch.Tensor, theta: torch.Tensor, alpha: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
    """f(Θ) for a batch (B, p, p); +inf where Θ is not positive definite."""
    l1 = (theta.abs() * mask).sum(dim=(-2, -1))
    return -logdet_pd(theta) + (S * theta).sum(dim=(-2, -1)) + alpha * l1


def project_dual(S: torch.Tensor, W: torch.Tensor, alpha: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """Nearest dual-feasible point S + clip(W − S, −α, α) (unpenalised entries of Y set to 0)."""
    a = _alpha3(alpha) * mask
    return S + torch.maximum(torch.minimum(W - S, a), -a)


def dual_objective(S: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """d(W) = log det W + p for a dual-feasible W; −inf where W is not positive definite."""
    return logdet_pd(W) + S.shape[-1]


def sklearn_gap(S: torch.Tensor, theta: torch.Tensor, alpha: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
    """tr(SΘ) − p + α Σ|Θ_ij| (the gap scikit-learn reports; exact at an optimal pair)."""
    l1 = (theta.abs() * mask).sum(dim=(-2, -1))
    return (S * theta).sum(dim=(-2, -1)) - S.shape[-1] + alpha * l1


def kkt_violation(S: torch.Tensor, theta: torch.Tensor, W: torch.Tensor, alpha: torch.Tensor,
                  mask: torch.Tensor) -> torch.Tensor:
    """Largest violation of the KKT conditions at Θ with W = Θ⁻¹, per problem.

    Penalised entries: W_ij − S_ij = α sign(Θ_ij) where Θ_ij ≠ 0, |W_ij − S_ij| ≤ α where
    Θ_ij = 0 (our solvers return exact zeros). Unpenalised entries: W_ij = S_ij.
    """
    a = _alpha3(alpha)
    R = W - S
    on_support = torch.abs(R - a * torch.sign(theta))
    off_support = torch.clamp(R.abs() - a, min=0.0)
    penalised = torch.where(theta != 0, on_support, off_support)
    viol = torch.where(mask > 0, penalised, R.abs())
    return viol.amax(dim=(-2, -1))


def relative_gap(gap: torch.Tensor, objective: torch.Tensor) -> torch.Tensor:
    """gap / max(|f|, 1): the quantity ``tol`` bounds (inf where the gap is not finite)."""
    return gap / objective.abs().clamp_min(1.0)
