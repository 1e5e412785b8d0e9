"""Result objects returned by every solver: one named field per quantity, never a tuple.

Arrays are NumPy when the solver was called with NumPy and torch tensors (on the input's
device and dtype) when it was called with tensors. Batched calls give arrays with a leading
batch dimension and per-problem certificates of shape (B,).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["GraphicalLassoResult", "L2gGGMResult"]


@dataclass
class GraphicalLassoResult:
    """Solution of the graphical lasso (ALGORITHMS.md §1) with its optimality certificates.

    Attributes
    ----------
    precision : Θ, the estimated precision matrix, (p, p) or (B, p, p).
    covariance : W = Θ⁻¹, the matching covariance estimate.
    objective : f(Θ) = −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij| (diagonal too if penalised).
    dual_gap : tr(SΘ) − p + α Σ|Θ_ij|, evaluated at the returned Θ; ≈ 0 at the optimum.
    kkt_violation : max over entries of the violated KKT condition for W − S (see §1).
    n_iter : iterations run (per problem for a batch).
    converged : whether the stopping test was met (per problem for a batch).
    method : the algorithm that produced it (``"admm"``, ``"bcd"``, ...).
    alpha : the regularisation weight(s) used.
    history : per-iteration diagnostics (objective / residuals), when recorded.
    """

    precision: Any
    covariance: Any
    objective: Any
    dual_gap: Any
    kkt_violation: Any
    n_iter: Any
    converged: Any
    method: str = ""
    alpha: Any = None
    history: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class L2gGGMResult:
    """Solution of the ℓ2,g-coupled GGM (ALGORITHMS.md §2) with its convergence evidence.

    Attributes
    ----------
    precision : Ω, the positive definite precision estimate (p, p).
    delta : Δ, the group-sparse copy of Ω (groups Δ_{I,j}, j ∈ J, exactly zero or not).
    objective : F(Ω, Δ) at the returned pair.
    history : F after every outer iteration (non-increasing for the BCD-type methods).
    n_iter : outer iterations run.
    converged : whether the stationarity residual met ``tol``.
    stationarity : the final stationarity residual (relative), the quantity ``tol`` bounds.
    regularization : the ε actually added to S (0.0 when S was used as given).
    important : the important node indices I used.
    method : the algorithm used; ``omega_step`` the Ω-update (``"exact"`` or ``"released"``).
    """

    precision: Any
    delta: Any
    objective: float
    history: list[float]
    n_iter: int
    converged: bool
    stationarity: float = float("nan")
    regularization: float = 0.0
    important: Any = None
    method: str = ""
    omega_step: str = "exact"
    extra: dict[str, Any] = field(default_factory=dict)
