"""The compiled glasso's Cholesky factor updates (graphopt/solvers/_glasso_cd.py) against
NumPy's factorisation, on hypothesis-drawn positive definite matrices and face changes."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from graphopt.solvers._glasso_cd import _factor_append, _factor_delete


def _spd(p: int, seed: int, cond_exp: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((p, p)))
    return (Q * np.logspace(0, cond_exp, p)) @ Q.T


@settings(max_examples=60, deadline=None)
@given(p=st.integers(1, 25), seed=st.integers(0, 2**31 - 1), cond_exp=st.floats(0, 6),
       data=st.data())
def test_factor_append_and_delete_match_numpy(p, seed, cond_exp, data):
    """Appending coordinates one by one, then deleting drawn positions, leaves L with
    L Lᵀ = W[face, face] and L equal to NumPy's Cholesky factor of that submatrix."""
    W = _spd(p, seed, cond_exp)
    W = 0.5 * (W + W.T)
    order = data.draw(st.permutations(range(p)))
    L = np.zeros((p, p))
    face = np.zeros(p, dtype=np.int64)
    m = 0
    for i in order:
        assert _factor_append(W, L, face, m, int(i))
        m += 1
    n_delete = data.draw(st.integers(0, p - 1))
    for _ in range(n_delete):
        r = data.draw(st.integers(0, m - 1))
        _factor_delete(L, face, m, r)
        m -= 1
    idx = face[:m]
    sub = W[np.ix_(idx, idx)]
    Lm = np.tril(L[:m, :m])
    scale = np.abs(sub).max()
    assert np.abs(Lm @ Lm.T - sub).max() <= 1e-10 * scale
    assert np.allclose(Lm, np.linalg.cholesky(sub), rtol=1e-6, atol=1e-8 * np.sqrt(scale))
    assert sorted(idx.tolist()) == sorted(set(idx.tolist()))  # no coordinate twice


def test_factor_append_refuses_a_singular_border():
    """A coordinate that makes W[face, face] singular is refused, not factored into NaN."""
    W = np.array([[1.0, 1.0], [1.0, 1.0]])
    L = np.zeros((2, 2))
    face = np.zeros(2, dtype=np.int64)
    assert _factor_append(W, L, face, 0, 0)
    assert not _factor_append(W, L, face, 1, 1)
