"""Graphs, Laplacians and the Dirichlet energy against dense float64 NumPy/SciPy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse.csgraph import connected_components

from graphopt.energy import dirichlet_energy
from graphopt.graph import degrees, knn_graph, laplacian, similarity_graph

pytestmark = [pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta"),
              pytest.mark.usefixtures("one_torch_thread")]
SETTINGS = settings(max_examples=20, deadline=None)


# -- strategies ---------------------------------------------------------------------------
@st.composite
def weight_matrices(draw, min_n=1, max_n=12, connected=False, allow_isolated=True):
    """Symmetric non-negative W with zero diagonal: random density, scale over 6 decades,
    optionally a spanning path (connected) or some isolated nodes."""
    n = draw(st.integers(min_n, max_n))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.floats(0.0, 1.0))
    scale = 10.0 ** draw(st.floats(-3, 3))
    W = rng.uniform(0.05, 1.0, (n, n)) * (rng.random((n, n)) < density)
    W = np.triu(W, 1)
    if connected:
        W[np.arange(n - 1), np.arange(1, n)] = rng.uniform(0.1, 1.0, n - 1)
    W = scale * (W + W.T)
    if allow_isolated and not connected and n >= 2 and draw(st.booleans()):
        iso = rng.random(n) < 0.3
        W[iso] = 0.0
        W[:, iso] = 0.0
    return W


def node_signals(n, d, seed):
    return np.random.default_rng(seed).normal(size=(n, d))


def dense(A):
    if isinstance(A, torch.Tensor):
        return (A.to_dense() if A.is_sparse else A).detach().cpu().numpy()
    return np.asarray(A)


def to_torch_sparse(W):
    return torch.from_numpy(W).to_sparse()


def ref_normalized(W):
    d = W.sum(1)
    s = np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)
    return np.diag((d > 0).astype(float)) - s[:, None] * W * s[None, :]


# -- Laplacians ---------------------------------------------------------------------------
@SETTINGS
@given(weight_matrices())
def test_combinatorial_laplacian_matches_reference_and_is_psd(W):
    L = laplacian(W)
    assert isinstance(L, np.ndarray)
    np.testing.assert_allclose(L, np.diag(W.sum(1)) - W, rtol=1e-12, atol=1e-12 * W.max(initial=1))
    np.testing.assert_array_equal(L, L.T)
    np.testing.assert_allclose(L @ np.ones(len(W)), 0.0, atol=1e-10 * max(W.max(initial=1), 1))
    ev = np.linalg.eigvalsh(L)
    assert ev[0] >= -1e-10 * max(ev[-1], 1.0)
    # Number of zero eigenvalues = number of connected components (isolated nodes included).
    ncomp = connected_components(sp.csr_matrix(W), directed=False)[0]
    assert int(np.sum(ev <= 1e-9 * max(ev[-1], 1.0))) == ncomp
    # Sparse input gives the same matrix.
    Ls = dense(laplacian(to_torch_sparse(W)))
    np.testing.assert_allclose(Ls, L, atol=1e-12 * max(W.max(initial=1), 1))


@SETTINGS
@given(weight_matrices())
def test_normalized_laplacian_spectrum_in_0_2_without_nan(W):
    L = laplacian(W, "normalized")
    assert np.isfinite(L).all()
    np.testing.assert_allclose(L, ref_normalized(W), atol=1e-12)
    ev = np.linalg.eigvalsh(L)
    assert ev[0] >= -1e-10 and ev[-1] <= 2 + 1e-10
    d = W.sum(1)
    if (d > 0).all():
        Dm = np.diag(d**-0.5)
        np.testing.assert_allclose(L, np.eye(len(W)) - Dm @ W @ Dm, atol=1e-12)
    Ls = laplacian(sp.csr_matrix(W), kind="normalized")
    assert Ls.is_sparse
    np.testing.assert_allclose(dense(Ls), L, atol=1e-12)


def test_isolated_node_gives_zero_row_in_both_laplacians():
    W = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=float)
    for kind in ("combinatorial", "normalized"):
        L = laplacian(W, kind)
        assert np.isfinite(L).all()
        np.testing.assert_array_equal(L[2], 0.0)


def test_laplacian_keeps_dtype_and_layout():
    W = torch.tensor([[0.0, 2.0], [2.0, 0.0]], dtype=torch.float32)
    L = laplacian(W)
    assert L.dtype == torch.float32 and not L.is_sparse
    Ls = laplacian(W.to_sparse_csr())
    assert Ls.layout == torch.sparse_coo and Ls.dtype == torch.float32
    np.testing.assert_allclose(dense(Ls), [[2, -2], [-2, 2]])
    np.testing.assert_allclose(dense(degrees(W)), [2, 2])


@pytest.mark.parametrize(
    "W, match",
    [
        (np.ones((2, 3)), "W must be square"),
        (np.ones(3), "W must be a 2-D"),
        (np.array([[0, 1.0], [0.5, 0]]), "W must be symmetric"),
        (np.array([[0, -1.0], [-1.0, 0]]), "W must have non-negative"),
        (np.array([[0, np.nan], [np.nan, 0]]), "W contains 2 NaN"),
        (np.zeros((0, 0)), "W must have at least one node"),
    ],
)
def test_laplacian_rejects_bad_weights(W, match):
    with pytest.raises(ValueError, match=match):
        laplacian(W)
    if W.ndim == 2 and W.shape[0] == W.shape[1] and W.size:
        with pytest.raises(ValueError, match=match):
            laplacian(torch.from_numpy(W).to_sparse())


def test_laplacian_rejects_unknown_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        laplacian(np.eye(2), "random-walk")


# -- Dirichlet energy ---------------------------------------------------------------------
@SETTINGS
@given(weight_matrices(), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_energy_identity_dense_and_sparse(W, d, seed):
    n = len(W)
    X = node_signals(n, max(d, 1), seed)
    X = X[:, 0] if d == 0 else X
    Xm = X.reshape(n, -1)
    diff = ((Xm[:, None, :] - Xm[None, :, :]) ** 2).sum(-1)
    ref = 0.5 * float((W * diff).sum())
    L = laplacian(W)
    tol = 1e-9 * max(abs(ref), W.max(initial=1) * (Xm**2).sum(), 1e-300)
    assert abs(dirichlet_energy(X, L) - ref) <= tol
    e_sparse = dirichlet_energy(torch.from_numpy(X), laplacian(to_torch_sparse(W)))
    assert abs(float(e_sparse) - ref) <= tol
    e_csr = dirichlet_energy(torch.from_numpy(X), torch.from_numpy(L).to_sparse_csr())
    assert abs(float(e_csr) - ref) <= tol


@SETTINGS
@given(st.integers(1, 8), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_energy_gradient_is_L_plus_LT_X(n, d, seed):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))  # any square matrix, not only a Laplacian
    X = torch.tensor(rng.normal(size=(n, d)), requires_grad=True)
    dirichlet_energy(X, torch.from_numpy(A)).backward()
    np.testing.assert_allclose(X.grad.numpy(), (A + A.T) @ X.detach().numpy(), rtol=1e-10, atol=1e-12)
    # Sparse Laplacian: gradient 2 L X.
    W = np.abs(A + A.T)
    np.fill_diagonal(W, 0)
    L = np.diag(W.sum(1)) - W
    X.grad = None
    dirichlet_energy(X, torch.from_numpy(L).to_sparse()).backward()
    np.testing.assert_allclose(X.grad.numpy(), 2 * L @ X.detach().numpy(), rtol=1e-10, atol=1e-10)


def test_energy_is_differentiable_in_dense_L_and_checks_shapes():
    L = torch.tensor([[1.0, -1.0], [-1.0, 1.0]], requires_grad=True)
    x = torch.tensor([1.0, 3.0])
    dirichlet_energy(x, L).backward()
    np.testing.assert_allclose(L.grad.numpy(), np.outer([1, 3], [1, 3]))
    with pytest.raises(ValueError, match="X has 3 rows"):
        dirichlet_energy(np.ones(3), np.eye(2))
    with pytest.raises(ValueError, match="L must be square"):
        dirichlet_energy(torch.ones(2), torch.ones(2, 3))


# -- k-NN graphs --------------------------------------------------------------------------
def ref_knn(X, k, kernel, sigma, symmetrize):
    """Brute force: full n x n distances/similarities, argsort, explicit loops."""
    n = len(X)
    if kernel == "gaussian":
        S = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(S, np.inf)
        nb = np.argsort(S, axis=1, kind="stable")[:, :k]
        dist = np.take_along_axis(S, nb, 1)
        sig = np.median(dist) if sigma is None else sigma
        val = np.exp(-(dist**2) / sig**2)
    else:
        U = X / np.linalg.norm(X, axis=1, keepdims=True)
        S = U @ U.T
        np.fill_diagonal(S, -np.inf)
        nb = np.argsort(-S, axis=1, kind="stable")[:, :k]
        val = np.clip(np.take_along_axis(S, nb, 1), 0, None)
    A = np.zeros((n, n))
    for i in range(n):
        A[i, nb[i]] = val[i]
    return np.maximum(A, A.T) if symmetrize == "max" else (A + A.T) / 2


@SETTINGS
@given(
    st.integers(3, 30),
    st.integers(1, 5),
    st.sampled_from(["gaussian", "cosine"]),
    st.sampled_from(["max", "mean"]),
    st.one_of(st.none(), st.floats(0.1, 10.0)),
    st.integers(0, 2**32 - 1),
)
def test_knn_graph_matches_brute_force(n, d, kernel, symmetrize, sigma, seed):
    if kernel == "cosine":
        d = max(d, 2)  # in 1-D all cosines are ±1: ties make the neighbour choice arbitrary
    X = node_signals(n, d, seed)
    k = min(n - 1, 1 + seed % 6)
    W = knn_graph(X, k, kernel=kernel, sigma=sigma, symmetrize=symmetrize)
    ref = ref_knn(X, k, kernel, sigma, symmetrize)
    np.testing.assert_allclose(W, ref, rtol=1e-10, atol=1e-12)
    assert (np.diag(W) == 0).all() and (W >= 0).all()
    np.testing.assert_array_equal(W, W.T)


@SETTINGS
@given(
    st.integers(4, 40),
    st.integers(1, 7),
    st.sampled_from(["gaussian", "cosine"]),
    st.integers(0, 2**32 - 1),
)
def test_knn_chunked_equals_unchunked_and_sparse_equals_dense(n, chunk, kernel, seed):
    X = torch.from_numpy(node_signals(n, 3, seed))
    k = min(n - 1, 4)
    full = knn_graph(X, k, kernel=kernel, sparse=False, chunk_size=n, algorithm="brute")
    chunked = knn_graph(X, k, kernel=kernel, sparse=True, chunk_size=chunk, algorithm="brute")
    assert chunked.is_sparse and not full.is_sparse
    np.testing.assert_allclose(dense(chunked), full.numpy(), rtol=1e-12, atol=1e-14)
    # Every node keeps at least its k chosen neighbours after max-symmetrisation.
    assert ((full.numpy() > 0).sum(1) >= k).all() or kernel == "cosine"


@SETTINGS
@given(st.integers(5, 60), st.integers(1, 4), st.integers(0, 2**32 - 1))
def test_knn_kdtree_equals_brute_force(n, d, seed):
    X = torch.from_numpy(node_signals(n, d, seed))
    k = min(n - 1, 5)
    tree = knn_graph(X, k, algorithm="kdtree", sparse=False)
    brute = knn_graph(X, k, algorithm="brute", sparse=False, chunk_size=7)
    np.testing.assert_allclose(tree.numpy(), brute.numpy(), rtol=1e-12, atol=1e-14)


def test_knn_graph_float32_and_default_layout_rule():
    X = torch.randn(40, 3, dtype=torch.float32)
    W = knn_graph(X, 3)
    assert W.dtype == torch.float32 and not W.is_sparse
    Xbig = torch.randn(1100, 2, dtype=torch.float64)
    Wbig = knn_graph(Xbig, 3)  # n > SPARSE_THRESHOLD: sparse by default
    assert Wbig.is_sparse and Wbig._nnz() <= 2 * 3 * 1100


def test_knn_graph_duplicate_points_have_finite_weights():
    X = np.zeros((6, 2))
    X[3:] = 1.0
    for algorithm in ("brute", "kdtree"):
        W = knn_graph(X, 2, algorithm=algorithm)  # all k-NN distances 0: sigma falls back to 1
        assert np.isfinite(W).all()
        np.testing.assert_allclose(W[:3, :3], 1.0 - np.eye(3))
        assert (W[:3, 3:] == 0).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 5}, "k must satisfy 1 <= k < n = 5"),
        ({"k": 0}, "k must satisfy"),
        ({"k": 2, "kernel": "laplace"}, "kernel must be one of"),
        ({"k": 2, "symmetrize": "min"}, "symmetrize must be one of"),
        ({"k": 2, "sigma": -1.0}, "sigma must be a positive"),
        ({"k": 2, "chunk_size": 0}, "chunk_size must be"),
        ({"k": 2, "algorithm": "ball"}, "algorithm must be one of"),
        ({"k": 2, "kernel": "cosine", "algorithm": "kdtree"}, "algorithm='kdtree' supports"),
    ],
)
def test_knn_graph_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        knn_graph(np.random.default_rng(0).normal(size=(5, 2)), **kwargs)


def test_knn_graph_rejects_nan_and_bad_shapes():
    X = np.ones((4, 2))
    X[1, 1] = np.nan
    with pytest.raises(ValueError, match="X contains 1 NaN"):
        knn_graph(X, 2)
    with pytest.raises(ValueError, match="X must have at least 2 rows"):
        knn_graph(np.ones((1, 3)), 1)
    with pytest.raises(ValueError, match="X must have shape"):
        knn_graph(np.ones((2, 2, 2)), 1)
    with pytest.raises(TypeError, match="k must be an int"):
        knn_graph(np.ones((3, 2)), 1.5)


# -- similarity graphs --------------------------------------------------------------------
@SETTINGS
@given(
    st.integers(2, 15),
    st.integers(2, 8),
    st.sampled_from(["cosine", "correlation"]),
    st.integers(0, 2**32 - 1),
)
def test_similarity_graph_matches_reference(n, T, measure, seed):
    S = node_signals(n, T, seed)
    S[0] = S[0, 0] if measure == "correlation" else 0.0  # a constant (or zero) row: isolated
    W = similarity_graph(S, measure=measure)
    C = S - S.mean(1, keepdims=True) if measure == "correlation" else S
    nrm = np.linalg.norm(C, axis=1)
    ok = nrm > 1e-12
    ref = np.zeros((n, n))
    ref[np.ix_(ok, ok)] = np.clip((C[ok] / nrm[ok, None]) @ (C[ok] / nrm[ok, None]).T, 0, None)
    np.fill_diagonal(ref, 0)
    np.testing.assert_allclose(W, ref, atol=1e-10)
    assert (W[0] == 0).all() and np.isfinite(laplacian(W, "normalized")).all()
    if n >= 3:
        Wk = similarity_graph(S, measure=measure, k=2, sparse=True)
        assert Wk.is_sparse
        Wk = dense(Wk)
        # Each kept edge is a clipped similarity; the k-NN graph is a subgraph of the full one.
        assert ((Wk == 0) | np.isclose(Wk, W, atol=1e-10)).all()


def test_similarity_graph_rejects_unknown_measure():
    with pytest.raises(ValueError, match="measure must be one of"):
        similarity_graph(np.ones((3, 2)), measure="spearman")
