"""Spectra and spectral filters against a dense float64 NumPy eigendecomposition."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

import graphopt.spectral as spectral
from graphopt._chebyshev import estimate_lmax, gershgorin_bound
from graphopt.exceptions import ConvergenceWarning
from graphopt.graph import knn_graph, laplacian
from graphopt.responses import Response, heat, lowpass, parse_response, tikhonov
from graphopt.spectral import SpectralFilter, graph_spectrum, spectral_filter

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
              pytest.mark.usefixtures("one_torch_thread")]
SETTINGS = settings(max_examples=20, deadline=None)


@st.composite
def graphs(draw, min_n=1, max_n=12, connected=False):
    """Symmetric non-negative W (weights ≤ 1), random density, optional spanning path and
    isolated nodes."""
    n = draw(st.integers(min_n, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    W = rng.uniform(0.05, 1.0, (n, n)) * (rng.random((n, n)) < draw(st.floats(0.0, 1.0)))
    W = np.triu(W, 1)
    if connected:
        W[np.arange(n - 1), np.arange(1, n)] = rng.uniform(0.1, 1.0, n - 1)
    W = W + W.T
    if not connected and n >= 2 and draw(st.booleans()):
        iso = rng.random(n) < 0.3
        W[iso] = 0.0
        W[:, iso] = 0.0
    return W


responses = st.one_of(
    st.floats(0.0, 2.0).map(heat),
    st.floats(0.0, 2.0).map(tikhonov),
    st.just(Response("sigmoid", {}, lambda lam: 1.0 / (1.0 + torch.exp(lam - 2.0)))),
)


def reference_filter(L, X, h_values):
    ev, U = np.linalg.eigh(L)
    return U @ (h_values(ev)[:, None] * (U.T @ X.reshape(len(L), -1))), ev


def h_numpy(response):
    return lambda ev: response(torch.from_numpy(ev)).numpy()


def rel_err(Y, ref):
    return np.linalg.norm(np.asarray(Y).reshape(ref.shape) - ref) / max(np.linalg.norm(ref), 1e-300)


# -- spectra -----------------------------------------------------------------------------
@SETTINGS
@given(graphs(), st.sampled_from(["combinatorial", "normalized"]))
def test_graph_spectrum_matches_numpy(W, kind):
    L = laplacian(W, kind)
    ev, U = graph_spectrum(L)
    np.testing.assert_allclose(ev, np.linalg.eigvalsh(L), atol=1e-10)
    np.testing.assert_allclose(U.T @ U, np.eye(len(W)), atol=1e-10)
    np.testing.assert_allclose(U @ np.diag(ev) @ U.T, L, atol=1e-10)


@SETTINGS
@given(graphs(min_n=8, max_n=14), st.integers(1, 3))
def test_partial_spectrum_by_shift_invert_lanczos(W, k):
    """The SciPy shift-invert path (forced by lowering the dense threshold)."""
    L = laplacian(sp.csr_matrix(W))
    old = spectral._DENSE_EIGH_MAX
    spectral._DENSE_EIGH_MAX = 0
    try:
        ev, U = graph_spectrum(L, k)
    finally:
        spectral._DENSE_EIGH_MAX = old
    Ld = L.to_dense().numpy()
    np.testing.assert_allclose(ev.numpy(), np.linalg.eigvalsh(Ld)[:k], atol=1e-8)
    np.testing.assert_allclose(Ld @ U.numpy(), U.numpy() * ev.numpy(), atol=1e-8)


def test_exact_lowpass_uses_partial_spectrum_on_large_sparse_graphs():
    """lowpass(k) needs only k eigenpairs: the shift-invert path, forced here, must agree with
    the projection on the k lowest eigenvectors of the dense matrix."""
    W = knn_graph(np.random.default_rng(7).normal(size=(60, 2)), 5, sparse=True)
    L = laplacian(W)
    X = np.random.default_rng(8).normal(size=(60, 3))
    Ld = L.to_dense().numpy()
    ev, U = np.linalg.eigh(Ld)
    k = next(j for j in (3, 4, 5, 6) if ev[j] - ev[j - 1] > 1e-6)  # cut at a spectral gap
    old = spectral._DENSE_EIGH_MAX
    spectral._DENSE_EIGH_MAX = 0
    try:
        f = SpectralFilter(L, lowpass(k))
    finally:
        spectral._DENSE_EIGH_MAX = old
    assert f.eigenvectors.shape == (60, k)
    np.testing.assert_allclose(f(X), U[:, :k] @ (U[:, :k].T @ X), atol=1e-8)


# -- filters vs the dense reference ------------------------------------------------------
@SETTINGS
@given(
    graphs(),
    responses,
    st.sampled_from(["combinatorial", "normalized"]),
    st.integers(0, 3),
    st.integers(0, 2**32 - 1),
)
def test_exact_and_chebyshev_match_reference(W, response, kind, d, seed):
    n = len(W)
    X = np.random.default_rng(seed).normal(size=(n,) if d == 0 else (n, d))
    L = laplacian(W, kind)
    ref, _ = reference_filter(L, X, h_numpy(response))
    for Lin in (L, torch.from_numpy(L).to_sparse(), sp.csr_matrix(L)):
        Y = spectral_filter(Lin, X, response, method="exact")
        assert isinstance(Y, np.ndarray) and Y.shape == X.shape
        assert rel_err(Y, ref) <= 1e-10
        Yc = spectral_filter(Lin, torch.from_numpy(X), response, method="chebyshev", order=120)
        assert isinstance(Yc, torch.Tensor) and Yc.shape == X.shape
        assert rel_err(Yc.numpy(), ref) <= 1e-8


@SETTINGS
@given(graphs(), st.floats(0.0, 3.0), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_cg_solve_matches_tikhonov_reference(W, a, d, seed):
    X = np.random.default_rng(seed).normal(size=(len(W), d))
    L = laplacian(W)
    ref, _ = reference_filter(L, X, h_numpy(tikhonov(a)))
    f = SpectralFilter(torch.from_numpy(L).to_sparse(), f"tikhonov:a={a!r}", method="solve")
    Y = f(torch.from_numpy(X))
    assert f.info is not None and f.info.converged
    assert rel_err(Y.numpy(), ref) <= 1e-8


@SETTINGS
@given(graphs(min_n=2, connected=True), st.floats(0.0, 3.0), st.sampled_from(["exact", "chebyshev"]))
def test_heat_keeps_constant_vector_on_connected_graph(W, t, method):
    one = np.ones(len(W))
    Y = spectral_filter(laplacian(W), one, heat(t), method=method, order=120)
    np.testing.assert_allclose(Y, one, atol=1e-9)


@SETTINGS
@given(graphs(min_n=2, connected=True), st.integers(0, 2**32 - 1))
def test_lowpass_one_returns_node_mean(W, seed):
    X = np.random.default_rng(seed).normal(size=(len(W), 3))
    Y = spectral_filter(laplacian(W), X, "lowpass:k=1")
    np.testing.assert_allclose(Y, np.broadcast_to(X.mean(0), X.shape), atol=1e-10)


@SETTINGS
@given(graphs(min_n=3, connected=True), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_lowpass_k_projects_on_lowest_modes(W, k, seed):
    n = len(W)
    k = min(k, n - 1)
    L = laplacian(W)
    ev, U = np.linalg.eigh(L)
    if ev[k] - ev[k - 1] < 1e-6 * max(ev[-1], 1):
        return  # a degenerate cut: the k-dimensional subspace is not unique
    X = np.random.default_rng(seed).normal(size=(n, 2))
    Y = spectral_filter(L, X, lowpass(k))
    np.testing.assert_allclose(Y, U[:, :k] @ (U[:, :k].T @ X), atol=1e-9)


@SETTINGS
@given(graphs(min_n=4, max_n=12, connected=True), st.floats(0.2, 2.0), st.integers(0, 2**32 - 1))
def test_chebyshev_error_falls_with_order(W, t, seed):
    X = np.random.default_rng(seed).normal(size=(len(W), 2))
    L = laplacian(W)
    ref, _ = reference_filter(L, X, h_numpy(heat(t)))
    errs = [
        rel_err(spectral_filter(L, X, heat(t), method="chebyshev", order=K), ref)
        for K in (2, 4, 8, 16, 32)
    ]
    floor = 1e-13
    for e_lo, e_hi in zip(errs, errs[1:]):
        assert e_hi <= max(e_lo, floor) * (1 + 1e-9)
    assert errs[-1] < errs[0] or errs[0] <= floor


@SETTINGS
@given(graphs(min_n=2))
def test_disconnected_and_isolated_nodes_give_finite_output(W):
    n = len(W)
    X = np.random.default_rng(0).normal(size=(n, 2))
    isolated = W.sum(1) == 0
    for kind in ("combinatorial", "normalized"):
        L = laplacian(W, kind)
        for method in ("exact", "chebyshev"):
            Y = spectral_filter(L, X, heat(0.7), method=method, order=60)
            assert np.isfinite(Y).all()
            # An isolated node has a zero row in L: h(0) = 1 leaves it unchanged.
            np.testing.assert_allclose(Y[isolated], X[isolated], atol=1e-9)
        Ys = spectral_filter(L, X, tikhonov(0.7), method="solve")
        np.testing.assert_allclose(Ys[isolated], X[isolated], atol=1e-9)
    ncomp = connected_components(sp.csr_matrix(W), directed=False)[0]
    ev, _ = graph_spectrum(laplacian(W))
    assert int((ev < 1e-9).sum()) == ncomp


@pytest.mark.parametrize("method", ["exact", "chebyshev", "solve"])
def test_filters_are_differentiable_in_X(method):
    """d/dX ‖h(L) X‖² = 2 h(L)² X (h(L) symmetric), through every path."""
    L = laplacian(knn_graph(np.random.default_rng(5).normal(size=(40, 3)), 4))
    resp = tikhonov(0.8) if method == "solve" else heat(0.8)
    X = torch.tensor(np.random.default_rng(6).normal(size=(40, 2)), requires_grad=True)
    Y = spectral_filter(L, X, resp, method=method, order=60)
    (Y * Y).sum().backward()
    ev, U = np.linalg.eigh(L)
    H = U @ np.diag(resp(torch.from_numpy(ev)).numpy()) @ U.T
    np.testing.assert_allclose(X.grad.numpy(), 2 * H @ H @ X.detach().numpy(), atol=1e-9)


# -- λ_max estimates ----------------------------------------------------------------------
@SETTINGS
@given(graphs(min_n=1, max_n=30), st.sampled_from(["combinatorial", "normalized"]))
def test_lmax_estimates_bound_the_spectrum(W, kind):
    L = torch.from_numpy(laplacian(W, kind))
    top = float(np.linalg.eigvalsh(L.numpy())[-1])
    g = gershgorin_bound(L)
    assert g >= top - 1e-12
    if kind == "combinatorial":
        assert abs(g - 2 * W.sum(1).max()) <= 1e-12 * max(g, 1)
    est = estimate_lmax(L, "lanczos")
    assert top - 1e-9 <= est <= max(g, 1.0) + 1e-12


# -- dtype, device, layout, caching -------------------------------------------------------
def test_float32_sparse_knn_graph_end_to_end():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(200, 4, generator=gen, dtype=torch.float32)
    L = laplacian(knn_graph(X, 6, sparse=True))
    S = torch.randn(200, 5, generator=gen, dtype=torch.float32)
    ref, _ = reference_filter(L.to_dense().double().numpy(), S.double().numpy(), h_numpy(heat(0.5)))
    for method, resp in (("exact", heat(0.5)), ("chebyshev", heat(0.5)), ("solve", tikhonov(0.5))):
        Y = spectral_filter(L, S, resp, method=method, order=40)
        assert Y.dtype == torch.float32 and Y.shape == S.shape
        want = ref if resp.name == "heat" else reference_filter(
            L.to_dense().double().numpy(), S.double().numpy(), h_numpy(resp))[0]
        assert rel_err(Y.double().numpy(), want) <= 1e-4


def test_filter_caches_per_dtype_and_matches_both():
    W = knn_graph(np.random.default_rng(1).normal(size=(50, 3)), 4)
    f = SpectralFilter(laplacian(W), heat(1.0), method="chebyshev", order=50)
    c = f.coefficients.clone()
    x64 = torch.randn(50, 2, dtype=torch.float64)
    y64 = f(x64)
    y32 = f(x64.float())
    assert len(f._cache) == 2 and torch.equal(f.coefficients, c)
    assert torch.allclose(y32.double(), y64, atol=1e-5)
    assert torch.allclose(f(x64), y64)  # cached path: identical result
    assert "chebyshev" in repr(f)


def test_cuda_if_available():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here")
    W = knn_graph(torch.randn(300, 3, device="cuda"), 5, sparse=True)
    L = laplacian(W)
    X = torch.randn(300, 4, device="cuda")
    for method, resp in (("exact", heat(1.0)), ("chebyshev", heat(1.0)), ("solve", tikhonov(1.0))):
        Y = spectral_filter(L, X, resp, method=method)
        assert Y.device.type == "cuda"
        Ycpu = spectral_filter(L.cpu(), X.cpu(), resp, method=method)
        assert torch.allclose(Y.cpu(), Ycpu, atol=1e-4)


def test_cg_nonconvergence_warns_and_reports():
    W = knn_graph(np.random.default_rng(2).normal(size=(60, 2)), 5)
    f = SpectralFilter(laplacian(W), tikhonov(50.0), method="solve", max_iter=1, tol=1e-12)
    with pytest.warns(ConvergenceWarning, match="CG"):
        f(np.random.default_rng(3).normal(size=60))
    assert f.info is not None and not f.info.converged and f.info.iterations == 1


def test_jackson_damping_removes_gibbs_overshoot():
    """A step response: undamped Chebyshev overshoots (Gibbs), Jackson-damped stays in [0, 1]."""
    W = knn_graph(np.random.default_rng(4).normal(size=(80, 2)), 6)
    L = laplacian(W)
    lmax = float(np.linalg.eigvalsh(L)[-1]) * 1.01
    step = Response("step", {}, lambda lam: (lam < lmax / 3).to(lam.dtype))
    P = spectral_filter(L, np.eye(80), step, method="chebyshev", order=30, lmax=lmax)
    Pd = spectral_filter(
        L, np.eye(80), step, method="chebyshev", order=30, lmax=lmax, damping="jackson"
    )
    ev = np.linalg.eigvalsh((P + P.T) / 2)
    evd = np.linalg.eigvalsh((Pd + Pd.T) / 2)
    assert ev.min() < -0.01 or ev.max() > 1.01
    assert evd.min() >= -1e-9 and evd.max() <= 1 + 1e-9


# -- responses and bad input --------------------------------------------------------------
@SETTINGS
@given(st.sampled_from(["heat", "tikhonov"]), st.floats(0.0, 100.0), st.integers(1, 50))
def test_parse_response_round_trip(name, value, k):
    r = parse_response(f"{name}:{'t' if name == 'heat' else 'a'}={value!r}")
    assert r.name == name and list(r.params.values()) == [value]
    assert parse_response(str(r)).params == r.params  # str() round-trips exactly
    lam = torch.linspace(0, 5, 11, dtype=torch.float64)
    want = torch.exp(-value * lam) if name == "heat" else 1 / (1 + value * lam)
    assert torch.allclose(r(lam), want)
    lp = parse_response(f"lowpass:k={k}")
    assert lp.n_modes == k and parse_response(f"lowpass:{k}").n_modes == k


@pytest.mark.parametrize(
    "spec, match",
    [
        ("gauss:t=1", "unknown response name 'gauss'"),
        ("heat:s=1", "'heat' has no parameter 's'"),
        ("heat:t=abc", "is not a number"),
        ("heat:t=-1", "t must be a finite number >= 0"),
        ("lowpass", "lowpass"),
        ("lowpass:k=0", "k must be >= 1"),
    ],
)
def test_parse_response_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_response(spec)


def test_filter_rejects_bad_arguments():
    L = laplacian(np.array([[0, 1.0, 0], [1, 0, 1], [0, 1, 0]]))
    X = np.ones(3)
    with pytest.raises(ValueError, match="method must be one of"):
        spectral_filter(L, X, heat(1.0), method="lanczos")
    with pytest.raises(ValueError, match="discontinuous.*method='exact'"):
        spectral_filter(L, X, lowpass(2), method="chebyshev")
    with pytest.raises(ValueError, match="method='solve' applies only the Tikhonov"):
        spectral_filter(L, X, heat(1.0), method="solve")
    with pytest.raises(ValueError, match="lowpass k=4 exceeds"):
        spectral_filter(L, X, lowpass(4))
    with pytest.raises(ValueError, match="order must be"):
        spectral_filter(L, X, heat(1.0), method="chebyshev", order=0)
    with pytest.raises(ValueError, match="lmax must be"):
        spectral_filter(L, X, heat(1.0), method="chebyshev", lmax=-1.0)
    with pytest.raises(ValueError, match="lmax must be"):
        spectral_filter(L, X, heat(1.0), method="chebyshev", lmax="power")
    with pytest.raises(ValueError, match="damping must be"):
        spectral_filter(L, X, heat(1.0), method="chebyshev", damping="lanczos")
    with pytest.raises(ValueError, match="X has 2 rows"):
        spectral_filter(L, np.ones(2), heat(1.0))
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        spectral_filter(L, np.array([1.0, np.nan, 0.0]), heat(1.0))
    unchecked = SpectralFilter(L, heat(1.0), validate=False)
    assert np.isnan(unchecked(np.array([1.0, np.nan, 0.0]))).any()  # no check, NaN propagates
    with pytest.raises(ValueError, match="L must be symmetric"):
        spectral_filter(np.array([[1.0, -1.0], [0.0, 0.0]]), np.ones(2), heat(1.0))
    with pytest.raises(ValueError, match="L must be square"):
        graph_spectrum(np.ones((2, 3)))
    with pytest.raises(ValueError, match="k must satisfy"):
        graph_spectrum(L, k=4)
    with pytest.raises(TypeError, match="response must be"):
        spectral_filter(L, X, 3.0)
    with pytest.raises(ValueError, match="unknown response name"):
        spectral_filter(L, X, "diffusion:t=1")


def test_callable_response_and_numpy_float32():
    L = laplacian(np.array([[0, 2.0], [2.0, 0]], dtype=np.float32))
    Y = spectral_filter(L, np.array([1.0, 0.0], dtype=np.float32), lambda lam: lam)  # h(λ) = λ: Lx
    assert Y.dtype == np.float32
    np.testing.assert_allclose(Y, [2.0, -2.0], atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spectral_filter(L, np.ones(2, dtype=np.float32), heat(1.0), method="chebyshev")


def test_benchmark_main_runs_and_reports_accurate_filters(tmp_path, capsys):
    """The benchmark entry point on a tiny configuration: table printed, JSON written, and
    its measured errors are what the filters guarantee."""
    import json

    from _benchmarks import load_benchmark

    main = load_benchmark("spectral").main

    out = tmp_path / "spectral.json"
    argv = ["--sizes", "64", "--exact-max", "64", "--large", "300", "--orders", "30",
            "--repeat", "1", "--t", "1.0", "--output", str(out)]
    assert main(argv) == 0
    assert "chebyshev" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    methods = {(r["n"], r["method"]) for r in rows}
    want = {(64, "build"), (64, "exact"), (64, "chebyshev"), (64, "solve"), (300, "chebyshev")}
    assert want <= methods
    for r in rows:
        if r["method"] in ("chebyshev", "solve") and r["rel_err"] is not None:
            assert r["rel_err"] < 1e-6, r
