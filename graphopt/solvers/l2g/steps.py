"""The closed-form steps every ℓ2,g method is built from (docs/algorithms.md §2), tensor-only.

Δ-step (group prox), the exact Ω-step (one eigendecomposition), the Ω-step in perturbation
form (for the stiff all-columns regime), the proximal map of the Δ-eliminated penalty h,
and the two numbers every method reports: F and its stationarity residual. Everything here
works on tensors already validated by ``l2g_ggm``.
"""

from __future__ import annotations

import torch

from graphopt._linalg import logdet_pd, symmetrize

from ..prox import group_prox_tensor
from .problem import L2gProblem, offdiag

__all__ = [
    "pd_root",
    "delta_step",
    "omega_step_exact",
    "omega_step_perturbative",
    "envelope_prox",
    "penalty",
    "objective",
    "stationarity",
]


def pd_root(m: torch.Tensor, rho: float) -> torch.Tensor:
    """The positive root ω of ρω − 1/ω = m, i.e. (m + sqrt(m² + 4ρ)) / (2ρ).

    Written as 2 / (sqrt(m² + 4ρ) − m) for m < 0 so that no cancellation occurs.
    """
    root = torch.sqrt(m * m + 4.0 * rho)
    return torch.where(m >= 0, (m + root) / (2.0 * rho), 2.0 / (root - m))


def delta_step(P: L2gProblem, omega: torch.Tensor) -> torch.Tensor:
    """argmin_Δ F(Ω, Δ): Δ = Ω off the groups, each group Δ_G = prox_{w‖·‖^g}(Ω_G), w = τ/(2λ)."""
    if not P.groups.has_groups:
        return omega.clone()
    block = group_prox_tensor(P.groups.block(omega), P.w, P.g, n_iter=P.gst_iters)
    return P.groups.with_block(omega, block)


def omega_step_exact(P: L2gProblem, delta: torch.Tensor) -> torch.Tensor:
    """argmin_Ω F(Ω, Δ): solve 2λΩ − Ω⁻¹ = 2λΔ_s − S by one eigendecomposition.

    With 2λΔ_s − S = Q diag(m) Qᵀ, Ω = Q diag(ω) Qᵀ, ω_i = (m_i + sqrt(m_i² + 8λ)) / (4λ).
    """
    m, Q = torch.linalg.eigh(2.0 * P.lam * symmetrize(delta) - P.S)
    omega = pd_root(m, 2.0 * P.lam)
    return symmetrize((Q * omega.unsqueeze(-2)) @ Q.transpose(-1, -2))


# Fixed-point sweeps allowed in one ``omega_step_perturbative`` call (it contracts by
# ‖Ω⁻¹‖₂²/(2λ) ≤ ½ per sweep, and by far more in the regime it is used for).
PERTURBATIVE_MAX_SWEEPS = 60


def omega_step_perturbative(P: L2gProblem, delta: torch.Tensor,
                            omega: torch.Tensor) -> torch.Tensor | None:
    """argmin over Ω and diag(Δ) of F(Ω, Δ) for fixed off-diagonal Δ (``OffDiagonalColumns``).

    The diagonal of Δ is unpenalised, so at its optimum Δ_ii = Ω_ii and only the
    off-diagonal coupling remains: minimise −log det Ω + tr(SΩ) + λ‖offdiag(Ω − Δ)‖²_F
    (Ω symmetric, so only Δ_s = (Δ + Δᵀ)/2 matters).
    Write Ω = Λ + E (Λ diagonal, E off-diagonal), Ê = Λ^{-½}EΛ^{-½} and
    Y = (I + Ê)⁻¹Ê, so that Ω⁻¹ = Λ^{-½}(I − Y)Λ^{-½}. Stationarity is the fixed point

        E = offdiag(Δ_s) − (offdiag(S) − offdiag(Ω⁻¹)) / (2λ),    Λ_ii = (1 − Y_ii) / S_ii,

    iterated from ``omega``. Unlike an eigendecomposition of Ω (which resolves entries only
    to eps·‖Ω‖), every quantity here keeps its own relative precision: with node variances
    S_ii ~ 1e-6 and λ = 1000, Ω_ii ~ 1e6 while the optimal E_ij ≈ −S_ij/(2λ) ~ 1e-10.
    The E-map contracts with factor ≤ ‖Ω⁻¹‖₂²/(2λ); returns None (use the eigen-based
    steps, which resolve Ω well in that regime) when that bound exceeds ½ or the sweeps do
    not settle.
    """
    lam = P.lam
    s_diag = torch.diagonal(P.S, dim1=-2, dim2=-1)
    s_off = offdiag(P.S)
    delta_off = offdiag(symmetrize(delta))
    lam_d = torch.diagonal(omega, dim1=-2, dim2=-1)
    E = offdiag(omega)
    if bool((lam_d <= 0).any()) or bool((s_diag <= 0).any()):
        return None
    eye = torch.eye(P.S.shape[-1], dtype=P.S.dtype, device=P.S.device)
    eps = torch.finfo(P.S.dtype).eps
    for _ in range(PERTURBATIVE_MAX_SWEEPS):
        r = torch.rsqrt(lam_d)
        rr = r.unsqueeze(-1) * r.unsqueeze(-2)
        E_hat = E * rr
        # ‖Ω⁻¹‖₂ ≤ max_i Λ_ii⁻¹ / (1 − ‖Ê‖₂) and ‖Ê‖₂ ≤ ‖Ê‖_F.
        e_norm = float(torch.linalg.matrix_norm(E_hat))
        if e_norm >= 0.5:
            return None
        bound = float((1.0 / lam_d).max()) / (1.0 - e_norm)
        if bound * bound / (2.0 * lam) > 0.5:
            return None
        Y = symmetrize(torch.linalg.solve(eye + E_hat, E_hat))
        E_new = delta_off - (s_off + offdiag(Y) * rr) / (2.0 * lam)
        lam_new = (1.0 - torch.diagonal(Y, dim1=-2, dim2=-1)) / s_diag
        change = float(torch.linalg.matrix_norm(E_new - E)) \
            <= 16.0 * eps * float(torch.linalg.matrix_norm(E_new)) \
            and bool((lam_new - lam_d).abs().le(16.0 * eps * lam_new).all())
        E, lam_d = E_new, lam_new
        if change:
            return torch.diag_embed(lam_d) + E
    return None


