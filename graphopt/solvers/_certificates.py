"""Optimality certificates of the graphical lasso, batched in torch (docs/algorithms.md §1).

Primal:  f(Θ) = −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij|        (all i, j when penalised)
Dual:    d(W) = log det W + p,   W = S + Y,  |Y_ij| ≤ α (i ≠ j),  Y_ii = 0 (|Y_ii| ≤ α if penalised)

Weak duality gives f(Θ) − f* ≤ f(Θ) − d(W) for every positive definite Θ and every feasible W,
so f(Θ) − d(W̃) (``certified_gap``) is a certificate a user can check without trusting the
solver: it bounds how far the returned objective is from the optimum, and it is ≥ 0 for every
Θ (unlike tr(SΘ) − p + α Σ|Θ_ij|, which equals it only at an optimal pair and is negative
elsewhere). Everything is evaluated in float64 (on the input's device), because a float32
log-determinant cannot resolve the 1e-6 relative accuracy the solvers certify.
"""

from __future__ import annotations

import torch

from graphopt._linalg import logdet_pd, spd_inverse, symmetrize

__all__ = [
    "penalty_mask",
    "logdet_pd",
    "spd_inverse",
    "primal_objective",
    "dual_objective",
    "project_dual",
    "best_dual_point",
    "certified_gap",
    "ROUNDOFF",
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
                     mask: torch.Tensor, *, logdet: torch.Tensor | None = None) -> torch.Tensor:
    """f(Θ) for a batch (B, p, p); +inf where Θ is not positive definite. ``logdet``: log det Θ
    if the caller already has it (from the factorisation that inverted Θ)."""
    l1 = (theta.abs() * mask).sum(dim=(-2, -1))
    ld = logdet_pd(theta) if logdet is None else logdet
    return -ld + (S * theta).sum(dim=(-2, -1)) + alpha * l1


def project_dual(S: torch.Tensor, W: torch.Tensor, alpha: torch.Tensor,
                 mask: torch.Tensor) -> torch.Tensor:
    """Nearest dual-feasible point S + clip(W − S, −α, α) (unpenalised entries of Y set to 0)."""
    a = _alpha3(alpha) * mask
    return S + torch.maximum(torch.minimum(W - S, a), -a)


def dual_objective(S: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """d(W) = log det W + p for a dual-feasible W; −inf where W is not positive definite."""
    return logdet_pd(W) + S.shape[-1]


def best_dual_point(S: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor,
                    candidates: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(W̃, d(W̃)): per problem, the candidate whose projection S + clip(sym(C) − S, ±α) onto the
    dual-feasible set has the largest d. W̃ is exactly symmetric, W̃_ii = S_ii (S_ii + Y_ii with
    |Y_ii| ≤ α when the diagonal is penalised), and d = −inf where no candidate is PD."""
    best_W: torch.Tensor | None = None
    best_d: torch.Tensor | None = None
    for cand in candidates:
        W = project_dual(S, symmetrize(cand.to(S.dtype)), alpha, mask)
        d = dual_objective(S, W)
        if best_W is None or best_d is None:
            best_W, best_d = W, d
            continue
        better = d > best_d
        best_W = torch.where(better.reshape(-1, 1, 1), W, best_W)
        best_d = torch.maximum(best_d, d)
    if best_W is None or best_d is None:
        raise ValueError("best_dual_point needs at least one candidate")
    return best_W, best_d


# The primal and dual objectives are each evaluated with a relative round-off of a few ulps
# times p; a computed f − d below zero by less than this (relative to max(|f|, 1)) is that
# round-off, not a violation of weak duality, and is reported as 0.
ROUNDOFF = 1e-12


def certified_gap(primal: torch.Tensor, dual: torch.Tensor) -> torch.Tensor:
    """f(Θ) − d(W̃) ≥ f(Θ) − f* (weak duality); +inf where Θ or W̃ is not positive definite.

    Mathematically ≥ 0 for a feasible W̃; a computed value in [−ROUNDOFF·max(|f|, 1), 0) is
    round-off and becomes 0. Anything more negative is returned as is (it would mean an
    infeasible W̃, i.e. a bug), never hidden."""
    gap = primal - dual
    gap = torch.where(torch.isfinite(primal) & torch.isfinite(dual), gap,
                      torch.full_like(gap, float("inf")))
    tiny = (gap < 0) & (gap >= -ROUNDOFF * primal.abs().clamp_min(1.0))
    return torch.where(tiny, torch.zeros_like(gap), gap)


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
