"""argparse ``type=`` converters for the CLI options of ``graphopt.peft``.

Each converter turns the option's text into a number and checks its range, so that argparse
reports ``argument --name: expected ...`` and exits with status 2 on bad input.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["positive_int", "nonneg_int", "positive_float", "nonneg_float", "unit_interval",
           "steps_per_epoch_option", "regularization_option"]


def _converter(kind: type, accept: Callable[[float], bool], want: str) -> Callable[[str], float]:
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if not (math.isfinite(value) and accept(value)):
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}")
        return value

    return convert


positive_int = _converter(int, lambda v: v > 0, "a positive integer")
nonneg_int = _converter(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _converter(float, lambda v: v > 0, "a positive finite number")
nonneg_float = _converter(float, lambda v: v >= 0, "a finite number >= 0")
unit_interval = _converter(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")


def steps_per_epoch_option(text: str) -> int | None:
    """``auto`` (None: decided by the device) or a step count >= 0."""
    return None if text == "auto" else nonneg_int(text)


def regularization_option(text: str) -> float | str | None:
    """``auto``, ``none`` (None: refuse a singular S) or a ridge ε >= 0."""
    if text in ("auto", "none"):
        return None if text == "none" else text
    return nonneg_float(text)
