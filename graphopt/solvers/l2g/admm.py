"""Safeguarded ADMM for the ℓ2,g-coupled GGM (docs/algorithms.md §2), ``method="admm"``.

Splitting: min f(Ω) + h(Z) s.t. Ω = Z, f(Ω) = −log det Ω + tr(SΩ) and
h(Z) = Σ_groups φ(‖Z_G‖) = min_Δ τΣ‖Δ_G‖^g + λ‖Z − Δ‖², so min_Ω f + h = min_{Ω,Δ} F.
One loop, :func:`safeguarded_admm`, serves both group structures; what differs is passed in:

- the metric of the augmented term, ρ/2‖D(Ω − Z + U)D‖²_F with D diagonal: D = I for the
  important links; D = diag(S)^½ without important nodes, where node variances may span
  decades (and the optimum's entries with them) and in this metric one ρ fits all of them,
  as with an equilibrated graphical lasso;
- the Z-step (the prox of h in that metric): the plain group prox of ``envelope_prox`` on
  the symmetric I×J/J×I blocks, or the weighted group prox column by column;
- the start of ρ and whether a run that makes no progress beyond round-off is stopped.

Ω-step (both): with S̃ = D⁻¹SD⁻¹, eigh of ρ·symmetrize(D(Z − U)D) − S̃ = Q diag(m) Qᵀ,
Ω = D⁻¹ Q diag(ω) Qᵀ D⁻¹, ω = (m + sqrt(m² + 4ρ))/(2ρ); its eigenvalues give log det Ω.
Safeguard: the returned iterate x only moves to an ADMM iterate Ω when
G(Ω) = min_Δ F(Ω, Δ) < G(x), so the history is non-increasing for every g; convergence of
the ADMM sequence itself is guaranteed for g = 1 (convex).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from graphopt._linalg import symmetrize

from ..prox import weighted_group_prox_tensor
from .bcd import solve_bcd, solve_perturbative_bcd
from .problem import ImportantLinks, L2gProblem, MethodOutput
from .steps import delta_step, envelope_prox, objective, pd_root, stationarity

__all__ = ["safeguarded_admm", "solve_admm_links", "solve_admm_columns", "OVER_RELAXATION"]

#: Over-relaxation Ω̂ = αΩ + (1 − α)Z (Boyd et al. 2011, §3.4.3), the same in both variants.
OVER_RELAXATION = 1.5

# Without important nodes: iterations without a decrease of F beyond its round-off before
# the ADMM stops (F is then minimal to working precision, though its residual may not reach
# tol: with λ·Ω_ii ≫ |S_ij| the off-diagonal optimum is resolved only so far, see
# docs/l2g_ggm.md), the cap on the BCD iterations that then polish the result, and the
# perturbative-BCD sweeps tried first (it converges in a few sweeps when every group is zero
# at the solution, the regime it is for, and slowly, like plain BCD, when groups are active).
MAX_NO_PROGRESS = 200
MAX_POLISH = 500
MAX_PERTURBATIVE = 50


def _balance(primal: float, dual: float, rho: float,
             U: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Residual balancing (Boyd et al. 2011, §3.4.1): double ρ when the primal residual is
    10x the dual one, halve it in the opposite case; the scaled dual U = Y/ρ follows."""
    if primal > 10.0 * dual:
        return rho * 2.0, U / 2.0
    if dual > 10.0 * primal:
        return rho / 2.0, U * 2.0
    return rho, U


def safeguarded_admm(P: L2gProblem, x: torch.Tensor, tol: float, max_iter: int, *,
                     d: torch.Tensor,
                     z_step: Callable[[torch.Tensor, float], torch.Tensor],
                     rho: float, max_no_progress: int | None = None,
                     ) -> tuple[MethodOutput, bool]:
    """ADMM from x in the metric D = diag(d), Z-step ``z_step(Ω̂ + U, ρ)``; (output, stalled).

    ρ starts at ``rho`` and follows residual balancing in the D-metric. With
    ``max_no_progress`` the run also ends after that many iterations in a row whose
    candidate does not lower F beyond its round-off (then ``stalled`` is True).
    ``extra`` holds the final ρ and the number of accepted iterates.
    """
    S = P.S
    dd = d.unsqueeze(-1) * d.unsqueeze(-2)  # d_i d_j
    S_scaled = S / dd
    logdet_d = 2.0 * float(torch.log(d).sum())
    x_delta = delta_step(P, x)
    best = objective(P, x, x_delta)
    history = [best]
    res = stationarity(P, x, x_delta)
    Z = x.clone()
    U = torch.zeros_like(x)
    alpha = OVER_RELAXATION
    k = 0
    n_accept = 0
    since_progress = 0
    while res > tol and k < max_iter and (max_no_progress is None
                                           or since_progress < max_no_progress):
        k += 1
        m, Q = torch.linalg.eigh(rho * symmetrize((Z - U) * dd) - S_scaled)
        w_eig = pd_root(m, rho)
        omega = symmetrize((Q * w_eig.unsqueeze(-2)) @ Q.transpose(-1, -2)) / dd
        cand_delta = delta_step(P, omega)
        cand = objective(P, omega, cand_delta, logdet=torch.log(w_eig).sum() - logdet_d)
        slack = 64.0 * torch.finfo(S.dtype).eps * max(abs(best), 1.0)
        since_progress = since_progress + 1 if cand >= best - slack else 0
        if cand < best:
            inv = symmetrize((Q * (1.0 / w_eig).unsqueeze(-2)) @ Q.transpose(-1, -2)) * dd
            x, x_delta, best = omega, cand_delta, cand
            res = stationarity(P, x, x_delta, omega_inv=inv)
            n_accept += 1
        history.append(best)
        if res <= tol:
            break
        oh = alpha * omega + (1.0 - alpha) * Z
        Z_old = Z
        Z = z_step(oh + U, rho)
        U = U + oh - Z
        rho, U = _balance(float(torch.linalg.matrix_norm((omega - Z) * dd)),
                          rho * float(torch.linalg.matrix_norm((Z - Z_old) * dd)), rho, U)
    stalled = max_no_progress is not None and since_progress >= max_no_progress
    out = MethodOutput(x, x_delta, best, history, k, res <= tol, res,
                       extra={"rho": rho, "accepted": n_accept})
    return out, stalled


