"""The references agree with each other and their certificates mean what they say."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.solvers.objectives import glasso_objective, l2g_objective
from graphopt.solvers.reference import (
    glasso_certificate,
    graphical_lasso_cvxpy,
    graphical_lasso_sklearn,
    l2g_ggm_cvxpy,
)


def _sample_cov(seed: int, p: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, p))
    return np.cov(X, rowvar=False).reshape(p, p)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 8), alpha=st.floats(0.02, 0.5))
def test_cvxpy_and_sklearn_agree_on_well_conditioned(seed, p, alpha):
    S = _sample_cov(seed, p, 4 * p)
    exact = graphical_lasso_cvxpy(S, alpha)
    cd = graphical_lasso_sklearn(S, alpha, tol=1e-10, enet_tol=1e-10, max_iter=2000)
    assert abs(exact.objective - cd.objective) <= 1e-6 * max(1.0, abs(cd.objective))
    assert 0 <= cd.dual_gap < 1e-6
    # Interior-point references stop at ~1e-8 duality gap, which leaves ~1e-4 in W − S.
    assert exact.kkt_violation < 1e-3


def test_objective_is_inf_outside_domain():
    S = np.eye(3)
    assert glasso_objective(S, -np.eye(3), 0.1) == np.inf


def test_objective_matches_formula():
    rng = np.random.default_rng(1)
    S = _sample_cov(1, 4, 20)
    A = rng.standard_normal((4, 4))
    theta = A @ A.T + 4 * np.eye(4)
    alpha = 0.3
    offdiag = np.abs(theta).sum() - np.abs(np.diag(theta)).sum()
    expected = -np.linalg.slogdet(theta)[1] + np.trace(S @ theta) + alpha * offdiag
    assert glasso_objective(S, theta, alpha) == pytest.approx(expected, rel=1e-12)
    # The certificate of an arbitrary (non-optimal) Θ: W̃ is dual feasible and the gap is
    # f(Θ) − log det W̃ − p, recomputed here with NumPy alone.
    gap, rel_gap, W = glasso_certificate(S, theta, alpha)
    assert np.array_equal(W, W.T) and np.array_equal(np.diag(W), np.diag(S))
    assert np.all(np.abs(W - S) <= alpha + 1e-15)
    sign, logdet_w = np.linalg.slogdet(W)
    assert sign > 0
    assert gap == pytest.approx(expected - logdet_w - 4, rel=1e-10)
    assert gap > 0 and rel_gap == pytest.approx(gap / max(abs(expected), 1.0))


def test_l2g_reference_beats_perturbations():
    S = _sample_cov(3, 6, 30) + 0.05 * np.eye(6)
    important = [0, 2]
    res = l2g_ggm_cvxpy(S, important, tau=0.5, lam=2.0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        E = 1e-3 * rng.standard_normal((6, 6))
        pert = l2g_objective(S, res.precision + (E + E.T) / 2, res.delta + E, important,
                             tau=0.5, lam=2.0, g=1.0)
        assert pert >= res.objective - 1e-7


@pytest.mark.parametrize("bad", [np.ones((2, 3)), np.array([[1.0, 2.0], [0.0, 1.0]]),
                                 np.array([[np.nan, 0.0], [0.0, 1.0]]),
                                 np.array([[1.0, 0.0], [0.0, -1.0]])])
def test_reference_rejects_bad_covariance(bad):
    with pytest.raises(ValueError, match="S"):
        graphical_lasso_cvxpy(bad, 0.1)


def test_reference_rejects_negative_alpha():
    with pytest.raises(ValueError, match="alpha"):
        graphical_lasso_cvxpy(np.eye(2), -1.0)
