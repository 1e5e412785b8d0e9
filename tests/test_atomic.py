"""The one atomic writer (graphopt._atomic) and the savers built on it."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import graphopt._atomic as atomic_mod
from graphopt._atomic import (
    atomic_path,
    atomic_paths,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")


class Boom(RuntimeError):
    pass


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def umask():
    """Set the process umask for one test and restore it afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_bytes_text_round_trip_and_overwrite(tmp_path):
    p = tmp_path / "sub" / "f.bin"  # parent directories are created
    atomic_write_bytes(p, b"\x00\x01old")
    assert p.read_bytes() == b"\x00\x01old"
    atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"new"
    t = tmp_path / "t.txt"
    atomic_write_text(t, "grüße\nline 2\n")
    assert t.read_bytes() == "grüße\nline 2\n".encode()
    assert _listing(tmp_path) == ["sub", "t.txt"]
    assert _listing(tmp_path / "sub") == ["f.bin"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)


@settings(max_examples=60, deadline=None)
@given(obj=json_values, indent=st.sampled_from([None, 1, 2]))
def test_json_round_trip(tmp_path_factory, obj, indent):
    p = tmp_path_factory.mktemp("j") / "x.json"
    atomic_write_json(p, obj, indent=indent)
    text = p.read_text(encoding="utf-8")
    assert text.endswith("\n")
    assert json.loads(text) == obj
    assert _listing(p.parent) == ["x.json"]


def test_failing_writer_leaves_old_file_and_no_temp(tmp_path):
    p = tmp_path / "state.safetensors"
    p.write_bytes(b"the old content")
    with pytest.raises(Boom):
        with atomic_path(p) as tmp:
            assert tmp.parent == tmp_path and tmp.name.startswith(".state.safetensors.")
            tmp.write_bytes(b"half a new fi")  # partly written when the writer fails
            raise Boom
    assert p.read_bytes() == b"the old content"
    assert _listing(tmp_path) == ["state.safetensors"]
    # No old file: the failed write leaves nothing at all.
    q = tmp_path / "new.json"
    with pytest.raises(Boom):
        with atomic_path(q) as tmp:
            tmp.write_text("{")
            raise Boom
    assert _listing(tmp_path) == ["state.safetensors"]


def test_unserialisable_json_leaves_old_file(tmp_path):
    p = tmp_path / "m.json"
    atomic_write_json(p, {"a": 1})
    before = p.read_bytes()
    with pytest.raises(TypeError):
        atomic_write_json(p, {"a": object()})
    assert p.read_bytes() == before
    assert _listing(tmp_path) == ["m.json"]


def test_failing_replace_removes_temp(tmp_path, monkeypatch):
    p = tmp_path / "f.txt"
    p.write_text("old")

    def refuse(src, dst):
        raise OSError("disk says no")

    monkeypatch.setattr(atomic_mod.os, "replace", refuse)
    with pytest.raises(OSError, match="disk says no"):
        atomic_write_text(p, "new")
    assert p.read_text() == "old"
    assert _listing(tmp_path) == ["f.txt"]


def test_several_files_replaced_in_order(tmp_path, monkeypatch):
    first, second = tmp_path / "weights.bin", tmp_path / "meta.json"
    first.write_text("w0")
    second.write_text("m0")
    # The block fails: both files stay old, no temp remains.
    with pytest.raises(Boom):
        with atomic_paths(first, second) as (t1, t2):
            t1.write_text("w1")
            t2.write_text("m1")
            raise Boom
    assert (first.read_text(), second.read_text()) == ("w0", "m0")
    assert _listing(tmp_path) == ["meta.json", "weights.bin"]
    # The second replacement fails: the first file is new, the second old (the documented
    # per-file atomicity), and the second temp is removed.
    real_replace = os.replace
    calls = []

    def replace_once(src, dst):
        calls.append(Path(dst).name)
        if len(calls) == 2:
            raise OSError("crash between the two")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_mod.os, "replace", replace_once)
    with pytest.raises(OSError, match="crash between"):
        with atomic_paths(first, second) as (t1, t2):
            t1.write_text("w2")
            t2.write_text("m2")
    assert calls == ["weights.bin", "meta.json"]
    assert (first.read_text(), second.read_text()) == ("w2", "m0")
    assert _listing(tmp_path) == ["meta.json", "weights.bin"]


@posix_only
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_permissions_follow_umask(tmp_path, umask, mask):
    from safetensors.torch import save_file

    umask(mask)
    expected = 0o666 & ~mask
    atomic_write_text(tmp_path / "a.txt", "x")
    atomic_write_json(tmp_path / "b.json", [1])
    with atomic_path(tmp_path / "c.safetensors") as tmp:
        save_file({"w": torch.ones(2)}, str(tmp))
    for name in ("a.txt", "b.json", "c.safetensors"):
        assert _mode(tmp_path / name) == expected, name
    # Same as a plain open(path, "w") gives under this umask.
    with open(tmp_path / "plain", "w") as fh:
        fh.write("x")
    assert _mode(tmp_path / "plain") == expected


@posix_only
def test_project_savers_write_normal_permissions_and_no_temp(tmp_path, umask):
    """Every saver in graphopt.peft goes through the shared writer (umask-respecting modes)."""
    pytest.importorskip("safetensors")
    from torch import nn

    from graphopt.peft.allocation import ALLOCATION_JSON, ALLOCATION_TENSORS, Allocation
    from graphopt.peft.methods import _save_trainable
    from graphopt.peft.report import write_json_atomic, write_text_atomic

    umask(0o027)
    expected = 0o640
    alloc = Allocation(policy="random", selected=[0, 2], important=[], node_names=["a", "b", "c"],
                       scores=np.zeros(3), samples=np.ones((2, 3)))
    alloc.save(tmp_path / "alloc")
    loaded = Allocation.load(tmp_path / "alloc")
    assert loaded.selected == [0, 2] and np.array_equal(loaded.samples, alloc.samples)
    model = nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    assert _save_trainable(model, tmp_path / "m") == ["trainable.safetensors"]
    assert _save_trainable(model, tmp_path / "m", everything=True) == ["model.safetensors"]
    write_json_atomic(tmp_path / "r" / "metrics.json", {"x": np.float32(0.5)})
    write_text_atomic(tmp_path / "r" / "results.md", "# r\n")
    files = {"alloc": [ALLOCATION_JSON, ALLOCATION_TENSORS],
             "m": ["model.safetensors", "trainable.safetensors"],
             "r": ["metrics.json", "results.md"]}
    for sub, names in files.items():
        assert _listing(tmp_path / sub) == sorted(names)
        for name in names:
            assert _mode(tmp_path / sub / name) == expected, f"{sub}/{name}"
