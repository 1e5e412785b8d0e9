"""The default method for important links: eliminate Δ, Ω_II and Ω_JJ in closed form and run
monotone accelerated proximal gradient on B = Ω_IJ (docs/algorithms.md §2, docs/l2g_ggm.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphopt._linalg import symmetrize

from ..prox import group_prox_tensor
from .problem import ImportantLinks, L2gProblem, MethodOutput
from .steps import delta_step, envelope_prox, objective, stationarity

__all__ = ["ReducedObjective", "solve_reduced"]

# Consecutive steps whose decrease of R is below its round-off before declaring B stationary
# to working precision.
MAX_STALLED = 20


class ReducedObjective:
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
        assert isinstance(P.groups, ImportantLinks)
        self.P = P
        S = P.S
        I, J = P.groups.important, P.groups.rest
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
        I, J = P.groups.important, P.groups.rest
        A = torch.linalg.inv(A_inv)
        out = torch.empty((p, p), dtype=B.dtype, device=B.device)
        out[I.unsqueeze(-1), I.unsqueeze(0)] = symmetrize(A)
        out[I.unsqueeze(-1), J.unsqueeze(0)] = B
        out[J.unsqueeze(-1), I.unsqueeze(0)] = B.T
        out[J.unsqueeze(-1), J.unsqueeze(0)] = symmetrize(self.S_JJ_inv + B.T @ A_inv @ B)
        return out


@dataclass
class _Point:
    """B with everything the iteration needs there: s, ∇s, A⁻¹, h, the Δ-block D, R = s + h."""

    B: torch.Tensor
    s: float
    grad: torch.Tensor
    A_inv: torch.Tensor
    h: float
    D: torch.Tensor

    @property
    def R(self) -> float:
        return self.s + self.h


def _evaluate(red: ReducedObjective, B: torch.Tensor,
              smooth: tuple[float, torch.Tensor, torch.Tensor] | None = None) -> _Point:
    s, grad, A_inv = red.smooth(B) if smooth is None else smooth
    h, D = red.h(B)
    return _Point(B, s, grad, A_inv, h, D)


def _prox_gradient_step(red: ReducedObjective, Y: torch.Tensor, s_Y: float, g_Y: torch.Tensor,
                        L: float) -> tuple[_Point, float, int]:
    """B⁺ = prox_{h/L}(Y − ∇s(Y)/L) with backtracking on L from L/2; (B⁺, L, evaluations).

    The prox of h/L is ``envelope_prox`` with weight L (closed form).
    """
    eps = torch.finfo(Y.dtype).eps
    L = max(L * 0.5, 1e-300)
    evals = 0
    while True:
        evals += 1
        B_new = envelope_prox(red.P, Y - g_Y / L, L)
        smooth = red.smooth(B_new)
        s_new, g_new, _ = smooth
        diff = B_new - Y
        diff2 = float((diff * diff).sum())
        bound = s_Y + float((g_Y * diff).sum()) + 0.5 * L * diff2
        # Descent lemma s(B⁺) ≤ s(Y) + ⟨∇s(Y), B⁺ − Y⟩ + (L/2)‖B⁺ − Y‖². Near the solution
        # its two sides differ by less than the round-off of s, so also accept the sufficient
        # gradient form ⟨∇s(B⁺) − ∇s(Y), B⁺ − Y⟩ ≤ (L/2)‖B⁺ − Y‖² (valid because s is convex),
        # which has no such cancellation (as in TFOCS).
        if (s_new <= bound + 16.0 * eps * abs(s_Y)
                or float(((g_new - g_Y) * diff).sum()) <= 0.5 * L * diff2
                or L > 1e300):
            return _evaluate(red, B_new, smooth), L, evals
        L *= 2.0


def solve_reduced(P: L2gProblem, omega0: torch.Tensor, tol: float, max_iter: int) -> MethodOutput:
    """Monotone accelerated proximal gradient on R(B), B = Ω_IJ (see ``ReducedObjective``).

    Each iteration: extrapolate Y = B + β(B − B_prev) (Nesterov/FISTA β) and take a proximal
    gradient step from Y with backtracking on the Lipschitz estimate L; accept it only if
    R(B⁺) ≤ R(B). Otherwise restart the momentum and step from B itself, which decreases R
    for every g (the prox of h is exact, and the descent lemma is enforced by backtracking).
    R(B) equals F at the reconstructed (Ω, Δ), so the history of F is non-increasing.
    """
    groups = P.groups
    assert isinstance(groups, ImportantLinks)
    if groups.rest.numel() == 0:  # no groups: F = −log det Ω + tr(SΩ), minimised by S⁻¹
        omega = torch.cholesky_inverse(torch.linalg.cholesky(P.S))
        delta = omega.clone()
        value = objective(P, omega, delta)
        return MethodOutput(omega, delta, value, [value], 0, True, stationarity(P, omega, delta))
    red = ReducedObjective(P)
    eps = torch.finfo(P.S.dtype).eps
    history = [objective(P, omega0, delta_step(P, omega0))]
    cur = _evaluate(red, groups.block(omega0).clone())
    history.append(min(history[0], cur.R + red.const))
    res = red.residual(cur.B, cur.grad, cur.D, cur.A_inv)
    L = max(2.0 * float(torch.linalg.matrix_norm(cur.A_inv, ord=2))
            * float(torch.linalg.matrix_norm(red.S_JJ, ord=2)), 1e-300)
    # The round-off scale of R below is |s| at the current B plus |h| at the start point;
    # |h| at the current B would be the natural scale, but it changes when runs stop.
    h_start = cur.h
    B_prev = cur.B
    t = 1.0
    k = 0
    n_restart = 0
    n_evals = 0
    n_stalled = 0
    while res > tol and k < max_iter and n_stalled < MAX_STALLED:
        k += 1
        t_next = 0.5 * (1.0 + (1.0 + 4.0 * t * t) ** 0.5)
        beta = (t - 1.0) / t_next
        # Progress below the round-off of R counts as a stall.
        slack = 64.0 * eps * (abs(cur.s) + abs(h_start))
        nxt = None
        if beta > 0:  # the extrapolated step, kept only if R does not increase
            Y = cur.B + beta * (cur.B - B_prev)
            s_Y, g_Y, _ = red.smooth(Y)
            trial, L, evals = _prox_gradient_step(red, Y, s_Y, g_Y, L)
            n_evals += evals
            if trial.R <= cur.R:
                nxt = trial
                t = t_next
                # Gradient-based adaptive restart (O'Donoghue & Candès 2015): when the step
                # points against the momentum, the momentum is overshooting the valley.
                if float(((Y - nxt.B) * (nxt.B - cur.B)).sum()) > 0:
                    t = 1.0
                    n_restart += 1
            else:
                n_restart += 1
        if nxt is None:  # a plain step from B; the momentum restarts if it was just rejected
            trial, L, evals = _prox_gradient_step(red, cur.B, cur.s, cur.grad, L)
            n_evals += evals
            # A plain prox-gradient step decreases R in exact arithmetic; when the decrease
            # is below the round-off of R, keep it (it may still lower the residual).
            if trial.R - cur.R > slack:  # no decrease even from B: stationary to precision
                n_restart += 1
                history.append(cur.R + red.const)
                break
            t = t_next if beta <= 0 else 1.0
            nxt = trial
        n_stalled = n_stalled + 1 if nxt.R > cur.R - slack else 0
        B_prev, cur = cur.B, nxt
        history.append(cur.R + red.const)
        res = red.residual(cur.B, cur.grad, cur.D, cur.A_inv)
    omega = red.omega(cur.B, cur.A_inv)
    delta = delta_step(P, omega)
    value = objective(P, omega, delta)
    res_full = stationarity(P, omega, delta)
    return MethodOutput(omega, delta, value, history, k, res_full <= tol, res_full,
                        extra={"lipschitz": L, "restarts": n_restart, "smooth_evals": n_evals,
                               "residual_reduced": res})
