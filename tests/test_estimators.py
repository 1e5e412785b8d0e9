"""The scikit-learn estimators: API conformance (check_estimator) and agreement with sklearn."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sklearn.covariance import GraphicalLasso as SkGraphicalLasso
from sklearn.covariance import empirical_covariance, log_likelihood
from sklearn.exceptions import ConvergenceWarning as SkConvergenceWarning
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.utils.estimator_checks import parametrize_with_checks

from graphopt.solvers.estimators import GraphicalLasso, GraphicalLassoCV
from graphopt.solvers.objectives import glasso_objective
from graphopt.solvers.reference import graphical_lasso_cvxpy


@parametrize_with_checks([GraphicalLasso(), GraphicalLassoCV(alphas=3, n_refinements=1)])
def test_sklearn_compatible(estimator, check):
    check(estimator)


def _rel_frobenius(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _data(seed: int, n: int, p: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((p, p)) * (rng.random((p, p)) < 0.3)
    return rng.standard_normal((n, p)) @ (np.eye(p) + 0.5 * A) + rng.standard_normal(p)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 8), alpha=st.floats(0.05, 0.5),
       method=st.sampled_from(["admm", "bcd"]), centered=st.booleans())
@example(seed=0, p=4, alpha=0.5, method="admm", centered=False)  # flat objective (CI regression)
def test_fit_matches_sklearn_and_cvxpy(seed, p, alpha, method, centered):
    X = _data(seed, 4 * p, p)
    ours = GraphicalLasso(alpha=alpha, method=method, tol=1e-10, assume_centered=centered).fit(X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SkConvergenceWarning)
        ref = SkGraphicalLasso(alpha=alpha, tol=1e-10, enet_tol=1e-10, max_iter=2000,
                               assume_centered=centered).fit(X)
    sk_converged = not any(issubclass(w.category, SkConvergenceWarning) for w in caught)
    S = empirical_covariance(X, assume_centered=centered)
    exact = graphical_lasso_cvxpy(S, alpha)
    np.testing.assert_allclose(ours.location_, ref.location_)
    # n_iter_ is 0 when screening splits the problem into size-1 blocks (closed form).
    assert ours.converged_
    assert ours.n_iter_ >= 1 or max(ours.block_sizes_) == 1
    if sk_converged:  # scikit-learn at 1e-10 sometimes stalls; then cvxpy alone is the reference
        # docs/algorithms.md §5: precisions equal to ~1e-4 relative in Frobenius norm. The objective
        # is flat near the optimum (a 1e-10 objective gap moves entries by ~1e-5), so an
        # entry-wise rtol would test the stopping rule, not the answer.
        assert _rel_frobenius(ours.precision_, ref.precision_) <= 1e-4
        # scikit-learn's covariance_ is its coordinate-descent W, only ~enet_tol close to the
        # inverse of its precision_; ours is exactly Θ⁻¹, so compare with the inverse.
        assert _rel_frobenius(ours.covariance_, np.linalg.inv(ref.precision_)) <= 1e-4
    ours_obj = glasso_objective(S, ours.precision_, alpha)
    assert abs(ours_obj - exact.objective) <= 1e-6 * max(abs(exact.objective), 1.0)
    X_test = _data(seed + 1, 20, p)
    # Held-out log-likelihood is first order in Θ, which agrees to ~1e-5 here.
    if sk_converged:
        assert ours.score(X_test) == pytest.approx(ref.score(X_test), rel=1e-4)
    test_cov = empirical_covariance(X_test - ours.location_, assume_centered=True)
    assert ours.score(X_test) == pytest.approx(log_likelihood(test_cov, ours.precision_))


def test_score_is_gaussian_log_likelihood():
    X = _data(0, 40, 5)
    est = GraphicalLasso(alpha=0.1).fit(X)
    X_test = _data(1, 30, 5)
    test_cov = empirical_covariance(X_test - est.location_, assume_centered=True)
    assert est.score(X_test) == pytest.approx(log_likelihood(test_cov, est.precision_), rel=1e-12)


def test_grid_search_selects_like_cv_estimator():
    X = _data(3, 60, 6)
    alphas = [0.02, 0.05, 0.1, 0.3]
    cv = KFold(3)
    grid = GridSearchCV(GraphicalLasso(tol=1e-8), {"alpha": alphas}, cv=cv).fit(X)
    est = GraphicalLassoCV(alphas=alphas, cv=cv, tol=1e-8).fit(X)
    # Same folds, same held-out log-likelihood: both pick the same alpha.
    assert est.alpha_ == pytest.approx(grid.best_params_["alpha"])
    order = np.argsort(alphas)[::-1]
    np.testing.assert_allclose(est.cv_results_["mean_test_score"],
                               grid.cv_results_["mean_test_score"][order], rtol=1e-4)


def test_cv_refinement_and_results():
    X = _data(5, 80, 7)
    est = GraphicalLassoCV(alphas=4, n_refinements=2, cv=3).fit(X)
    res = est.cv_results_
    n = res["alphas"].size
    assert n == 4 + 2 * 4  # the grid plus two refinements of 4 values each
    assert np.all(np.diff(res["alphas"]) <= 0)
    for key in ("mean_test_score", "std_test_score", "split0_test_score", "split2_test_score"):
        assert res[key].shape == (n,)
    assert est.alpha_ == pytest.approx(res["alphas"][np.argmax(res["mean_test_score"])])
    refit = GraphicalLasso(alpha=est.alpha_).fit(X)
    np.testing.assert_allclose(est.precision_, refit.precision_, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("params, match", [
    ({"alpha": -1.0}, "alpha"), ({"method": "lars"}, "method"), ({"tol": 0}, "tol"),
    ({"max_iter": 0}, "max_iter"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        GraphicalLasso(**params).fit(_data(0, 20, 3))


def test_bad_cv_parameters():
    with pytest.raises(ValueError, match="alphas"):
        GraphicalLassoCV(alphas=1).fit(_data(0, 20, 3))
    with pytest.raises(ValueError, match="alphas"):
        GraphicalLassoCV(alphas=[0.1, -0.2]).fit(_data(0, 20, 3))
    with pytest.raises(ValueError, match="n_refinements"):
        GraphicalLassoCV(n_refinements=-1).fit(_data(0, 20, 3))
