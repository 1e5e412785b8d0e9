"""Exact reference solvers: cvxpy models written like the equations, and scikit-learn.

These are slow and CPU-only on purpose: they exist so that every fast solver in graphopt
can be checked against an independent implementation. Each cvxpy model below reads
line by line like the problem in docs/algorithms.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from graphopt._linalg import symmetrize
from .._tensor import ArrayLike, check_covariance
from ._certificates import (
    best_dual_point,
    certified_gap,
    penalty_mask,
    primal_objective,
    relative_gap,
    spd_inverse,
)
from ._result import GraphicalLassoResult, L2gGGMResult
from .objectives import glasso_objective, l2g_objective

__all__ = [
    "graphical_lasso_cvxpy",
    "graphical_lasso_sklearn",
    "l2g_ggm_cvxpy",
    "glasso_objective",
    "l2g_objective",
    "glasso_certificate",
    "glasso_kkt_violation",
]


def _covariance_numpy(S: ArrayLike) -> np.ndarray:
    t, _ = check_covariance(S, "S", allow_batch=False)
    return t.detach().cpu().double().numpy()


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    return alpha


_CLARABEL_TIGHT = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10,
                   "tol_ktratio": 1e-8}


def _solve(problem: Any, solver: str | None) -> None:
    import cvxpy as cp

    if solver is None:
        # Clarabel (interior point) first, at tolerances 100x tighter than its defaults (1e-8):
        # a reference must be accurate in Θ, not only in the objective, and the KKT residual
        # with W = Θ⁻¹ amplifies what a 1e-8 gap leaves in Θ (~1e-3 on some well-posed S).
        # Then Clarabel at its defaults, then SCS, if a stricter attempt fails numerically.
        attempts = (("CLARABEL", _CLARABEL_TIGHT), ("CLARABEL", {}),
                    ("SCS", {"eps": 1e-9, "max_iters": 200000}))
        for candidate, kwargs in attempts:
            if candidate in cp.installed_solvers():
                try:
                    problem.solve(solver=candidate, **kwargs)
                except cp.error.SolverError:
                    continue
                if problem.status == "optimal" or (problem.status == "optimal_inaccurate"
                                                   and kwargs is not _CLARABEL_TIGHT):
                    return
        raise RuntimeError(f"cvxpy could not solve the reference problem (status {problem.status})")
    problem.solve(solver=solver)
    if problem.status not in ("optimal", "optimal_inaccurate"):
        raise RuntimeError(f"cvxpy solver {solver} ended with status {problem.status}")


def glasso_certificate(S: np.ndarray, precision: np.ndarray, alpha: float,
                       penalize_diagonal: bool = False) -> tuple[float, float, np.ndarray]:
    """(certified gap, relative gap, W̃) of a precision matrix (docs/algorithms.md §1 / docs §1).

    W̃ = S + clip(Θ⁻¹ − S, −α, α) (diagonal fixed) is dual feasible, and by weak duality
    f(Θ) − f* ≤ f(Θ) − (log det W̃ + p), the gap returned (≥ 0; +inf if W̃ is not PD)."""
    import torch

    S_t = torch.as_tensor(np.asarray(S, dtype=np.float64)).unsqueeze(0)
    theta = torch.as_tensor(np.asarray(precision, dtype=np.float64)).unsqueeze(0)
    a = torch.tensor([float(alpha)], dtype=torch.float64)
    mask = penalty_mask(S_t.shape[-1], penalize_diagonal, dtype=torch.float64, device=S_t.device)
    obj = primal_objective(S_t, theta, a, mask)
    W_dual, dual = best_dual_point(S_t, a, mask, [spd_inverse(symmetrize(theta))[0]])
    gap = certified_gap(obj, dual)
    return float(gap[0]), float(relative_gap(gap, obj)[0]), W_dual[0].numpy()


def glasso_kkt_violation(S: np.ndarray, precision: np.ndarray, alpha: float,
                         penalize_diagonal: bool = False, zero_tol: float = 1e-6) -> float:
    """Largest violation of the graphical-lasso KKT conditions at Θ, with W = Θ⁻¹.

    Off the diagonal: W_ij − S_ij = α sign(Θ_ij) where Θ_ij ≠ 0, |W_ij − S_ij| ≤ α where
    Θ_ij = 0 (entries below ``zero_tol`` times max|Θ| count as zero, since interior-point
    references never return exact zeros). On it: W_ii = S_ii (+ α when penalised).
    """
    W = np.linalg.inv(precision)
    R = W - S
    nonzero = np.abs(precision) > zero_tol * max(np.abs(precision).max(), 1.0)
    viol = np.where(nonzero, np.abs(R - alpha * np.sign(precision)),
                    np.maximum(np.abs(R) - alpha, 0.0))
    diag_target = alpha if penalize_diagonal else 0.0
    np.fill_diagonal(viol, np.abs(np.diag(R) - diag_target))
    return float(viol.max())


def graphical_lasso_cvxpy(
    S: ArrayLike,
    alpha: float,
    *,
    penalize_diagonal: bool = False,
    solver: str | None = None,
) -> GraphicalLassoResult:
    """Exact graphical lasso by cvxpy (Clarabel, else SCS).

    minimise_{Θ ≻ 0}  −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij|   (all i, j if penalised)
    """
    import cvxpy as cp

    S_np = _covariance_numpy(S)
    alpha = _check_alpha(alpha)
    p = S_np.shape[0]
    theta = cp.Variable((p, p), symmetric=True)
    penalty_entries = theta if penalize_diagonal else theta - cp.diag(cp.diag(theta))
    objective = -cp.log_det(theta) + cp.trace(S_np @ theta) + alpha * cp.sum(cp.abs(penalty_entries))
    problem = cp.Problem(cp.Minimize(objective))
    _solve(problem, solver)
    precision = symmetrize(theta.value)
    gap, rel_gap, dual_cov = glasso_certificate(S_np, precision, alpha, penalize_diagonal)
    return GraphicalLassoResult(
        precision=precision,
        covariance=np.linalg.inv(precision),
        objective=glasso_objective(S_np, precision, alpha, penalize_diagonal),
        dual_gap=gap,
        relative_gap=rel_gap,
        dual_covariance=dual_cov,
        kkt_violation=glasso_kkt_violation(S_np, precision, alpha, penalize_diagonal),
        n_iter=int(problem.solver_stats.num_iters or 0),
        converged=problem.status == "optimal",
        method=f"cvxpy-{problem.solver_stats.solver_name.lower()}",
        alpha=alpha,
    )


def graphical_lasso_sklearn(S: ArrayLike, alpha: float, **kw: Any) -> GraphicalLassoResult:
    """scikit-learn's coordinate-descent graphical lasso (off-diagonal penalty only).

    Extra keywords go to ``sklearn.covariance.graphical_lasso`` (``mode``, ``tol``,
    ``enet_tol``, ``max_iter``, ...). Its own failures (``FloatingPointError`` "Non SPD
    result") propagate unchanged so callers can see them.
    """
    import warnings

    from sklearn.covariance import graphical_lasso
    from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning

    S_np = _covariance_numpy(S)
    alpha = _check_alpha(alpha)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkConvergenceWarning)
        covariance, precision, n_iter = graphical_lasso(S_np, alpha, return_n_iter=True, **kw)
    converged = not any(issubclass(w.category, SkConvergenceWarning) for w in caught)
    gap, rel_gap, dual_cov = glasso_certificate(S_np, precision, alpha)
    return GraphicalLassoResult(
        precision=precision,
        covariance=covariance,
        objective=glasso_objective(S_np, precision, alpha),
        dual_gap=gap,
        relative_gap=rel_gap,
        dual_covariance=dual_cov,
        kkt_violation=glasso_kkt_violation(S_np, precision, alpha),
        n_iter=int(n_iter),
        converged=converged,
        method="sklearn",
        alpha=alpha,
    )


def l2g_ggm_cvxpy(
    S: ArrayLike,
    important: ArrayLike | None,
    *,
    tau: float,
    lam: float,
    solver: str | None = None,
) -> L2gGGMResult:
    """Exact solution of the convex (g = 1) coupled ℓ2,1 GGM by cvxpy.

    minimise_{Ω ≻ 0, Δ}  −log det Ω + tr(SΩ) + τ Σ_{j∈J} ‖Δ_{I,j}‖₂ + λ ‖Ω − Δ‖_F²

    ``important=None``: no important nodes, the groups are Δ_{−j,j} for every column j.
    """
    import cvxpy as cp

    S_np = _covariance_numpy(S)
    p = S_np.shape[0]
    if lam <= 0 or tau < 0:
        raise ValueError(f"need lam > 0 and tau >= 0, got lam={lam}, tau={tau}")
    omega = cp.Variable((p, p), symmetric=True)
    delta = cp.Variable((p, p))
    if important is None:
        idx = None
        off = np.ones((p, p)) - np.eye(p)
        group_penalty = cp.sum(cp.norm(cp.multiply(off, delta), 2, axis=0)) if p > 1 else 0.0
    else:
        idx = np.asarray(important, dtype=int).ravel()
        if idx.size == 0 or idx.min() < 0 or idx.max() >= p or np.unique(idx).size != idx.size:
            raise ValueError(f"important must hold distinct indices in [0, {p}), got {idx.tolist()}")
        rest = np.setdiff1d(np.arange(p), idx)
        group_penalty = (
            cp.sum(cp.norm(delta[idx][:, rest], 2, axis=0)) if rest.size else 0.0
        )
    objective = (
        -cp.log_det(omega)
        + cp.trace(S_np @ omega)
        + tau * group_penalty
        + lam * cp.sum_squares(omega - delta)
    )
    problem = cp.Problem(cp.Minimize(objective))
    _solve(problem, solver)
    om = symmetrize(omega.value)
    de = np.asarray(delta.value)
    value = l2g_objective(S_np, om, de, idx, tau=tau, lam=lam, g=1.0)
    return L2gGGMResult(
        precision=om,
        delta=de,
        objective=float(value),
        history=[float(value)],
        n_iter=int(problem.solver_stats.num_iters or 0),
        converged=problem.status == "optimal",
        important=np.zeros(0, dtype=int) if idx is None else idx,
        method=f"cvxpy-{problem.solver_stats.solver_name.lower()}",
    )
