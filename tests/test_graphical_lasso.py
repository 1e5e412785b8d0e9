"""graphopt's fast graphical lasso (ADMM, BCD) against cvxpy and scikit-learn (docs/algorithms.md §5).

Tolerances: float64 at tight tol must match the exact optimum to 1e-6 relative objective and
the precision matrix to ~1e-4 relative Frobenius (against scikit-learn at a tight tolerance;
cvxpy's interior point itself is only ~1e-4 accurate in Θ, so against cvxpy we compare
objectives and bound Θ at 1e-3). float32 carries ~7 digits: eigendecompositions lose a factor
~p·cond of that, so float32 results are held to 1e-4 relative objective.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graphopt.exceptions import ConvergenceWarning
from graphopt.solvers._result import GraphicalLassoResult
from graphopt.solvers.graphical_lasso import graphical_lasso, graphical_lasso_path
from graphopt.solvers.objectives import glasso_objective
from graphopt.solvers.reference import (
    glasso_kkt_violation,
    graphical_lasso_cvxpy,
    graphical_lasso_sklearn,
)

#: "bcd" runs compiled on the CPU; "bcd-torch" is the same method through its torch path.
METHODS = ["admm", "bcd", pytest.param("bcd", id="bcd-torch", marks=pytest.mark.bcd_torch)]


def _correlation(C: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.diag(C))
    R = C / np.outer(d, d)
    return 0.5 * (R + R.T)


def make_covariance(kind: str, seed: int, p: int) -> np.ndarray:
    """Test matrices of docs/algorithms.md §5: random SPD, rank-deficient, ill-conditioned, blocks."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        X = rng.standard_normal((3 * p + 2, p))
        return np.cov(X, rowvar=False).reshape(p, p)
    if kind == "rank_deficient":  # fewer samples than variables
        X = rng.standard_normal((max(2, p // 2), p))
        X -= X.mean(axis=0)
        return (X.T @ X / X.shape[0]).reshape(p, p) + 0.0
    if kind == "ill_conditioned":  # correlation matrix with condition number ~1e6
        Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
        C = (Q * np.logspace(0, -6, p)) @ Q.T
        return _correlation(C)
    if kind == "block_diagonal":
        S = np.zeros((p, p))
        start = 0
        while start < p:
            size = min(int(rng.integers(1, 4)), p - start)
            X = rng.standard_normal((3 * size + 2, size))
            S[start:start + size, start:start + size] = np.cov(X, rowvar=False).reshape(size, size)
            start += size
        return S
    raise AssertionError(kind)


KINDS = ["random", "rank_deficient", "ill_conditioned", "block_diagonal"]


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1.0)


def _fro(A: np.ndarray, B: np.ndarray) -> float:
    return float(np.linalg.norm(A - B) / np.linalg.norm(B))


def _assert_valid_precision(P: np.ndarray) -> None:
    assert np.array_equal(P, P.T), "precision must be exactly symmetric"
    np.linalg.cholesky(P)  # raises if not positive definite


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000), p=st.integers(2, 9),
       alpha=st.floats(0.02, 0.4))
# A near-constant variable (variance ~1e-5 next to ~0.1): unscaled ADMM stalled here.
@example(kind="rank_deficient", seed=8891, p=5, alpha=0.25)
@example(kind="rank_deficient", seed=4, p=4, alpha=0.18925366869768556)
def test_matches_cvxpy(method, kind, seed, p, alpha):
    S = make_covariance(kind, seed, p)
    alpha = alpha * float(np.mean(np.diag(S)))
    ref = graphical_lasso_cvxpy(S, alpha)
    res = graphical_lasso(S, alpha, method=method, tol=1e-9)
    assert res.converged
    _assert_valid_precision(res.precision)
    # cvxpy stops at a ~1e-8 gap, so ours may be (slightly) lower but never meaningfully higher.
    assert _rel(res.objective, ref.objective) <= 1e-6
    assert res.objective <= ref.objective + 1e-6 * max(abs(ref.objective), 1.0)
    # The certificate is honest: the reference optimum lies within the certified gap.
    assert res.objective - ref.objective <= res.dual_gap + 1e-9
    assert res.objective == pytest.approx(glasso_objective(S, res.precision, alpha), rel=1e-12)
    # Θ is compared only where cvxpy's own Θ is near-optimal: at seed 4 below, cvxpy stops
    # 1.4e-6 (relative 2e-7) above the optimum that ADMM, BCD, QUIC and scikit-learn all
    # reach, and its Θ is then 1.1e-3 away from theirs (they agree with each other to 1e-5).
    cvxpy_slack = ref.objective - res.objective
    if kind != "ill_conditioned" and cvxpy_slack <= 1e-8 * max(abs(ref.objective), 1.0):
        assert _fro(res.precision, ref.precision) <= 1e-3


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(["random", "rank_deficient", "block_diagonal"]),
       seed=st.integers(0, 10_000), p=st.integers(2, 10), alpha=st.floats(0.05, 0.4))
