"""Proximal operators of the ℓ_g quasi-norm (0 < g ≤ 1): scalar GST and its group version.

``gst`` solves, elementwise, the scalar problem of generalised soft-thresholding
(Zuo, Meng, Zhang, Feng, Zhang, "A generalized iterated shrinkage algorithm for non-convex
sparse coding", ICCV 2013)::

    GST(y; w, g) = argmin_x  ½ (x − y)² + w |x|^g

and ``group_prox`` its group form, the proximal operator of w‖·‖₂^g::

    prox(v) = argmin_u  ½ ‖u − v‖₂² + w ‖u‖₂^g = GST(‖v‖₂; w, g) · v / ‖v‖₂   (0 where v = 0)

(the minimiser is parallel to v, so the group problem reduces to the scalar one on ‖v‖₂).
Both accept NumPy arrays or torch tensors and return the caller's type, dtype and device.
"""

from __future__ import annotations

import torch

from .._tensor import ArrayLike, to_output, to_tensor

__all__ = ["gst", "gst_threshold", "group_prox", "weighted_group_prox"]

# Newton on the stationarity equation converges quadratically; 50 steps is a hard cap that
# is never reached in practice (it stops as soon as an iteration changes nothing).
_NEWTON_MAX_STEPS = 50
# The weighted group prox's monotone fixed-point iteration on the group norm: a cap only (it
# stops when no column's norm moves by more than round-off).
_FIXED_POINT_MAX_STEPS = 2000


def _check_weights(w: torch.Tensor, g: float) -> float:
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise ValueError("w must be finite and >= 0")
    g = float(g)
    if not (0.0 < g <= 1.0):
        raise ValueError(f"g must lie in (0, 1], got {g}")
    return g


def gst_threshold(w: torch.Tensor, g: float) -> torch.Tensor:
    """τ_g(w) = (2w(1−g))^{1/(2−g)} + w g (2w(1−g))^{(g−1)/(2−g)}  (= w for g = 1).

    |y| ≤ τ_g(w) ⇔ 0 is a global minimiser of ½(x − y)² + w|x|^g (Zuo et al. 2013, Thm 1).
    """
    if g == 1.0:
        return w.clone()
    base = 2.0 * w * (1.0 - g)
    safe = torch.where(base > 0, base, torch.ones_like(base))
    thr = safe.pow(1.0 / (2.0 - g)) + w * g * safe.pow((g - 1.0) / (2.0 - g))
    return torch.where(base > 0, thr, torch.zeros_like(thr))


def _gst_tensor(y: torch.Tensor, w: torch.Tensor, g: float, n_iter: int | None) -> torch.Tensor:
    a = y.abs()
    if g == 1.0:  # ordinary soft-thresholding, exact
        return torch.sign(y) * (a - w).clamp_min(0.0)
    active = a > gst_threshold(w, g)
    # Iterate only on the active entries; elsewhere use a harmless stand-in value (1) so that
    # x^{g−1} stays finite, and overwrite with 0 at the end.
    x = torch.where(active, a, torch.ones_like(a))
    a_act = torch.where(active, a, torch.ones_like(a))
    wg = w * g
    if n_iter is not None:
        # The published fixed-point map x ← |y| − w g x^{g−1} (contraction, rate ≤ g/2).
        for _ in range(n_iter):
            x = a_act - wg * x.pow(g - 1.0)
    else:
        # Newton on ψ(x) = x + w g x^{g−1} − |y|. ψ is convex on x > 0 and ψ(|y|) ≥ 0, so
        # Newton started at x = |y| decreases monotonically to the largest root (the
        # minimiser) without overshooting; it converges quadratically.
        for _ in range(_NEWTON_MAX_STEPS):
            psi = x + wg * x.pow(g - 1.0) - a_act
            dpsi = 1.0 - wg * (1.0 - g) * x.pow(g - 2.0)
            step = torch.where(dpsi > 0, psi / dpsi, torch.zeros_like(psi))
            x_new = (x - step).clamp_min(0.0)
            done = bool((x_new == x).all()) or bool(
                ((x_new - x).abs() <= 4 * torch.finfo(x.dtype).eps * x.abs()).all()
            )
            x = x_new
            if done:
                break
    return torch.where(active, torch.sign(y) * x, torch.zeros_like(y))


def gst(y: ArrayLike, w: float | ArrayLike, g: float, *, n_iter: int | None = None) -> ArrayLike:
    """Generalised soft-thresholding, elementwise: argmin_x ½(x − y)² + w|x|^g.

    Parameters
    ----------
    y : array or tensor of any shape.
    w : weight ≥ 0, scalar or broadcastable to ``y``.
    g : exponent in (0, 1]; g = 1 is ordinary soft-thresholding sign(y)·max(|y| − w, 0).
    n_iter : ``None`` (default) solves the stationarity equation x + w g x^{g−1} = |y| by
        Newton's method to machine precision. An integer runs exactly that many steps of the
        published fixed-point map x ← |y| − w g x^{g−1} from x = |y| (Zuo et al. 2013; the
        released ℓ2,g code uses 5), which is accurate only to about (g/2)^n_iter.

    Notes
    -----
    Entries with |y| ≤ τ_g(w) (see ``gst_threshold``) map to exactly 0.
    """
    y_t, as_numpy = to_tensor(y, name="y")
    w_t = torch.as_tensor(w, dtype=y_t.dtype, device=y_t.device)
    g = _check_weights(w_t, g)
    if n_iter is not None and (int(n_iter) != n_iter or n_iter < 0):
        raise ValueError(f"n_iter must be None or an integer >= 0, got {n_iter}")
    out = _gst_tensor(y_t, w_t, g, None if n_iter is None else int(n_iter))
    return to_output(out, as_numpy)


