"""Building blocks of the ℓ2,g-coupled GGM solvers (ALGORITHMS.md §2), tensor-only.

The problem, with J the complement of the important set I and w = τ / (2λ)::

    F(Ω, Δ) = −log det Ω + tr(SΩ) + τ Σ_{j∈J} ‖Δ_{I,j}‖₂^g + λ ‖Ω − Δ‖_F²

or, without important nodes (``all_columns``), τ Σ_j ‖Δ_{−j,j}‖₂^g: every column's
off-diagonal entries form one group.

Everything here works on torch tensors already validated by ``l2g_ggm``; the methods in
``_l2g_methods`` combine these steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from graphopt._linalg import logdet_pd, symmetrize

from .prox import group_prox_tensor

# Released Ω-step (gm_bcd.py, ``Gradient_descent_sub1``): 100 gradient-ascent steps of size
# 1e-4 on log det Ω − tr(AΩ) − λ‖Ω‖²_F from Ω = A_s, stopping early if a step moves Ω by
# less than 1e-6 (Frobenius); the inverse is taken of Ω + 1e-9·I.
RELEASED_INNER_STEPS = 100
RELEASED_STEP = 1e-4
RELEASED_INNER_TOL = 1e-6
RELEASED_INV_JITTER = 1e-9
RELEASED_GST_ITERS = 5


@dataclass
class L2gProblem:
    """A validated instance: S (already regularised), I, J, and the weights.

    ``all_columns=True`` is the variant without important nodes: the groups are the
    off-diagonal parts Δ_{−j,j} of all p columns (then I is empty and J = all nodes).
    """

    S: torch.Tensor
    important: torch.Tensor  # I, long, sorted
    rest: torch.Tensor  # J, long, sorted
    tau: float
    lam: float
    g: float
    gst_iters: int | None = None  # None: exact GST; 5 reproduces the released code
    all_columns: bool = False

    @property
    def has_groups(self) -> bool:
        return self.all_columns or (self.rest.numel() > 0 and self.important.numel() > 0)

    @property
    def w(self) -> float:
        """Weight of the Δ-step prox: min τ‖d‖^g + λ‖v − d‖² = 2λ[½‖v − d‖² + (τ/2λ)‖d‖^g]."""
        return self.tau / (2.0 * self.lam)


def pd_root(m: torch.Tensor, rho: float) -> torch.Tensor:
    """The positive root ω of ρω − 1/ω = m, i.e. (m + sqrt(m² + 4ρ)) / (2ρ).

    Written as 2 / (sqrt(m² + 4ρ) − m) for m < 0 so that no cancellation occurs.
    """
    root = torch.sqrt(m * m + 4.0 * rho)
    return torch.where(m >= 0, (m + root) / (2.0 * rho), 2.0 / (root - m))


def ij_block(P: L2gProblem, a: torch.Tensor) -> torch.Tensor:
    """A_{I,J}: the |I| × |J| block whose columns are the penalised groups."""
    return a.index_select(-2, P.important).index_select(-1, P.rest)


def set_ij_block(P: L2gProblem, a: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    out = a.clone()
    out[P.important.unsqueeze(-1), P.rest.unsqueeze(0)] = block
    return out


def offdiag(a: torch.Tensor) -> torch.Tensor:
    """A with its diagonal set to zero: the columns are the groups Δ_{−j,j} (all_columns)."""
    return a - torch.diag_embed(a.diagonal(dim1=-2, dim2=-1))


def group_block(P: L2gProblem, a: torch.Tensor) -> torch.Tensor:
    """The penalised entries of A as a matrix whose columns are the groups: A_{I,J}, or
    A with a zero diagonal when ``all_columns`` (a zero entry changes no group norm)."""
    return offdiag(a) if P.all_columns else ij_block(P, a)


def set_group_block(P: L2gProblem, a: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """A copy of A with its penalised entries replaced by ``block`` (``group_block``'s layout)."""
    if P.all_columns:
        return offdiag(block) + torch.diag_embed(a.diagonal(dim1=-2, dim2=-1))
    return set_ij_block(P, a, block)


def delta_step(P: L2gProblem, omega: torch.Tensor) -> torch.Tensor:
    """argmin_Δ F(Ω, Δ): Δ = Ω off the groups, Δ_{I,j} = prox_{w‖·‖^g}(Ω_{I,j}), w = τ/(2λ)."""
    if not P.has_groups:
        return omega.clone()
    block = group_prox_tensor(group_block(P, omega), P.w, P.g, n_iter=P.gst_iters)
    return set_group_block(P, omega, block)


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
    """argmin over Ω and diag(Δ) of F(Ω, Δ) for fixed off-diagonal Δ (``all_columns``).

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


def omega_step_released(P: L2gProblem, delta: torch.Tensor) -> torch.Tensor:
    """The released code's inexact Ω-step (compatibility mode, see ``docs/l2g_ggm.md``).

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


def penalty(P: L2gProblem, omega: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """τ Σ_j ‖Δ_{I,j}‖^g + λ‖Ω − Δ‖²_F (τ Σ_j ‖Δ_{−j,j}‖^g + ... when ``all_columns``)."""
    group = torch.linalg.vector_norm(group_block(P, delta), dim=-2).pow(P.g).sum(-1) \
        if P.has_groups else torch.zeros((), dtype=omega.dtype, device=omega.device)
    return P.tau * group + P.lam * (omega - delta).pow(2).sum(dim=(-2, -1))


def objective(P: L2gProblem, omega: torch.Tensor, delta: torch.Tensor,
              logdet: torch.Tensor | None = None) -> float:
    """F(Ω, Δ) (+inf when Ω is not positive definite)."""
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
