"""Algorithms for the ℓ2,g-coupled GGM; ``l2g_ggm`` dispatches to them by name.

Each method takes a validated ``L2gProblem``, a positive definite start Ω⁰, the tolerance on
the stationarity residual and an iteration cap, and returns a ``MethodOutput``.

- ``bcd``: plain alternating minimisation (Δ-step, Ω-step), the published algorithm. It is
  forward–backward splitting on G(Ω) = min_Δ F(Ω, Δ) with step 1/(2λ), hence very slow
  for large λ; kept as the baseline.
- ``admm``: ADMM on Ω = Z for min_Ω f(Ω) + h(Z), f = −log det + tr(S·), h = the
  Moreau-type envelope of the group penalty (both proximal maps closed form), with
  residual balancing and a monotone safeguard (see ``docs/l2g_ggm.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from graphopt._linalg import symmetrize

from ._l2g_steps import (
    L2gProblem,
    delta_step,
    ij_block,
    objective,
    omega_step_exact,
    omega_step_perturbative,
    omega_step_released,
    pd_root,
    set_ij_block,
    stationarity,
)
from .prox import group_prox_tensor, weighted_group_prox_tensor


@dataclass
class MethodOutput:
    omega: torch.Tensor
    delta: torch.Tensor
    objective: float
    history: list[float]
    n_iter: int
    converged: bool
    stationarity: float
    extra: dict = field(default_factory=dict)


def _alternate(P: L2gProblem, omega0: torch.Tensor, tol: float, max_iter: int,
               omega_step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor | None],
               ) -> MethodOutput | None:
    """Exact BCD: Δ = argmin_Δ F(Ω, ·), then Ω = omega_step(Δ, Ω), until the stationarity
    residual ≤ tol or max_iter sweeps; None as soon as ``omega_step`` declines (None)."""
    omega = omega0
    delta = delta_step(P, omega)
    history = [objective(P, omega, delta)]
    res = stationarity(P, omega, delta)
    k = 0
    while res > tol and k < max_iter:
        nxt = omega_step(delta, omega)
        if nxt is None:
            return None
        omega = nxt
        delta = delta_step(P, omega)
        history.append(objective(P, omega, delta))
        res = stationarity(P, omega, delta)
        k += 1
    return MethodOutput(omega, delta, history[-1], history, k, res <= tol, res)


def solve_bcd(P: L2gProblem, omega0: torch.Tensor, tol: float, max_iter: int) -> MethodOutput:
    """Plain alternating minimisation with the exact (closed-form) Ω-step.

    Iteration k: Δᵏ = argmin_Δ F(Ωᵏ⁻¹, Δ), Ωᵏ = argmin_Ω F(Ω, Δᵏ). The history records
    G(Ωᵏ) = F(Ωᵏ, argmin_Δ F(Ωᵏ, ·)), which is non-increasing (each step is a minimisation).
    """
    out = _alternate(P, omega0, tol, max_iter, lambda delta, _: omega_step_exact(P, delta))
    assert out is not None  # the exact step never declines
    return out


def solve_released(P: L2gProblem, omega0: torch.Tensor, tol: float, max_iter: int) -> MethodOutput:
    """The released code's loop (gm_bcd.py ``BCD_main``), reproduced for comparison.

    Δᵏ = group GST of Ωᵏ⁻¹ (5 fixed-point GST iterations), Ωᵏ = inexact gradient Ω-step
    (``omega_step_released``); stop when max(‖Ωᵏ − Ωᵏ⁻¹‖_F, ‖Δᵏ − Δᵏ⁻¹‖_F) < tol after the
    second iteration. Returns the released pair (Ωᵏ, Δᵏ) and F at that pair, which is +inf
    whenever the inexact step leaves Ω indefinite.
    """
    omega_prev, delta_prev = omega0, None
    history: list[float] = []
    converged = False
    k = 0
    omega, delta = omega0, delta_step(P, omega0)
    while k < max_iter:
        delta = delta_step(P, omega_prev)
        omega = omega_step_released(P, delta)
        history.append(objective(P, omega, delta))
        k += 1
        if k > 2 and delta_prev is not None:
            moved = max(float(torch.linalg.matrix_norm(omega - omega_prev)),
                        float(torch.linalg.matrix_norm(delta - delta_prev)))
            if moved < tol:
                converged = True
                break
        omega_prev, delta_prev = omega, delta
    res = stationarity(P, omega, delta_step(P, omega))
    value = history[-1] if history else objective(P, omega, delta)
    return MethodOutput(omega, delta, value, history, k, converged, res,
                        extra={"stopping_rule": "released: max step norm < tol"})


def _h_prox_groups(P: L2gProblem, v: torch.Tensor, rho_g: float) -> torch.Tensor:
    """prox of φ(‖·‖) on each group column with weight ρ_g/2‖z − v‖², φ(r) = min_d τd^g + λ(r − d)².

    min_{z,d} τ‖d‖^g + λ‖z − d‖² + (ρ_g/2)‖z − v‖²: for fixed d, z = (2λd + ρ_g v)/(2λ + ρ_g),
    leaving min_d τ‖d‖^g + (λρ_g/(2λ + ρ_g))‖d − v‖², a group prox with
    w = τ(2λ + ρ_g)/(2λρ_g).
    """
    lam = P.lam
    w = P.tau * (2.0 * lam + rho_g) / (2.0 * lam * rho_g)
    d = group_prox_tensor(v, w, P.g, n_iter=P.gst_iters)
    return (2.0 * lam * d + rho_g * v) / (2.0 * lam + rho_g)


def _balance(primal: float, dual: float, rho: float,
             U: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Residual balancing (Boyd et al. 2011, §3.4.1): double ρ when the primal residual is
    10x the dual one, halve it in the opposite case; the scaled dual U = Y/ρ follows."""
    if primal > 10.0 * dual:
        return rho * 2.0, U / 2.0
    if dual > 10.0 * primal:
        return rho / 2.0, U * 2.0
    return rho, U


