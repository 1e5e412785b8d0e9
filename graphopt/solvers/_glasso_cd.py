"""Compiled glasso: column lassos by coordinate descent with active sets (CPU path of BCD).

The block coordinate descent of Friedman et al. (2008; docs/algorithms.md §1) on the
covariance W = Θ⁻¹, one column j at a time. With β the column's lasso coefficients
(warm-started from the previous sweep),

    β = argmin_β  ½ βᵀ W₁₁ β − s₁₂ᵀ β + Σ_i λ_ij |β_i|,     w₁₂ ← W₁₁ β,

solved by cyclic coordinate descent: for coordinate i, with v = W₁₁β kept up to date,

    β_i ← soft(s_ij − v_i + W_ii β_i, λ_ij) / W_ii,     v ← v + (Δβ_i) W_·i      (O(p)).

Each lasso first passes over every coordinate, then only over its non-zero ones (the active
set A, keeping v only on A, so a move costs O(|A|) instead of O(p)) until they settle, with
a support-Newton step every second active pass while the passes contract slowly (the minimiser on the face of β's signs,
taken up to the first zero crossing; see :func:`_support_newton`); then v is recomputed
and a full pass lets entries in. The lasso ends when a full pass changes nothing beyond the
inner tolerance. Nothing is copied: W₁₁ is W with row and column j skipped (scikit-learn
copies W₁₁, O(p²) per column and O(p³) per sweep). The diagonal is fixed at
W_jj = S_jj + λ_jj, the optimality condition of θ_jj > 0.

After the sweeps Θ is rebuilt from W and the β's (θ_jj = 1 / (W_jj − w₁₂ᵀ β),
θ_·j = −β θ_jj) and certified like every solver here: the relative gap between f(Θ) and d(W̃), W̃ the
projection of W onto the dual-feasible set, every ``_CHECK_EVERY`` sweeps. The sweeps
stop early on glasso's cheap test (mean |ΔW| per sweep below ``thr`` times the mean
|S_ij|, i ≠ j); once that test holds and the certificate does not, ``thr`` and the inner
tolerance are tightened tenfold and the sweeps resume from where they were. Compiled with
numba (``cache=True``); float64 inside.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from scipy.linalg import lapack

from ._kernels import soft

__all__ = ["solve_one"]

_THR0 = 1e-3          # first sweep-stopping threshold (mean |ΔW| / mean |S_ij|)
_INNER0 = 1e-4        # first inner tolerance (W_ii |Δβ_i| / mean |S_ij|)
_TIGHTEN = 10.0       # factor by which both shrink while the certificate is not met
_CHECK_EVERY = 2      # sweeps between certificates (two Cholesky factorisations each)
_FULL_PASSES = 100    # full coordinate passes per lasso and sweep, at most ...
_ACTIVE_PASSES = 200  # ... and active-set passes after each (the next sweep resumes from β)
_NEWTON_AFTER = 2       # active-set passes between support-Newton steps
_SLOW = 0.5             # ... taken only when a pass shrank the largest change by less
_NEWTON_STEPS = 5       # solves per support-Newton step (each drops a coordinate or finishes)
_NEWTON_MAX = 2000    # largest active set solved directly (an n³/3 solve)


@njit(cache=True)
def _pass(W: np.ndarray, S: np.ndarray, lam: np.ndarray, beta: np.ndarray, v: np.ndarray,
          j: int, coords: np.ndarray, n: int, update: np.ndarray, m: int) -> float:
    """One coordinate pass over coords[:n] of column j's lasso, keeping v = W₁₁β up to date
    on update[:m] only; returns max W_ii |Δβ_i|."""
    biggest = 0.0
    for t in range(n):
        i = coords[t]
        wii = W[i, i]
        old = beta[i]
        new = soft(S[i, j] - v[i] + wii * old, lam[i, j]) / wii
        if new != old:
            d = new - old
            beta[i] = new
            row = W[i]
            for u in range(m):
                k = update[u]
                v[k] += d * row[k]
            change = wii * abs(d)
            if change > biggest:
                biggest = change
    return biggest


@njit(cache=True)
def _refresh(W: np.ndarray, beta: np.ndarray, v: np.ndarray, every: np.ndarray,
             n_all: int) -> None:
    """v = W₁₁β on every coordinate (after passes that kept it only on the active set)."""
    p = W.shape[0]
    for k in range(p):
        v[k] = 0.0
    for t in range(n_all):
        i = every[t]
        b = beta[i]
        if b != 0.0:
            row = W[i]
            for k in range(p):
                v[k] += b * row[k]


@njit(cache=True)
def _support_newton(W: np.ndarray, S: np.ndarray, lam: np.ndarray, beta: np.ndarray,
                    v: np.ndarray, j: int, active: np.ndarray, n: int) -> int:
    """Newton steps on the active set A = active[:n] with the signs of β fixed: the
    minimiser x = W_AA⁻¹ (s_A − λ_A ∘ sign β_A) of the lasso restricted to that face. The
    step β → β + t(x − β) goes to x when no sign changes (then the lasso is solved up to the
    coordinates outside A), else to the first zero crossing, which leaves the face and the
    active set; the objective decreases along the segment, since on the face it is a convex
    quadratic minimised at x. At most ``_NEWTON_STEPS`` solves; v is kept on A. Returns the
    size of the active set left (0 < result < n: coordinates dropped)."""
    idx = active[:n].copy()
    for _ in range(_NEWTON_STEPS):
        sub = np.empty((n, n))
        rhs = np.empty(n)
        for a in range(n):
            i = idx[a]
            for b in range(n):
                sub[a, b] = W[i, idx[b]]
            rhs[a] = S[i, j] - lam[i, j] * (1.0 if beta[i] > 0 else -1.0)
        x = np.linalg.solve(sub, rhs)
        t, hit = 1.0, -1
        for a in range(n):
            b = beta[idx[a]]
            if x[a] * b <= 0.0:
                cross = b / (b - x[a])
                if cross < t:
                    t, hit = cross, a
        for a in range(n):
            i = idx[a]
            d = t * (x[a] - beta[i])
            if a == hit:
                d = -beta[i]  # exactly to zero
            if d != 0.0:
                beta[i] += d
                row = W[i]
                for u in range(n):
                    k = idx[u]
                    v[k] += d * row[k]
        if hit < 0:
            return n
        m = 0
        for a in range(n):
            if beta[idx[a]] != 0.0:
                idx[m] = idx[a]
                m += 1
        n = m
        if n == 0:
            return 0
    return n


@njit(cache=True)
def _sweeps(W: np.ndarray, S: np.ndarray, lam: np.ndarray, Beta: np.ndarray,
            max_sweeps: int, thr: float, inner_tol: float) -> tuple[int, bool]:
    """Glasso sweeps over all columns until mean |ΔW_ij| ≤ thr (both absolute); W and Beta
    (column j: β of column j, Beta[j, j] unused) are updated in place. Returns the sweeps
    done and whether the thr test stopped them."""
    p = W.shape[0]
    v = np.empty(p)
    beta = np.empty(p)
    every = np.empty(p - 1, dtype=np.int64)
    active = np.empty(p - 1, dtype=np.int64)
    done = 0
    for _ in range(max_sweeps):
        done += 1
        moved = 0.0
        for j in range(p):
            n_all = 0
            for i in range(p):
                if i != j:
                    every[n_all] = i
                    n_all += 1
            for i in range(p):
                beta[i] = Beta[i, j] if i != j else 0.0
            _refresh(W, beta, v, every, n_all)
            for _pass_no in range(_FULL_PASSES):
                if _pass(W, S, lam, beta, v, j, every, n_all, every, n_all) <= inner_tol:
                    break
                # The active set until it settles: v is needed (and kept) only there.
                last = math.inf
                for passes in range(1, _ACTIVE_PASSES + 1):
                    n_act = 0
                    for t in range(n_all):
                        if beta[every[t]] != 0.0:
                            active[n_act] = every[t]
                            n_act += 1
                    if n_act == 0:
                        break
                    change = _pass(W, S, lam, beta, v, j, active, n_act, active, n_act)
                    if change <= inner_tol:
                        break
                    # Newton only where coordinate descent is slow (it contracts by less
                    # than _SLOW per pass): there a solve pays; where it is fast, it does not.
                    if passes % _NEWTON_AFTER == 0 and change > _SLOW * last \
                            and n_act <= _NEWTON_MAX:
                        _support_newton(W, S, lam, beta, v, j, active, n_act)
                    last = change
                _refresh(W, beta, v, every, n_all)
            # v_j picked up W_jj β_j terms only through β_j = 0, so v is W₁₁β on i ≠ j.
            for i in range(p):
                if i != j:
                    moved += abs(v[i] - W[i, j])
                    W[i, j] = v[i]
                    W[j, i] = v[i]
                    Beta[i, j] = beta[i]
        if moved / (p * (p - 1)) <= thr:
            return done, True
    return done, False


@njit(cache=True)
def _precision(W: np.ndarray, Beta: np.ndarray) -> np.ndarray:
    """Θ from W and the β's: θ_jj = 1/(W_jj − Σ_{i≠j} W_ij β_ij), θ_ij = −β_ij θ_jj
    (symmetrised by the caller)."""
    p = W.shape[0]
    theta = np.zeros((p, p))
    for j in range(p):
        q = W[j, j]
        for i in range(p):
            if i != j:
                q -= W[i, j] * Beta[i, j]
        tjj = 1.0 / q
        theta[j, j] = tjj
        for i in range(p):
            if i != j:
                theta[i, j] = -Beta[i, j] * tjj
    return theta


def _logdet(A: np.ndarray) -> float:
    """log det A by Cholesky; −inf when A is not positive definite."""
    c, info = lapack.dpotrf(A, lower=1, clean=0)
    if info != 0:
        return -math.inf
    return 2.0 * float(np.log(np.diag(c)).sum())


def _gap(S: np.ndarray, lam: np.ndarray, theta: np.ndarray, W: np.ndarray
         ) -> tuple[float, float]:
    """(f(Θ), f(Θ) − d(W̃)): the objective and the certified gap (+inf if Θ is not PD)."""
    ld = _logdet(theta)
    if not math.isfinite(ld):
        return math.inf, math.inf
    f = -ld + float((S * theta).sum()) + float((lam * np.abs(theta)).sum())
    Wt = S + np.clip(W - S, -lam, lam)
    d = _logdet(Wt) + S.shape[0]
    return f, (f - d if math.isfinite(d) else math.inf)


def solve_one(S: np.ndarray, lam: np.ndarray, tol: float, max_sweeps: int, W: np.ndarray,
              Beta: np.ndarray) -> dict:
    """One problem from the start (W, Beta), both updated in place: sweeps, certificate,
    tighten, until the relative gap ≤ tol or ``max_sweeps`` sweeps in all. ``lam`` is the
    (p, p) matrix of weights α·mask; W must be positive definite and dual feasible."""
    p = S.shape[0]
    W[np.diag_indices(p)] = np.diag(S) + np.diag(lam)
    off = ~np.eye(p, dtype=bool)
    scale = float(np.abs(S[off]).mean()) if p > 1 else 0.0
    scale = scale if scale > 0 else float(np.abs(np.diag(S)).mean() or 1.0)
    thr, inner = _THR0, _INNER0
    sweeps, converged = 0, False
    hist_obj: list[float] = []
    hist_gap: list[float] = []
    hist_it: list[int] = []
    theta = np.diag(1.0 / np.diag(W))
    while sweeps < max_sweeps:
        settled = True
        if p > 1:
            done, settled = _sweeps(W, S, lam, Beta, min(_CHECK_EVERY, max_sweeps - sweeps),
                                    thr * scale, inner * scale)
            sweeps += done
        else:
            sweeps += 1
        theta = _precision(W, Beta)
        theta = 0.5 * (theta + theta.T)
        f, gap = _gap(S, lam, theta, W)
        hist_it.append(sweeps)
        hist_obj.append(f)
        hist_gap.append(gap)
        if math.isfinite(gap) and gap <= tol * max(abs(f), 1.0):
            converged = True
            break
        if not settled:
            continue  # the sweeps still move W by more than thr: certify again later
        thr /= _TIGHTEN
        inner /= _TIGHTEN
        if inner * scale < 1e-13 * float(np.abs(np.diag(W)).max()):
            break  # at round-off: tightening further cannot help
    return {"theta": theta, "W": W, "n_iter": sweeps, "converged": converged,
            "iteration": hist_it, "objective": hist_obj, "gap_bound": hist_gap}
