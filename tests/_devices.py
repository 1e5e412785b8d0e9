"""Device × dtype parameters shared by the test_cuda_* modules.

Every check there runs once per (device, dtype): on CPU in the normal suite, and on CUDA
(marked ``cuda``, skipped without a device) so that ``pytest -m cuda`` on a GPU machine runs
exactly the checks CI runs on CPU, on the same problems.
"""

from __future__ import annotations

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()

#: The devices every torch path must work on; the CUDA one carries the ``cuda`` marker.
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param("cuda", id="cuda", marks=[
        pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device here")]),
]

DTYPES = [pytest.param(torch.float32, id="float32"), pytest.param(torch.float64, id="float64")]


def assert_on(t: torch.Tensor, device: str, dtype: torch.dtype | None = None) -> None:
    """The tensor lives on ``device`` (type only: cuda:0 counts as cuda) with ``dtype``."""
    assert isinstance(t, torch.Tensor), f"expected a tensor, got {type(t).__name__}"
    assert t.device.type == device, f"tensor on {t.device}, expected {device}"
    if dtype is not None:
        assert t.dtype == dtype, f"tensor of dtype {t.dtype}, expected {dtype}"


def numpy64(t: torch.Tensor):
    """A float64 NumPy copy of a tensor from any device."""
    return t.detach().to("cpu", torch.float64).numpy()