def envelope_prox(P: L2gProblem, v: torch.Tensor, rho: float) -> torch.Tensor:
    """prox of φ(‖·‖) on each group column with weight ρ/2‖z − v‖², φ(r) = min_d τd^g + λ(r − d)².

    min_{z,d} τ‖d‖^g + λ‖z − d‖² + (ρ/2)‖z − v‖²: for fixed d, z = (2λd + ρv)/(2λ + ρ),
    leaving min_d τ‖d‖^g + (λρ/(2λ + ρ))‖d − v‖², a group prox with w = τ(2λ + ρ)/(2λρ).
    (h(Z) = Σ_groups φ(‖Z_G‖) is F with Δ eliminated, so this is the prox both the ADMM
    Z-step and the reduced method's gradient step need.)
    """
    lam = P.lam
    w = P.tau * (2.0 * lam + rho) / (2.0 * lam * rho)
    d = group_prox_tensor(v, w, P.g, n_iter=P.gst_iters)
    return (2.0 * lam * d + rho * v) / (2.0 * lam + rho)


def penalty(P: L2gProblem, omega: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """τ Σ_groups ‖Δ_G‖^g + λ‖Ω − Δ‖²_F."""
    group = torch.linalg.vector_norm(P.groups.block(delta), dim=-2).pow(P.g).sum(-1) \
        if P.groups.has_groups else torch.zeros((), dtype=omega.dtype, device=omega.device)
    return P.tau * group + P.lam * (omega - delta).pow(2).sum(dim=(-2, -1))


def objective(P: L2gProblem, omega: torch.Tensor, delta: torch.Tensor,
              logdet: torch.Tensor | None = None) -> float:
    """F(Ω, Δ) (+inf when Ω is not positive definite); ``logdet`` if already known."""
    ld = logdet_pd(omega) if logdet is None else logdet
    value = -ld + (P.S * omega).sum(dim=(-2, -1)) + penalty(P, omega, delta)
    return float(value)


def stationarity(P: L2gProblem, omega: torch.Tensor, delta: torch.Tensor,
                 omega_inv: torch.Tensor | None = None) -> float:
    """Relative stationarity residual of F at (Ω, Δ) with Δ = argmin_Δ F(Ω, ·).

    r = ‖S − Ω⁻¹ + 2λ(Ω − Δ_s)‖_F / (‖S‖_F + ‖Ω⁻¹‖_F), the gradient of F in Ω (over
    symmetric matrices) divided by the size of its two largest terms. Since Δ minimises F
    for this Ω, the partial (limiting) subgradient in Δ is zero, so r = 0 exactly at a
    stationary point. +inf when Ω is not positive definite.
    """
    if omega_inv is None:
        chol, info = torch.linalg.cholesky_ex(symmetrize(omega))
        if int(info) != 0:
            return float("inf")
        omega_inv = torch.cholesky_inverse(chol)
    grad = P.S - omega_inv + 2.0 * P.lam * (omega - symmetrize(delta))
    scale = torch.linalg.matrix_norm(P.S) + torch.linalg.matrix_norm(omega_inv)
    return float(torch.linalg.matrix_norm(grad) / scale)
