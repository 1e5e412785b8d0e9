"""method="quic" (proximal Newton, graphopt/solvers/_quic.py) against cvxpy and scikit-learn on
drawn matrices: random SPD, rank-deficient, ill-conditioned, block, p = 1, batches."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from _matrices import drawn_covariance
from graphopt.exceptions import ConvergenceWarning
from graphopt.solvers._quic import quic
from graphopt.solvers.graphical_lasso import graphical_lasso
from graphopt.solvers.objectives import glasso_objective
from graphopt.solvers.reference import (
    glasso_kkt_violation,
    graphical_lasso_cvxpy,
    graphical_lasso_sklearn,
)

KINDS = ["spd", "rank_deficient", "ill_conditioned", "blocks"]


def covariance(kind: str, seed: int, p: int) -> np.ndarray:
    """A drawn S of the given kind (condition ~1e6 correlation for "ill_conditioned")."""
    rng = np.random.default_rng(seed)
    if kind == "spd":
        return drawn_covariance(seed, p, 3 * p + 2, "spd")
    if kind == "rank_deficient":
        return drawn_covariance(seed, p, max(1, p // 2), "rank_deficient")
    if kind == "ill_conditioned":
        Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
        C = (Q * np.logspace(0, -6, p)) @ Q.T
        d = np.sqrt(np.diag(C))
        R = C / np.outer(d, d)
        return 0.5 * (R + R.T)
    if kind == "blocks":
        S = np.zeros((p, p))
        start = 0
        while start < p:
            k = min(int(rng.integers(1, 5)), p - start)
            S[start:start + k, start:start + k] = drawn_covariance(seed + start, k, 3 * k + 2)
            start += k
        return S
    raise AssertionError(kind)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1.0)


def _assert_valid(res, tol: float) -> None:
    P = res.precision
    assert np.array_equal(P, P.T)
    np.linalg.cholesky(P)
    assert 0.0 <= res.dual_gap <= tol * max(abs(res.objective), 1.0)


@settings(max_examples=14, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000), p=st.integers(2, 12),
       alpha=st.floats(0.02, 0.4), pen=st.booleans())
@example(kind="rank_deficient", seed=8891, p=5, alpha=0.25, pen=False)
@example(kind="ill_conditioned", seed=3, p=12, alpha=0.02, pen=False)
def test_matches_cvxpy(kind, seed, p, alpha, pen):
    S = covariance(kind, seed, p)
    alpha = alpha * float(np.mean(np.diag(S)))
    tol = 1e-9
    ref = graphical_lasso_cvxpy(S, alpha, penalize_diagonal=pen)
    res = graphical_lasso(S, alpha, method="quic", tol=tol, penalize_diagonal=pen)
    assert res.converged
    _assert_valid(res, tol)
    assert _rel(res.objective, ref.objective) <= 1e-6
    # The certificate is honest: the reference optimum lies within the certified gap.
    assert res.objective - ref.objective <= res.dual_gap + 1e-8 * max(abs(ref.objective), 1.0)
    assert res.objective == pytest.approx(glasso_objective(S, res.precision, alpha, pen), rel=1e-12)


@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(["spd", "rank_deficient", "blocks"]), seed=st.integers(0, 10_000),
       p=st.integers(2, 30), alpha=st.floats(0.05, 0.4), screen=st.booleans())
def test_matches_sklearn_tight(kind, seed, p, alpha, screen):
    S = covariance(kind, seed, p)
    alpha = alpha * float(np.mean(np.diag(S)))
    try:
        ref = graphical_lasso_sklearn(S, alpha, tol=1e-12, enet_tol=1e-12, max_iter=5000)
    except FloatingPointError:  # scikit-learn's "Non SPD result": the cvxpy test covers it
        return
    if not ref.converged:
        return
    tol = 1e-10
    res = graphical_lasso(S, alpha, method="quic", tol=tol, screen=screen)
    assert res.converged
    _assert_valid(res, tol)
    assert _rel(res.objective, ref.objective) <= 1e-8
    # Same support away from the threshold: entries clearly nonzero in one are nonzero in the
    # other, and QUIC's exact zeros are zeros of the reference up to its tolerance.
    scale = np.abs(ref.precision).max()
    big = np.abs(ref.precision) > 1e-4 * scale
    assert np.all(res.precision[big] != 0)
    assert np.all(np.abs(ref.precision[res.precision == 0]) <= 1e-4 * scale)
    assert glasso_kkt_violation(S, res.precision, alpha) <= 1e-4


def test_larger_problem_matches_sklearn_and_admm():
    S = drawn_covariance(7, 60, 120, "spd")
    alpha = float(np.quantile(np.abs(S[~np.eye(60, dtype=bool)]), 0.8))
    ref = graphical_lasso_sklearn(S, alpha, tol=1e-10, enet_tol=1e-10, max_iter=2000)
    res = graphical_lasso(S, alpha, method="quic", tol=1e-9)
    admm = graphical_lasso(S, alpha, method="admm", tol=1e-9)
    assert res.converged and res.n_iter < 30
    assert _rel(res.objective, ref.objective) <= 1e-8
    assert _rel(res.objective, admm.objective) <= 1e-8


@settings(max_examples=8, deadline=None)
@given(s11=st.floats(0.05, 20.0), alpha=st.floats(0.0, 2.0), pen=st.booleans())
def test_p_equals_one(s11, alpha, pen):
    expected = 1.0 / (s11 + (alpha if pen else 0.0))
    for screen in (True, False):  # screening solves it in closed form; unscreened QUIC itself
        res = graphical_lasso(np.array([[s11]]), alpha, method="quic", penalize_diagonal=pen,
                              tol=1e-10, screen=screen)
        assert res.converged
        assert res.precision[0, 0] == pytest.approx(expected, rel=1e-8)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 8), B=st.integers(2, 4))
def test_batch_equals_loop(seed, p, B):
    S = np.stack([covariance(KINDS[(seed + b) % len(KINDS)], seed + b, p) for b in range(B)])
    alphas = np.linspace(0.05, 0.3, B) * S.diagonal(axis1=1, axis2=2).mean(axis=1)
    batch = graphical_lasso(S, alphas, method="quic", tol=1e-10, screen=False)
    assert batch.converged.shape == (B,) and batch.converged.all()
    assert len(batch.history["objective"]) == len(batch.history["iteration"])
    for b in range(B):
        single = graphical_lasso(S[b], alphas[b], method="quic", tol=1e-10)
        assert _rel(batch.objective[b], single.objective) <= 1e-9


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_torch_in_torch_out(dtype):
    S64 = covariance("spd", 5, 8)
    S = torch.tensor(S64, dtype=dtype)
    tol = 1e-9 if dtype == torch.float64 else 1e-5
    res = graphical_lasso(S, 0.1, method="quic", tol=tol)
    assert res.precision.dtype == dtype and res.converged
    ref = graphical_lasso_cvxpy(S64, 0.1)
    bound = 1e-6 if dtype == torch.float64 else 1e-4
    assert _rel(glasso_objective(S64, res.precision.double().numpy(), 0.1), ref.objective) <= bound


def test_warm_start_from_solution():
    S = covariance("rank_deficient", 4, 10)
    cold = graphical_lasso(S, 0.1, method="quic", tol=1e-9)
    warm = graphical_lasso(S, 0.1, method="quic", tol=1e-9, init=cold)
    assert warm.converged and warm.n_iter == 1
    assert _rel(warm.objective, cold.objective) <= 1e-12


def test_max_iter_one_warns_and_reports():
    S = covariance("ill_conditioned", 0, 8)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = graphical_lasso(S, 1e-3, method="quic", max_iter=1, tol=1e-12)
    assert res.converged is False and res.n_iter == 1
    np.linalg.cholesky(res.precision)
    assert res.dual_gap > 0 and res.relative_gap > 1e-12


def test_non_cpu_input_is_refused_with_a_pointer_to_admm():
    S = torch.eye(3, dtype=torch.float64, device="meta").unsqueeze(0)
    alpha = torch.ones(1, dtype=torch.float64, device="meta")
    with pytest.raises(ValueError, match="admm"):
        quic(S, alpha, torch.ones(3, 3, device="meta"), tol=1e-6, max_iter=5)


def test_ill_conditioned_where_sklearn_fails():
    S = covariance("ill_conditioned", 1, 10)
    with pytest.raises(FloatingPointError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graphical_lasso_sklearn(S, 1e-3)
    ref = graphical_lasso_cvxpy(S, 1e-3)
    res = graphical_lasso(S, 1e-3, method="quic", tol=1e-9)
    assert res.converged
    assert _rel(res.objective, ref.objective) <= 1e-6