def group_prox_tensor(
    v: torch.Tensor, w: float | torch.Tensor, g: float, *, n_iter: int | None = None
) -> torch.Tensor:
    """Tensor-only ``group_prox`` without validation (for solvers' inner loops)."""
    w_t = torch.as_tensor(w, dtype=v.dtype, device=v.device)
    norms = torch.linalg.vector_norm(v, dim=-2, keepdim=True)
    shrunk = _gst_tensor(norms, w_t, g, n_iter)
    scale = torch.where(norms > 0, shrunk / torch.where(norms > 0, norms, torch.ones_like(norms)),
                        torch.zeros_like(norms))
    return v * scale


def group_prox(v: ArrayLike, w: float | ArrayLike, g: float, *, n_iter: int | None = None) -> ArrayLike:
    """Proximal operator of w‖·‖₂^g applied to every column of ``v`` at once.

    Convention: **columns are groups**. ``v`` has shape (..., m, k): k groups of size m
    (leading dimensions batch). Column u_j of the result is

        argmin_u ½‖u − v_j‖₂² + w‖u‖₂^g = GST(‖v_j‖₂; w, g) · v_j / ‖v_j‖₂   (0 if v_j = 0).

    ``w`` is a scalar (or broadcastable to shape (..., 1, k): one weight per group);
    ``n_iter`` as in ``gst``.
    """
    v_t, as_numpy = to_tensor(v, name="v")
    if v_t.ndim < 2:
        raise ValueError(f"v must have shape (..., m, k) with columns as groups, got {tuple(v_t.shape)}")
    w_t = torch.as_tensor(w, dtype=v_t.dtype, device=v_t.device)
    g = _check_weights(w_t, g)
    if n_iter is not None and (int(n_iter) != n_iter or n_iter < 0):
        raise ValueError(f"n_iter must be None or an integer >= 0, got {n_iter}")
    return to_output(group_prox_tensor(v_t, w_t, g, n_iter=n_iter), as_numpy)


def weighted_group_prox_tensor(v: torch.Tensor, c: torch.Tensor, w: float, g: float) -> torch.Tensor:
    """argmin_u ½ Σ_i c_i (u_i − v_i)² + w‖u‖₂^g for every column (group) of ``v``.

    ``c`` > 0 has the shape of ``v`` (one weight per entry); with all c_i = 1 this is
    ``group_prox``. Stationarity gives u_i = c_i v_i / (c_i + κ), κ = w g ‖u‖^{g−2}, so the
    group norm r = ‖u‖ is a fixed point of T(r) = ‖(c_i v_i / (c_i + w g r^{g−2}))_i‖. T is
    increasing and T(‖v‖) ≤ ‖v‖, so iterating T from r = ‖v‖ decreases monotonically to the
    largest fixed point (or to 0 when there is none); the result is then compared with u = 0
    (for g < 1 the objective is non-convex and 0 may be the global minimiser).
    """
    w_t = torch.as_tensor(w, dtype=v.dtype, device=v.device)
    r = torch.linalg.vector_norm(v, dim=-2, keepdim=True)
    tiny = torch.finfo(v.dtype).tiny

    def shrink(radius: torch.Tensor) -> torch.Tensor:
        kappa = w_t * g * radius.clamp_min(tiny).pow(g - 2.0)
        return c * v / (c + kappa)

    for _ in range(_FIXED_POINT_MAX_STEPS):
        r_new = torch.linalg.vector_norm(shrink(r), dim=-2, keepdim=True)
        moved = (r - r_new).abs() > 8 * torch.finfo(v.dtype).eps * r
        r = r_new
        if not bool(moved.any()):
            break
    u = torch.where(r > 0, shrink(r), torch.zeros_like(v))
    value_u = 0.5 * (c * (u - v) ** 2).sum(-2, keepdim=True) \
        + w_t * torch.linalg.vector_norm(u, dim=-2, keepdim=True).pow(g)
    value_0 = 0.5 * (c * v * v).sum(-2, keepdim=True)
    return torch.where(value_u < value_0, u, torch.zeros_like(u))


def weighted_group_prox(v: ArrayLike, c: ArrayLike, w: float, g: float) -> ArrayLike:
    """Weighted proximal operator of w‖·‖₂^g on every column of ``v`` (columns are groups):

        u_j = argmin_u ½ Σ_i c_ij (u_i − v_ij)² + w‖u‖₂^g,   c > 0 of the shape of v.

    The metric-weighted form of ``group_prox`` (equal to it when c ≡ 1); the ℓ2,g solver
    needs it for its diagonally preconditioned ADMM.
    """
    v_t, as_numpy = to_tensor(v, name="v")
    if v_t.ndim < 2:
        raise ValueError(f"v must have shape (..., m, k) with columns as groups, got {tuple(v_t.shape)}")
    c_t = torch.as_tensor(c, dtype=v_t.dtype, device=v_t.device)
    if c_t.shape != v_t.shape or not bool(torch.isfinite(c_t).all()) or bool((c_t <= 0).any()):
        raise ValueError(f"c must be finite and > 0 with the shape of v {tuple(v_t.shape)}")
    g = _check_weights(torch.as_tensor(w, dtype=v_t.dtype), g)
    return to_output(weighted_group_prox_tensor(v_t, c_t, float(w), g), as_numpy)
