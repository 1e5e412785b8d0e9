"""Solve a sparse Gaussian graphical model and verify it against cvxpy.

Draws samples from a Gaussian whose precision matrix is a sparse chain (tridiagonal), forms
the empirical covariance S and solves

1. the graphical lasso ``min_Θ −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij|`` with the fast torch
   solver :func:`graphopt.solvers.graphical_lasso`, re-derives its certified gap with NumPy
   alone from the returned ``dual_covariance`` (f(Θ) − log det W̃ − p ≥ f(Θ) − f*), checks
   ``kkt_violation``, and compares its objective with the exact cvxpy reference
   :func:`graphopt.solvers.reference.graphical_lasso_cvxpy`;
2. the ℓ2,g-coupled GGM :func:`graphopt.solvers.l2g_ggm` at g = 1 (the convex case) against
   :func:`graphopt.solvers.reference.l2g_ggm_cvxpy`.

The script exits non-zero if either solver disagrees with cvxpy beyond a small tolerance.

Run: ``python examples/solve_and_verify.py`` (``--small`` for the CI size).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from graphopt.solvers import graphical_lasso, l2g_ggm
from graphopt.solvers.reference import glasso_objective, graphical_lasso_cvxpy, l2g_ggm_cvxpy


def sample_covariance(p: int, n: int, seed: int) -> np.ndarray:
    """Empirical covariance of n draws from N(0, Θ⁻¹), Θ a tridiagonal (chain) precision."""
    theta = np.eye(p) + np.diag(np.full(p - 1, 0.4), 1) + np.diag(np.full(p - 1, 0.4), -1)
    rng = np.random.default_rng(seed)
    X = rng.multivariate_normal(np.zeros(p), np.linalg.inv(theta), size=n)
    return np.cov(X, rowvar=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="CI size (p = 10)")
    parser.add_argument("--p", type=int, default=None, help="number of variables")
    parser.add_argument("--alpha", type=float, default=0.1, help="ℓ1 weight")
    parser.add_argument("--rtol", type=float, default=1e-5, help="allowed relative difference")
    args = parser.parse_args(argv)
    p = args.p or (10 if args.small else 40)
    S = sample_covariance(p, n=5 * p, seed=0)
    failures: list[str] = []

    # --- 1. graphical lasso: torch ADMM vs cvxpy ------------------------------------------
    res = graphical_lasso(S, args.alpha, tol=1e-10)  # tol bounds the relative duality gap
    ref = graphical_lasso_cvxpy(S, args.alpha)
    # Both objectives evaluated by the same formula, so the difference is the solvers' alone.
    f, f_ref = glasso_objective(S, res.precision, args.alpha), ref.objective
    rel = abs(f - f_ref) / max(abs(f_ref), 1.0)
    nnz = int((np.abs(res.precision[~np.eye(p, dtype=bool)]) > 1e-6).sum()) // 2
    print(f"graphical_lasso  p={p} alpha={args.alpha}: objective={f:.8f} "
          f"certified gap={res.dual_gap:.2e} (relative {res.relative_gap:.1e}) "
          f"edges={nnz} iters={res.n_iter} blocks={res.block_sizes}")
    # The certificate, checked without trusting graphopt: W̃ is dual feasible and
    # f(Θ) − (log det W̃ + p) bounds f(Θ) − f*; it must match the reported gap.
    W = res.dual_covariance
    feasible = (np.array_equal(W, W.T) and np.array_equal(np.diag(W), np.diag(S))
                and np.all(np.abs(W - S) <= args.alpha * (1 + 1e-12)))
    # Positive definite by its eigenvalues (slogdet's sign is +1 for two negative ones too).
    pd = bool(np.all(np.linalg.eigvalsh(W) > 0))
    gap = f - np.linalg.slogdet(W)[1] - p
    print(f"  recomputed with NumPy: gap={gap:.2e}, W̃ feasible={feasible}, W̃ PD={pd}; "
          f"f - f_cvxpy={f - ref.objective:.2e}")
    if not (feasible and pd and abs(gap - res.dual_gap) <= 1e-10 * max(abs(f), 1.0)):
        failures.append("the certified gap does not recompute from dual_covariance")
    if f - ref.objective > gap + 1e-9 * max(abs(f), 1.0):
        failures.append("cvxpy's optimum lies outside the certified gap")
    print(f"  kkt_violation={res.kkt_violation:.2e} (cvxpy: {ref.kkt_violation:.2e})")
    print(f"  cvxpy ({ref.method}): objective={f_ref:.8f}  relative difference={rel:.2e}")
    # cvxpy's interior-point solution is itself only accurate to ~1e-7: allow rtol, and ask
    # that ours is at least as good (f ≤ f_ref up to the tolerance).
    if not res.converged or rel > args.rtol or f > f_ref + args.rtol * max(abs(f_ref), 1.0):
        failures.append(f"graphical_lasso differs from cvxpy (rel {rel:.2e})")
    if res.kkt_violation > 1e-4:
        failures.append(f"graphical_lasso KKT violation {res.kkt_violation:.2e}")

    # --- 2. coupled ℓ2,1 GGM (g = 1 is convex, so cvxpy solves it exactly) ----------------
    important, tau, lam = [0, 1], 0.5, 5.0
    l2g = l2g_ggm(S, important, tau=tau, lam=lam, g=1.0)  # default tol: stationarity ≤ 1e-6
    l2g_ref = l2g_ggm_cvxpy(S, important, tau=tau, lam=lam)
    rel2 = abs(l2g.objective - l2g_ref.objective) / max(abs(l2g_ref.objective), 1.0)
    omega_err = np.linalg.norm(l2g.precision - l2g_ref.precision) / np.linalg.norm(l2g_ref.precision)
    print(f"l2g_ggm g=1 tau={tau} lam={lam}: objective={l2g.objective:.8f} "
          f"cvxpy={l2g_ref.objective:.8f} relative difference={rel2:.2e} "
          f"relative Omega error={omega_err:.2e}")
    if not l2g.converged or rel2 > args.rtol or omega_err > 1e-3:
        failures.append(f"l2g_ggm differs from cvxpy (rel {rel2:.2e}, Omega {omega_err:.2e})")

    for msg in failures:
        print("FAIL:", msg, file=sys.stderr)
    if failures:
        return 1
    print("OK: graphopt agrees with cvxpy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