@example(kind="rank_deficient", seed=10000, p=5, alpha=0.25)
def test_matches_sklearn_tight(method, kind, seed, p, alpha):
    S = make_covariance(kind, seed, p)
    alpha = alpha * float(np.mean(np.diag(S)))
    try:
        ref = graphical_lasso_sklearn(S, alpha, tol=1e-12, enet_tol=1e-12, max_iter=5000)
    except FloatingPointError:  # scikit-learn's "Non SPD result": covered by the cvxpy test
        return
    res = graphical_lasso(S, alpha, method=method, tol=1e-10)
    assert res.converged
    assert _rel(res.objective, ref.objective) <= 1e-8
    assert _fro(res.precision, ref.precision) <= 1e-4
    # Same sparsity pattern away from the threshold.
    big = np.abs(ref.precision) > 1e-5 * np.abs(ref.precision).max()
    assert np.all(res.precision[big] != 0)
    # KKT residuals scale like the square root of the gap (~1e-10 here).
    assert res.kkt_violation <= 1e-4
    assert glasso_kkt_violation(S, res.precision, alpha) <= 1e-4


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", [0, 1])
def test_ill_conditioned_where_sklearn_fails(method, seed):
    """Condition-1e6 correlation matrices: scikit-learn raises "Non SPD result", cvxpy is the
    reference, and graphopt converges with a certificate."""
    S = make_covariance("ill_conditioned", seed, 8)
    alpha = 1e-3
    with pytest.raises(FloatingPointError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphical_lasso_sklearn(S, alpha)
    ref = graphical_lasso_cvxpy(S, alpha)
    res = graphical_lasso(S, alpha, method=method, tol=1e-9)
    assert res.converged
    _assert_valid_precision(res.precision)
    assert _rel(res.objective, ref.objective) <= 1e-6


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=8, deadline=None)
@given(s11=st.floats(0.05, 20.0), alpha=st.floats(0.0, 2.0), pen=st.booleans())
def test_p_equals_one(method, s11, alpha, pen):
    res = graphical_lasso(np.array([[s11]]), alpha, method=method, penalize_diagonal=pen, tol=1e-10)
    expected = 1.0 / (s11 + (alpha if pen else 0.0))
    assert res.converged
    assert res.precision.shape == (1, 1)
    assert res.precision[0, 0] == pytest.approx(expected, rel=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_penalize_diagonal_matches_cvxpy(method):
    S = make_covariance("rank_deficient", 3, 7)
    ref = graphical_lasso_cvxpy(S, 0.1, penalize_diagonal=True)
    res = graphical_lasso(S, 0.1, method=method, penalize_diagonal=True, tol=1e-9)
    assert res.converged
    assert _rel(res.objective, ref.objective) <= 1e-6
    assert _fro(res.precision, ref.precision) <= 1e-3


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 8), B=st.integers(2, 4))
@example(seed=9630, p=5, B=4)  # rank-1 S with a small α: BCD's start must be positive definite
def test_batch_equals_loop(method, seed, p, B):
    kinds = [KINDS[(seed + b) % len(KINDS)] for b in range(B)]
    S = np.stack([make_covariance(k, seed + b, p) for b, k in enumerate(kinds)])
    alphas = np.linspace(0.05, 0.3, B) * S.diagonal(axis1=1, axis2=2).mean(axis=1)
    batch = graphical_lasso(S, alphas, method=method, tol=1e-10)
    assert batch.precision.shape == (B, p, p)
    assert batch.objective.shape == (B,) and batch.converged.shape == (B,)
    assert batch.converged.all()
    for b in range(B):
        single = graphical_lasso(S[b], alphas[b], method=method, tol=1e-10)
        _assert_valid_precision(batch.precision[b])
        assert _rel(batch.objective[b], single.objective) <= 1e-9
        assert _fro(batch.precision[b], single.precision) <= 1e-4
    # A scalar alpha applies to every problem.
    same = graphical_lasso(S, float(alphas[0]), method=method, tol=1e-8)
    assert same.converged.all()
    np.testing.assert_allclose(same.alpha, alphas[0])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_in_torch_out(method, dtype):
    S64 = make_covariance("random", 5, 8)
    S = torch.tensor(S64, dtype=dtype)
    ref = graphical_lasso_cvxpy(S64, 0.1)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    res = graphical_lasso(S, 0.1, method=method, tol=tol)
    assert isinstance(res.precision, torch.Tensor) and isinstance(res.covariance, torch.Tensor)
    assert res.precision.dtype == dtype and res.precision.device == S.device
    assert res.covariance.dtype == dtype
    assert res.converged
    assert torch.equal(res.precision, res.precision.T)
    bound = 1e-6 if dtype == torch.float64 else 1e-4
    assert _rel(glasso_objective(S64, res.precision.double().numpy(), 0.1), ref.objective) <= bound
    batch = graphical_lasso(torch.stack([S, S]), torch.tensor([0.1, 0.2], dtype=dtype),
                            method=method, tol=tol)
    assert isinstance(batch.objective, torch.Tensor) and batch.objective.shape == (2,)
    assert batch.precision.dtype == dtype


