"""Brute-force minimisation used as the reference for the proximal operators."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from scipy.optimize import minimize


def multistart_minimum(obj: Callable[[np.ndarray], float],
                       starts: Iterable[np.ndarray]) -> tuple[np.ndarray, float]:
    """Best of x = 0 and tight Nelder-Mead runs from each start: (argmin, min).

    The objectives here are non-smooth at 0 and non-convex for g < 1, so zero is always a
    candidate and several starts guard against a local minimum."""
    starts = list(starts)
    zero = np.zeros_like(starts[0])
    best, val = zero, obj(zero)
    for start in starts:
        r = minimize(obj, start, method="Nelder-Mead",
                     options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 20000})
        if r.fun < val:
            best, val = r.x, r.fun
    return best, val
