"""``l2g_ggm``: validate, make the problem well posed, run one row of ``L2G_METHODS``."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from graphopt._linalg import symmetrize

from ..._tensor import ArrayLike, check_covariance, check_finite, check_square, check_symmetric, to_output, to_tensor
from ...exceptions import ConvergenceWarning, RegularizationWarning
from .._result import L2gGGMResult
from ..selection import check_important
from .problem import DEFAULT_RIDGE, ImportantLinks, L2gProblem, OffDiagonalColumns, default_ridge, resolve_regularization
from .registry import L2G_METHODS, resolve_l2g_method

__all__ = ["l2g_ggm"]


def _check_scalar(name: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _check_init(init: ArrayLike, S: torch.Tensor) -> torch.Tensor:
    t, _ = to_tensor(init, name="init", dtype=S.dtype, device=S.device)
    check_square(t, "init", allow_batch=False)
    if t.shape != S.shape:
        raise ValueError(f"init must have the shape of S {tuple(S.shape)}, got {tuple(t.shape)}")
    check_finite(t, "init")
    check_symmetric(t, "init")
    if int(torch.linalg.cholesky_ex(symmetrize(t))[1]) != 0:
        raise ValueError("init must be positive definite")
    return symmetrize(t)


def _default_start(S: torch.Tensor) -> torch.Tensor:
    """Ω⁰ = S⁻¹, or (S + ε₀I)⁻¹ with the default ridge ε₀ when S is numerically singular.

    (S singular but F bounded: every null vector of S links I and J. The problem is left
    unchanged, only the start uses the ridge.)
    """
    p = S.shape[-1]
    eig = torch.linalg.eigvalsh(S)
    chol, info = torch.linalg.cholesky_ex(S)
    if int(info) != 0 or float(eig[0]) <= math.sqrt(torch.finfo(S.dtype).eps) * float(eig[-1]):
        eye = torch.eye(p, dtype=S.dtype, device=S.device)
        chol = torch.linalg.cholesky(S + default_ridge(S) * eye)
    return torch.cholesky_inverse(chol)


def l2g_ggm(
    S: ArrayLike,
    important: ArrayLike | None,
    *,
    tau: float = 20.0,
    lam: float = 1000.0,
    g: float = 0.9,
    tol: float = 1e-6,
    max_iter: int | None = None,
    method: str | None = None,
    omega_step: str = "exact",
    init: ArrayLike | None = None,
    regularization: float | str | None = "auto",
) -> L2gGGMResult:
    """Solve the ℓ2,g-coupled GGM (docs/algorithms.md §2):

        min_{Ω ≻ 0, Δ}  F(Ω, Δ) = −log det Ω + tr(SΩ) + τ Σ_{j∈J} ‖Δ_{I,j}‖₂^g + λ‖Ω − Δ‖²_F

    Parameters
    ----------
    S : (p, p) symmetric positive semidefinite covariance (NumPy or torch; the output follows).
    important : the important node indices I (distinct integers in [0, p)); J is the rest.
        ``None``: no important nodes, the groups are Δ_{−j,j} for every column j (the
        penalty τ Σ_j ‖Δ_{−j,j}‖₂^g); ``method="reduced"`` does not apply there.
    tau : group-sparsity weight τ ≥ 0.  lam : coupling weight λ > 0.  g : exponent in (0, 1].
    tol : bound on the relative stationarity residual
        r = ‖S − Ω⁻¹ + 2λ(Ω − Δ_s)‖_F / (‖S‖_F + ‖Ω⁻¹‖_F), Δ = argmin_Δ F(Ω, ·).
    max_iter : outer-iteration cap; ``None`` = the method's own (``L2G_METHODS``: reduced
        5000, admm 2000, bcd 20000, released 50 as published). Hitting it gives
        ``converged=False`` + ConvergenceWarning.
    method : a name in ``L2G_METHODS``: ``"reduced"`` (default: accelerated proximal
        gradient on Ω_IJ after eliminating Δ, Ω_II and Ω_JJ in closed form), ``"admm"``
        (safeguarded ADMM, F non-increasing; the default for ``important=None``), ``"bcd"``
        (plain alternating minimisation, the published algorithm; slow for large λ) or
        ``"released"`` (compatibility mode: the released code's 100-step gradient Ω-update
        with 5-iteration GST and its stopping rule; not a minimiser of F, see
        docs/l2g_ggm.md).
    omega_step : ``"exact"`` (closed-form Ω-step) or ``"released"``, which selects
        ``method="released"`` (see ``resolve_l2g_method``).
    init : optional positive definite start Ω⁰; default (S + εI)⁻¹.
    regularization : ``"auto"`` (default) adds ε = 0.01·tr(S)/p to the diagonal of S, with a
        ``RegularizationWarning``, when F is unbounded below (S_II or S_JJ singular, e.g.
        fewer samples than nodes); a number sets ε (S + εI) explicitly; ``None``/0 refuses
        (``ValueError`` for an unbounded problem). The ε used is ``result.regularization``.
    """
    S_t, as_numpy = check_covariance(S, "S", allow_batch=False)
    p = S_t.shape[-1]
    with_important = important is not None
    I_np = check_important(important, p) if with_important else np.zeros(0, dtype=np.int64)
    tau = _check_scalar("tau", tau, nonneg=True)
    lam = _check_scalar("lam", lam, positive=True)
    g = _check_scalar("g", g)
    if not (0.0 < g <= 1.0):
        raise ValueError(f"g must lie in (0, 1], got {g}")
    tol = _check_scalar("tol", tol, nonneg=True)
    name = resolve_l2g_method(method, omega_step, with_important=with_important)
    entry = L2G_METHODS[name]
    if max_iter is None:
        max_iter = entry.default_max_iter
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    max_iter = int(max_iter)

    I = torch.as_tensor(I_np.tolist(), dtype=torch.long, device=S_t.device)
    groups = ImportantLinks.of(I, p) if with_important else OffDiagonalColumns()
    S_t = symmetrize(S_t)
    eps, automatic = resolve_regularization(S_t, groups, regularization)
    if eps > 0:
        if automatic:
            warnings.warn(
                f"S is singular on the important or non-important nodes, so the l2,g problem is "
                f"unbounded below; solving with S + {eps:.3g}·I (regularization='auto', "
                f"ε = {DEFAULT_RIDGE}·tr(S)/p). Pass regularization=<ε> to choose the amount "
                f"or None to refuse.",
                RegularizationWarning,
                stacklevel=2,
            )
        S_t = S_t + eps * torch.eye(p, dtype=S_t.dtype, device=S_t.device)
    omega0 = _default_start(S_t) if init is None else _check_init(init, S_t)

    problem = L2gProblem(S=S_t, groups=groups, tau=tau, lam=lam, g=g, gst_iters=entry.gst_iters)
    solve = entry.links if with_important else entry.columns
    assert solve is not None  # resolve_l2g_method refused the combination otherwise
    out = solve(problem, omega0, tol, max_iter)
    if not out.converged:
        why = ("F stopped decreasing beyond its round-off" if out.extra.get("stalled")
               else f"max_iter={max_iter}")
        warnings.warn(
            f"l2g_ggm ({name}) stopped after {out.n_iter} iterations ({why}) with "
            f"stationarity residual {out.stationarity:.3g} > tol={tol:.3g}",
            ConvergenceWarning,
            stacklevel=2,
        )
    I = groups.important if with_important else I  # sorted
    important_out: Any = I.cpu().numpy() if as_numpy else I
    return L2gGGMResult(
        precision=to_output(out.omega, as_numpy),
        delta=to_output(out.delta, as_numpy),
        objective=float(out.objective),
        history=[float(v) for v in out.history],
        n_iter=int(out.n_iter),
        converged=bool(out.converged),
        stationarity=float(out.stationarity),
        regularization=float(eps),
        important=important_out,
        method=name,
        omega_step=entry.omega_step,
        extra=dict(out.extra),
    )
