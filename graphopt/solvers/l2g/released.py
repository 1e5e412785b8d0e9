"""The released code's loop (``Graph_based_peft/top_gm2/gm_bcd.py``), ``method="released"``.

A compatibility mode (docs/algorithms.md §2, "Where the released code differs"): plain
alternation with GST run for 5 fixed-point iterations and an inexact gradient Ω-step. It
does not minimise F; it reproduces the released numbers so that users can see the
difference (docs/l2g_ggm.md).
"""

from __future__ import annotations

import torch

from graphopt._linalg import symmetrize

from .problem import L2gProblem, MethodOutput
from .steps import delta_step, objective, stationarity

__all__ = ["omega_step_released", "solve_released", "RELEASED_GST_ITERS"]

# Released Ω-step (gm_bcd.py, ``Gradient_descent_sub1``): 100 gradient-ascent steps of size
# 1e-4 on log det Ω − tr(AΩ) − λ‖Ω‖²_F from Ω = A_s, stopping early if a step moves Ω by
# less than 1e-6 (Frobenius); the inverse is taken of Ω + 1e-9·I. GST: 5 iterations.
RELEASED_INNER_STEPS = 100
RELEASED_STEP = 1e-4
RELEASED_INNER_TOL = 1e-6
RELEASED_INV_JITTER = 1e-9
RELEASED_GST_ITERS = 5


def omega_step_released(P: L2gProblem, delta: torch.Tensor) -> torch.Tensor:
    """The released code's inexact Ω-step.

    A = (S − 2λΔ)/(2λ), A_s = symmetrize(A); start Ω = A_s and take 100 steps
    Ω ← Ω + 1e-4 (Ω⁻¹ − A_s − 2λΩ) (gradient ascent on log det Ω − tr(A_sΩ) − λ‖Ω‖²_F).
    Its fixed point solves 2λΩ − Ω⁻¹ = (2λΔ_s − S)/(2λ): S and Δ carry an extra 1/(2λ)
    compared with the exact step, and the iterate need not be positive definite.
    """
    lam = P.lam
    A_s = symmetrize((P.S - 2.0 * lam * delta) / (2.0 * lam))
    eye = torch.eye(A_s.shape[-1], dtype=A_s.dtype, device=A_s.device)
    omega = A_s
    for _ in range(RELEASED_INNER_STEPS):
        inv = torch.linalg.inv(omega + RELEASED_INV_JITTER * eye)
        nxt = omega + RELEASED_STEP * (inv - A_s - 2.0 * lam * omega)
        moved = torch.linalg.matrix_norm(nxt - omega)
        omega = nxt
        if float(moved) < RELEASED_INNER_TOL:
            break
    return omega


def solve_released(P: L2gProblem, omega0: torch.Tensor, tol: float, max_iter: int) -> MethodOutput:
    """The released loop (gm_bcd.py ``BCD_main``); P carries ``gst_iters=RELEASED_GST_ITERS``.

    Δᵏ = group GST of Ωᵏ⁻¹, Ωᵏ = ``omega_step_released``(Δᵏ); stop when
    max(‖Ωᵏ − Ωᵏ⁻¹‖_F, ‖Δᵏ − Δᵏ⁻¹‖_F) < tol after the second iteration. Returns the released
    pair (Ωᵏ, Δᵏ) and F at that pair, which is +inf whenever the inexact step leaves Ω
    indefinite.
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
