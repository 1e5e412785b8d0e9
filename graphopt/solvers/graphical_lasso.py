"""The graphical lasso (docs/algorithms.md §1), solved fast in torch, single or batched.

    minimise_{Θ ≻ 0}   f(Θ) = −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij|

(diagonal penalised too with ``penalize_diagonal=True``). Three algorithms, one per module,
dispatched by the table ``METHODS``: ``"admm"`` (:mod:`._admm`, eigendecomposition Θ-step,
adaptive ρ), ``"bcd"`` (:mod:`._bcd`, glasso column sweeps: compiled coordinate descent on
the CPU, batched FISTA in torch elsewhere) and ``"quic"`` (:mod:`._quic`, proximal Newton
with compiled coordinate descent, CPU only). The default ``"auto"`` picks by device
(:func:`resolve_method`). All stop on a certified
relative duality gap (:mod:`._certificates`), so ``converged=True`` means
f(Θ) − f* ≤ tol · max(|f(Θ)|, 1). Before either runs, exact screening (:mod:`._screening`)
splits every problem into the connected components of |S_ij| > α; equal-sized blocks from the
whole batch are solved together and the results (and certificates) reassembled.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from graphopt._linalg import spd_inverse_logdet, symmetrize
from .._tensor import (
    ArrayLike,
    _relative_tolerance,
    check_covariance,
    check_finite,
    check_psd,
    check_symmetric,
    to_tensor,
)
from ..exceptions import ConvergenceWarning
from ._admm import admm
from ._bcd import bcd
from ._quic import quic
from ._certificates import (
    best_dual_point,
    certified_gap,
    kkt_violation,
    penalty_mask,
    primal_objective,
    relative_gap,
    spd_inverse,
)
from ._result import GraphicalLassoResult
from ._screening import components, group_blocks, whole_problem

__all__ = ["graphical_lasso", "graphical_lasso_path", "check_method", "resolve_method", "METHODS",
           "AUTO_METHOD"]

# name -> (solver, default max_iter). Each solver takes (S, alpha, mask, tol=, max_iter=,
# theta0=) on a (B, p, p) batch and returns at least "theta", "n_iter", "converged", "history".
METHODS: dict[str, tuple[Callable[..., dict], int]] = {
    "admm": (admm, 3000),
    "bcd": (bcd, 300),
    "quic": (quic, 100),
}
#: What ``method="auto"`` runs, per device type (any other device: ADMM, the batched one).
#: On the CPU the compiled BCD was the fastest of the three on every problem of
#: ``benchmarks/solvers.py`` that all solved (docs/solvers.md); on a GPU one batched
#: eigendecomposition per iteration beats p sequential column solves.
AUTO_METHOD: dict[str, str] = {"cpu": "bcd", "cuda": "admm"}


def check_method(method: Any) -> None:
    """Refuse a ``method`` that is neither ``"auto"`` nor a key of :data:`METHODS`."""
    if method != "auto" and method not in METHODS:
        raise ValueError(f"method must be 'auto' or one of {sorted(METHODS)}, got {method!r}")


def resolve_method(method: str, S: torch.Tensor) -> str:
    """The algorithm ``method`` names for S: itself, or for ``"auto"`` the entry of
    :data:`AUTO_METHOD` for S's device type (ADMM where none is listed)."""
    check_method(method)
    return AUTO_METHOD.get(S.device.type, "admm") if method == "auto" else method


