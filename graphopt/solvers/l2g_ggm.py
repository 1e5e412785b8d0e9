"""The ℓ2,g-regularised coupled Gaussian graphical model (ALGORITHMS.md §2).

    minimise_{Ω ≻ 0, Δ}  F(Ω, Δ) = −log det Ω + tr(SΩ) + τ Σ_{j∈J} ‖Δ_{I,j}‖₂^g + λ‖Ω − Δ‖²_F

with I the important nodes, J their complement, 0 < g ≤ 1; with ``important=None`` (no
important nodes) the groups are the off-diagonal parts of all columns, τ Σ_j ‖Δ_{−j,j}‖₂^g.
``l2g_ggm`` validates the input,
makes the problem well posed (ridge on a singular S), picks the algorithm from a table
(``_l2g_methods``) and returns an ``L2gGGMResult`` with the stationarity residual.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from graphopt._linalg import symmetrize
from .._tensor import ArrayLike, check_covariance, check_finite, check_square, check_symmetric, to_output, to_tensor
from ..exceptions import ConvergenceWarning, RegularizationWarning
from ._l2g_methods import METHODS, RELEASED
from ._l2g_steps import RELEASED_GST_ITERS, L2gProblem
from ._result import L2gGGMResult
from .selection import check_important

__all__ = ["l2g_ggm", "DEFAULT_RIDGE", "resolve_regularization"]

#: Default ridge, relative to the mean variance: ε = DEFAULT_RIDGE · tr(S)/p. It raises the
#: total variance by 1 % and bounds cond(S + εI) ≤ 1 + p/DEFAULT_RIDGE (since λ_max ≤ tr S).
DEFAULT_RIDGE = 1e-2

#: Default iteration caps per method (``max_iter=None``): the released code's 50 outer
#: iterations for its compatibility mode; enough for the others to reach tol = 1e-6.
DEFAULT_MAX_ITER = {"reduced": 5000, "admm": 2000, "bcd": 20000, "released": 50}


def _unbounded_directions(S: torch.Tensor, I: torch.Tensor, J: torch.Tensor,
                          all_columns: bool = False) -> bool:
    """True when S_II or S_JJ is numerically singular, i.e. F is unbounded below.

    A null vector v of S (S ⪰ 0, so vᵀSv = 0 ⇔ Sv = 0) supported on I alone or on J alone
    leaves every penalised block v_I v_Jᵀ = 0, so Ω + t vvᵀ lowers F without bound as t → ∞.
    Conversely a growth direction in span(null S) with zero I×J block must be of that form.
    Penalised directions cost ~t^g against the −log t gain, so they are harmless. With
    ``all_columns`` only diagonal directions are free: unbounded iff some S_ii = 0.
    "Numerically": smallest eigenvalue ≤ sqrt(machine eps) · λ_max(S).
    """
    tiny = math.sqrt(torch.finfo(S.dtype).eps) * float(torch.linalg.eigvalsh(S)[-1].clamp_min(0))
    if all_columns:
        return bool((torch.diagonal(S) <= tiny).any())
    for idx in (I, J):
        if idx.numel() == 0:
            continue
        block = S.index_select(0, idx).index_select(1, idx)
        if float(torch.linalg.eigvalsh(block)[0]) <= tiny:
            return True
    return False


def resolve_regularization(
    S: torch.Tensor, I: torch.Tensor, J: torch.Tensor, regularization: Any,
    all_columns: bool = False,
) -> tuple[float, bool]:
    """Return (ε, automatic) for the ridge S + εI; raise ValueError if refused but needed.

    ``"auto"``: ε = DEFAULT_RIDGE · tr(S)/p when F would be unbounded below (S_II or S_JJ
    numerically singular), else 0. A number ≥ 0: exactly that ε. ``None``/0: no ridge, and
    a ``ValueError`` if the problem is unbounded.
    """
    if isinstance(regularization, str):
        if regularization != "auto":
            raise ValueError(f"regularization must be 'auto', a number >= 0 or None, got {regularization!r}")
        if _unbounded_directions(S, I, J, all_columns):
            p = S.shape[-1]
            trace = float(torch.diagonal(S).sum())
            eps = DEFAULT_RIDGE * trace / p if trace > 0 else DEFAULT_RIDGE
            return eps, True
        return 0.0, True
    if regularization is None:
        eps = 0.0
    else:
        try:
            eps = float(regularization)
        except (TypeError, ValueError):
            raise ValueError(
                f"regularization must be 'auto', a number >= 0 or None, got {regularization!r}"
            ) from None
        if not math.isfinite(eps) or eps < 0:
            raise ValueError(f"regularization must be a finite number >= 0, got {regularization!r}")
    if eps == 0.0 and _unbounded_directions(S, I, J, all_columns):
        raise ValueError(
            "S is singular on the important or the non-important nodes (S_II or S_JJ has a "
            "null vector; without important nodes: a zero variance S_ii), so F is unbounded below (−log det Ω → −∞ along that direction at no "
            "cost); pass regularization='auto' or a ridge ε > 0 (S + εI)"
        )
    return eps, False


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


def l2g_ggm(
    S: ArrayLike,
    important: ArrayLike,
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
    """Solve the ℓ2,g-coupled GGM: min F(Ω, Δ) (module docstring, ALGORITHMS.md §2).

    Parameters
    ----------
    S : (p, p) symmetric positive semidefinite covariance (NumPy or torch; the output follows).
    important : the important node indices I (distinct integers in [0, p)); J is the rest.
        ``None``: no important nodes, the groups are Δ_{−j,j} for every column j (the
        penalty τ Σ_j ‖Δ_{−j,j}‖₂^g); only ``method="admm"`` and ``"bcd"`` solve it.
    tau : group-sparsity weight τ ≥ 0.  lam : coupling weight λ > 0.  g : exponent in (0, 1].
    tol : bound on the relative stationarity residual
        r = ‖S − Ω⁻¹ + 2λ(Ω − Δ_s)‖_F / (‖S‖_F + ‖Ω⁻¹‖_F), Δ = argmin_Δ F(Ω, ·).
    max_iter : outer-iteration cap; ``None`` = per-method default (admm 2000, bcd 20000,
        released 50 as published). Hitting it gives ``converged=False`` + ConvergenceWarning.
    method : ``"reduced"`` (default: accelerated proximal gradient on Ω_IJ after eliminating
        Δ, Ω_II and Ω_JJ in closed form), ``"admm"`` (safeguarded ADMM, F non-increasing; the
        default for ``important=None``) or ``"bcd"`` (plain alternating minimisation, the
        published algorithm; slow for large λ).
    omega_step : ``"exact"`` (closed-form Ω-step) or ``"released"`` (compatibility mode: the
        released code's 100-step gradient Ω-update with 5-iteration GST and its stopping
        rule, plain alternation; not a minimiser of F, see docs/l2g_ggm.md).
    init : optional positive definite start Ω⁰; default (S + εI)⁻¹.
    regularization : ``"auto"`` (default) adds ε = 0.01·tr(S)/p to the diagonal of S, with a
        ``RegularizationWarning``, when F is unbounded below (S_II or S_JJ singular, e.g.
        fewer samples than nodes); a number sets ε (S + εI) explicitly; ``None``/0 refuses
        (``ValueError`` for an unbounded problem). The ε used is ``result.regularization``.
    """
    S_t, as_numpy = check_covariance(S, "S", allow_batch=False)
    p = S_t.shape[-1]
    all_columns = important is None
    I_np = np.zeros(0, dtype=np.int64) if all_columns else check_important(important, p)
    tau = _check_scalar("tau", tau, nonneg=True)
    lam = _check_scalar("lam", lam, positive=True)
    g = _check_scalar("g", g)
    if not (0.0 < g <= 1.0):
        raise ValueError(f"g must lie in (0, 1], got {g}")
    tol = _check_scalar("tol", tol, nonneg=True)
    if omega_step not in ("exact", "released"):
        raise ValueError(f"omega_step must be 'exact' or 'released', got {omega_step!r}")
    if method is None:
        method = "bcd" if omega_step == "released" else "admm" if all_columns else "reduced"
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    if all_columns and method == "reduced":
        raise ValueError("method='reduced' needs important nodes (it eliminates Ω_II and Ω_JJ); "
                         "with important=None use method='admm' or 'bcd'")
    if omega_step == "released" and method != "bcd":
        raise ValueError("omega_step='released' is the released plain alternation: use method='bcd'")
    key = "released" if omega_step == "released" else method
    if max_iter is None:
        max_iter = DEFAULT_MAX_ITER[key]
    if isinstance(max_iter, bool) or int(max_iter) != max_iter or max_iter < 0:
        raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}")
    max_iter = int(max_iter)

    I = torch.as_tensor(sorted(I_np.tolist()), dtype=torch.long, device=S_t.device)
    mask = torch.ones(p, dtype=torch.bool, device=S_t.device)
    mask[I] = False
    J = torch.nonzero(mask).flatten()
    S_t = symmetrize(S_t)

    eps, automatic = resolve_regularization(S_t, I, J, regularization, all_columns)
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
    if init is None:
        eig = torch.linalg.eigvalsh(S_t)
        chol, info = torch.linalg.cholesky_ex(S_t)
        if int(info) != 0 or float(eig[0]) <= math.sqrt(torch.finfo(S_t.dtype).eps) * float(eig[-1]):
            # S singular but F bounded (every null vector of S links I and J): the problem is
            # left unchanged, only the start uses the default ridge, Ω⁰ = (S + ε₀I)⁻¹.
            trace = float(torch.diagonal(S_t).sum())
            eps0 = DEFAULT_RIDGE * trace / p if trace > 0 else DEFAULT_RIDGE
            chol = torch.linalg.cholesky(S_t + eps0 * torch.eye(p, dtype=S_t.dtype, device=S_t.device))
        omega0 = torch.cholesky_inverse(chol)
    else:
        omega0 = _check_init(init, S_t)

    problem = L2gProblem(S=S_t, important=I, rest=J, tau=tau, lam=lam, g=g,
                         gst_iters=RELEASED_GST_ITERS if omega_step == "released" else None,
                         all_columns=all_columns)
    solver = RELEASED if omega_step == "released" else METHODS[method]
    out = solver(problem, omega0, tol, max_iter)
    if not out.converged:
        why = ("F stopped decreasing beyond its round-off" if out.extra.get("stalled")
               else f"max_iter={max_iter}")
        warnings.warn(
            f"l2g_ggm ({key}) stopped after {out.n_iter} iterations ({why}) with "
            f"stationarity residual {out.stationarity:.3g} > tol={tol:.3g}",
            ConvergenceWarning,
            stacklevel=2,
        )
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
        method=key,
        omega_step=omega_step,
        extra=dict(out.extra),
    )
