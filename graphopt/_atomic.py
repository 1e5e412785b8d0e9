"""Atomic file writes, shared by every module that saves something.

A file is written to a temporary file in its own directory, flushed to disk (``fsync``) and
then moved over the final name with ``os.replace``, which is atomic on POSIX and Windows:
a reader (or a crash) sees either the old file or the complete new one, never a truncated
one. The temporary file is created with mode 0o666 filtered by the process umask, so the
result has the permissions a plain ``open(path, "w")`` would give it; on any failure it is
removed and the old file, if any, is left as it was.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_paths", "atomic_write_bytes", "atomic_write_text",
           "atomic_write_json"]

# O_EXCL: never reuse an existing name; mode 0o666 lets the kernel apply the umask itself
# (tempfile.mkstemp would give 0o600, and reading the umask means setting it, which races
# with other threads).
_CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_BINARY", 0))
_CREATE_ATTEMPTS = 100


def _create_temp(path: Path) -> tuple[Path, int]:
    """An empty new file next to ``path``, named ``.<name>.<random>.tmp``, and its mode."""
    for _ in range(_CREATE_ATTEMPTS):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o666)
        except FileExistsError:
            continue
        try:
            return tmp, stat.S_IMODE(os.fstat(fd).st_mode)
        finally:
            os.close(fd)
    raise FileExistsError(f"could not create a temporary file next to {path}")


def _finish_temp(tmp: Path, mode: int) -> None:
    """Give ``tmp`` back its creation mode and flush it to disk.

    Writers that take a file name may replace the file by their own temporary one (safetensors
    does, with mode 0o600); the mode it was created with is the umask-respecting one.
    """
    if stat.S_IMODE(os.stat(tmp).st_mode) != mode:
        os.chmod(tmp, mode)
    fd = os.open(tmp, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    """Persist a rename in ``directory`` (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_paths(*paths: str | os.PathLike[str]) -> Iterator[tuple[Path, ...]]:
    """Temporary paths for ``paths``; when the block succeeds each replaces its final path.

    The replacements happen in the order given, each atomic. The set of files is not replaced
    as one: a crash between two replacements leaves the first files new and the later ones
    old, so a writer whose files must agree stores a common id in each and checks it when
    reading. If the block (or a replacement) raises, the temporary files that were not moved
    yet are removed and their final paths are left untouched. Parent directories are created.

    >>> with atomic_paths(dir / "weights.bin", dir / "meta.json") as (w, m):  # doctest: +SKIP
    ...     w.write_bytes(payload); m.write_text(meta)   # meta.json is replaced last
    """
    finals = [Path(p) for p in paths]
    temps: list[Path] = []
    modes: list[int] = []
    try:
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp, mode = _create_temp(final)
            temps.append(tmp)
            modes.append(mode)
        yield tuple(temps)
        for tmp, mode in zip(temps, modes):
            _finish_temp(tmp, mode)
        for tmp, final in zip(temps, finals):
            os.replace(tmp, final)
        for directory in dict.fromkeys(f.parent for f in finals):
            _fsync_dir(directory)
    finally:
        for tmp in temps:
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path that replaces ``path`` when the block succeeds (see :func:`atomic_paths`).

    For writers that take a file name, e.g. ``with atomic_path(p) as tmp: save_file(state, tmp)``.
    """
    with atomic_paths(path) as (tmp,):
        yield tmp


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (newlines written as given, no translation)."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON (``indent`` spaces, a final newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
