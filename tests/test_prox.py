"""GST and the group prox against brute-force minimisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from _brute_force import multistart_minimum

from graphopt.solvers.prox import group_prox, gst, gst_threshold


def _scalar_obj(x, y, w, g):
    return 0.5 * (x - y) ** 2 + w * np.abs(x) ** g


def _brute_scalar(y, w, g):
    """Global minimiser by a fine grid over [−|y|, |y|] and local refinement."""
    a = abs(y) + 1e-12
    grid = np.linspace(-a, a, 20001)
    vals = _scalar_obj(grid, y, w, g)
    i = int(np.argmin(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    best_x, best_v = grid[i], vals[i]
    if hi > lo:
        r = minimize_scalar(lambda x: _scalar_obj(x, y, w, g), bounds=(lo, hi), method="bounded",
                            options={"xatol": 1e-14})
        if r.fun < best_v:
            best_x, best_v = r.x, r.fun
    if _scalar_obj(0.0, y, w, g) <= best_v:
        best_x, best_v = 0.0, _scalar_obj(0.0, y, w, g)
    return best_x, best_v


@settings(max_examples=60, deadline=None)
@given(y=st.floats(-6, 6), w=st.floats(0, 3), g=st.floats(0.05, 1.0))
def test_gst_matches_brute_force(y, w, g):
    x = float(gst(np.array([y]), w, g)[0])
    bx, bv = _brute_scalar(y, w, g)
    v = _scalar_obj(x, y, w, g)
    # GST is never worse than the brute force and agrees with it up to its grid accuracy.
    assert v <= bv + 1e-12 * max(1.0, abs(bv))
    assert bv <= v + 1e-7
    if x != 0.0:
        # Exact stationarity x − y + w g sign(x)|x|^{g−1} = 0, to machine precision.
        assert abs(x - y + w * g * np.sign(x) * abs(x) ** (g - 1)) <= 1e-12 * max(1.0, abs(y))
        assert np.sign(x) == np.sign(y)


@settings(max_examples=30, deadline=None)
@given(w=st.floats(0.01, 3), g=st.floats(0.05, 0.99))
def test_threshold_is_where_zero_stops_being_optimal(w, g):
    thr = float(gst_threshold(torch.tensor(w, dtype=torch.float64), g))
    below = gst(np.array([thr * (1 - 1e-6), -thr * (1 - 1e-6)]), w, g)
    above = gst(np.array([thr * (1 + 1e-6), -thr * (1 + 1e-6)]), w, g)
    assert np.all(below == 0)
    assert np.all(above != 0)
    # At the threshold both candidates tie: ½y² = ½(x−y)² + w x^g.
    x = float(gst(np.array([thr * (1 + 1e-9)]), w, g)[0])
    assert _scalar_obj(x, thr, w, g) == pytest.approx(0.5 * thr ** 2, rel=1e-5)


def test_g_one_is_soft_thresholding():
    y = np.linspace(-3, 3, 61)
    np.testing.assert_allclose(gst(y, 0.7, 1.0), np.sign(y) * np.maximum(np.abs(y) - 0.7, 0))


def test_released_fixed_point_iterations_are_inexact():
    y = np.array([0.9, 2.0, -5.0])
    exact = gst(y, 0.4, 0.5)
    five = gst(y, 0.4, 0.5, n_iter=5)
    many = gst(y, 0.4, 0.5, n_iter=200)
    np.testing.assert_allclose(many, exact, rtol=1e-12)
    assert np.abs(five - exact).max() > 1e-8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out_and_numpy_consistency(dtype):
    rng = np.random.default_rng(0)
    y = rng.standard_normal((4, 5)) * 2
    t = torch.tensor(y, dtype=dtype)
    out = gst(t, 0.3, 0.6)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.shape == t.shape
    ref = gst(y, 0.3, 0.6)
    assert isinstance(ref, np.ndarray)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(out.numpy(), ref, rtol=tol, atol=tol)
    gp = group_prox(t, 0.3, 0.6)
    assert isinstance(gp, torch.Tensor) and gp.dtype == dtype
    np.testing.assert_allclose(gp.numpy(), group_prox(y, 0.3, 0.6), rtol=tol, atol=tol)


def _brute_group(v, w, g):
    def obj(u):
        return 0.5 * np.sum((u - v) ** 2) + w * np.linalg.norm(u) ** g
    return multistart_minimum(obj, [scale * v for scale in (1.0, 0.5, 0.1)])


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 4), k=st.integers(1, 4),
       w=st.floats(0.01, 2.0), g=st.floats(0.1, 1.0))
def test_group_prox_matches_brute_force(seed, m, k, w, g):
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((m, k)) * rng.uniform(0.1, 3)
    U = group_prox(V, w, g)
    for j in range(k):
        v = V[:, j]
        u = U[:, j]
        val = 0.5 * np.sum((u - v) ** 2) + w * np.linalg.norm(u) ** g
        _, bv = _brute_group(v, w, g)
        assert val <= bv + 1e-10
        # Parallel to v (or zero), with norm GST(‖v‖).
        nv = np.linalg.norm(v)
        np.testing.assert_allclose(u, gst(np.array([nv]), w, g)[0] * v / nv, atol=1e-12)


def test_group_prox_zero_column_and_batch():
    V = np.zeros((3, 2))
    V[:, 1] = [3.0, 0.0, 4.0]
    out = group_prox(V, 1.0, 1.0)
    np.testing.assert_array_equal(out[:, 0], 0.0)
    np.testing.assert_allclose(out[:, 1], np.array([3.0, 0.0, 4.0]) * 4 / 5)
    batch = np.stack([V, 2 * V])
    np.testing.assert_allclose(group_prox(batch, 1.0, 1.0)[1], group_prox(2 * V, 1.0, 1.0))


@pytest.mark.parametrize("kwargs,match", [
    ({"w": -1.0, "g": 0.5}, "w"),
    ({"w": 1.0, "g": 0.0}, "g"),
    ({"w": 1.0, "g": 1.5}, "g"),
    ({"w": float("nan"), "g": 0.5}, "w"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gst(np.ones(3), **kwargs)
    with pytest.raises(ValueError, match=match):
        group_prox(np.ones((3, 2)), **kwargs)


def test_group_prox_rejects_vectors():
    with pytest.raises(ValueError, match="v"):
        group_prox(np.ones(3), 1.0, 0.5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 5), w=st.floats(0.01, 3.0),
       g=st.sampled_from([1.0, 0.9, 0.5, 0.2]), spread=st.floats(0.0, 2.0))
def test_weighted_group_prox_is_the_brute_force_minimiser(seed, m, w, g, spread):
    from graphopt.solvers.prox import weighted_group_prox

    rng = np.random.default_rng(seed)
    v = rng.standard_normal(m) * rng.uniform(0.05, 3.0)
    c = 10.0 ** rng.uniform(-spread, spread, m)  # weights over up to four decades
    u = weighted_group_prox(v[:, None], c[:, None], w, g)[:, 0]

    def obj(x):
        return 0.5 * np.sum(c * (x - v) ** 2) + w * np.linalg.norm(x) ** g

    _, best = multistart_minimum(obj, (v, 0.5 * v, c / (c + 1.0) * v, np.full(m, 1e-3)))
    assert obj(u) <= best + 1e-9 * max(1.0, abs(best))


def test_weighted_group_prox_equals_group_prox_for_unit_weights_and_checks_input():
    from graphopt.solvers.prox import weighted_group_prox

    v = np.random.default_rng(0).standard_normal((4, 30))
    for g in (1.0, 0.9, 0.3):
        np.testing.assert_allclose(weighted_group_prox(v, np.ones_like(v), 0.7, g),
                                   group_prox(v, 0.7, g), rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="c must be finite and > 0"):
        weighted_group_prox(v, -np.ones_like(v), 0.7, 0.9)
    with pytest.raises(ValueError, match="g must lie"):
        weighted_group_prox(v, np.ones_like(v), 0.7, 1.5)
