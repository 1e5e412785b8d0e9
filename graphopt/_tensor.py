"""Array plumbing shared by every layer: NumPy/torch conversion and input validation.

Every public solver accepts NumPy arrays or torch tensors. Inputs are converted once to a
torch tensor (keeping the caller's device and floating dtype), the solver runs in torch, and
the result is converted back to the caller's type. Validation errors name the argument and
say what is wrong with it, so that a user never has to read a traceback to find the problem.
"""

from __future__ import annotations

import math

from typing import Any

import numpy as np
import torch

__all__ = [
    "ArrayLike",
    "to_tensor",
    "to_output",
    "check_finite",
    "check_square",
    "check_symmetric",
    "check_psd",
    "check_covariance",
    "check_nonneg_number",
]

ArrayLike = Any  # np.ndarray | torch.Tensor | nested sequences of floats


def to_tensor(
    x: ArrayLike,
    *,
    name: str,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, bool]:
    """Convert ``x`` to a floating torch tensor; return ``(tensor, came_from_numpy)``.

    Tensors keep their device; floating tensors keep their dtype, integer and boolean ones
    become float64 (float32 would silently lose precision in the solvers' certificates).
    NumPy input (or anything ``np.asarray`` accepts) becomes a CPU float64 tensor unless
    ``dtype``/``device`` say otherwise.
    """
    if isinstance(x, torch.Tensor):
        t = x
        came_from_numpy = False
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}") from exc
        if arr.dtype == object:
            raise TypeError(f"{name} must be numeric, got an object array")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise TypeError(f"{name} must be numeric, got dtype {arr.dtype}")
        if np.iscomplexobj(arr):
            raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
        if arr.dtype not in (np.float32, np.float64):
            arr = arr.astype(np.float64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
        came_from_numpy = True
    if t.is_complex():
        raise TypeError(f"{name} must be real, got complex dtype {t.dtype}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    elif t.dtype in (torch.float16, torch.bfloat16):
        # Half precision cannot represent the log-determinants and gaps the solvers certify.
        t = t.to(torch.float32)
    if dtype is not None or device is not None:
        t = t.to(dtype=dtype or t.dtype, device=device or t.device)
    return t, came_from_numpy


def to_output(t: torch.Tensor | None, as_numpy: bool) -> Any:
    """Return ``t`` as a NumPy array when the caller passed NumPy, else as the tensor."""
    if t is None:
        return None
    if as_numpy:
        return t.detach().cpu().numpy()
    return t


def check_finite(t: torch.Tensor, name: str) -> None:
    """Raise ``ValueError`` if ``t`` holds NaN or infinite entries."""
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite entries")


def check_square(t: torch.Tensor, name: str, *, allow_batch: bool = True) -> None:
    """Raise ``ValueError`` unless ``t`` has shape (p, p) (or (B, p, p) when batching)."""
    allowed = (2, 3) if allow_batch else (2,)
    if t.ndim not in allowed:
        want = "(p, p) or (B, p, p)" if allow_batch else "(p, p)"
        raise ValueError(f"{name} must have shape {want}, got shape {tuple(t.shape)}")
    if t.shape[-1] != t.shape[-2]:
        raise ValueError(f"{name} must be square, got shape {tuple(t.shape)}")
    if t.shape[-1] == 0:
        raise ValueError(f"{name} must have at least one row and column, got shape {tuple(t.shape)}")


def _relative_tolerance(t: torch.Tensor) -> float:
    # Symmetry and PSD checks compare against the matrix's own scale, with a tolerance that
    # admits round-off of the dtype (a covariance computed in float32 is symmetric to ~1e-7).
    return 1e-5 if t.dtype == torch.float32 else 1e-8


def check_symmetric(t: torch.Tensor, name: str, *, rtol: float | None = None) -> None:
    """Raise ``ValueError`` unless ``t`` (or every matrix of a batch) is symmetric."""
    rtol = _relative_tolerance(t) if rtol is None else rtol
    scale = t.abs().amax(dim=(-2, -1)).clamp_min(torch.finfo(t.dtype).tiny)
    asym = (t - t.transpose(-1, -2)).abs().amax(dim=(-2, -1)) / scale
    if bool((asym > rtol).any()):
        worst = float(asym.max())
        raise ValueError(
            f"{name} must be symmetric: largest relative asymmetry |S - S^T|/max|S| is "
            f"{worst:.3g} (tolerance {rtol:.1g})"
        )


def check_psd(t: torch.Tensor, name: str, *, rtol: float | None = None) -> None:
    """Raise ``ValueError`` if the smallest eigenvalue of ``t`` is below ``-rtol * ||t||_2``."""
    rtol = 1e3 * _relative_tolerance(t) if rtol is None else rtol
    eig = torch.linalg.eigvalsh(t)
    scale = eig.abs().amax(dim=-1).clamp_min(torch.finfo(t.dtype).tiny)
    bad = eig[..., 0] < -rtol * scale
    if bool(bad.any()):
        worst = float(eig[..., 0].min())
        raise ValueError(
            f"{name} must be positive semidefinite: its smallest eigenvalue is {worst:.3g} "
            f"(tolerance {-rtol:.1g} relative to its largest)"
        )


def check_covariance(
    S: ArrayLike,
    name: str = "S",
    *,
    allow_batch: bool = True,
    check_psd_: bool = True,
    dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, bool]:
    """Validate an empirical covariance (or a batch of them) and return it as a tensor.

    Checks, in order: numeric, shape (p, p) / (B, p, p), finite, symmetric, and positive
    semidefinite up to round-off. Returns ``(tensor, came_from_numpy)``.
    """
    t, came_from_numpy = to_tensor(S, name=name, dtype=dtype)
    check_square(t, name, allow_batch=allow_batch)
    check_finite(t, name)
    check_symmetric(t, name)
    if check_psd_:
        check_psd(t, name)
    return t, came_from_numpy


def check_nonneg_number(value: Any, name: str) -> float:
    """``value`` as a float; TypeError unless a real number (bool excluded), ValueError
    unless finite and >= 0. Both name the argument."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got bool")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return v
