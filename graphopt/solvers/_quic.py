"""QUIC: proximal Newton for the graphical lasso (Hsieh et al., JMLR 2014; docs/algorithms.md §1).

f(Θ) = g(Θ) + α‖Θ‖₁,  g(Θ) = −log det Θ + tr(SΘ) smooth, the ℓ1 term kept exact. At Θ with
W = Θ⁻¹ (so ∇g = S − W, ∇²g = W ⊗ W) the Newton direction minimises the quadratic model

    D = argmin_D  ½ tr(W D W D) + tr((S − W) D) + α ‖Θ + D‖₁

over the free set F = {(i, j): Θ_ij ≠ 0 or |(S − W)_ij| > α_ij} (every other entry keeps
D_ij = 0, which is optimal there to first order). The model is minimised by cyclic coordinate
descent over F, with U = D W kept up to date so that one coordinate costs O(p): for the pair
(i, j), i ≠ j, with a = W_ij² + W_ii W_jj, b = S_ij − W_ij + w_iᵀ U e_j, c = Θ_ij + D_ij,

    μ = −c + soft(c − b/a, α_ij/a),   D_ij, D_ji += μ,   U_i· += μ W_j·,   U_j· += μ W_i·

(diagonal: a = W_ii², soft with α_ii = 0 when the diagonal is not penalised). The sweep is
compiled with numba (``cache=True``: compiled once per machine, not per run). Newton step k
makes at most 1 + ⌊(k − 1)/3⌋ sweeps; when they do not settle (ill-conditioned W), the
direction is refined by preconditioned CG on its orthant face (:func:`_face_newton`). The step
Θ + tD takes the largest t ∈ {1, ½, ¼, …} with Θ + tD positive definite (a Cholesky
factorisation) and the Armijo decrease f(Θ + tD) ≤ f(Θ) + σ t δ, σ = 1e-3,
δ = tr((S − W) D) + α‖Θ + D‖₁ − α‖Θ‖₁ < 0 (the full step once −δ is at the round-off of f,
see ``_FLAT``). Newton steps stop on the certified relative gap
f(Θ) − d(W̃) ≤ tol · max(|f|, 1), W̃ the projection of Θ⁻¹ onto the dual-feasible set.

This is the CPU path: each problem of a batch is solved in turn (float64 NumPy inside, the
input's dtype outside). Batches on a GPU belong to ADMM (:mod:`._admm`), which is batched
and device-agnostic; CUDA input is refused here with an error that says so.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from scipy.linalg import lapack

from graphopt._linalg import symmetrize

from ._certificates import dual_objective, project_dual
from ._history import stack_histories
from ._kernels import soft

__all__ = ["quic"]

_SIGMA = 1e-3          # Armijo constant
_MAX_HALVINGS = 40     # step halvings before a Newton step is given up
# Once the predicted decrease −δ is below this · max(|f|, 1), f(Θ + D) − f(Θ) is round-off
# (a few ulps of f) and Armijo cannot see it, while the certificate still needs the step
# (its gap scales like the KKT residual times ‖Θ‖₁, not like −δ): the full step is then
# taken when Θ + D is positive definite.
_FLAT = 1e-12
_SWEEP_RTOL = 1e-3     # inner sweeps stop once the largest |μ| is below this · max|D|
_CG_MAX = 200          # conjugate-gradient iterations of a face solve, at most ...
_CG_MIN = 25           # ... and at least (one iteration costs two p×p products, 4p³ flops;
_CG_FLOPS = 5e7        # in between, about this many flops per face solve)
_CG_RTOL = 1e-3        # ... stopping at this preconditioned residual, relative to the start
_RESWEEPS = 2          # sweeps after a face solve (they repair its sign flips)


@njit(cache=True)
def _coordinate_sweeps(W: np.ndarray, S: np.ndarray, theta: np.ndarray, lam: np.ndarray,
                       rows: np.ndarray, cols: np.ndarray, n_sweeps: int, D: np.ndarray,
                       U: np.ndarray) -> int:
    """Cyclic coordinate descent on the QUIC model over the free pairs (rows[k], cols[k]),
    i ≤ j, updating D (symmetric) and U = D W in place. Returns the sweeps done."""
    p = W.shape[0]
    done = 0
    for _ in range(n_sweeps):
        done += 1
        biggest = 0.0
        for k in range(rows.size):
            i = rows[k]
            j = cols[k]
            wu = 0.0
            for m in range(p):
                wu += W[i, m] * U[m, j]
            if i == j:
                a = W[i, i] * W[i, i]
                b = S[i, i] - W[i, i] + wu
            else:
                a = W[i, j] * W[i, j] + W[i, i] * W[j, j]
                b = S[i, j] - W[i, j] + wu
            c = theta[i, j] + D[i, j]
            mu = -c + soft(c - b / a, lam[i, j] / a)
            if mu == 0.0:
                continue
            D[i, j] += mu
            if i != j:
                D[j, i] += mu
                for m in range(p):
                    U[i, m] += mu * W[j, m]
                    U[j, m] += mu * W[i, m]
            else:
                for m in range(p):
                    U[i, m] += mu * W[i, m]
            if abs(mu) > biggest:
                biggest = abs(mu)
        scale = 0.0
        for k in range(rows.size):
            v = abs(D[rows[k], cols[k]])
            if v > scale:
                scale = v
        if biggest <= _SWEEP_RTOL * scale:
            break
    return done


def _face_newton(W: np.ndarray, G: np.ndarray, theta: np.ndarray, lam: np.ndarray,
                 free: np.ndarray, D: np.ndarray) -> np.ndarray:
    """Minimise the model on the orthant face of the coordinate-descent direction D.

    On F = {free (i, j): Θ_ij + D_ij ≠ 0 or λ_ij = 0} with the signs s of Θ + D frozen, the
    model is the smooth quadratic ½⟨D, WDW⟩ + ⟨G + λ∘s, D⟩; its minimiser over D supported
    on F solves (W D W)_F = −(G + λ∘s)_F, found by CG from D with the Jacobi preconditioner
    W_ii W_jj + W_ij² (W_ii² on the diagonal: the diagonal of W ⊗ W on symmetric pairs).
    Sweeps need iterations in proportion to the condition number of W ⊗ W, CG about its
    square root. CG stays in the orthant of Θ + D: an entry reaching zero leaves the face and
    CG restarts without it, so the model decreases monotonically from the sweeps' D; the
    caller then sweeps again (entries may change sign there) and keeps the better direction."""
    X = theta + D
    face = (free & ((X != 0.0) | (lam == 0.0))).astype(np.float64)
    sign = np.sign(X) * (lam > 0.0)
    c = G + lam * sign
    dW = np.diag(W)
    M = np.outer(dW, dW) + W * W
    np.fill_diagonal(M, dW * dW)
    D = D * face
    active = (face > 0) & (lam > 0.0)
    restart = True
    n_max = int(min(_CG_MAX, max(_CG_MIN, _CG_FLOPS / (4.0 * W.shape[0] ** 3))))
    for _ in range(n_max):
        if restart:
            # (Re)start CG on the current face: the residual of (W D W)_F = −c_F.
            r = -(W @ D @ W + c) * face
            z = r / M
            d = z.copy()
            rz = float((r * z).sum())
            stop = rz * _CG_RTOL ** 2 if rz > 0.0 else 0.0
            restart = False
        if rz <= stop or rz <= 0.0:
            break
        Ad = (W @ d @ W) * face
        dAd = float((d * Ad).sum())
        if dAd <= 0.0:
            break
        step = rz / dAd
        # Stay in the orthant (where the smooth face model is the true model): a step that
        # would flip a sign stops on the boundary, that entry leaves the face at Θ + D = 0
        # and CG restarts on the smaller face.
        X = theta + D
        leaving = active & (d * sign < 0.0)
        if leaving.any():
            ratios = -X[leaving] / d[leaving]
            bound = float(ratios.min())
            if bound < step:
                D += bound * d
                hit = leaving & (np.abs(theta + D) <= 1e-12 * np.abs(X).max())
                hit |= leaving & (np.sign(theta + D) != sign)
                D[hit] = -theta[hit]
                face[hit] = 0.0
                active &= ~hit
                restart = True
                continue
        D += step * d
        r -= step * Ad
        z = r / M
        rz_new = float((r * z).sum())
        d = z + (rz_new / rz) * d
        rz = rz_new
    D = 0.5 * (D + D.T)
    return D


def _model(W: np.ndarray, G: np.ndarray, theta: np.ndarray, lam: np.ndarray,
           D: np.ndarray) -> float:
    """The model ½ tr(WDWD) + tr(GD) + ‖λ∘(Θ + D)‖₁ (without the constant −‖λ∘Θ‖₁)."""
    return (0.5 * float((D * (W @ D @ W)).sum()) + float((G * D).sum())
            + float((lam * np.abs(theta + D)).sum()))


def _cholesky(A: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of a symmetric A, or None where A is not positive definite."""
    c, info = lapack.dpotrf(A, lower=1, clean=1)
    return c if info == 0 else None


