"""The graphical lasso's certificate is one anyone can check (docs/solvers.md, "Certificates").

From the returned fields alone, with NumPy's ``slogdet`` and no graphopt helper, a user
re-derives the bound f(Θ) − f* ≤ f(Θ) − (log det W̃ + p): W̃ = ``dual_covariance`` must be
symmetric, positive definite and dual feasible (W̃_ii = S_ii, |W̃_ij − S_ij| ≤ α), and the
recomputed gap must equal ``dual_gap`` to 1e-10 relative to max(|f|, 1). ``dual_gap`` is never
negative, including at the unconverged iterates where tr(SΘ) − p + α‖Θ‖₁,off is.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from graphopt.exceptions import ConvergenceWarning
from graphopt.solvers.graphical_lasso import graphical_lasso
from graphopt.solvers.reference import graphical_lasso_cvxpy, graphical_lasso_sklearn

from test_graphical_lasso import KINDS, make_covariance


def numpy_certificate(S: np.ndarray, theta: np.ndarray, W: np.ndarray, alpha: float,
                      penalize_diagonal: bool = False) -> tuple[float, float]:
    """(f(Θ), f(Θ) − log det W̃ − p), written out with NumPy and nothing else; the gap is +inf
    when W̃ is not positive definite (then nothing is certified)."""
    p = S.shape[0]
    off = ~np.eye(p, dtype=bool)
    # Feasibility of W̃ on the stored numbers, up to the one rounding of W̃_ij = S_ij + Y_ij.
    assert np.array_equal(W, W.T), "dual_covariance must be exactly symmetric"
    slack = alpha + 2 * np.finfo(np.float64).eps * (np.abs(S) + alpha)
    if penalize_diagonal:
        assert np.all(np.abs(np.diag(W) - np.diag(S)) <= np.diag(slack))
    else:
        assert np.array_equal(np.diag(W), np.diag(S)), "W̃_ii must equal S_ii"
    assert np.all((np.abs(W - S) <= slack)[off])
    np.linalg.cholesky(theta)  # Θ positive definite (raises otherwise)
    logdet_t = np.linalg.slogdet(theta)[1]
    l1 = np.abs(theta).sum() if penalize_diagonal else np.abs(theta[off]).sum()
    f = -logdet_t + np.sum(S * theta) + alpha * l1
    try:
        # Positive definiteness by Cholesky: slogdet's sign is +1 for an even number of
        # negative eigenvalues as well.
        np.linalg.cholesky(W)
    except np.linalg.LinAlgError:
        return float(f), float("inf")
    return float(f), float(f - np.linalg.slogdet(W)[1] - p)


def _agrees(gap: float, reported: float, f: float) -> bool:
    if np.isinf(gap) or np.isinf(reported):
        return gap == reported
    return abs(gap - reported) <= 1e-10 * max(abs(f), 1.0)


@pytest.mark.parametrize("method", ["admm", "bcd"])
@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(KINDS), seed=st.integers(0, 10_000), p=st.integers(1, 12),
       alpha=st.floats(0.01, 0.5), max_iter=st.integers(1, 40), pen=st.booleans(),
       screen=st.booleans())
def test_bound_recomputed_from_fields_alone(method, kind, seed, p, alpha, max_iter, pen, screen):
    S = make_covariance(kind, seed, p)
    alpha = alpha * float(np.mean(np.diag(S)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = graphical_lasso(S, alpha, method=method, max_iter=max_iter, tol=1e-10,
                              penalize_diagonal=pen, screen=screen)
    assert res.dual_gap >= 0
    f, gap = numpy_certificate(S, res.precision, res.dual_covariance, alpha, pen)
    scale = max(abs(f), 1.0)
    assert abs(f - res.objective) <= 1e-10 * scale
    assert _agrees(gap, res.dual_gap, f)
    assert res.relative_gap == pytest.approx(res.dual_gap / scale, rel=1e-12, abs=1e-300)
    if res.converged:
        assert res.relative_gap <= 1e-10
    if np.isinf(res.dual_gap):
        assert not res.converged


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), p=st.integers(2, 8), B=st.integers(2, 4))
# A screened float32 batch (blocks 3 + 1) whose gap, certified on the assembled matrix
# instead of block by block, came out at −1.9e-11.
@example(seed=390, p=4, B=4)
def test_batched_and_torch_certificates(seed, p, B):
    S = np.stack([make_covariance(KINDS[(seed + b) % len(KINDS)], seed + b, p) for b in range(B)])
    alphas = np.linspace(0.05, 0.3, B) * S.diagonal(axis1=1, axis2=2).mean(axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = graphical_lasso(torch.tensor(S, dtype=torch.float32), torch.tensor(alphas),
                              max_iter=6, tol=1e-10)
    assert res.dual_covariance.dtype == torch.float64 and res.dual_covariance.shape == (B, p, p)
    assert bool((res.dual_gap >= 0).all())
    for b in range(B):
        # The float32 precision is certified as stored: the float64 upcast of its entries.
        theta = res.precision[b].double().numpy()
        # ... and so is α: the problem solved is the one with α rounded to float32 (res.alpha).
        f, gap = numpy_certificate(S[b].astype(np.float32).astype(np.float64), theta,
                                   res.dual_covariance[b].numpy(), float(res.alpha[b]))
        assert _agrees(gap, float(res.dual_gap[b]), f)
        assert not (np.isinf(gap) and bool(res.converged[b]))


def test_old_formula_is_negative_where_the_certificate_is_not():
    """An unconverged iterate: tr(SΘ) − p + α‖Θ‖₁,off < 0 there, the certified gap is > 0."""
    S = make_covariance("ill_conditioned", 0, 8)
    alpha = 1e-3
    found = False
    for max_iter in range(1, 30):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = graphical_lasso(S, alpha, max_iter=max_iter, tol=1e-14)
        P = res.precision
        old = np.sum(S * P) - 8 + alpha * (np.abs(P).sum() - np.abs(np.diag(P)).sum())
        assert res.dual_gap >= 0
        found = found or old < 0
    assert found, "the pair formula should go negative on some iterate of this problem"


def test_references_carry_checkable_certificates():
    S = make_covariance("random", 3, 6)
    for res in (graphical_lasso_cvxpy(S, 0.1), graphical_lasso_sklearn(S, 0.1, tol=1e-10,
                                                                          enet_tol=1e-10)):
        f, gap = numpy_certificate(S, res.precision, res.dual_covariance, 0.1)
        assert gap >= -1e-12 and res.dual_gap >= 0
        assert _agrees(gap, res.dual_gap, f)
        assert res.relative_gap < 1e-6


def test_no_positive_definite_dual_point_gives_infinite_gap():
    """A Θ whose projected inverse is not PD (and no solver dual) must not be certified."""
    from graphopt.solvers.reference import glasso_certificate

    S = np.array([[1.0, 1.0], [1.0, 1.0]])     # rank 1: W̃ = S is singular
    gap, rel, _ = glasso_certificate(S, np.eye(2), alpha=0.0)
    assert gap == np.inf and rel == np.inf
