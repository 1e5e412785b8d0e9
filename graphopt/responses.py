"""Spectral responses h(λ) for graph filters ``h(L) X = U h(Λ) Uᵀ X`` (docs/algorithms.md §4).

- ``heat(t)``: ``h(λ) = exp(−tλ)`` (graph diffusion for time t),
- ``tikhonov(a)``: ``h(λ) = 1 / (1 + aλ)``, i.e. ``h(L) X = (I + aL)^{-1} X``,
- ``lowpass(k)``: the ideal low-pass that keeps the k lowest graph modes (by index in the
  ascending spectrum), ``h = 1`` on modes 0..k−1 and 0 elsewhere,
- any callable ``h`` mapping a tensor of eigenvalues to a tensor of the same shape.

:func:`parse_response` reads the command-line form ``"heat:t=0.5"``, ``"tikhonov:a=1"``,
``"lowpass:k=4"`` (a bare value ``"heat:0.5"`` and a bare name ``"heat"`` also work).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ._tensor import check_nonneg_number

__all__ = ["Response", "heat", "tikhonov", "lowpass", "parse_response", "as_response"]


@dataclass(frozen=True)
class Response:
    """A named spectral response.

    ``fn(λ)`` evaluates h on a tensor of eigenvalues. ``n_modes`` is set only for the ideal
    low-pass, whose response depends on the mode's index, not on λ (so it has no ``fn``).
    ``smooth`` says whether a polynomial (Chebyshev) approximation is appropriate.
    """

    name: str
    params: Mapping[str, float] = field(default_factory=dict)
    fn: Callable[[torch.Tensor], torch.Tensor] | None = None
    n_modes: int | None = None
    smooth: bool = True

    def __call__(self, lam: torch.Tensor) -> torch.Tensor:
        """h at the eigenvalues ``lam`` (ascending, for the index-based low-pass)."""
        if self.n_modes is not None:
            idx = torch.arange(lam.shape[-1], device=lam.device)
            return (idx < self.n_modes).to(lam.dtype)
        assert self.fn is not None
        out = self.fn(lam)
        out = torch.as_tensor(out, dtype=lam.dtype, device=lam.device)
        if out.shape != lam.shape:
            out = out.expand(lam.shape)
        return out

    def __str__(self) -> str:
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_short(v)}" for k, v in self.params.items())


def _short(v: float) -> str:
    """Shortest text that parses back to exactly ``v`` (``"0.5"``, ``"4"``, ``"0.1234567"``)."""
    text = f"{v:g}"
    return text if float(text) == v else repr(float(v))


def heat(t: float = 1.0) -> Response:
    """Heat kernel ``h(λ) = exp(−tλ)``, t ≥ 0."""
    tv = check_nonneg_number(t, "t")
    return Response("heat", {"t": tv}, lambda lam: torch.exp(-tv * lam))


def tikhonov(a: float = 1.0) -> Response:
    """Tikhonov (graph ridge) response ``h(λ) = 1 / (1 + aλ)``, a ≥ 0."""
    av = check_nonneg_number(a, "a")
    return Response("tikhonov", {"a": av}, lambda lam: 1.0 / (1.0 + av * lam))


def lowpass(k: int) -> Response:
    """Ideal low-pass keeping the k lowest graph modes (k ≥ 1).

    Discontinuous in λ, so it has no polynomial approximation: only ``method="exact"``.
    """
    if isinstance(k, bool) or not (isinstance(k, int) or (isinstance(k, float) and k.is_integer())):
        raise TypeError(f"k must be an int, got {k!r}")
    if int(k) < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return Response("lowpass", {"k": int(k)}, None, n_modes=int(k), smooth=False)


_FACTORIES: dict[str, tuple[Callable[..., Response], tuple[str, ...]]] = {
    "heat": (heat, ("t",)),
    "tikhonov": (tikhonov, ("a",)),
    "lowpass": (lowpass, ("k",)),
}


def parse_response(spec: str) -> Response:
    """Parse ``"name"`` or ``"name:key=value[,key=value]"`` (e.g. ``"heat:t=0.5"``).

    A single value without a key binds to the response's parameter (``"lowpass:4"``).
    Unknown names or parameters raise ``ValueError`` naming ``response``.
    """
    if not isinstance(spec, str):
        raise TypeError(f"response must be a string like 'heat:t=0.5', got {type(spec).__name__}")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in _FACTORIES:
        raise ValueError(
            f"response: unknown response name {name!r} in {spec!r}; "
            f"expected one of {', '.join(sorted(_FACTORIES))}"
        )
    factory, keys = _FACTORIES[name]
    kwargs: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            key, value = keys[0], item
        key = key.strip()
        if key not in keys:
            raise ValueError(
                f"response: {name!r} has no parameter {key!r} (in {spec!r}); "
                f"its parameters are {', '.join(keys)}"
            )
        try:
            kwargs[key] = int(value) if key == "k" else float(value)
        except ValueError:
            raise ValueError(
                f"response: parameter {key}={value!r} in {spec!r} is not a number"
            ) from None
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ValueError(f"response: {spec!r}: {exc}") from None


def as_response(response: Response | str | Callable[[torch.Tensor], torch.Tensor]) -> Response:
    """Accept a :class:`Response`, a spec string or a callable ``h(λ)``."""
    if isinstance(response, Response):
        return response
    if isinstance(response, str):
        return parse_response(response)
    if callable(response):
        return Response(getattr(response, "__name__", "custom"), {}, response)
    raise TypeError(
        f"response must be a Response, a string like 'heat:t=0.5' or a callable h(λ), "
        f"got {type(response).__name__}"
    )
