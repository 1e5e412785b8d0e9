"""Fixtures shared by several test modules."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices gain nothing from threads, and on a shared CPU OpenMP threads waiting
    for descheduled siblings slow each small op by ~10x; restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """A 2-layer BERT checkpoint + WordPiece tokenizer + a 3-class CSV data set on disk
    (``examples/_tiny.py``: the tutorials and the tests share one builder)."""
    pytest.importorskip("transformers")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
    try:
        from _tiny import build_tiny
    finally:
        sys.path.pop(0)
    root = tmp_path_factory.mktemp("tiny")
    build_tiny(root)
    return root


@pytest.fixture(autouse=True)
def _bcd_torch_path(request, monkeypatch):
    """Tests marked ``bcd_torch`` run method='bcd' through its torch (CUDA) path on the CPU."""
    if request.node.get_closest_marker("bcd_torch") is not None:
        import graphopt.solvers._bcd as bcd

        monkeypatch.setattr(bcd, "_COMPILED_ON_CPU", False)
