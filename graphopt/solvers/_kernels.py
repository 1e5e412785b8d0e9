"""Scalar kernels shared by the compiled (numba) solver loops."""

from __future__ import annotations

from numba import njit

__all__ = ["soft"]


@njit(cache=True)
def soft(x: float, t: float) -> float:
    """Soft thresholding sign(x)·max(|x| − t, 0), the proximal map of t|·|."""
    if x > t:
        return x - t
    if x < -t:
        return x + t
    return 0.0
