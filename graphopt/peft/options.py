"""Command-line options generated from config dataclass fields.

A config field that the CLI exposes is declared with :func:`option`: its default, help text,
flag, argparse converter and choices live in the field itself, so :func:`add_options` can
build the ``argparse`` options and :func:`config_from_args` the config from the parsed
namespace, and no default or help text is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["option", "add_options", "config_from_args", "option_dest", "options_dict"]


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
           type: Callable[[str], Any] | None = None, metavar: str | None = None,
           choices: Sequence[Any] | None = None, negate: str | None = None,
           default_factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field that is also a CLI option (``--name`` unless ``flag`` is given).

    ``negate="--no-progress"`` makes a boolean field (default True) a store-false switch; a
    boolean field with default False and no ``type`` is a store-true switch.
    """
    meta = {"help": help, "flag": flag, "type": type, "metavar": metavar,
            "choices": None if choices is None else tuple(choices), "negate": negate}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"cli": meta})
    return dataclasses.field(default=default, metadata={"cli": meta})


def _cli_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "cli" in f.metadata]


def _flag(f: dataclasses.Field) -> str:
    meta = f.metadata["cli"]
    return meta["negate"] or meta["flag"] or "--" + f.name.replace("_", "-")


def option_dest(cls: type, name: str) -> str:
    """The argparse ``dest`` of field ``name`` of ``cls`` (a unique, prefixed name)."""
    return f"{cls.__name__}.{name}"


def add_options(group: Any, cls: type, *, defaults: dict[str, Any] | None = None) -> None:
    """Add one option per CLI field of ``cls`` to an argparse parser or argument group.

    ``defaults`` overrides a field's default for this command only (shown in ``--help``).
    """
    defaults = defaults or {}
    for f in _cli_fields(cls):
        meta = f.metadata["cli"]
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING
                               else f.default_factory())  # type: ignore[misc]
        kwargs: dict[str, Any] = {"dest": option_dest(cls, f.name), "help": meta["help"]}
        if meta["negate"]:
            kwargs.update(action="store_false", default=default)
        elif isinstance(default, bool) and meta["type"] is None:
            kwargs.update(action="store_true", default=default)
        else:
            kwargs.update(default=default)
            if meta["type"] is not None:
                kwargs["type"] = meta["type"]
            if meta["choices"] is not None:
                kwargs["choices"] = list(meta["choices"])
            else:  # the dest is prefixed with the class: name the value after the field
                kwargs["metavar"] = meta["metavar"] or f.name.upper()
        group.add_argument(_flag(f), **kwargs)


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``cls`` from the options :func:`add_options` added (plus ``overrides``).

    The config's ``__post_init__`` validates; a ValueError / TypeError from it names the
    option (the flag) it came from.
    """
    values = {f.name: getattr(args, option_dest(cls, f.name)) for f in _cli_fields(cls)
              if hasattr(args, option_dest(cls, f.name))}
    values.update(overrides)
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise type(exc)(_with_flags(cls, str(exc))) from None


def _with_flags(cls: type, message: str) -> str:
    """The config's message with field names written as the options a user typed: the
    leading name, and every snake_case name (short names like ``g`` only when leading)."""
    for f in _cli_fields(cls):
        if message.startswith(f.name + " "):
            message = _flag(f) + message[len(f.name):]
        if "_" in f.name:
            message = re.sub(rf"(?<![-\w]){re.escape(f.name)}\b", _flag(f), message)
    return message


def options_dict(cls: type, config: Any) -> dict[str, Any]:
    """``{option name: value}`` of a config's CLI fields, as ``vars()`` of the parsed command
    line would give them (``--ggm-groups`` → ``ggm_groups``; a ``--no-x`` switch → its flag)."""
    out = {}
    for f in _cli_fields(cls):
        key = _flag(f).lstrip("-").replace("-", "_")
        value = getattr(config, f.name)
        if f.metadata["cli"]["negate"]:
            value = not value
        out[key] = str(value) if isinstance(value, Path) else value
    return out
