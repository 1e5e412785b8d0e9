"""Every torch solver path on each device × dtype, against float64 NumPy / scikit-learn.

The same problems run on CPU (normal suite) and on CUDA (``pytest -m cuda``, skipped without
a device): graphical lasso (ADMM and BCD, single and batched, with their certificates), the
ℓ2,g-coupled GGM, and the spectral filters. References are float64 NumPy or scikit-learn —
never cvxpy, which the GPU machine does not have. Tolerances: float64 to the solver's tol;
float32 (about 7 digits, lost by a factor ~p·cond in eigendecompositions) to 1e-4 relative
objective, the level test_graphical_lasso.py holds float32 to.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _devices import DEVICES, DTYPES, assert_on, numpy64
from _matrices import drawn_covariance

from graphopt.graph import knn_graph, laplacian
from graphopt.solvers import graphical_lasso, l2g_ggm
from graphopt.solvers.objectives import glasso_objective, l2g_objective
from graphopt.solvers.prox import group_prox
from graphopt.solvers.reference import graphical_lasso_sklearn
from graphopt.spectral import SpectralFilter, heat, lowpass, spectral_filter, tikhonov

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: (solver tol, relative-objective tolerance, relative Frobenius tolerance on Θ) per dtype.
GLASSO_TOL = {torch.float64: (1e-7, 1e-6, 2e-3), torch.float32: (1e-5, 1e-4, 2e-2)}


def _alpha(S: np.ndarray, frac: float) -> float:
    return frac * float(np.abs(S - np.diag(np.diag(S))).max())


def _sklearn(S: np.ndarray, alpha: float):
    return graphical_lasso_sklearn(S, alpha, tol=1e-10, enet_tol=1e-10, max_iter=2000)


def _check_certificate(S: np.ndarray, alpha: float, theta: np.ndarray, gap_bound: float,
                       f_star: float, dual_cov, tol: float) -> None:
    """The certified gap is ≥ 0, bounds the true suboptimality f(Θ) − f*, meets tol; and,
    where the result carries its dual point W̃, that W̃ is feasible and reproduces it."""
    f = float(glasso_objective(S, theta, alpha))
    scale = max(abs(f), 1.0)
    assert gap_bound >= -1e-9 * scale
    assert f - f_star <= gap_bound + 1e-9 * scale
    assert gap_bound <= 1.5 * tol * scale
    if dual_cov is not None:
        W = numpy64(dual_cov) if isinstance(dual_cov, torch.Tensor) else np.asarray(dual_cov, float)
        off = ~np.eye(len(S), dtype=bool)
        np.testing.assert_allclose(np.diag(W), np.diag(S), rtol=1e-6, atol=1e-9)
        assert np.all(np.abs(W - S)[off] <= alpha * (1 + 1e-6) + 1e-9)
        sign, logdet = np.linalg.slogdet(W)
        assert sign > 0
        assert f - logdet - len(S) == pytest.approx(gap_bound, rel=1e-3, abs=1e-6 * scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["admm", "bcd"])
@pytest.mark.parametrize("kind", ["spd", "ill"])
def test_graphical_lasso_single_matches_sklearn(device, dtype, method, kind):
    S = drawn_covariance(3, 12, 36, kind)
    alpha = _alpha(S, 0.1)
    tol, obj_tol, fro_tol = GLASSO_TOL[dtype]
    ref = _sklearn(S, alpha)
    res = graphical_lasso(torch.tensor(S, dtype=dtype, device=device), alpha, method=method,
                          tol=tol)
    for name in ("precision", "covariance"):
        assert_on(getattr(res, name), device, dtype)
    assert res.converged is True and res.n_iter >= 1
    theta = numpy64(res.precision)
    np.testing.assert_array_equal(theta, theta.T)
    np.linalg.cholesky(theta)
    f = float(glasso_objective(S, theta, alpha))
    assert abs(f - ref.objective) <= obj_tol * max(abs(ref.objective), 1.0)
    assert np.linalg.norm(theta - ref.precision) <= fro_tol * np.linalg.norm(ref.precision)
    assert res.objective == pytest.approx(f, rel=1e-5)
    _check_certificate(S, alpha, theta, float(res.dual_gap), ref.objective,
                       getattr(res, "dual_covariance", None), tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", ["admm", "bcd"])
def test_graphical_lasso_batched_matches_sklearn_per_problem(device, dtype, method):
    """Three problems of mixed kinds, one α each, in one call; each against its own reference."""
    p = 10
    Ss = [drawn_covariance(10 + b, p, 3 * p, kind) for b, kind in enumerate(["spd", "ill", "spd"])]
    alphas = np.array([_alpha(S, f) for S, f in zip(Ss, (0.05, 0.1, 0.3))])
    tol, obj_tol, fro_tol = GLASSO_TOL[dtype]
    S_t = torch.tensor(np.stack(Ss), dtype=dtype, device=device)
    res = graphical_lasso(S_t, torch.tensor(alphas, dtype=dtype, device=device), method=method,
                          tol=tol)
    assert_on(res.precision, device, dtype)
    assert tuple(res.precision.shape) == (3, p, p)
    for field in ("objective", "dual_gap", "kkt_violation", "n_iter", "converged"):
        value = getattr(res, field)
        assert_on(value, device)
        assert tuple(value.shape) == (3,), field
    assert bool(res.converged.all())
    dual_cov = getattr(res, "dual_covariance", None)
    for b, (S, alpha) in enumerate(zip(Ss, alphas)):
        ref = _sklearn(S, alpha)
        theta = numpy64(res.precision[b])
        f = float(glasso_objective(S, theta, alpha))
        assert abs(f - ref.objective) <= obj_tol * max(abs(ref.objective), 1.0)
        assert np.linalg.norm(theta - ref.precision) <= fro_tol * np.linalg.norm(ref.precision)
        _check_certificate(S, alpha, theta, float(res.dual_gap[b]), ref.objective,
                           None if dual_cov is None else dual_cov[b], tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_graphical_lasso_warm_start_on_device(device, dtype):
    """init from a previous result on the device: same answer, no more iterations."""
    S = drawn_covariance(4, 10, 30)
    tol = GLASSO_TOL[dtype][0]
    S_t = torch.tensor(S, dtype=dtype, device=device)
    cold = graphical_lasso(S_t, _alpha(S, 0.2), tol=tol)
    warm = graphical_lasso(S_t, _alpha(S, 0.15), tol=tol, init=cold)
    assert_on(warm.precision, device, dtype)
    ref = _sklearn(S, _alpha(S, 0.15))
    f = float(glasso_objective(S, numpy64(warm.precision), _alpha(S, 0.15)))
    assert abs(f - ref.objective) <= GLASSO_TOL[dtype][1] * max(abs(ref.objective), 1.0)


# ---------------------------------------------------------------- the ℓ2,g-coupled GGM

L2G_TOL = {torch.float64: 1e-7, torch.float32: 1e-4}


def _stationarity(S: np.ndarray, omega: np.ndarray, delta: np.ndarray, lam: float) -> float:
    """‖S − Ω⁻¹ + 2λ(Ω − Δ_s)‖_F / (‖S‖_F + ‖Ω⁻¹‖_F), recomputed in float64 NumPy."""
    inv = np.linalg.inv(omega)
    grad = S - inv + 2 * lam * (omega - 0.5 * (delta + delta.T))
    return float(np.linalg.norm(grad) / (np.linalg.norm(S) + np.linalg.norm(inv)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method,g,important", [
    ("reduced", 1.0, [0, 3, 7]), ("reduced", 0.9, [0, 3, 7]), ("admm", 0.9, [1, 5]),
    ("admm", 1.0, None)])
def test_l2g_ggm_on_device(device, dtype, method, g, important):
    """Stationarity recomputed in NumPy, Δ = group_prox(Ω) on the groups, and F equal to the
    float64 NumPy solve of the same problem (itself checked against cvxpy in test_l2g_ggm)."""
    p = 10 if important is None else 12
    tau, lam = (0.3, 1.0) if important is None else (0.5, 10.0)
    S = drawn_covariance(5, p, 3 * p)
    tol = L2G_TOL[dtype]
    ref = l2g_ggm(S, important, tau=tau, lam=lam, g=g, tol=1e-8, method=method, max_iter=20000)
    imp = None if important is None else torch.tensor(important, device=device)
    res = l2g_ggm(torch.tensor(S, dtype=dtype, device=device), imp, tau=tau, lam=lam, g=g,
                  tol=tol, method=method)
    assert_on(res.precision, device, dtype)
    assert_on(res.delta, device, dtype)
    assert res.converged
    omega, delta = numpy64(res.precision), numpy64(res.delta)
    np.linalg.cholesky(omega)
    assert _stationarity(S, omega, delta, lam) <= 2 * tol
    if important is not None:
        # Block optimality in Δ: each group Δ_{I,j} is the group prox of Ω_{I,j} (w = τ/2λ).
        I = np.array(important)
        J = np.setdiff1d(np.arange(p), I)
        expected = group_prox(omega[np.ix_(I, J)], tau / (2 * lam), g)
        np.testing.assert_allclose(delta[np.ix_(I, J)], expected, atol=50 * tol)
        F = float(l2g_objective(S, omega, delta, I, tau=tau, lam=lam, g=g))
        assert F == pytest.approx(res.objective, rel=1e-5)
    assert abs(res.objective - ref.objective) <= 50 * tol * max(abs(ref.objective), 1.0)


# ---------------------------------------------------------------- spectral filters

SPECTRAL_TOL = {torch.float64: 1e-7, torch.float32: 2e-4}


def _reference_filter(L: np.ndarray, X: np.ndarray, h) -> np.ndarray:
    """U h(Λ) Uᵀ X from NumPy's float64 eigendecomposition."""
    lam, U = np.linalg.eigh(L)
    return (U * h(lam)) @ (U.T @ X)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("method,response,h", [
    ("exact", heat(0.5), lambda lam: np.exp(-0.5 * lam)),
    ("exact", lowpass(5), None),
    ("chebyshev", heat(0.5), lambda lam: np.exp(-0.5 * lam)),
    ("solve", tikhonov(2.0), lambda lam: 1.0 / (1.0 + 2.0 * lam)),
])
def test_spectral_filter_on_device(device, dtype, sparse, method, response, h):
    rng = np.random.default_rng(7)
    points = rng.normal(size=(60, 3))
    X = rng.normal(size=(60, 4))
    W = knn_graph(torch.tensor(points, dtype=dtype, device=device), 5, sparse=sparse)
    L = laplacian(W)
    assert L.device.type == device
    L_np = numpy64(L.to_dense() if L.is_sparse else L)
    if h is None:  # lowpass(k): projection on the k lowest eigenvectors
        lam, U = np.linalg.eigh(L_np)
        expected = U[:, :5] @ (U[:, :5].T @ X)
    else:
        expected = _reference_filter(L_np, X, h)
    kwargs = {"order": 60} if method == "chebyshev" else {}
    flt = SpectralFilter(L, response, method=method, **kwargs)
    Y = flt(torch.tensor(X, dtype=dtype, device=device))
    assert_on(Y, device, dtype)
    tol = SPECTRAL_TOL[dtype] * (100 if method == "chebyshev" and dtype == torch.float64 else 1)
    err = np.abs(numpy64(Y) - expected).max() / max(np.abs(expected).max(), 1.0)
    assert err <= tol, f"{method} on {device}/{dtype}: max relative error {err:.2e}"
    # One-shot form and a single signal (n,) give the same numbers.
    y1 = spectral_filter(L, torch.tensor(X[:, 0], dtype=dtype, device=device), response,
                         method=method, **kwargs)
    assert_on(y1, device, dtype)
    np.testing.assert_allclose(numpy64(y1), numpy64(Y[:, 0]), rtol=0,
                               atol=10 * SPECTRAL_TOL[dtype] * max(np.abs(expected).max(), 1.0))


def test_device_params_cover_cuda_marker():
    """The CUDA half of every parametrisation carries the ``cuda`` marker (what -m cuda runs)."""
    marks = {p.id: {m.name for m in p.marks} for p in DEVICES}
    assert "cuda" in marks["cuda"] and "cuda" not in marks["cpu"]
