"""Batched block coordinate descent for the graphical lasso (glasso; Friedman et al. 2008).

The covariance estimate W = Θ⁻¹ is updated one column at a time. For column j, with W₁₁ the
matrix W without row and column j and s₁₂ the column j of S without its diagonal entry,

    β = argmin_β  ½ βᵀ W₁₁ β − s₁₂ᵀ β + α ‖β‖₁            (a lasso)
    w₁₂ = W₁₁ β,   θ_jj = 1 / (w_jj − w₁₂ᵀ β),   θ₁₂ = −β θ_jj.

The lasso is solved by FISTA with gradient restart (vectorised over the column and over the
whole batch at once; a scalar coordinate loop in Python would cost p² interpreter steps per
sweep), warm-started from the previous sweep's β, to an accuracy that tightens as the outer
duality gap falls. W stays dual feasible up to the inner accuracy, so after each sweep the
certificate f(Θ) − d(proj W) bounds the suboptimality of Θ.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from graphopt._linalg import symmetrize
from ._certificates import dual_objective, spd_inverse, primal_objective, project_dual, relative_gap
from ._glasso_cd import solve_one
from ._history import scatter, stack_histories

__all__ = ["bcd"]

#: CPU problems take the compiled path; tests turn this off to run the torch path on a CPU.
_COMPILED_ON_CPU = True
_INNER_MAX = 400     # FISTA iterations per column and sweep (the next sweep resumes from β)
_INNER_CHECK = 8     # iterations between the (host-synchronising) inner KKT tests


def _bmv(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (A @ x.unsqueeze(-1)).squeeze(-1)


def _lasso_kkt(W: torch.Tensor, s: torch.Tensor, beta: torch.Tensor, a: torch.Tensor,
               keep: torch.Tensor) -> torch.Tensor:
    """Largest violation of the lasso optimality conditions, per problem, shape (B, 1)."""
    g = (_bmv(W, beta) - s) * keep
    viol = torch.where(beta != 0, (g + a * torch.sign(beta)).abs(), (g.abs() - a).clamp_min(0.0))
    return viol.amax(-1, keepdim=True)


def _support_newton(W: torch.Tensor, s: torch.Tensor, beta: torch.Tensor,
                    a: torch.Tensor) -> torch.Tensor:
    """Exact lasso solution if the support and signs of ``beta`` are right:
    β_A = W_AA⁻¹ (s_A − a sign(β_A)), zero elsewhere (one small solve per problem).

    First-order inner iterations converge like sqrt(cond W); this step finishes them in one
    shot once the support has settled, which is what makes ill-conditioned S affordable."""
    out = torch.zeros_like(beta)
    for b in range(beta.shape[0]):
        support = torch.nonzero(beta[b], as_tuple=False).flatten()
        if support.numel() == 0:
            continue
        sub = W[b].index_select(0, support).index_select(1, support)
        rhs = s[b].index_select(0, support) - a[b] * torch.sign(beta[b].index_select(0, support))
        sol, info = torch.linalg.solve_ex(sub, rhs)
        if int(info) == 0:
            # A sign flip means the guessed support was wrong; keep it out (KKT test rejects).
            out[b, support] = sol
    return out


def _lasso_column(W: torch.Tensor, s: torch.Tensor, beta: torch.Tensor, a: torch.Tensor,
                  L: torch.Tensor, keep: torch.Tensor, inner_tol: torch.Tensor) -> torch.Tensor:
    """min ½βᵀWβ − sᵀβ + a‖β‖₁ over β with β_j = 0 (``keep`` zero at j), batched.

    FISTA with gradient restart, interleaved with support-Newton candidates that are accepted
    per problem when they satisfy the optimality conditions to ``inner_tol``."""

    def try_newton(beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cand = _support_newton(W, s, beta, a)
        sign_ok = (torch.sign(cand) == torch.sign(beta)).all(-1, keepdim=True)
        ok = sign_ok & (_lasso_kkt(W, s, cand, a, keep) <= inner_tol)
        return torch.where(ok, cand, beta), ok

    if bool((beta != 0).any()):
        beta, ok = try_newton(beta)
        if bool(ok.all()):
            return beta
    step = 1.0 / L
    thr = a * step
    y = beta
    t = torch.ones_like(L)
    for k in range(1, _INNER_MAX + 1):
        g = (_bmv(W, y) - s) * keep
        z = y - g * step
        new = (z - torch.maximum(torch.minimum(z, thr), -thr)) * keep
        t_new = 0.5 * (1.0 + torch.sqrt(1.0 + 4.0 * t * t))
        # Gradient-based adaptive restart (O'Donoghue & Candès 2015): drop the momentum of a
        # problem whose step points against its last move.
        restart = ((y - new) * (new - beta)).sum(-1, keepdim=True) > 0
        mom = torch.where(restart, torch.zeros_like(t), (t - 1.0) / t_new)
        t = torch.where(restart, torch.ones_like(t), t_new)
        y = new + mom * (new - beta)
        beta = new
        if k % _INNER_CHECK == 0:
            if bool((_lasso_kkt(W, s, beta, a, keep) <= inner_tol).all()):
                break
            beta_n, ok = try_newton(beta)
            if bool(ok.all()):
                return beta_n
            y = torch.where(ok, beta_n, y)
            beta = torch.where(ok, beta_n, beta)
    return beta


def _precision_from_columns(W: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """Θ from the regression coefficients: θ_jj = 1/(w_jj − w₁₂ᵀβ_j), θ₁₂ = −β_j θ_jj."""
    diag = W.diagonal(dim1=-2, dim2=-1) - (W * coef).sum(-2)
    theta_jj = 1.0 / diag
    theta = -coef * theta_jj.unsqueeze(-2) + torch.diag_embed(theta_jj)
    return symmetrize(theta)


def _initial_dual(S: torch.Tensor, alpha: torch.Tensor, pen_diag: bool) -> torch.Tensor:
    """A positive definite, dual-feasible start W (|W_ij − S_ij| ≤ α; W_ii = S_ii (+ α)).

    Glasso's column lassos are convex only while W stays positive definite, so the start must
    be. First choice: the off-diagonal of S shrunk towards 0 by α. Where that is not positive
    definite (a rank-deficient S with a small α), W = (1 − t)S + t·diag(S) with
    t = min(1, α / max|S_ij|): each off-diagonal entry moves by t|S_ij| ≤ α, and for PSD S
    with a positive diagonal and t > 0 the result is positive definite.
    """
    p = S.shape[-1]
    eye = torch.eye(p, dtype=S.dtype, device=S.device)
    a3 = alpha.reshape(-1, 1, 1)
    diag_S = torch.diag_embed(S.diagonal(dim1=-2, dim2=-1))
    shrunk = (S - torch.maximum(torch.minimum(S, a3), -a3)) * (1.0 - eye) + diag_S
    off_max = (S * (1.0 - eye)).abs().amax(dim=(-2, -1)).reshape(-1, 1, 1)
    t = torch.where(off_max > 0, (a3 / off_max.clamp_min(torch.finfo(S.dtype).tiny)).clamp(max=1.0),
                    torch.ones_like(off_max))
    blended = (1.0 - t) * S + t * diag_S
    pd = torch.linalg.cholesky_ex(shrunk)[1] == 0
    W = torch.where(pd.reshape(-1, 1, 1), shrunk, blended)
    return W + alpha.reshape(-1, 1, 1) * eye if pen_diag else W


def bcd(
    S: torch.Tensor,
    alpha: torch.Tensor,
    mask: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    theta0: torch.Tensor | None = None,
    record: bool = True,
) -> dict:
    """Solve a batch (B, p, p) of graphical lassos by glasso sweeps; max_iter counts sweeps.

    On the CPU the column lassos run compiled (:mod:`._glasso_cd`, coordinate descent with
    active sets, one problem after another); elsewhere (CUDA) every column's lasso is solved
    for the whole batch at once by FISTA in torch."""
    B, p, _ = S.shape
    dev, dt = S.device, S.dtype
    pen_diag = bool(mask.diagonal().any())
    if theta0 is None:
        W = _initial_dual(S, alpha, pen_diag)
        coef = torch.zeros_like(S)
    else:
        W = spd_inverse(theta0)[0]
        coef = -theta0 / theta0.diagonal(dim1=-2, dim2=-1).unsqueeze(-2)
        coef = coef * (1.0 - torch.eye(p, dtype=dt, device=dev))
        W = project_dual(S, W, alpha, mask)
    if dev.type == "cpu" and _COMPILED_ON_CPU:
        return _bcd_compiled(S, alpha, mask, W, coef, tol=tol, max_iter=max_iter, record=record)
    keep_cols = 1.0 - torch.eye(p, dtype=dt, device=dev)

    out_theta = torch.zeros_like(S)
    out_dual = torch.zeros_like(S)
    out_pd = torch.zeros_like(S)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    converged = torch.zeros(B, dtype=torch.bool, device=dev)
    history: dict[str, list] = {"iteration": [], "objective": [], "gap_bound": []}
    active = torch.arange(B, device=dev)
    S_a, al = S, alpha
    rel_prev = torch.full((B,), math.inf, dtype=torch.float64, device=dev)
    theta = None
    for sweep in range(1, max_iter + 1):
        inner_tol = (al.double() * (0.1 * rel_prev).clamp(1e-3 * tol, 1e-2)).to(dt).reshape(-1, 1)
        a2 = al.reshape(-1, 1)
        # Step size from the largest eigenvalue of W (bounds every principal submatrix W₁₁),
        # with head-room because W changes during the sweep.
        L = 1.1 * torch.linalg.eigvalsh(W)[..., -1:].clamp_min(torch.finfo(dt).tiny)
        for j in range(p):
            keep = keep_cols[j]
            beta = _lasso_column(W, S_a[..., j], coef[..., j], a2, L, keep, inner_tol)
            coef[..., j] = beta
            w12 = _bmv(W, beta)
            w_jj = W[..., j, j].clone()
            W[..., :, j] = w12
            W[..., j, :] = w12
            W[..., j, j] = w_jj
            L = torch.maximum(L, 1.1 * w12.abs().sum(-1, keepdim=True).clamp_max(L * 10))
        theta = _precision_from_columns(W, coef)
        S64 = S_a.double()
        obj = primal_objective(S64, theta.double(), al.double(), mask.double())
        dual = dual_objective(S64, project_dual(S64, W.double(), al.double(), mask.double()))
        rel = relative_gap(obj - dual, obj)
        rel = torch.where(torch.isfinite(rel), rel, torch.full_like(rel, math.inf))
        done = rel <= tol
        if record:
            history["iteration"].append(sweep)
            history["objective"].append(scatter(obj, active, B))
            history["gap_bound"].append(scatter(obj - dual, active, B))
        n_iter[active] = sweep
        finished = done | (sweep == max_iter)
        if bool(finished.any()):
            idx = active[finished]
            out_theta[idx] = theta[finished]
            out_dual[idx] = project_dual(S_a[finished], W[finished], al[finished], mask)
            out_pd[idx] = _pd_fallback(out_dual[idx])
            converged[idx] = done[finished]
            keep = ~finished
            if not bool(keep.any()):
                break
            active = active[keep]
            S_a, al, W, coef, rel = S_a[keep], al[keep], W[keep], coef[keep], rel[keep]
        rel_prev = rel
    history = {k: (v if k == "iteration" else torch.stack(v).cpu().tolist()) if v else []
               for k, v in history.items()}
    return {"theta": out_theta, "theta_pd": out_pd, "dual": out_dual, "n_iter": n_iter,
            "converged": converged, "history": history}


def _bcd_compiled(S: torch.Tensor, alpha: torch.Tensor, mask: torch.Tensor, W: torch.Tensor,
                  coef: torch.Tensor, *, tol: float, max_iter: int, record: bool) -> dict:
    """The CPU path: :func:`._glasso_cd.solve_one` per problem, in float64, from the start
    (W, coef) built above; the result in the input's dtype."""
    B, p, _ = S.shape
    S64 = S.detach().double().numpy()
    lam = (alpha.detach().double().reshape(-1, 1, 1) * mask.double()).numpy()
    W64 = W.detach().double().numpy().copy()
    C64 = coef.detach().double().numpy().copy()
    sols = [solve_one(np.ascontiguousarray(S64[b]), np.ascontiguousarray(lam[b]), tol,
                      max_iter, np.ascontiguousarray(W64[b]), np.ascontiguousarray(C64[b]))
            for b in range(B)]
    theta = torch.from_numpy(np.stack([sol["theta"] for sol in sols])).to(S.dtype)
    # Each problem's W̃ is the projection of its W onto the dual box, already formed for its
    # last certificate.
    dual = torch.from_numpy(np.stack([sol["W_dual"] for sol in sols])).to(S.dtype)
    history = (stack_histories(sols, ("objective", "gap_bound")) if record
               else {"iteration": [], "objective": [], "gap_bound": []})
    converged = torch.tensor([sol["converged"] for sol in sols], dtype=torch.bool)
    # A converged Θ passed a Cholesky factorisation in its certificate: no fallback needed.
    fallback = None if bool(converged.all()) else _pd_fallback(dual)
    return {"theta": theta, "theta_pd": fallback, "dual": dual,
            "n_iter": torch.tensor([sol["n_iter"] for sol in sols], dtype=torch.long),
            "converged": converged, "history": history}


def _pd_fallback(W: torch.Tensor) -> torch.Tensor:
    """A positive definite precision to return if an unconverged sweep left Θ indefinite:
    W⁻¹ where W is positive definite, else the diagonal model diag(1 / W_ii)."""
    inv, ok = spd_inverse(W)
    diag = torch.diag_embed(1.0 / W.diagonal(dim1=-2, dim2=-1).clamp_min(torch.finfo(W.dtype).tiny))
    return torch.where(ok.reshape(-1, 1, 1), inv, diag)