def solve_admm(P: L2gProblem, omega0: torch.Tensor, tol: float, max_iter: int) -> MethodOutput:
    """Safeguarded ADMM on min f(Ω) + h(Z) s.t. Ω = Z (Z symmetric), scaled dual U.

    f(Ω) = −log det Ω + tr(SΩ); h(Z) = Σ_{j∈J} φ(‖Z_{I,j}‖) = min_Δ τΣ‖Δ_{I,j}‖^g + λ‖Z − Δ‖²,
    so min_Ω f + h = min_{Ω,Δ} F. Ω-step: eigh of ρ(Z − U) − S, ω = (m + sqrt(m² + 4ρ))/(2ρ).
    Z-step: Z = Ω̂ + U off the I×J/J×I blocks; on them (each entry counted twice in ‖·‖_F)
    the group prox of ``_h_prox_groups`` with ρ_g = 2ρ. Ω̂ = αΩ + (1 − α)Z (over-relaxation).
    ρ is adapted by residual balancing. Safeguard: the returned iterate x only moves to an
    ADMM iterate Ω when G(Ω) = min_Δ F(Ω, Δ) < G(x), so the history is non-increasing for every
    g; convergence of the ADMM sequence itself is guaranteed for g = 1 (convex).
    """
    if P.all_columns:
        return solve_admm_all_columns(P, omega0, tol, max_iter)
    alpha = 1.5
    S = P.S
    p = S.shape[-1]
    x = omega0
    x_delta = delta_step(P, x)
    best = objective(P, x, x_delta)
    history = [best]
    res = stationarity(P, x, x_delta)
    scale = float(torch.diagonal(S).mean()) if p else 1.0
    scale = scale if scale > 0 else 1.0
    rho = scale * scale * 10.0
    Z = x.clone()
    U = torch.zeros_like(x)
    k = 0
    n_accept = 0
    has_groups = P.has_groups
    while res > tol and k < max_iter:
        k += 1
        m, Q = torch.linalg.eigh(rho * symmetrize(Z - U) - S)
        w_eig = pd_root(m, rho)
        omega = symmetrize((Q * w_eig.unsqueeze(-2)) @ Q.transpose(-1, -2))
        # Candidate G(Ω): its eigenvalues give log det for free.
        cand_delta = delta_step(P, omega)
        cand = objective(P, omega, cand_delta, logdet=torch.log(w_eig).sum())
        if cand < best:
            inv = symmetrize((Q * (1.0 / w_eig).unsqueeze(-2)) @ Q.transpose(-1, -2))
            x, x_delta, best = omega, cand_delta, cand
            res = stationarity(P, x, x_delta, omega_inv=inv)
            n_accept += 1
        history.append(best)
        if res <= tol:
            break
        # Z-step with over-relaxation.
        oh = alpha * omega + (1.0 - alpha) * Z
        V = oh + U
        Z_old = Z
        if has_groups:
            block = _h_prox_groups(P, ij_block(P, V), 2.0 * rho)
            Z = set_ij_block(P, V, block)
            Z[P.rest.unsqueeze(-1), P.important.unsqueeze(0)] = block.transpose(-1, -2)
        else:
            Z = V.clone()
        U = U + oh - Z
        rho, U = _balance(float(torch.linalg.matrix_norm(omega - Z)),
                          rho * float(torch.linalg.matrix_norm(Z - Z_old)), rho, U)
    return MethodOutput(x, x_delta, best, history, k, res <= tol, res,
                        extra={"rho": rho, "accepted": n_accept})


