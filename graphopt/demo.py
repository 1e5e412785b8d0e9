"""``graphopt demo``: estimate a sparse precision matrix and verify it against cvxpy."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Draw data from a sparse GGM, solve the graphical lasso, print a verified result."""
    from .solvers.reference import graphical_lasso_cvxpy, graphical_lasso_sklearn

    parser = argparse.ArgumentParser(prog="graphopt demo", description=__doc__)
    parser.add_argument("--p", type=int, default=30, help="number of variables")
    parser.add_argument("--n", type=int, default=120, help="number of samples")
    parser.add_argument("--alpha", type=float, default=0.1, help="l1 weight")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    X = rng.standard_normal((args.n, args.p))
    S = np.cov(X, rowvar=False)
    rows = []
    for name, solve in (
        ("cvxpy (exact)", lambda: graphical_lasso_cvxpy(S, args.alpha)),
        ("scikit-learn", lambda: graphical_lasso_sklearn(S, args.alpha, tol=1e-8, enet_tol=1e-8)),
    ):
        start = time.perf_counter()
        result = solve()
        rows.append((name, result, time.perf_counter() - start))
    best = min(r.objective for _, r, _ in rows)
    print(f"graphical lasso, p={args.p}, n={args.n}, alpha={args.alpha}")
    print(f"{'solver':<16}{'objective':>14}{'rel. gap to best':>18}{'cert. gap':>12}{'KKT':>10}{'time s':>9}")
    for name, r, sec in rows:
        rel = (r.objective - best) / abs(best)
        print(f"{name:<16}{r.objective:>14.8f}{rel:>18.2e}{r.relative_gap:>12.2e}{r.kkt_violation:>10.1e}{sec:>9.3f}")
    return 0