def test_numpy_float32_in_numpy_out():
    S = make_covariance("random", 2, 6).astype(np.float32)
    res = graphical_lasso(S, 0.1, tol=1e-5)
    assert isinstance(res.precision, np.ndarray) and res.precision.dtype == np.float32
    assert isinstance(res.objective, float) and isinstance(res.converged, bool)


@pytest.mark.parametrize("method", METHODS)
def test_path_warm_start_equals_cold(method):
    S = make_covariance("rank_deficient", 11, 9)
    alphas = [0.05, 0.3, 0.1, 0.2]  # any order; solved from the largest down
    path = graphical_lasso_path(S, alphas, method=method, tol=1e-10)
    assert [r.alpha for r in path] == pytest.approx(alphas)
    for a, r in zip(alphas, path):
        cold = graphical_lasso(S, a, method=method, tol=1e-10)
        assert r.converged
        assert _rel(r.objective, cold.objective) <= 1e-9
        assert _fro(r.precision, cold.precision) <= 1e-4


@pytest.mark.parametrize("method", METHODS)
def test_warm_start_from_solution(method):
    S = make_covariance("random", 4, 10)
    cold = graphical_lasso(S, 0.1, method=method, tol=1e-9)
    warm = graphical_lasso(S, 0.1, method=method, tol=1e-9, init=cold)
    assert warm.converged and warm.n_iter <= cold.n_iter
    assert _rel(warm.objective, cold.objective) <= 1e-9
    warm2 = graphical_lasso(S, 0.1, method=method, tol=1e-9, init=cold.precision)
    assert warm2.n_iter <= cold.n_iter


@pytest.mark.parametrize("method", METHODS)
def test_max_iter_one_warns_and_reports(method):
    S = make_covariance("ill_conditioned", 0, 8)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = graphical_lasso(S, 1e-3, method=method, max_iter=1, tol=1e-12)
    assert res.converged is False
    assert res.n_iter == 1
    _assert_valid_precision(res.precision)  # still a valid (if suboptimal) estimate
    assert res.dual_gap > 0 and res.relative_gap > 1e-12


def test_result_fields_and_history():
    S = make_covariance("random", 8, 6)
    res = graphical_lasso(S, 0.1)
    # method="auto" on a CPU array runs the compiled BCD, and the result says so.
    assert isinstance(res, GraphicalLassoResult) and res.method == "bcd"
    assert res.covariance == pytest.approx(np.linalg.inv(res.precision), rel=1e-8, abs=1e-10)
    assert len(res.history["objective"]) == len(res.history["gap_bound"]) >= 1
    assert res.dual_covariance.dtype == np.float64 and res.dual_covariance.shape == (6, 6)
    assert 0 <= res.dual_gap <= 1e-6 * max(abs(res.objective), 1.0)
    assert res.relative_gap == pytest.approx(res.dual_gap / max(abs(res.objective), 1.0))


