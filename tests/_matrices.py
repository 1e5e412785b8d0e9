"""Covariances drawn for the solver tests (shared by several test modules)."""

from __future__ import annotations

import numpy as np


def drawn_covariance(seed: int, p: int, n: int, kind: str = "spd") -> np.ndarray:
    """S = XᵀX/n from n standard normal rows; "ill": columns scaled over 3 decades (variances
    over 6); "spd": + 0.05·I; any other kind (e.g. "rank_deficient" with n < p): as drawn."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    if kind == "ill":
        X = X * np.logspace(0, -3, p)[None, :]
    S = X.T @ X / n
    if kind == "spd":
        S = S + 0.05 * np.eye(p)
    return 0.5 * (S + S.T)
