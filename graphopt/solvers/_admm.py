"""Batched ADMM for the graphical lasso (Boyd et al. 2011, §6.5; docs/algorithms.md §1).

Splitting Θ = Z with the scaled dual U and penalty ρ (one ρ per problem of the batch):

    Θ-step  ρ(Z − U) − S = Q diag(m) Qᵀ,  θ_i = (m_i + sqrt(m_i² + 4ρ)) / (2ρ),  Θ = Q diag(θ) Qᵀ
    Z-step  Z = soft(Θ̂ + U, α/ρ) on penalised entries,  Θ̂ = rΘ + (1 − r)Z  (over-relaxation r)
    U-step  U ← Θ̂ + U − Z

One eigendecomposition per iteration. After every Z-step, ρU is exactly dual feasible
(|ρU_ij| ≤ α, sign-consistent with Z), so the certificate d(S + ρU) costs only two Cholesky
factorisations; it is evaluated every ``check_every`` iterations and a problem stops as soon
as its relative duality gap is ≤ tol. Converged problems leave the batch (the state tensors
shrink), so a batch costs what its slowest member costs, not B times that.
"""

from __future__ import annotations

import math

import torch

from graphopt._linalg import symmetrize
from ._certificates import dual_objective, spd_inverse, primal_objective, relative_gap
from ._history import scatter

__all__ = ["admm"]

# Residual balancing (Boyd §3.4.1 with relative residuals, Wohlberg 2017): rescale ρ when
# the primal and dual residuals drift more than MU apart, by at most TAU_MAX per update.
_MU = 5.0
_TAU_MAX = 10.0
_RELAX = 1.6