# Iterations without a decrease of F beyond its round-off before the all-columns ADMM stops:
# F is then minimal to working precision, though its residual may not reach tol (see
# docs/l2g_ggm.md: with λ·Ω_ii ≫ |S_ij| the off-diagonal optimum is resolved only so far).
_MAX_NO_PROGRESS = 200
# Cap on the BCD iterations that polish a stalled all-columns ADMM run.
_MAX_POLISH = 500


# Outer sweeps of the perturbative BCD before the all-columns solver hands over to ADMM:
# it converges in a few sweeps when every group is zero at the solution (the regime it is
# for) and slowly, like plain BCD, when groups are active.
_MAX_PERTURBATIVE = 50


def solve_perturbative_bcd(P: L2gProblem, omega0: torch.Tensor, tol: float,
                           max_iter: int) -> MethodOutput | None:
    """Exact BCD for ``all_columns`` with the Ω-step in perturbation form.

    Blocks: off-diagonal Δ (group prox of Ω's columns) and (Ω, diag Δ) by
    ``omega_step_perturbative``; both are exact minimisations, so F is non-increasing (in
    exact arithmetic: at node variances ~1e-6 the off-diagonal moves F by less than its
    round-off, which is why convergence is judged by the stationarity residual alone).
    Returns None when the Ω-step does not apply (‖Ω⁻¹‖₂²/(2λ) > ½: not stiff, and the
    eigen-based methods resolve Ω there).
    """
    out = _alternate(P, omega0, tol, max_iter,
                     lambda delta, omega: omega_step_perturbative(P, delta, omega))
    if out is not None:
        out.extra["perturbative_sweeps"] = out.n_iter
    return out


