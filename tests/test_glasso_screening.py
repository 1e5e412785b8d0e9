"""Exact screening (connected components of |S_ij| > α) changes nothing but the cost.

Screened and unscreened solves agree to 1e-10 in objective with the same support, on drawn
block-structured (blocks hidden by a random permutation) and random matrices, singly, in
batches, along a path and with a penalised diagonal; the screened solution also matches cvxpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.solvers.estimators import GraphicalLasso
from graphopt.solvers.graphical_lasso import graphical_lasso, graphical_lasso_path
from graphopt.solvers.reference import graphical_lasso_cvxpy


def block_covariance(seed: int, sizes: list[int], n: int = 30) -> np.ndarray:
    """Correlation blocks of the given sizes (strongly correlated within: one common factor),
    exact zeros across, rows and columns shuffled so that the blocks are not contiguous."""
    rng = np.random.default_rng(seed)
    blocks = []
    for k in sizes:
        X = rng.standard_normal((n, k)) + rng.uniform(0.5, 2.0) * rng.standard_normal((n, 1))
        C = np.cov(X, rowvar=False).reshape(k, k)
        blocks.append(C)
    S = scipy.linalg.block_diag(*blocks)
    perm = rng.permutation(S.shape[0])
    return S[np.ix_(perm, perm)]


def random_covariance(seed: int, p: int) -> np.ndarray:
    X = np.random.default_rng(seed).standard_normal((2 * p, p))
    return np.cov(X, rowvar=False).reshape(p, p)


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1.0)


def _support(P: np.ndarray) -> np.ndarray:
    return np.abs(P) > 1e-6 * np.abs(P).max()


def _assert_same(screened, whole, S, alpha) -> None:
    assert screened.converged and whole.converged
    assert _rel(screened.objective, whole.objective) <= 1e-10
    assert np.array_equal(_support(screened.precision), _support(whole.precision))
    # Wherever the solution is zero off the diagonal... nothing is forced; but where
    # |S_ij| > α the two variables share a block, so the blocks cover every such pair.
    strong = (np.abs(S) > alpha) & ~np.eye(S.shape[0], dtype=bool)
    assert len(screened.block_sizes) == 1 or not strong.all()
    assert sum(screened.block_sizes) == S.shape[0] and whole.block_sizes == (S.shape[0],)


@pytest.mark.parametrize("method", ["admm", "bcd"])
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000),
       sizes=st.lists(st.integers(1, 5), min_size=1, max_size=6),
       alpha=st.floats(0.05, 0.6), pen=st.booleans())
def test_block_structured_screening_is_exact(method, seed, sizes, alpha, pen):
    S = block_covariance(seed, sizes)
    alpha = alpha * float(np.mean(np.diag(S)))
    screened = graphical_lasso(S, alpha, method=method, tol=1e-12, penalize_diagonal=pen)
    whole = graphical_lasso(S, alpha, method=method, tol=1e-12, penalize_diagonal=pen,
                            screen=False)
    _assert_same(screened, whole, S, alpha)
    # At least as fine as the drawn blocks: screening never merges two of them.
    assert len(screened.block_sizes) >= len(sizes)
    assert list(screened.block_sizes) == sorted(screened.block_sizes, reverse=True)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 12), alpha=st.floats(0.05, 0.8))
def test_random_matrices_screening_is_exact(seed, p, alpha):
    S = random_covariance(seed, p)
    alpha = alpha * float(np.mean(np.diag(S)))
    screened = graphical_lasso(S, alpha, tol=1e-12)
    whole = graphical_lasso(S, alpha, tol=1e-12, screen=False)
    _assert_same(screened, whole, S, alpha)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 10_000), sizes=st.lists(st.integers(1, 4), min_size=2, max_size=5))
def test_screened_matches_cvxpy(seed, sizes):
    S = block_covariance(seed, sizes)
    alpha = 0.2 * float(np.mean(np.diag(S)))
    ref = graphical_lasso_cvxpy(S, alpha)
    res = graphical_lasso(S, alpha, tol=1e-10)
    assert res.converged
    assert _rel(res.objective, ref.objective) <= 1e-6
    assert res.objective - ref.objective <= res.dual_gap + 1e-9


def test_size_one_blocks_closed_form():
    S = np.diag([0.5, 2.0, 4.0]) + 0.01 * (np.ones((3, 3)) - np.eye(3))
    res = graphical_lasso(S, 0.1)
    assert res.block_sizes == (1, 1, 1) and res.n_iter == 0 and res.converged
    np.testing.assert_allclose(res.precision, np.diag(1.0 / np.diag(S)), rtol=0, atol=0)
    assert res.dual_gap == 0.0
    pen = graphical_lasso(S, 0.1, penalize_diagonal=True)
    np.testing.assert_allclose(np.diag(pen.precision), 1.0 / (np.diag(S) + 0.1), rtol=1e-15)
    assert pen.objective == pytest.approx(np.sum(np.log(np.diag(S) + 0.1)) + 3, rel=1e-14)


@pytest.mark.parametrize("method", ["admm", "bcd"])
def test_batch_with_different_blocks_equals_loop(method):
    Ss = [block_covariance(s, sz) for s, sz in ((0, [3, 3, 1]), (1, [2, 2, 2, 1]), (2, [7]))]
    S = np.stack(Ss)
    alphas = np.array([0.2, 0.3, 0.1])
    batch = graphical_lasso(S, alphas, method=method, tol=1e-11)
    assert len(batch.block_sizes) == 3 and batch.converged.all()
    for b in range(3):
        single = graphical_lasso(S[b], alphas[b], method=method, tol=1e-11, screen=False)
        assert _rel(batch.objective[b], single.objective) <= 1e-10
        assert sum(batch.block_sizes[b]) == 7
        # Composed history: one row per check, the last equal to the final totals.
        assert batch.history["objective"][-1][b] == pytest.approx(batch.objective[b], rel=1e-12)


def test_warm_start_and_path_are_screened():
    S = block_covariance(5, [4, 3, 2, 1])
    path = graphical_lasso_path(S, [0.4, 0.2, 0.1, 0.05], tol=1e-11)
    for a, r in zip([0.4, 0.2, 0.1, 0.05], path):
        whole = graphical_lasso(S, a, tol=1e-11, screen=False)
        assert r.converged and _rel(r.objective, whole.objective) <= 1e-10
    # Coarser blocks (never finer) as α falls.
    assert len(path[0].block_sizes) >= len(path[-1].block_sizes)
    warm = graphical_lasso(S, 0.1, tol=1e-11, init=path[2])
    assert warm.n_iter <= path[2].n_iter + 2


def test_estimator_uses_screening():
    rng = np.random.default_rng(0)
    X = np.hstack([rng.standard_normal((200, 3)) @ rng.standard_normal((3, 3)) for _ in range(3)])
    est = GraphicalLasso(alpha=0.3, tol=1e-11).fit(X)
    off = GraphicalLasso(alpha=0.3, tol=1e-11, screen=False).fit(X)
    assert len(est.block_sizes_) >= 2 and off.block_sizes_ == (9,)
    np.testing.assert_allclose(est.precision_, off.precision_, atol=1e-4)


def test_large_indefinite_input_still_rejected():
    """The PSD check by Cholesky (p > 32) rejects what the eigenvalue check rejects."""
    S = np.eye(40)
    S[0, 1] = S[1, 0] = 2.0                    # eigenvalue −1
    with pytest.raises(ValueError, match="positive semidefinite"):
        graphical_lasso(S, 0.1)
    S[0, 1] = S[1, 0] = 1.0 + 1e-9             # λ_min = −1e-9: PSD up to round-off, accepted
    assert graphical_lasso(S, 0.1).converged


def test_converged_means_the_summed_certificate_meets_tol():
    """Blocks whose objectives have both signs: each block can meet tol·max(|f_b|, 1) while
    the sum misses tol·max(|Σ f_b|, 1). A screened problem is then re-solved until the
    total meets tol, or reported unconverged; max_iter still caps the iterations."""
    rng = np.random.default_rng(944)
    X = rng.standard_normal((2, 5))
    X -= X.mean(axis=0)
    S = X.T @ X / 2
    alpha = 0.390625 * float(np.mean(np.diag(S)))
    for max_iter in (5, 6, 40):
        res = graphical_lasso(S, alpha, method="bcd", max_iter=max_iter, tol=1e-10,
                              penalize_diagonal=True, warn=False)
        assert len(res.block_sizes) > 1
        assert res.n_iter <= max_iter
        assert res.converged == (res.relative_gap <= 1e-10)
        assert len(res.history["gap_bound"]) == len(res.history["iteration"])
    assert res.converged


@settings(max_examples=60, deadline=None)
@given(p=st.integers(1, 40), density=st.floats(0.0, 0.3), seed=st.integers(0, 2**31 - 1))
def test_components_match_scipy(p, density, seed):
    """The compiled depth-first search finds the components SciPy's csgraph finds, on drawn
    random graphs from empty to well connected (as index sets: labels may be numbered
    differently)."""
    import torch
    from scipy.sparse.csgraph import connected_components

    from graphopt.solvers._screening import components

    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((p, p)) < density, 1)
    adj = upper | upper.T
    S = np.where(adj, 0.5, 0.0) + np.eye(p)  # |S_ij| > α = 0.25 exactly on the edges
    got = components(torch.from_numpy(S)[None], torch.tensor([0.25], dtype=torch.float64))[0]
    n, labels = connected_components(adj, directed=False)
    want = sorted((np.flatnonzero(labels == c) for c in range(n)),
                  key=lambda ix: (-ix.size, int(ix[0])))
    assert [ix.tolist() for ix in got] == [ix.tolist() for ix in want]
