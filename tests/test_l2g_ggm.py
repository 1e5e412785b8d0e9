"""The ℓ2,g-coupled GGM solver against cvxpy (g = 1), its block optimality (g < 1) and its contract."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _brute_force import multistart_minimum
from _matrices import drawn_covariance as _cov

from graphopt.exceptions import ConvergenceWarning, RegularizationWarning
from graphopt.solvers.l2g.problem import ImportantLinks, L2gProblem
from graphopt.solvers.l2g.steps import delta_step, omega_step_exact
from graphopt.solvers.l2g import DEFAULT_RIDGE, l2g_ggm
from graphopt.solvers.objectives import l2g_objective
from graphopt.solvers.prox import group_prox
from graphopt.solvers.reference import l2g_ggm_cvxpy
from graphopt.solvers.selection import select_nodes


def _important(seed: int, p: int, k: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed + 1).choice(p, size=k, replace=False))


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegularizationWarning)
        return fn(*args, **kw)


def _stationarity_numpy(S, om, de, lam):
    """The documented residual, recomputed independently in float64 NumPy."""
    inv = np.linalg.inv(om)
    grad = S - inv + 2 * lam * (om - 0.5 * (de + de.T))
    return np.linalg.norm(grad) / (np.linalg.norm(S) + np.linalg.norm(inv))


# ---------------------------------------------------------------- g = 1 against cvxpy


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 8), lam=st.floats(1.0, 50.0),
       tau=st.floats(0.05, 2.0), k=st.integers(1, 3))
def test_g1_matches_cvxpy(seed, p, lam, tau, k):
    S = _cov(seed, p, 3 * p)
    I = _important(seed, p, min(k, p))
    ref = l2g_ggm_cvxpy(S, I, tau=tau, lam=lam)
    res = l2g_ggm(S, I, tau=tau, lam=lam, g=1.0, tol=1e-7)
    assert res.regularization == 0.0
    assert res.objective <= ref.objective + 1e-6 * abs(ref.objective)
    assert abs(res.objective - ref.objective) <= 1e-6 * max(1.0, abs(ref.objective))
    assert res.objective == pytest.approx(
        l2g_objective(S, res.precision, res.delta, I, tau=tau, lam=lam, g=1.0), rel=1e-12)


@pytest.mark.parametrize("method", ["reduced", "admm"])
def test_g1_published_weights_small_p_matches_cvxpy(method):
    S = _cov(3, 8, 24)
    I = np.array([0, 3, 5])
    ref = l2g_ggm_cvxpy(S, I, tau=20.0, lam=1000.0)
    res = l2g_ggm(S, I, tau=20.0, lam=1000.0, g=1.0, method=method, tol=1e-7)
    assert res.converged
    assert abs(res.objective - ref.objective) <= 1e-6 * abs(ref.objective)


# ---------------------------------------------------------------- g < 1: block optimality


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(3, 8), g=st.floats(0.2, 0.95),
       lam=st.floats(0.5, 20.0), tau=st.floats(0.1, 3.0))
def test_history_is_monotone_for_g_below_one(seed, p, g, lam, tau):
    S = _cov(seed, p, 3 * p)
    I = _important(seed, p, 2)
    for method in ("reduced", "bcd"):
        res = _quiet(l2g_ggm, S, I, tau=tau, lam=lam, g=g, method=method, max_iter=300, tol=1e-8)
        h = np.asarray(res.history)
        assert np.all(np.diff(h) <= 1e-10 * np.abs(h[:-1]) + 1e-12), method
        assert res.objective == pytest.approx(
            l2g_objective(S, res.precision, res.delta, I, tau=tau, lam=lam, g=g), rel=1e-10)


def _brute_delta_group(v, tau, lam, g):
    def obj(d):
        return tau * np.linalg.norm(d) ** g + lam * np.sum((v - d) ** 2)
    return multistart_minimum(obj, (v, 0.5 * v))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), g=st.floats(0.2, 1.0), lam=st.floats(0.5, 10.0),
       tau=st.floats(0.1, 3.0))
def test_delta_step_equals_brute_force(seed, g, lam, tau):
    p = 5
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((p, p))
    omega = A @ A.T + np.eye(p)
    I = np.array([1, 3])
    J = np.array([0, 2, 4])
    P = L2gProblem(S=torch.eye(p, dtype=torch.float64),
                   groups=ImportantLinks(torch.tensor(I), torch.tensor(J)), tau=tau, lam=lam, g=g)
    delta = delta_step(P, torch.tensor(omega)).numpy()
    mask = np.ones((p, p), dtype=bool)
    mask[np.ix_(I, J)] = False
    np.testing.assert_array_equal(delta[mask], omega[mask])
    for j in J:
        v = omega[I, j]
        d = delta[I, j]
        val = tau * np.linalg.norm(d) ** g + lam * np.sum((v - d) ** 2)
        _, bv = _brute_delta_group(v, tau, lam, g)
        assert val <= bv + 1e-10


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(1, 7), lam=st.floats(0.1, 2000.0))
def test_omega_step_solves_its_stationarity_equation(seed, p, lam):
    rng = np.random.default_rng(seed)
    S = _cov(seed, p, 2 * p + 1)
    D = rng.standard_normal((p, p))  # Δ need not be symmetric
    P = L2gProblem(S=torch.tensor(S), groups=ImportantLinks(torch.tensor([0]), torch.arange(1, p)),
                   tau=1.0, lam=lam, g=0.5)
    om = omega_step_exact(P, torch.tensor(D)).numpy()
    assert np.all(np.linalg.eigvalsh(om) > 0)
    lhs = 2 * lam * om - np.linalg.inv(om)
    rhs = 2 * lam * 0.5 * (D + D.T) - S
    assert np.linalg.norm(lhs - rhs) <= 1e-8 * (np.linalg.norm(rhs) + np.linalg.norm(2 * lam * om))


@pytest.mark.parametrize("g", [1.0, 0.8])
def test_fast_method_and_bcd_reach_the_same_objective(g):
    S = _cov(11, 6, 18)
    I = np.array([0, 4])
    fast = l2g_ggm(S, I, tau=0.4, lam=1.0, g=g, tol=1e-7)
    bcd = l2g_ggm(S, I, tau=0.4, lam=1.0, g=g, method="bcd", tol=1e-7, max_iter=50000)
    assert fast.converged and bcd.converged
    assert fast.objective == pytest.approx(bcd.objective, rel=1e-8)
    assert fast.n_iter < bcd.n_iter


# ---------------------------------------------------------------- properties on many matrices


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(1, 9),
       kind=st.sampled_from(["spd", "rank_deficient", "ill"]),
       g=st.sampled_from([1.0, 0.9, 0.5]), lam=st.sampled_from([1.0, 30.0, 1000.0]))
def test_solution_is_stationary_on_drawn_matrices(seed, p, kind, g, lam):
    n = max(1, p // 2) if kind == "rank_deficient" else 3 * p
    S = _cov(seed, p, n, "spd" if kind == "spd" else kind)
    I = _important(seed, p, 1 if p <= 2 else 2)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        res = l2g_ggm(S, I, tau=0.5, lam=lam, g=g, tol=1e-7)
    S_used = S + res.regularization * np.eye(p)
    assert np.all(np.linalg.eigvalsh(res.precision) > 0)
    assert np.isfinite(res.objective)
    if res.converged:
        assert _stationarity_numpy(S_used, res.precision, res.delta, lam) <= 2e-7
    else:  # only allowed when round-off stops further decrease: then it is still tiny
        assert res.stationarity <= 1e-5
    # Δ is exactly the group prox of Ω on the I×J block and Ω elsewhere.
    J = np.setdiff1d(np.arange(p), I)
    if J.size:
        np.testing.assert_allclose(
            res.delta[np.ix_(I, J)], group_prox(res.precision[np.ix_(I, J)], 0.5 / (2 * lam), g),
            rtol=1e-9, atol=1e-12)


def test_p_equals_one():
    res = l2g_ggm(np.array([[2.0]]), [0], tau=1.0, lam=5.0, g=0.5)
    assert res.converged
    np.testing.assert_allclose(res.precision, [[0.5]])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_matches_numpy(dtype):
    S = _cov(5, 6, 20)
    I = [1, 2]
    ref = l2g_ggm(S, I, tau=0.5, lam=10.0, g=0.7)
    out = l2g_ggm(torch.tensor(S, dtype=dtype), torch.tensor(I), tau=0.5, lam=10.0, g=0.7,
                  tol=1e-6 if dtype == torch.float64 else 1e-4)
    assert isinstance(out.precision, torch.Tensor) and out.precision.dtype == dtype
    assert isinstance(out.delta, torch.Tensor) and out.delta.dtype == dtype
    tol = 1e-3 if dtype == torch.float32 else 1e-6
    np.testing.assert_allclose(out.precision.double().numpy(), ref.precision, rtol=tol, atol=tol)
    assert out.objective == pytest.approx(ref.objective, rel=tol)


# ---------------------------------------------------------------- regularisation


def test_rank_deficient_s_is_regularised_with_warning():
    S = _cov(2, 10, 4, "rank_deficient")  # rank 4 < 10: unbounded without a ridge
    I = [0, 1]
    with pytest.warns(RegularizationWarning, match="unbounded"):
        res = l2g_ggm(S, I, tau=1.0, lam=10.0, g=0.9)
    assert res.regularization == pytest.approx(DEFAULT_RIDGE * np.trace(S) / 10)
    assert res.converged
    # The reported objective is F for the regularised S.
    S_reg = S + res.regularization * np.eye(10)
    assert res.objective == pytest.approx(
        l2g_objective(S_reg, res.precision, res.delta, I, tau=1.0, lam=10.0, g=0.9), rel=1e-10)


def test_regularisation_can_be_set_or_refused():
    S = _cov(2, 10, 4, "rank_deficient")
    with pytest.raises(ValueError, match="unbounded"):
        l2g_ggm(S, [0, 1], regularization=None)
    with pytest.raises(ValueError, match="unbounded"):
        l2g_ggm(S, [0, 1], regularization=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegularizationWarning)
        res = l2g_ggm(S, [0, 1], tau=1.0, lam=10.0, regularization=0.05)
    assert res.regularization == 0.05
    with pytest.raises(ValueError, match="regularization"):
        l2g_ggm(S, [0, 1], regularization=-1.0)
    with pytest.raises(ValueError, match="regularization"):
        l2g_ggm(S, [0, 1], regularization="lots")


def test_nonsingular_s_is_not_touched():
    S = _cov(4, 6, 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RegularizationWarning)
        res = l2g_ggm(S, [0], tau=1.0, lam=10.0)
    assert res.regularization == 0.0


# ---------------------------------------------------------------- modes, warnings, bad input


def test_convergence_warning_on_max_iter():
    S = _cov(1, 6, 20)
    with pytest.warns(ConvergenceWarning):
        res = l2g_ggm(S, [0, 1], tau=1.0, lam=1000.0, method="bcd", max_iter=3)
    assert not res.converged and res.n_iter == 3 and res.stationarity > 1e-6


def test_released_mode_runs_and_differs_from_exact():
    S = _cov(7, 8, 30)
    I = [0, 2]
    exact = l2g_ggm(S, I)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        rel = l2g_ggm(S, I, omega_step="released")
    assert rel.omega_step == "released" and rel.method == "released"
    assert rel.n_iter <= 50
    # It does not minimise F: its value (+inf when its Ω is indefinite) is worse.
    assert rel.objective > exact.objective + 1e-3 * abs(exact.objective)
    assert exact.converged and exact.stationarity <= 1e-6


BAD = [
    (dict(S=np.ones((2, 3))), "S"),
    (dict(S=np.array([[1.0, 0.5], [0.0, 1.0]])), "S"),
    (dict(S=np.array([[np.nan, 0.0], [0.0, 1.0]])), "S"),
    (dict(S=np.array([[1.0, 0.0], [0.0, -1.0]])), "S"),
    (dict(g=0.0), "g"), (dict(g=1.5), "g"), (dict(lam=0.0), "lam"), (dict(tau=-1.0), "tau"),
    (dict(important=[]), "important"), (dict(important=[5]), "important"),
    (dict(important=[0, 0]), "important"), (dict(important=[0.5]), "important"),
    (dict(omega_step="fast"), "omega_step"), (dict(method="newton"), "method"),
    (dict(init=np.eye(2)), "init"), (dict(init=-np.eye(3)), "init"),
    (dict(max_iter=-1), "max_iter"),
]


@pytest.mark.parametrize("kwargs,match", BAD)
def test_bad_input(kwargs, match):
    args = dict(S=np.eye(3) + 0.1, important=[0])
    args.update(kwargs)
    S = args.pop("S")
    important = args.pop("important")
    with pytest.raises(ValueError, match=match):
        l2g_ggm(S, important, **args)


# ---------------------------------------------------------------- node selection


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 10), data=st.data())
def test_select_nodes_keeps_important_and_best_scores(seed, p, data):
    rng = np.random.default_rng(seed)
    M = rng.standard_normal((p, p))
    k = data.draw(st.integers(1, p))
    I = np.sort(rng.choice(p, size=k, replace=False))
    n_select = data.draw(st.integers(k, p))
    sel = select_nodes(M, I, n_select)
    assert sel.selected.size == n_select and np.all(np.diff(sel.selected) > 0)
    assert set(I) <= set(sel.selected.tolist())
    J = np.setdiff1d(np.arange(p), I)
    scores = np.linalg.norm(M[np.ix_(I, J)], axis=0)
    np.testing.assert_allclose(sel.scores[J], scores)
    kept = np.setdiff1d(sel.selected, I)
    dropped = np.setdiff1d(J, kept)
    if kept.size and dropped.size:
        assert sel.scores[kept].min() >= sel.scores[dropped].max()


def test_select_nodes_ties_are_deterministic_and_errors():
    M = np.zeros((4, 4))
    sel = select_nodes(M, [2], 3)
    np.testing.assert_array_equal(sel.selected, [0, 1, 2])  # equal scores: smaller index wins
    for bad in (0, 5):
        with pytest.raises(ValueError, match="n_select"):
            select_nodes(M, [2], bad)
    with pytest.raises(ValueError, match="important"):
        select_nodes(M, [4], 2)


def test_peft_call_shape():
    """The call the PEFT layer makes: rank-deficient S, defaults, then select_nodes."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 20))
    Xc = X - X.mean(0)
    S = Xc.T @ Xc / 11
    I = np.arange(5)
    with pytest.warns(RegularizationWarning):
        res = l2g_ggm(S, I, tau=20.0, lam=1000.0, g=0.9, omega_step="exact")
    assert res.converged and res.regularization > 0
    sel = select_nodes(res.precision, I, 8)
    assert sel.selected.size == 8 and set(I) <= set(sel.selected.tolist())