def solve_admm_all_columns(P: L2gProblem, omega0: torch.Tensor, tol: float,
                           max_iter: int) -> MethodOutput:
    """Diagonally preconditioned, safeguarded ADMM for the groups Δ_{−j,j} of every column.

    Same splitting as ``solve_admm`` (min f(Ω) + h(Z), Ω = Z, Ω symmetric, Z free, so h is
    separable over the columns of Z), but the augmented term is ρ/2‖D(Ω − Z + U)D‖²_F with
    D = diag(S)^½. Node variances may span decades (the optimum's entries with them); in this
    metric one ρ fits all of them, as with an equilibrated graphical lasso.

    Ω-step: with S̃ = D⁻¹SD⁻¹, eigh of ρ·symmetrize(D(Z − U)D) − S̃ = Q diag(m) Qᵀ and
    Ω = D⁻¹ Q diag(ω) Qᵀ D⁻¹, ω = (m + sqrt(m² + 4ρ))/(2ρ).
    Z-step (column j, entries i ≠ j, weights a_i = ρ d_i² d_j², W = Ω̂ + U): δ minimises
    τ‖δ‖^g + Σ_i c_i (δ_i − w_i)², c_i = λa_i/(2λ + a_i) (weighted group prox) and
    z_i = (2λδ_i + a_i w_i)/(2λ + a_i); the diagonal is unpenalised, z_jj = w_jj.
    Safeguard and residual balancing (in the D-metric) as in ``solve_admm``.
    First, from the start point, up to 50 sweeps of ``solve_perturbative_bcd``: in the
    stiff regime (2λ ≫ ‖Ω⁻¹‖₂²) it resolves what the eigen-based steps cannot and usually
    converges at once; the ADMM runs only when it declines or has not converged.
    """
    alpha = 1.5
    S = P.S
    d = torch.sqrt(torch.diagonal(S))
    dd = d.unsqueeze(-1) * d.unsqueeze(-2)  # d_i d_j
    S_scaled = S / dd
    logdet_d = 2.0 * float(torch.log(d).sum())
    eye = torch.eye(S.shape[-1], dtype=torch.bool, device=S.device)
    lam = P.lam
    # Start from the better of Ω⁰ and the "no links" point diag(1/S_ii): on a singular S,
    # Ω⁰ = (S + εI)⁻¹ is huge along the null space and far from the optimum.
    x = omega0
    x_delta = delta_step(P, x)
    best = objective(P, x, x_delta)
    diag_start = torch.diag_embed(1.0 / torch.diagonal(S))
    diag_delta = delta_step(P, diag_start)
    diag_value = objective(P, diag_start, diag_delta)
    if diag_value < best:
        x, x_delta, best = diag_start, diag_delta, diag_value
    # Stiff regime (node variances so small that 2λ ≫ ‖Ω⁻¹‖₂²): the off-diagonal optimum
    # lies below what the eigen-based steps resolve, but the perturbative BCD resolves it
    # and, when no group is active at the solution, converges in a few sweeps.
    quick = solve_perturbative_bcd(P, x, tol, min(max_iter, _MAX_PERTURBATIVE))
    if quick is not None and quick.converged:
        quick.extra.update(preconditioned=False, stalled=False)
        return quick
    spent = 0 if quick is None else quick.n_iter
    history = [best]
    res = stationarity(P, x, x_delta)
    rho = 1.0
    Z = x.clone()
    U = torch.zeros_like(x)
    k = 0
    n_accept = 0
    since_progress = 0
    while res > tol and k < max_iter - spent and since_progress < _MAX_NO_PROGRESS:
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
        V = oh + U
        a = rho * dd * dd
        c = lam * a / (2.0 * lam + a)
        block = weighted_group_prox_tensor(torch.where(eye, 0.0, V), 2.0 * c, P.tau, P.g)
        Z_old = Z
        Z = torch.where(eye, V, (2.0 * lam * block + a * V) / (2.0 * lam + a))
        U = U + oh - Z
        rho, U = _balance(float(torch.linalg.matrix_norm((omega - Z) * dd)),
                          rho * float(torch.linalg.matrix_norm((Z - Z_old) * dd)), rho, U)
    stalled = since_progress >= _MAX_NO_PROGRESS
    polish = 0
    if res > tol and k < max_iter - spent:
        # For g < 1 the ADMM sequence may settle where the safeguard accepts nothing; exact
        # BCD from the best point decreases F monotonically to a stationary point (fast
        # unless λ is large relative to the curvature of −log det, then it stalls as well).
        more = solve_bcd(P, x, tol, min(max_iter - spent - k, _MAX_POLISH))
        if more.objective <= best:
            x, x_delta, best, res = more.omega, more.delta, more.objective, more.stationarity
            history.extend(more.history[1:])
        polish = more.n_iter
        stalled = stalled and res > tol
    return MethodOutput(x, x_delta, best, history, spent + k + polish, res <= tol, res,
                        extra={"rho": rho, "accepted": n_accept, "preconditioned": True,
                               "stalled": stalled, "bcd_polish": polish,
                               "perturbative_sweeps": spent})


