"""Warnings and errors raised by graphopt."""

from __future__ import annotations

__all__ = ["ConvergenceWarning", "RegularizationWarning"]


class ConvergenceWarning(UserWarning):
    """An iterative solver stopped at ``max_iter`` before meeting its tolerance.

    The result it returned carries ``converged=False`` and its certificates (duality gap,
    KKT or stationarity residual) so the caller can judge how far from optimal it is.
    """


class RegularizationWarning(UserWarning):
    """A solver changed its input to make the problem well posed (e.g. ridge on a singular S).

    The amount applied is recorded on the result, and the caller can set or refuse it.
    """