def _inverse_from_cholesky(c: np.ndarray) -> np.ndarray:
    inv, info = lapack.dpotri(c, lower=1)
    if info != 0:
        raise np.linalg.LinAlgError("dpotri failed on a positive definite matrix")
    return np.tril(inv) + np.tril(inv, -1).T


def _objective(S: np.ndarray, theta: np.ndarray, lam: np.ndarray,
               chol: np.ndarray) -> float:
    """f(Θ) = −log det Θ + tr(SΘ) + Σ λ_ij |Θ_ij| given the Cholesky factor of Θ."""
    logdet = 2.0 * float(np.log(np.diag(chol)).sum())
    return -logdet + float((S * theta).sum()) + float((lam * np.abs(theta)).sum())


def _solve_one(S: np.ndarray, alpha: float, mask: np.ndarray, tol: float, max_iter: int,
               theta0: np.ndarray | None) -> dict:
    """One problem: QUIC Newton steps until the certified relative gap is ≤ tol."""
    p = S.shape[0]
    lam = alpha * mask
    if theta0 is None:
        theta = np.diag(1.0 / (np.diag(S) + np.diag(lam)))
    else:
        theta = symmetrize(theta0)
    chol = _cholesky(theta)
    if chol is None:
        raise ValueError("theta0 must be positive definite")
    f = _objective(S, theta, lam, chol)
    S_t, a_t, m_t = torch.from_numpy(S), torch.tensor([alpha], dtype=torch.float64), \
        torch.from_numpy(mask)
    hist_obj: list[float] = []
    hist_gap: list[float] = []
    n_face = 0
    converged = False
    it = 0
    D = np.zeros((p, p))
    U = np.zeros((p, p))
    for it in range(1, max_iter + 1):
        W = _inverse_from_cholesky(chol)
        dual = float(dual_objective(S_t[None], project_dual(S_t[None], torch.from_numpy(W)[None],
                                                            a_t, m_t))[0])
        gap = f - dual if math.isfinite(dual) else math.inf
        hist_obj.append(f)
        hist_gap.append(gap)
        if gap <= tol * max(abs(f), 1.0):
            converged = True
            break
        if it == max_iter:
            break
        G = S - W
        free = (theta != 0.0) | (np.abs(G) > lam) | (lam == 0.0)
        rows, cols = (ix.astype(np.int64) for ix in np.nonzero(np.triu(free)))
        D.fill(0.0)
        U.fill(0.0)
        n_sweeps = 1 + (it - 1) // 3
        done = _coordinate_sweeps(W, S, theta, lam, rows, cols, n_sweeps, D, U)
        l1_now = float((lam * np.abs(theta)).sum())
        if done == n_sweeps and n_sweeps > 1:
            # The sweeps did not settle (ill-conditioned W): solve on their face by CG, sweep
            # again, keep whichever direction has the lower model value.
            D_face = _face_newton(W, G, theta, lam, free | free.T, D)
            U_face = np.ascontiguousarray(D_face @ W)
            _coordinate_sweeps(W, S, theta, lam, rows, cols, _RESWEEPS, D_face, U_face)
            if _model(W, G, theta, lam, D_face) < _model(W, G, theta, lam, D):
                D, U = D_face, U_face
                n_face += 1
        delta = float((G * D).sum()) + float((lam * np.abs(theta + D)).sum()) - l1_now
        if not delta < 0.0 and not np.any(D):
            # The model cannot decrease: Θ is optimal up to round-off; keep it.
            break
        flat = -delta <= _FLAT * max(abs(f), 1.0)
        t = 1.0
        for _ in range(_MAX_HALVINGS):
            trial = theta + t * D
            c_trial = _cholesky(trial)
            if c_trial is not None:
                f_trial = _objective(S, trial, lam, c_trial)
                if flat or f_trial <= f + _SIGMA * t * delta:
                    theta, chol, f = trial, c_trial, f_trial
                    break
            t *= 0.5
        else:
            break
    return {"theta": theta, "n_iter": it, "converged": converged, "n_face": n_face,
            "objective": hist_obj, "gap_bound": hist_gap}