Method = Callable[[L2gProblem, torch.Tensor, float, int], MethodOutput]

METHODS: dict[str, Method] = {
    "admm": solve_admm,
    "bcd": solve_bcd,
}

RELEASED: Method = solve_released


# --------------------------------------------------------------------------------------
# "reduced": eliminate Δ, Ω_II and Ω_JJ in closed form, accelerated prox-gradient on Ω_IJ.
# --------------------------------------------------------------------------------------


class _Reduced:
    """R(B) = min over Δ, Ω_II, Ω_JJ of F with Ω_IJ = B held fixed (B = Ω_IJ, |I| × |J|).

    Writing Ω = [[A, B], [Bᵀ, C]] and K = C − BᵀA⁻¹B (Schur complement), f(Ω) =
    −log det A − log det K + tr(S_II A) + 2⟨S_IJ, B⟩ + tr(S_JJ K) + tr(B S_JJ Bᵀ A⁻¹).
    Minimising over K gives K = S_JJ⁻¹; over A (with M = B S_JJ Bᵀ, N = S_II^½ M S_II^½):
    A = S_II^{-½} X S_II^{-½}, X = ½I + (¼I + N)^½. Hence
    R(B) = s(B) + h(B) + log det S_JJ + |J|,
    s(B) = Σ_i (x_i − log x_i + ν_i/x_i) + log det S_II + 2⟨S_IJ, B⟩   (ν = eig N),
    ∇s(B) = 2A⁻¹ B S_JJ + 2S_IJ,   h(B) = Σ_j φ(‖b_j‖), φ(r) = min_d τd^g + λ(r − d)².
    Needs S_II ≻ 0 and S_JJ ≻ 0 — exactly the condition for F to be bounded below.
    """

    def __init__(self, P: L2gProblem):
        self.P = P
        S = P.S
        I, J = P.important, P.rest
        self.S_II = S.index_select(0, I).index_select(1, I)
        self.S_IJ = S.index_select(0, I).index_select(1, J)
        self.S_JJ = S.index_select(0, J).index_select(1, J)
        sig, U = torch.linalg.eigh(self.S_II)
        self.root_II = (U * sig.sqrt().unsqueeze(-2)) @ U.T  # S_II^½
        self.logdet_II = float(torch.log(sig).sum())
        chol = torch.linalg.cholesky(self.S_JJ)
        self.logdet_JJ = float(2.0 * torch.log(chol.diagonal()).sum())
        self.S_JJ_inv = torch.cholesky_inverse(chol)
        self.const = self.logdet_JJ + J.numel()
        self.norm_S = float(torch.linalg.matrix_norm(S))

    def smooth(self, B: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
        """s(B), ∇s(B) and A⁻¹ (for the reconstruction)."""
        BS = B @ self.S_JJ
        N = symmetrize(self.root_II @ (BS @ B.T) @ self.root_II)
        nu, Q = torch.linalg.eigh(N)
        nu = nu.clamp_min(0.0)
        x = 0.5 + torch.sqrt(0.25 + nu)
        value = (x - torch.log(x) + nu / x).sum() + self.logdet_II + 2.0 * (self.S_IJ * B).sum()
        A_inv = self.root_II @ ((Q / x.unsqueeze(-2)) @ Q.T) @ self.root_II
        grad = 2.0 * (A_inv @ BS) + 2.0 * self.S_IJ
        return float(value), grad, A_inv

    def h(self, B: torch.Tensor) -> tuple[float, torch.Tensor]:
        """h(B) and the Δ-block D = prox(B) (columns), so ∇h = 2λ(B − D) off the kinks."""
        P = self.P
        D = group_prox_tensor(B, P.w, P.g, n_iter=P.gst_iters)
        r = torch.linalg.vector_norm(B, dim=0)
        d = torch.linalg.vector_norm(D, dim=0)
        return float((P.tau * d.pow(P.g) + P.lam * (r - d).pow(2)).sum()), D

    def residual(self, B: torch.Tensor, grad_s: torch.Tensor, D: torch.Tensor,
                 A_inv: torch.Tensor) -> float:
        """The relative stationarity residual of ``stationarity`` evaluated in B-space.

        At the reconstructed Ω, Ω⁻¹ = [[S_II, −A⁻¹BS_JJ], [·, S_JJ]] and the gradient of F is
        zero except on the I×J/J×I blocks, where it equals ½∇R(B) = ½(∇s + 2λ(B − D)).
        """
        g_full = 0.5 * (grad_s + 2.0 * self.P.lam * (B - D))
        num = (2.0 ** 0.5) * float(torch.linalg.matrix_norm(g_full))
        off = A_inv @ B @ self.S_JJ
        inv_norm = (float(torch.linalg.matrix_norm(self.S_II)) ** 2
                    + float(torch.linalg.matrix_norm(self.S_JJ)) ** 2
                    + 2.0 * float(torch.linalg.matrix_norm(off)) ** 2) ** 0.5
        return num / (self.norm_S + inv_norm)

    def omega(self, B: torch.Tensor, A_inv: torch.Tensor) -> torch.Tensor:
        """Ω = [[A, B], [Bᵀ, S_JJ⁻¹ + BᵀA⁻¹B]]."""
        P = self.P
        p = P.S.shape[-1]
        I, J = P.important, P.rest
        A = torch.linalg.inv(A_inv)
        out = torch.empty((p, p), dtype=B.dtype, device=B.device)
        out[I.unsqueeze(-1), I.unsqueeze(0)] = symmetrize(A)
        out[I.unsqueeze(-1), J.unsqueeze(0)] = B
        out[J.unsqueeze(-1), I.unsqueeze(0)] = B.T
        out[J.unsqueeze(-1), J.unsqueeze(0)] = symmetrize(self.S_JJ_inv + B.T @ A_inv @ B)
        return out


# Consecutive steps whose decrease of R is below its round-off before declaring B stationary
# to working precision.
_MAX_STALLED = 20


def solve_reduced(P: L2gProblem, omega0: torch.Tensor, tol: float, max_iter: int) -> MethodOutput:
    """Monotone accelerated proximal gradient on R(B), B = Ω_IJ (see ``_Reduced``).

    Each iteration: extrapolate Y = B + β(B − B_prev) (Nesterov/FISTA β), take a proximal
    gradient step from Y with backtracking on the Lipschitz estimate L
    (B⁺ = prox_{h/L}(Y − ∇s(Y)/L), a closed-form group prox), and accept it only if
    R(B⁺) ≤ R(B); otherwise restart the momentum and step from B itself, which decreases R
    for every g (the prox of h is exact, and the descent lemma is enforced by backtracking).
    R(B) equals F at the reconstructed (Ω, Δ), so the history of F is non-increasing.
    """
    if P.rest.numel() == 0:  # no groups: F = −log det Ω + tr(SΩ), minimised by S⁻¹
        omega = torch.cholesky_inverse(torch.linalg.cholesky(P.S))
        delta = omega.clone()
        value = objective(P, omega, delta)
        return MethodOutput(omega, delta, value, [value], 0, True, stationarity(P, omega, delta))
    red = _Reduced(P)
    history = [objective(P, omega0, delta_step(P, omega0))]
    B = ij_block(P, omega0).clone()
    s_B, g_B, Ainv_B = red.smooth(B)
    h_B, D_B = red.h(B)
    R_B = s_B + h_B
    history.append(min(history[0], R_B + red.const))
    res = red.residual(B, g_B, D_B, Ainv_B)
    L = max(2.0 * float(torch.linalg.matrix_norm(Ainv_B, ord=2))
            * float(torch.linalg.matrix_norm(red.S_JJ, ord=2)), 1e-300)
    B_prev = B
    t = 1.0
    k = 0
    n_restart = 0
    n_evals = 0
    n_stalled = 0
    while res > tol and k < max_iter and n_stalled < _MAX_STALLED:
        k += 1
        t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        beta = (t - 1.0) / t_next
        accepted = False
        rejected = False
        for attempt in (0, 1):
            if attempt == 0 and beta > 0:
                Y = B + beta * (B - B_prev)
                s_Y, g_Y, _ = red.smooth(Y)
            elif attempt == 0:
                continue
            else:
                Y, s_Y, g_Y = B, s_B, g_B
            L = max(L * 0.5, 1e-300)
            while True:
                n_evals += 1
                B_new = _h_prox_groups(P, Y - g_Y / L, L)
                s_new, g_new, Ainv_new = red.smooth(B_new)
                diff = B_new - Y
                diff2 = float((diff * diff).sum())
                bound = s_Y + float((g_Y * diff).sum()) + 0.5 * L * diff2
                # Descent lemma s(B⁺) ≤ s(Y) + ⟨∇s(Y), B⁺ − Y⟩ + (L/2)‖B⁺ − Y‖². Near the
                # solution its two sides differ by less than the round-off of s, so also
                # accept the sufficient gradient form ⟨∇s(B⁺) − ∇s(Y), B⁺ − Y⟩ ≤ (L/2)‖B⁺ − Y‖²
                # (valid because s is convex), which has no such cancellation (as in TFOCS).
                if (s_new <= bound + 16.0 * torch.finfo(B.dtype).eps * abs(s_Y)
                        or float(((g_new - g_Y) * diff).sum()) <= 0.5 * L * diff2
                        or L > 1e300):
                    break
                L *= 2.0
            h_new, D_new = red.h(B_new)
            R_new = s_new + h_new
            if R_new <= R_B:
                accepted = True
                break
            if attempt == 1:
                # A plain prox-gradient step decreases R in exact arithmetic; when the
                # decrease is below the round-off of R, keep it if it still lowers the
                # stationarity residual (otherwise B is stationary to working precision).
                slack = 64.0 * torch.finfo(B.dtype).eps * (abs(s_B) + abs(h_B))
                if R_new - R_B <= slack and n_stalled < _MAX_STALLED:
                    accepted = True
                    break
            rejected = True
            n_restart += 1
        if not accepted:  # no decrease even from B: B is stationary to working precision
            t = 1.0
            res = red.residual(B, g_B, D_B, Ainv_B)
            history.append(R_B + red.const)
            break
        # Progress below the round-off of R counts as a stall; too many in a row end the run.
        slack = 64.0 * torch.finfo(B.dtype).eps * (abs(s_B) + abs(h_B))
        n_stalled = n_stalled + 1 if R_new > R_B - slack else 0
        # Momentum grows unless an extrapolated step was just rejected (then it restarts).
        t = 1.0 if rejected else t_next
        # Gradient-based adaptive restart (O'Donoghue & Candès 2015): when the step points
        # against the momentum, the momentum is overshooting the (strongly convex) valley.
        if attempt == 0 and float(((Y - B_new) * (B_new - B)).sum()) > 0:
            t = 1.0
            n_restart += 1
        B_prev, B = B, B_new
        s_B, g_B, Ainv_B, D_B, R_B = s_new, g_new, Ainv_new, D_new, R_new
        history.append(R_B + red.const)
        res = red.residual(B, g_B, D_B, Ainv_B)
    omega = red.omega(B, Ainv_B)
    delta = delta_step(P, omega)
    value = objective(P, omega, delta)
    res_full = stationarity(P, omega, delta)
    return MethodOutput(omega, delta, value, history, k, res_full <= tol, res_full,
                        extra={"lipschitz": L, "restarts": n_restart, "smooth_evals": n_evals,
                               "residual_reduced": res})


METHODS["reduced"] = solve_reduced
