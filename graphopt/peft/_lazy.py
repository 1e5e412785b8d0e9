"""Module attributes made on first access (classes that subclass optional, slow imports)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(module: str, factories: dict[str, Callable[[], Any]]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` that builds ``factories[name]()`` once, on first use.

    transformers is optional and slow to import, so classes deriving from its ``Trainer`` or
    ``TrainerCallback`` are created only when a caller asks for them.
    """
    made: dict[str, Any] = {}

    def __getattr__(name: str) -> Any:
        if name not in factories:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        if name not in made:
            made[name] = factories[name]()
        return made[name]

    return __getattr__