def quic(
    S: torch.Tensor,
    alpha: torch.Tensor,
    mask: torch.Tensor,
    *,
    tol: float,
    max_iter: int,
    theta0: torch.Tensor | None = None,
    record: bool = True,
) -> dict:
    """Solve a batch (B, p, p) of graphical lassos by QUIC, one problem after another on the
    CPU; ``max_iter`` counts Newton steps. CUDA tensors are refused (use ``method="admm"``)."""
    if S.device.type != "cpu":
        raise ValueError(f"method='quic' runs on the CPU only, got S on {S.device}; use "
                         "method='admm' (batched, any device) for GPU tensors")
    B, p, _ = S.shape
    S64 = S.detach().double().numpy()
    a64 = alpha.detach().double().numpy()
    m64 = np.ascontiguousarray(mask.detach().double().numpy())
    t64 = None if theta0 is None else theta0.detach().double().numpy()
    out = np.empty((B, p, p))
    n_iter = np.zeros(B, dtype=np.int64)
    converged = np.zeros(B, dtype=bool)
    sols = []
    for b in range(B):
        sol = _solve_one(np.ascontiguousarray(S64[b]), float(a64[b]), m64, tol, max_iter,
                         None if t64 is None else np.ascontiguousarray(t64[b]))
        out[b] = sol["theta"]
        n_iter[b] = sol["n_iter"]
        converged[b] = sol["converged"]
        sols.append(sol)
    history = (stack_histories([{**sol, "iteration": list(range(1, len(sol["objective"]) + 1))}
                                for sol in sols], ("objective", "gap_bound")) if record
               else {"iteration": [], "objective": [], "gap_bound": []})
    return {"theta": torch.from_numpy(out).to(dtype=S.dtype), "n_iter": torch.from_numpy(n_iter),
            "converged": torch.from_numpy(converged), "history": history}