@pytest.mark.parametrize(
    "S, alpha, kwargs, match",
    [
        (np.ones((2, 3)), 0.1, {}, "S"),
        (np.array([[1.0, 0.5], [0.2, 1.0]]), 0.1, {}, "S must be symmetric"),
        (np.array([[np.nan, 0.0], [0.0, 1.0]]), 0.1, {}, "S contains"),
        (np.array([[np.inf, 0.0], [0.0, 1.0]]), 0.1, {}, "S contains"),
        (np.array([[1.0, 0.0], [0.0, -1.0]]), 0.1, {}, "positive semidefinite"),
        (np.eye(2), -0.1, {}, "alpha"),
        (np.eye(2), np.nan, {}, "alpha"),
        (np.stack([np.eye(2)] * 3), [0.1, 0.2], {}, "alpha"),
        (np.eye(2), [0.1, 0.2], {}, "alpha"),
        (np.eye(2), 0.1, {"method": "newton"}, "method"),
        (np.eye(2), 0.1, {"tol": 0.0}, "tol"),
        (np.eye(2), 0.1, {"tol": -1.0}, "tol"),
        (np.eye(2), 0.1, {"max_iter": 0}, "max_iter"),
        (np.eye(2), 0.1, {"max_iter": 2.5}, "max_iter"),
        (np.eye(2), 0.1, {"init": np.eye(3)}, "init"),
        (np.eye(2), 0.1, {"init": -np.eye(2)}, "init"),
        (np.diag([1.0, 0.0]), 0.1, {}, "zero diagonal"),
        (np.ones((2, 2)), 0.0, {}, "alpha = 0"),
    ],
)
def test_bad_input(S, alpha, kwargs, match):
    with pytest.raises(ValueError, match=match):
        graphical_lasso(S, alpha, **kwargs)


def test_non_numeric_input_is_type_error():
    with pytest.raises(TypeError, match="S"):
        graphical_lasso(np.array([["a", "b"], ["c", "d"]]), 0.1)


def test_auto_picks_by_device_and_rejects_unknown_names():
    from graphopt.solvers.graphical_lasso import AUTO_METHOD, resolve_method

    S = torch.eye(3, dtype=torch.float64)
    assert resolve_method("auto", S) == AUTO_METHOD["cpu"] == "bcd"
    assert resolve_method("auto", S.to("meta")) == "admm"  # a device without an entry
    assert resolve_method("quic", S) == "quic"
    with pytest.raises(ValueError, match="method must be 'auto' or one of"):
        resolve_method("glasso", S)
    auto = graphical_lasso(make_covariance("random", 1, 6), 0.1, tol=1e-10)
    bcd = graphical_lasso(make_covariance("random", 1, 6), 0.1, method="bcd", tol=1e-10)
    np.testing.assert_array_equal(auto.precision, bcd.precision)


@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(["random", "block_diagonal", "rank_deficient"]),
       seed=st.integers(0, 10_000), p=st.integers(20, 50), alpha=st.floats(0.02, 0.2))
def test_compiled_bcd_matches_sklearn_at_larger_p(kind, seed, p, alpha):
    """Unscreened problems big enough for the active sets and the support-Newton step of the
    compiled column lassos; the torch path of the same method agrees."""
    S = make_covariance(kind, seed, p)
    alpha = alpha * float(np.mean(np.diag(S)))
    try:
        ref = graphical_lasso_sklearn(S, alpha, tol=1e-12, enet_tol=1e-12, max_iter=5000)
    except FloatingPointError:
        return
    res = graphical_lasso(S, alpha, method="bcd", tol=1e-10, screen=False)
    assert res.converged
    _assert_valid_precision(res.precision)
    assert _rel(res.objective, ref.objective) <= 1e-8
    assert res.objective - ref.objective <= res.dual_gap + 1e-9
    assert _fro(res.precision, ref.precision) <= 1e-3