def _initial_state(S: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor,
                   theta0: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Starting Z and the unscaled dual Y = ρU (kept feasible: |Y| ≤ α on penalised entries)."""
    a = alpha.reshape(-1, 1, 1) * mask
    if theta0 is None:
        diag = S.diagonal(dim1=-2, dim2=-1)
        floor = diag.amax(-1, keepdim=True).clamp_min(1.0) * 1e-8
        d = diag.clamp_min(0.0) + floor
        if bool(mask.diagonal(dim1=-2, dim2=-1).any()):
            d = d + alpha.reshape(-1, 1) * mask.diagonal(dim1=-2, dim2=-1)
        Z = torch.diag_embed(1.0 / d)
        W = torch.diag_embed(d)
    else:
        Z = theta0.clone()
        W = spd_inverse(Z)[0]
    Y = torch.maximum(torch.minimum(W - S, a), -a)
    return Z, Y


def _initial_rho(S: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """ρ ≈ 1 / (λ_max(Θ) λ_min(Θ)) matches the curvature of −log det; estimate it by the
    geometric scale of the diagonals, which is exact for diagonal problems."""
    diag_theta = Z.diagonal(dim1=-2, dim2=-1).clamp_min(torch.finfo(Z.dtype).tiny)
    return (1.0 / diag_theta).mean(-1).pow(2)


def admm(
    S: torch.Tensor,
    alpha: torch.Tensor,
    mask: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    theta0: torch.Tensor | None = None,
    check_every: int = 2,
    record: bool = True,
) -> dict:
    """Solve a batch (B, p, p) of graphical lassos; return Z, Θ, iterations and convergence.

    The problem is solved in diagonally equilibrated form: with D = diag(S) and
    Θ = D^{-1/2} Θ̃ D^{-1/2}, f(Θ) = f̃(Θ̃) + log det D where f̃ has S̃ = D^{-1/2} S D^{-1/2}
    (unit diagonal) and entry weights α/sqrt(d_i d_j). Duality gaps are the same in both forms,
    but ADMM's penalty ρ is one number per problem, and one ρ cannot fit variables whose
    variances differ by orders of magnitude (a rank-deficient S with a near-constant column
    made the unscaled iteration stall); after equilibration every variable has unit scale.
    Returned matrices are in the original coordinates.
    """
    B, p, _ = S.shape
    d = S.diagonal(dim1=-2, dim2=-1)
    floor = d.amax(-1, keepdim=True).clamp_min(torch.finfo(S.dtype).tiny) * 1e-12
    scale = d.clamp_min(floor).rsqrt()                       # D^{-1/2}, shape (B, p)
    outer = scale.unsqueeze(-1) * scale.unsqueeze(-2)        # s_i s_j
    S_eq = S * outer
    S_eq.diagonal(dim1=-2, dim2=-1).copy_(torch.where(d > floor, torch.ones_like(d),
                                                      S_eq.diagonal(dim1=-2, dim2=-1)))
    weights = mask * outer
    theta0_eq = None if theta0 is None else theta0 / outer
    offset = -2.0 * scale.double().log().sum(-1)             # log det D
    sol = _admm_equilibrated(S_eq, alpha, weights, tol=tol, max_iter=max_iter, theta0=theta0_eq,
                             check_every=check_every, record=record, offset=offset)
    sol["theta"] = sol["theta"] * outer
    sol["theta_pd"] = sol["theta_pd"] * outer
    sol["dual"] = sol["dual"] / outer
    return sol


def _admm_equilibrated(
    S: torch.Tensor,
    alpha: torch.Tensor,
    mask: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    theta0: torch.Tensor | None,
    check_every: int,
    record: bool,
    offset: torch.Tensor,
) -> dict:
    """The ADMM iteration on an equilibrated batch; ``mask`` holds per-problem entry weights
    (B, p, p) and ``offset`` (B,) converts f̃ to f for the relative gap and the history."""
    B, p, _ = S.shape
    dev, dt = S.device, S.dtype
    Z, Y = _initial_state(S, alpha, mask, theta0)
    rho = _initial_rho(S, Z).to(dt)
    U = Y / rho.reshape(-1, 1, 1)

    out_Z = Z.clone()
    out_theta = Z.clone()
    out_dual = S + Y
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    history: dict[str, list] = {"iteration": [], "objective": [], "gap_bound": [], "rho": []}

    active = torch.arange(B, device=dev)
    S_a, a_a, theta, mask_a, off_a = S, alpha, Z, mask, offset
    S64, a64 = S.double(), alpha.double()
    for it in range(1, max_iter + 1):
        r3 = rho.reshape(-1, 1, 1)
        m, Q = torch.linalg.eigh(r3 * (Z - U) - S_a)
        th = (m + torch.sqrt(m * m + 4.0 * rho.reshape(-1, 1))) / (2.0 * rho.reshape(-1, 1))
        theta = (Q * th.unsqueeze(-2)) @ Q.transpose(-1, -2)
        theta_hat = _RELAX * theta + (1.0 - _RELAX) * Z
        V = theta_hat + U
        kappa = (a_a / rho).reshape(-1, 1, 1) * mask_a
        U = torch.maximum(torch.minimum(V, kappa), -kappa)   # U ← V − soft(V, κ) = clip(V, ±κ)
        Z_old = Z
        Z = V - U
        Z = symmetrize(Z)

        if it % check_every == 0 or it == max_iter:
            Z64 = Z.double()
            S_a64 = S64.index_select(0, active)
            al64 = a64.index_select(0, active)
            obj = primal_objective(S_a64, Z64, al64, mask_a.double())
            dual = dual_objective(S_a64, S_a64 + rho.double().reshape(-1, 1, 1) * U.double())
            rel = relative_gap(obj - dual, obj + off_a)
            rel = torch.where(torch.isfinite(rel), rel, torch.full_like(rel, math.inf))
            done = rel <= tol
            if record:
                history["iteration"].append(it)
                history["objective"].append(scatter(obj + off_a, active, B))
                history["gap_bound"].append(scatter(obj - dual, active, B))
                history["rho"].append(scatter(rho.double(), active, B))
            n_iter[active] = it
            if bool(done.any()) or it == max_iter:
                finished = done | (it == max_iter)
                idx = active[finished]
                out_Z[idx] = Z[finished]
                out_theta[idx] = theta[finished]
                out_dual[idx] = S_a[finished] + rho[finished].reshape(-1, 1, 1) * U[finished]
                converged[idx] = done[finished]
                keep = ~finished
                if not bool(keep.any()):
                    break
                active = active[keep]
                S_a, a_a, mask_a, off_a = S_a[keep], a_a[keep], mask_a[keep], off_a[keep]
                Z, U, rho, theta = Z[keep], U[keep], rho[keep], theta[keep]
                Z_old = Z_old[keep]
                if it % check_every != 0:
                    continue
            # Residual balancing on relative residuals, at the check cadence so ρ changes
            # rarely enough for the ADMM contraction to take hold between changes.
            r_prim = torch.linalg.matrix_norm(theta - Z) / torch.maximum(
                torch.linalg.matrix_norm(theta), torch.linalg.matrix_norm(Z)).clamp_min(1e-300)
            r_dual = torch.linalg.matrix_norm(Z - Z_old) / torch.linalg.matrix_norm(U).clamp_min(1e-300)
            ratio = (r_prim / r_dual.clamp_min(1e-300)).clamp(1e-12, 1e12)
            factor = torch.ones_like(rho)
            grow = ratio > _MU
            shrink = ratio < 1.0 / _MU
            factor = torch.where(grow, torch.sqrt(ratio).clamp(max=_TAU_MAX), factor)
            factor = torch.where(shrink, torch.sqrt(ratio).clamp(min=1.0 / _TAU_MAX), factor)
            rho = rho * factor
            U = U / factor.reshape(-1, 1, 1)
    # One host transfer for the whole history, after the loop (no syncs in the hot path).
    history = {k: (v if k == "iteration" else torch.stack(v).cpu().tolist()) if v else []
               for k, v in history.items()}
    return {"theta": out_Z, "theta_pd": out_theta, "dual": out_dual, "n_iter": n_iter, "converged": converged,
            "history": history}
