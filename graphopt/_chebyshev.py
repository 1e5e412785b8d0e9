"""Chebyshev approximation of a spectral filter h(L) X using only products with L.

On [0, λ_max], with L̃ = 2L/λ_max − I (spectrum in [−1, 1]),

    h(L) X ≈ Σ_{j=0}^{K} c_j T_j(L̃) X,   T_0 = I, T_1 = L̃, T_j = 2 L̃ T_{j−1} − T_{j−2},

with coefficients from Chebyshev–Gauss quadrature at N = K + 1 nodes θ_m = π(m + ½)/N:

    c_j = (2 − δ_{j0}) / N · Σ_m h(λ_max (cos θ_m + 1) / 2) cos(j θ_m),

which makes the polynomial the interpolant of h at the Chebyshev nodes (near-minimax).
Cost: K products with L, O(K · nnz(L) · d). λ_max comes from :func:`estimate_lmax`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from ._linop import matmul, row_abs_sums, to_csr

__all__ = [
    "chebyshev_coefficients",
    "jackson_damping",
    "chebyshev_apply",
    "gershgorin_bound",
    "lanczos_lmax",
    "estimate_lmax",
]


def chebyshev_coefficients(
    h: Callable[[torch.Tensor], torch.Tensor], order: int, lmax: float, nodes: int | None = None
) -> torch.Tensor:
    """Coefficients ``c_0..c_K`` (float64, CPU) of h on [0, lmax]; see the module docstring.

    ``nodes`` (default K + 1: the interpolant) quadrature points; more nodes make c_j approach
    the coefficients of the infinite Chebyshev series of h, which Jackson damping assumes.
    """
    N = order + 1 if nodes is None else max(int(nodes), order + 1)
    theta = math.pi * (torch.arange(N, dtype=torch.float64) + 0.5) / N
    lam = lmax * (torch.cos(theta) + 1.0) / 2.0
    hv = h(lam).to(torch.float64)
    j = torch.arange(order + 1, dtype=torch.float64)
    c = (2.0 / N) * (torch.cos(j[:, None] * theta[None, :]) * hv[None, :]).sum(dim=1)
    c[0] /= 2.0
    return c


def jackson_damping(order: int) -> torch.Tensor:
    """Jackson kernel factors g_0..g_K (float64) that suppress Gibbs oscillations.

    ``g_j = [(K+2−j) cos(πj/(K+2)) + sin(πj/(K+2)) cot(π/(K+2))] / (K+2)``; the damped
    expansion Σ g_j c_j T_j is a positive-kernel average of h, so it stays within h's range.
    """
    M = order + 2
    j = torch.arange(order + 1, dtype=torch.float64)
    a = math.pi / M
    return ((M - j) * torch.cos(a * j) + torch.sin(a * j) / math.tan(a)) / M


def chebyshev_apply(
    L: torch.Tensor, X: torch.Tensor, coeffs: torch.Tensor | Sequence[float], lmax: float
) -> torch.Tensor:
    """``Σ_j c_j T_j(L̃) X`` by the three-term recurrence; ``X`` is (n, d), dense or sparse L."""
    scale = 2.0 / lmax
    # Python floats: a tensor of coefficients on the GPU would cost a sync per term.
    c = [float(v) for v in (coeffs.detach().cpu() if isinstance(coeffs, torch.Tensor) else coeffs)]
    Y = c[0] * X
    if len(c) == 1:
        return Y
    # T_1 = L̃ X = (2/λ_max) L X − X. In-place updates keep the working set at five (n, d)
    # blocks (X, Y, T_{j−2}, T_{j−1}, L T_{j−1}) whatever the order; none of the in-place
    # targets is saved by autograd, so the result stays differentiable in X.
    T_prev, T_cur = X, matmul(L, X).mul_(scale).sub_(X)
    Y.add_(T_cur, alpha=c[1])
    for j in range(2, len(c)):
        # T_j = 2 L̃ T_{j−1} − T_{j−2} = (4/λ_max) L T_{j−1} − 2 T_{j−1} − T_{j−2}
        T_next = matmul(L, T_cur).mul_(2.0 * scale).sub_(T_cur, alpha=2.0).sub_(T_prev)
        T_prev, T_cur = T_cur, T_next
        Y.add_(T_cur, alpha=c[j])
    return Y


def gershgorin_bound(L: torch.Tensor) -> float:
    """``max_i Σ_j |L_ij|`` ≥ λ_max for any symmetric L (= 2·max degree for L = D − W)."""
    return float(row_abs_sums(L).max())


def lanczos_lmax(L: torch.Tensor, steps: int = 20, seed: int = 0) -> tuple[float, float]:
    """Largest Ritz value θ of ``steps`` Lanczos steps and its residual norm r.

    Some eigenvalue of L lies in [θ − r, θ + r]; with a random start it is the largest one.
    Full reorthogonalisation keeps the few steps honest; the start vector is seeded so
    that the estimate (and every filter built on it) is reproducible.
    """
    n = L.shape[0]
    m = max(1, min(steps, n))
    L = to_csr(L)
    dtype = L.dtype
    gen = torch.Generator(device="cpu").manual_seed(seed)
    q = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype=dtype, device=L.device)
    q = q / q.norm()
    Q = torch.zeros(m, n, dtype=dtype, device=L.device)  # Lanczos vectors as rows
    alpha = torch.zeros(m, dtype=torch.float64)
    beta = torch.zeros(m, dtype=torch.float64)
    k_used = m
    for i in range(m):
        Q[i] = q
        w = matmul(L, q)
        alpha[i] = float(q @ w)
        Qi = Q[: i + 1]
        w = w - Qi.T @ (Qi @ w)
        w = w - Qi.T @ (Qi @ w)  # twice is enough (Kahan–Parlett)
        b = float(w.norm())
        beta[i] = b
        if b <= 1e-12 * max(1.0, abs(float(alpha[: i + 1].abs().max()))):
            k_used = i + 1  # invariant subspace found: the Ritz values are exact
            beta[i] = 0.0
            break
        q = w / b
    T = torch.diag(alpha[:k_used])
    if k_used > 1:
        off = beta[: k_used - 1]
        T = T + torch.diag(off, 1) + torch.diag(off, -1)
    evals, evecs = torch.linalg.eigh(T)
    theta = float(evals[-1])
    resid = abs(float(beta[k_used - 1]) * float(evecs[-1, -1]))
    return theta, resid


def estimate_lmax(L: torch.Tensor, method: str = "lanczos", margin: float = 0.01) -> float:
    """Cheap upper estimate of λ_max(L).

    ``"gershgorin"``: the row-sum bound (guaranteed, up to 2x loose). ``"lanczos"``: 20
    Lanczos steps, ``(θ + r)(1 + margin)``, capped by the Gershgorin bound. An empty graph
    (L = 0) returns 1 so that L̃ = −I is still defined.
    """
    bound = gershgorin_bound(L)
    if bound <= 0:
        return 1.0
    if method == "gershgorin":
        return bound
    if method != "lanczos":
        raise ValueError(f"lmax must be a positive number, 'lanczos' or 'gershgorin', got {method!r}")
    theta, resid = lanczos_lmax(L)
    return min(bound, (theta + resid) * (1.0 + margin))