def solve_admm_links(P: L2gProblem, omega0: torch.Tensor, tol: float,
                     max_iter: int) -> MethodOutput:
    """ADMM for the groups Δ_{I,j} (``ImportantLinks``), Z symmetric, plain metric (D = I).

    Z-step: Z = Ω̂ + U off the I×J/J×I blocks; on them (each entry counted twice in ‖·‖_F)
    the prox of ``envelope_prox`` with weight 2ρ. ρ starts at 10·(mean S_ii)².
    """
    groups = P.groups
    assert isinstance(groups, ImportantLinks)

    def z_step(V: torch.Tensor, rho: float) -> torch.Tensor:
        if not groups.has_groups:
            return V.clone()
        return groups.with_symmetric_block(V, envelope_prox(P, groups.block(V), 2.0 * rho))

    p = P.S.shape[-1]
    scale = float(torch.diagonal(P.S).mean()) if p else 1.0
    scale = scale if scale > 0 else 1.0
    ones = torch.ones(p, dtype=P.S.dtype, device=P.S.device)
    out, _ = safeguarded_admm(P, omega0, tol, max_iter, d=ones, z_step=z_step,
                              rho=scale * scale * 10.0)
    return out


def solve_admm_columns(P: L2gProblem, omega0: torch.Tensor, tol: float,
                       max_iter: int) -> MethodOutput:
    """Diagonally preconditioned ADMM for the groups Δ_{−j,j} of every column.

    Ω symmetric, Z free (so h is separable over the columns of Z), D = diag(S)^½, ρ starts
    at 1 (S̃ has a unit diagonal). Z-step (column j, entries i ≠ j, weights a_i = ρ d_i² d_j²,
    W = Ω̂ + U): δ minimises τ‖δ‖^g + Σ_i c_i (δ_i − w_i)², c_i = λa_i/(2λ + a_i) (weighted
    group prox) and z_i = (2λδ_i + a_i w_i)/(2λ + a_i); the diagonal is unpenalised,
    z_jj = w_jj.
    Around the loop: start from the better of Ω⁰ and diag(1/S_ii); first up to 50 sweeps of
    ``solve_perturbative_bcd``, which in the stiff regime (2λ ≫ ‖Ω⁻¹‖₂²) resolves what the
    eigen-based steps cannot and usually converges at once (the ADMM runs only when it
    declines or has not converged); after a stalled ADMM, exact BCD polishes.
    """
    S = P.S
    d = torch.sqrt(torch.diagonal(S))
    dd = d.unsqueeze(-1) * d.unsqueeze(-2)
    eye = torch.eye(S.shape[-1], dtype=torch.bool, device=S.device)
    lam = P.lam

    def z_step(V: torch.Tensor, rho: float) -> torch.Tensor:
        a = rho * dd * dd
        c = lam * a / (2.0 * lam + a)
        block = weighted_group_prox_tensor(torch.where(eye, 0.0, V), 2.0 * c, P.tau, P.g)
        return torch.where(eye, V, (2.0 * lam * block + a * V) / (2.0 * lam + a))

    # Start from the better of Ω⁰ and the "no links" point diag(1/S_ii): on a singular S,
    # Ω⁰ = (S + εI)⁻¹ is huge along the null space and far from the optimum.
    x = omega0
    best = objective(P, x, delta_step(P, x))
    diag_start = torch.diag_embed(1.0 / torch.diagonal(S))
    if objective(P, diag_start, delta_step(P, diag_start)) < best:
        x = diag_start
    # Stiff regime (node variances so small that 2λ ≫ ‖Ω⁻¹‖₂²): the off-diagonal optimum
    # lies below what the eigen-based steps resolve, but the perturbative BCD resolves it
    # and, when no group is active at the solution, converges in a few sweeps.
    quick = solve_perturbative_bcd(P, x, tol, min(max_iter, MAX_PERTURBATIVE))
    if quick is not None and quick.converged:
        quick.extra.update(preconditioned=False, stalled=False)
        return quick
    spent = 0 if quick is None else quick.n_iter
    out, stalled = safeguarded_admm(P, x, tol, max_iter - spent, d=d, z_step=z_step, rho=1.0,
                                    max_no_progress=MAX_NO_PROGRESS)
    k = out.n_iter
    polish = 0
    if not out.converged and k < max_iter - spent:
        # For g < 1 the ADMM sequence may settle where the safeguard accepts nothing; exact
        # BCD from the best point decreases F monotonically to a stationary point (fast
        # unless λ is large relative to the curvature of −log det, then it stalls as well).
        more = solve_bcd(P, out.omega, tol, min(max_iter - spent - k, MAX_POLISH))
        if more.objective <= out.objective:
            out.omega, out.delta, out.objective = more.omega, more.delta, more.objective
            out.stationarity = more.stationarity
            out.history.extend(more.history[1:])
        polish = more.n_iter
        stalled = stalled and out.stationarity > tol
    out.n_iter = spent + k + polish
    out.converged = out.stationarity <= tol
    out.extra.update(preconditioned=True, stalled=stalled, bcd_polish=polish,
                     perturbative_sweeps=spent)
    return out