def _check_alpha(alpha: Any, batch: int | None, like: torch.Tensor) -> torch.Tensor:
    """alpha as a (B,) tensor: a scalar for one problem; a scalar or shape (B,) for a batch."""
    raw = alpha.detach().cpu().numpy() if isinstance(alpha, torch.Tensor) else alpha
    try:
        a = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"alpha must be a number or an array of numbers, got {alpha!r}") from None
    want = "a scalar" if batch is None else f"a scalar or have shape ({batch},)"
    if a.ndim > 1 or (a.ndim == 1 and a.size not in (1, batch or 1)):
        raise ValueError(f"alpha must be {want}, got shape {a.shape}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"alpha must be finite and >= 0, got {a.tolist()}")
    n = 1 if batch is None else batch
    return torch.as_tensor(np.broadcast_to(a.reshape(-1), (n,)).copy(),
                           dtype=like.dtype, device=like.device)


def _check_init(init: Any, S: torch.Tensor) -> torch.Tensor | None:
    """A warm start: a precision matrix (or a previous result) matching S, positive definite."""
    if init is None:
        return None
    if isinstance(init, GraphicalLassoResult):
        init = init.precision
    t, _ = to_tensor(init, name="init", dtype=S.dtype, device=S.device)
    if t.ndim == 2 and S.ndim == 3:
        t = t.expand_as(S)
    if tuple(t.shape) != tuple(S.shape):
        raise ValueError(f"init must have the shape of S {tuple(S.shape)}, got {tuple(t.shape)}")
    check_finite(t, "init")
    check_symmetric(t, "init")
    t = symmetrize(t)
    if not bool(spd_inverse(t)[1].all()):
        raise ValueError("init must be positive definite (a precision matrix)")
    return t.contiguous()


def _check_psd_by_cholesky(S: torch.Tensor) -> None:
    """The PSD test of :func:`check_psd` (λ_min ≥ −rtol·λ_max), at the cost of a Cholesky
    factorisation instead of a full eigenvalue decomposition (measured 8 s against 3 s at
    p = 5000, one thread, on a loaded machine): S + rtol·max_i S_ii·I is positive definite ⇒ λ_min ≥ −rtol·max S_ii ≥ −rtol·λ_max.
    Only when that fails are the eigenvalues computed, to decide and to word the error."""
    rtol = 1e3 * _relative_tolerance(S)  # the tolerance check_psd applies
    if S.shape[-1] > 32:
        d = S.diagonal(dim1=-2, dim2=-1)
        shift = rtol * d.abs().amax(-1).clamp_min(torch.finfo(S.dtype).tiny)
        shifted = S.clone()
        shifted.diagonal(dim1=-2, dim2=-1).add_(shift.unsqueeze(-1))
        if bool((torch.linalg.cholesky_ex(shifted)[1] == 0).all()):
            return
    check_psd(S, "S")


def _check_bounded(S: torch.Tensor, alpha: torch.Tensor, penalize_diagonal: bool) -> None:
    """Refuse problems without a minimiser: f is unbounded below along e_i e_iᵀ when S_ii = 0
    and the diagonal is not penalised, and along any null vector of S when α = 0."""
    if not penalize_diagonal and bool((S.diagonal(dim1=-2, dim2=-1) <= 0).any()):
        raise ValueError("S has a zero diagonal entry (a constant variable): the graphical lasso "
                         "is then unbounded below; drop the variable or use penalize_diagonal=True")
    zero = alpha == 0
    if bool(zero.any()) and not bool(spd_inverse(S[zero])[1].all()):
        raise ValueError("alpha = 0 needs a positive definite S (the problem is unbounded below "
                         "for a singular S); use alpha > 0")


def _finalise(S: torch.Tensor, sol: dict, alpha: torch.Tensor, mask: torch.Tensor) -> dict:
    """Make the returned Θ exactly symmetric and positive definite; compute its certificates."""
    theta = sol["theta"]
    theta = symmetrize(theta)
    fallback = sol.get("theta_pd")
    if fallback is not None:
        # ADMM's Z (sparse) is positive definite once converged; an unconverged Z may not be,
        # and then the Θ-iterate (positive definite by construction) is returned instead.
        bad = ~spd_inverse(theta)[1]
        if bool(bad.any()):
            fb = symmetrize(fallback)
            theta = torch.where(bad.reshape(-1, 1, 1), fb, theta)
    S64, t64, a64, m64 = S.double(), theta.double(), alpha.double(), mask.double()
    W, logdet_theta, is_pd = spd_inverse_logdet(t64)
    obj = primal_objective(S64, t64, a64, m64, logdet=logdet_theta)
    # W̃: the best dual-feasible point the solver has, the projection of Θ⁻¹ and the solver's
    # own dual iterate (ADMM: S + ρU; BCD: its projected W), whichever has the larger d.
    candidates = [W] + ([sol["dual"]] if sol.get("dual") is not None else [])
    dual_cov, dual = best_dual_point(S64, a64, m64, candidates)
    gap = certified_gap(obj, dual)
    return {
        "precision": theta,
        "covariance": W.to(theta.dtype),
        "objective": obj,
        "dual_gap": gap,
        "relative_gap": relative_gap(gap, obj),
        "dual_covariance": dual_cov,
        "kkt": kkt_violation(S64, t64, W, a64, m64),
        "pd": is_pd & torch.isfinite(gap),
    }


def graphical_lasso(
    S: ArrayLike,
    alpha: float | ArrayLike,
    *,
    method: str = "auto",
    penalize_diagonal: bool = False,
    tol: float = 1e-6,
    max_iter: int | None = None,
    init: ArrayLike | GraphicalLassoResult | None = None,
    warn: bool = True,
    screen: bool = True,
) -> GraphicalLassoResult:
    """Sparse inverse covariance by the graphical lasso.

    minimise_{Θ ≻ 0}  −log det Θ + tr(SΘ) + α Σ_{i≠j} |Θ_ij|

    Parameters
    ----------
    S : (p, p) or (B, p, p) empirical covariance(s), symmetric positive semidefinite.
    alpha : ℓ1 weight ≥ 0; a scalar, or one value per problem (shape (B,)) for a batch.
    method : ``"auto"`` (default: ``"bcd"`` on the CPU, ``"admm"`` on a GPU; see
        :data:`AUTO_METHOD`), ``"admm"`` (one eigendecomposition per iteration, batched),
        ``"bcd"`` (glasso column sweeps; ``max_iter`` then counts sweeps) or ``"quic"``
        (proximal Newton on the CPU; ``max_iter`` counts Newton steps). The result's
        ``method`` names the algorithm that ran.
    penalize_diagonal : also penalise the diagonal entries.
    tol : stop when the certified duality gap f(Θ) − d(W) ≤ tol · max(|f(Θ)|, 1), per problem.
    max_iter : iteration cap (default 3000 for ADMM, 300 sweeps for BCD, 100 Newton steps
        for QUIC).
    init : warm start, a precision matrix of S's shape or a previous result.
    warn : emit a :class:`ConvergenceWarning` for problems that hit ``max_iter``.
    screen : split each problem into the connected components of |S_ij| > α (exact, see
        :mod:`._screening`); blocks of size 1 are solved in closed form, blocks of equal size
        as one batch, and the certificates of the blocks are summed. ``False`` solves each
        problem whole.

    Returns
    -------
    GraphicalLassoResult with NumPy arrays for NumPy input and tensors (same device and dtype)
    for tensor input. ``dual_gap`` is the certified gap f(Θ) − (log det W̃ + p) ≥ 0 with W̃ =
    ``dual_covariance`` (float64) a dual-feasible point, ``relative_gap`` = dual_gap /
    max(|f|, 1), and ``history["gap_bound"]`` the certified gap at every check (summed over
    the blocks). ``block_sizes`` lists the blocks solved; ``n_iter`` is the largest over the
    blocks (0 when every block has size 1). For a batch, the certificates, ``n_iter`` and
    ``converged`` have shape (B,).
    """
    check_method(method)  # before the (costlier) checks of S
    try:
        tol = float(tol)
    except (TypeError, ValueError):
        raise TypeError(f"tol must be a number, got {type(tol).__name__}") from None
    if not np.isfinite(tol) or tol <= 0:
        raise ValueError(f"tol must be a finite number > 0, got {tol}")
    if max_iter is not None and (isinstance(max_iter, bool)
                                 or not isinstance(max_iter, (int, np.integer)) or max_iter < 1):
        raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    S_t, as_numpy = check_covariance(S, "S", check_psd_=False)
    method = resolve_method(method, S_t)
    solver, default_iter = METHODS[method]
    max_iter = default_iter if max_iter is None else max_iter
    _check_psd_by_cholesky(S_t)
    batched = S_t.ndim == 3
    alpha_t = _check_alpha(alpha, S_t.shape[0] if batched else None, S_t)
    theta0 = _check_init(init, S_t)
    S3 = S_t if batched else S_t.unsqueeze(0)
    S3 = symmetrize(S3).contiguous()
    theta0 = None if theta0 is None else (theta0 if batched else theta0.unsqueeze(0))
    _check_bounded(S3, alpha_t, penalize_diagonal)
    p = S3.shape[-1]
    mask = penalty_mask(p, penalize_diagonal, dtype=S3.dtype, device=S3.device)

    B = S3.shape[0]
    blocks = components(S3, alpha_t) if screen else whole_problem(B, p)
    fin = _solve_blocks(S3, alpha_t, penalize_diagonal, blocks, solver, tol=tol,
                        max_iter=int(max_iter), theta0=theta0)
    fin = _meet_total_tolerance(S3, alpha_t, penalize_diagonal, blocks, solver, fin, tol=tol,
                                max_iter=int(max_iter))
    converged = fin["converged"]
    if warn and not bool(converged.all()):
        n_bad = int((~converged).sum())
        warnings.warn(
            f"graphical_lasso ({method}) did not reach tol={tol:g} within max_iter={max_iter} "
            f"for {n_bad} of {converged.numel()} problem(s); largest certified gap "
            f"{float(fin['dual_gap'][~converged].max()):.3g}. Increase max_iter or tol.",
            ConvergenceWarning, stacklevel=2)
    sizes = [tuple(int(ix.size) for ix in parts) for parts in blocks]
    return _to_result(fin, converged, alpha_t, method, batched, as_numpy, sizes)


#: Re-solves of a screened problem whose blocks each met tol but whose sum did not.
_TOTAL_TOL_ROUNDS = 3


def _meet_total_tolerance(S: torch.Tensor, alpha: torch.Tensor, penalize_diagonal: bool,
                          blocks: list[list[np.ndarray]], solver: Callable[..., dict],
                          fin: dict, *, tol: float, max_iter: int) -> dict:
    """Make ``converged`` mean what it says for screened problems: Σ_b gap_b ≤ tol·max(|Σ_b f_b|, 1).

    Each block stops at gap_b ≤ tol·max(|f_b|, 1); when block objectives of both signs
    cancel in the sum, the total can miss tol although every block met it. Such problems
    are solved again, warm-started, with tol shrunk by the factor they missed it by (twice
    over), and marked unconverged if that does not suffice either."""
    for _ in range(_TOTAL_TOL_ROUNDS):
        short = fin["converged"] & (fin["relative_gap"] > tol)
        if not bool(short.any()):
            return fin
        idx = torch.nonzero(short).flatten()
        left = max_iter - int(fin["n_iter"][idx].max())  # max_iter caps the total
        if left < 1:
            break
        excess = float((fin["relative_gap"][idx] / tol).max())
        sub = _solve_blocks(S[idx], alpha[idx], penalize_diagonal,
                            [blocks[i] for i in idx.tolist()], solver, tol=tol / (2.0 * excess),
                            max_iter=left, theta0=fin["precision"][idx])
        fin = _merge_results(fin, sub, idx)
    fin["converged"] = fin["converged"] & (fin["relative_gap"] <= tol)
    return fin


def _merge_results(fin: dict, sub: dict, idx: torch.Tensor) -> dict:
    """``fin`` with the problems ``idx`` replaced by ``sub`` (their re-solve): its tensors row
    by row, its iterations added, its history appended after the first solve's."""
    out = dict(fin)
    for key, value in fin.items():
        if isinstance(value, torch.Tensor) and key != "n_iter":
            merged = value.clone()
            merged[idx] = sub[key].to(merged.dtype)
            out[key] = merged
    out["n_iter"] = fin["n_iter"].clone()
    out["n_iter"][idx] += sub["n_iter"]
    hist, extra = fin["history"], sub["history"]
    if hist.get("iteration") and extra.get("iteration"):
        last = hist["iteration"][-1]
        rows = idx.tolist()
        new = {"iteration": hist["iteration"] + [last + k for k in extra["iteration"]]}
        for key in ("objective", "gap_bound"):
            tail = []
            for row in extra[key]:
                values = list(hist[key][-1])
                for i, v in zip(rows, row):
                    values[i] = v
                tail.append(values)
            new[key] = hist[key] + tail
        out["history"] = new
    return out


def _solve_blocks(S: torch.Tensor, alpha: torch.Tensor, penalize_diagonal: bool,
                  blocks: list[list[np.ndarray]], solver: Callable[..., dict], *, tol: float,
                  max_iter: int, theta0: torch.Tensor | None) -> dict:
    """Solve every block of every problem (equal sizes batched together) and reassemble the
    block-diagonal Θ, W = Θ⁻¹ and W̃, with objectives and certified gaps summed over blocks."""
    B, p, _ = S.shape
    dev, dt = S.device, S.dtype
    groups = group_blocks(blocks)
    if list(groups) == [p]:
        # Every problem is one block (screening off, or nothing splits): solve in place.
        mask = penalty_mask(p, penalize_diagonal, dtype=dt, device=dev)
        sol = solver(S, alpha, mask, tol=tol, max_iter=max_iter, theta0=theta0)
        fin = _finalise(S, sol, alpha, mask)
        fin.update(converged=sol["converged"] & fin["pd"], n_iter=sol["n_iter"],
                   history=sol["history"])
        return fin
    precision = torch.zeros_like(S)
    covariance = torch.zeros_like(S)
    dual_cov = torch.zeros(S.shape, dtype=torch.float64, device=dev)
    objective = torch.zeros(B, dtype=torch.float64, device=dev)
    gap = torch.zeros(B, dtype=torch.float64, device=dev)
    kkt = torch.zeros(B, dtype=torch.float64, device=dev)
    n_iter = torch.zeros(B, dtype=torch.long, device=dev)
    ok = torch.ones(B, dtype=torch.long, device=dev)
    parts: list[tuple[np.ndarray, dict]] = []
    for k, (pb_np, idx_np) in groups.items():
        pb = torch.as_tensor(pb_np, device=dev)
        idx = torch.as_tensor(idx_np, device=dev)
        rows, cols = idx.unsqueeze(-1), idx.unsqueeze(-2)
        bb = pb.reshape(-1, 1, 1)
        a_g = alpha.index_select(0, pb)
        if k == 1:
            # Closed form: Θ_ii = 1/(S_ii + α·pen), W_ii = W̃_ii = S_ii + α·pen, f = d = log W_ii + 1.
            i = idx[:, 0]
            w = S[pb, i, i] + (a_g if penalize_diagonal else torch.zeros_like(a_g))
            precision[pb, i, i] = 1.0 / w
            covariance[pb, i, i] = w
            dual_cov[pb, i, i] = w.double()
            objective.index_add_(0, pb, torch.log(w.double()) + 1.0)
            continue
        mask = penalty_mask(k, penalize_diagonal, dtype=dt, device=dev)
        S_g = S[bb, rows, cols]
        th0 = None if theta0 is None else theta0[bb, rows, cols]
        sol = solver(S_g, a_g, mask, tol=tol, max_iter=max_iter, theta0=th0)
        fin = _finalise(S_g, sol, a_g, mask)
        precision[bb, rows, cols] = fin["precision"]
        covariance[bb, rows, cols] = fin["covariance"]
        dual_cov[bb, rows, cols] = fin["dual_covariance"]
        objective.index_add_(0, pb, fin["objective"])
        gap.index_add_(0, pb, fin["dual_gap"])
        kkt.scatter_reduce_(0, pb, fin["kkt"], reduce="amax")
        n_iter.scatter_reduce_(0, pb, sol["n_iter"], reduce="amax")
        ok.scatter_reduce_(0, pb, (sol["converged"] & fin["pd"]).long(), reduce="amin")
        parts.append((pb_np, sol["history"]))
    return {"precision": precision, "covariance": covariance, "dual_covariance": dual_cov,
            "objective": objective, "dual_gap": gap, "relative_gap": relative_gap(gap, objective),
            "kkt": kkt, "converged": ok.bool(), "n_iter": n_iter,
            "history": _sum_histories(parts, objective, gap, B)}


def _sum_histories(parts: list[tuple[np.ndarray, dict]], objective: torch.Tensor,
                   gap: torch.Tensor, B: int) -> dict[str, list]:
    """Objective and certified gap of the whole problem at each check: the sum over its blocks,
    a block that already stopped counting with its final values (size-1 blocks: exact)."""
    iterations = sorted(set().union(*[h.get("iteration", []) for _, h in parts]))
    if not iterations:
        return {"iteration": [], "objective": [], "gap_bound": []}
    steps = np.asarray(iterations)
    # Start from the final totals and replace each block's final values by its value then.
    obj = np.tile(objective.detach().cpu().numpy(), (steps.size, 1))
    gp = np.tile(gap.detach().cpu().numpy(), (steps.size, 1))
    for pb, hist in parts:
        its = np.asarray(hist["iteration"])
        row = np.clip(np.searchsorted(its, steps, side="right") - 1, 0, None)
        for key, total in (("objective", obj), ("gap_bound", gp)):
            vals = _forward_fill(np.asarray(hist[key], dtype=np.float64).reshape(its.size, -1))
            # A block still at +inf (no PD dual point yet) keeps the total at +inf.
            with np.errstate(invalid="ignore"):
                step = np.where(vals[row] == vals[-1], 0.0, vals[row] - vals[-1])
            np.add.at(total.T, pb, step.T)
    return {"iteration": iterations, "objective": obj.tolist(), "gap_bound": gp.tolist()}


def _forward_fill(values: np.ndarray) -> np.ndarray:
    """Replace NaN (a problem that had left the solver's batch) by the last value before it."""
    idx = np.where(np.isnan(values), 0, np.arange(values.shape[0])[:, None])
    np.maximum.accumulate(idx, axis=0, out=idx)
    return values[idx, np.arange(values.shape[1])[None, :]]


def _to_result(fin: dict, converged: torch.Tensor, alpha: torch.Tensor, method: str,
               batched: bool, as_numpy: bool,
               block_sizes: list[tuple[int, ...]]) -> GraphicalLassoResult:
    def arr(t: torch.Tensor) -> Any:
        t = t if batched else t[0]
        return t.detach().cpu().numpy() if as_numpy else t

    def scalars(t: torch.Tensor) -> Any:
        if batched:
            return t.detach().cpu().numpy() if as_numpy else t
        return t[0].item()

    history = dict(fin["history"])
    if not batched:
        history = {k: (v if k == "iteration" else [row[0] for row in v]) for k, v in history.items()}
    return GraphicalLassoResult(
        precision=arr(fin["precision"]),
        covariance=arr(fin["covariance"]),
        objective=scalars(fin["objective"]),
        dual_gap=scalars(fin["dual_gap"]),
        relative_gap=scalars(fin["relative_gap"]),
        dual_covariance=arr(fin["dual_covariance"]),
        kkt_violation=scalars(fin["kkt"]),
        n_iter=scalars(fin["n_iter"]),
        converged=scalars(converged),
        method=method,
        alpha=scalars(alpha.double()),
        history=history,
        block_sizes=block_sizes if batched else block_sizes[0],
    )


def graphical_lasso_path(
    S: ArrayLike,
    alphas: Sequence[float] | ArrayLike,
    **kwargs: Any,
) -> list[GraphicalLassoResult]:
    """Solve the graphical lasso for each α, from the largest down, each warm-started from the
    previous solution. Results come back in the order of ``alphas``. Keywords as
    :func:`graphical_lasso` (``init`` seeds the first, largest-α solve); screening, on by
    default, splits each α's problem into its own blocks (fewer and larger as α falls)."""
    a = np.asarray(alphas, dtype=np.float64).reshape(-1)
    if a.size == 0:
        raise ValueError("alphas must hold at least one value")
    order = np.argsort(-a, kind="stable")
    results: list[GraphicalLassoResult | None] = [None] * a.size
    init = kwargs.pop("init", None)
    for i in order:
        res = graphical_lasso(S, float(a[i]), init=init, **kwargs)
        results[i] = res
        init = res
    return results  # type: ignore[return-value]
