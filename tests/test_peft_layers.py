"""PCLayer: the SVD split reproduces the wrapped layer, merges back, and freezes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

from graphopt.peft.layers import PCLayer, principal_factors, residual_weight  # noqa: E402


def _linear(d_in: int, d_out: int, bias: bool, seed: int, dtype=torch.float64) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(d_in, d_out, bias=bias).to(dtype)


def _conv1d(d_in: int, d_out: int, seed: int, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    m = Conv1D(d_out, d_in).to(dtype)
    with torch.no_grad():
        m.weight.normal_()
        m.bias.normal_()
    return m


dims = st.integers(1, 10)


@settings(max_examples=25, deadline=None)
@given(d_in=dims, d_out=dims, seed=st.integers(0, 10_000), bias=st.booleans(),
       conv=st.booleans(), data=st.data())
def test_split_matches_dense_svd_and_base_output(d_in, d_out, seed, bias, conv, data):
    r = data.draw(st.integers(1, min(d_in, d_out)))
    base = _conv1d(d_in, d_out, seed) if conv else _linear(d_in, d_out, bias, seed)
    w = (base.weight.t() if conv else base.weight).detach().numpy().copy()
    x = torch.randn(3, 2, d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    expected = base(x).detach()
    layer = PCLayer(base, r)
    # Σ a_i b_iᵀ is the best rank-r approximation (sign-free check against NumPy's SVD).
    u, s, vt = np.linalg.svd(w, full_matrices=False)
    a, b = layer.factors()
    np.testing.assert_allclose((a @ b).detach().numpy(), (u[:, :r] * s[:r]) @ vt[:r], atol=1e-10)
    # Columns of A are orthonormal; W_res + A B = W.
    np.testing.assert_allclose((a.t() @ a).detach().numpy(), np.eye(r), atol=1e-10)
    np.testing.assert_allclose(layer.merged_weight().numpy(), w, atol=1e-10)
    torch.testing.assert_close(layer(x), expected, atol=1e-10, rtol=1e-10)


def test_float32_equivalence_and_merge_after_update():
    base = _linear(16, 12, True, 0, torch.float32)
    x = torch.randn(5, 16)
    y0 = base(x).detach()
    layer = PCLayer(base, 4)
    torch.testing.assert_close(layer(x), y0, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        for p in layer.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn_like(p))
    y1 = layer(x).detach()
    assert not torch.allclose(y1, y0, atol=1e-3)
    merged = layer.merge()
    assert isinstance(merged, nn.Linear)
    torch.testing.assert_close(merged(x), y1, atol=1e-5, rtol=1e-5)


def test_conv1d_merge_returns_conv1d_with_transposed_weight():
    base = _conv1d(6, 9, 1)
    x = torch.randn(4, 6, dtype=torch.float64)
    layer = PCLayer(base, 3)
    with torch.no_grad():
        layer.pc_b[0].mul_(2.0)
    y = layer(x).detach()
    merged = layer.merge()
    assert isinstance(merged, Conv1D) and merged.weight.shape == (6, 9)
    torch.testing.assert_close(merged(x), y, atol=1e-10, rtol=1e-10)


def test_rebuild_from_stored_factors_is_bitwise_identical():
    w = torch.randn(7, 5)
    a0, b0 = principal_factors(w, 3)
    first = residual_weight(w, a0, b0)
    # Flip signs of the stored factors: W_res only depends on the product a_i b_iᵀ.
    again = residual_weight(w, a0.clone(), b0.clone())
    assert torch.equal(first, again)
    base = nn.Linear(5, 7)
    with torch.no_grad():
        base.weight.copy_(w)
    layer = PCLayer(base, 0, init=(-a0, -b0))
    assert layer.rank == 3
    torch.testing.assert_close(layer.merged_weight(), w, atol=1e-6, rtol=1e-6)


def test_rank_errors_are_clear():
    with pytest.raises(ValueError, match=r"exceeds min\(d_out, d_in\)"):
        PCLayer(_linear(4, 6, True, 0), 5)
    low_rank = nn.Linear(6, 6, bias=False).double()
    with torch.no_grad():
        low_rank.weight.copy_(torch.outer(torch.arange(1.0, 7.0), torch.ones(6)).double())
    with pytest.raises(ValueError, match="numerical rank of its weight \\(1\\)"):
        PCLayer(low_rank, 2, name="low")
    with pytest.raises(TypeError, match="nn.Linear or Conv1D"):
        PCLayer(nn.Conv2d(1, 1, 1), 1)


def test_bias_node_trainable_only_when_requested():
    layer = PCLayer(_linear(5, 5, True, 0), 2, bias_node=True)
    assert layer.base_layer.bias.requires_grad and not layer.base_layer.weight.requires_grad
    kinds = [k for k, _ in layer.node_parameters()]
    assert kinds == ["pc", "pc", "bias"]
    layer = PCLayer(_linear(5, 5, True, 0), 2)
    assert not layer.base_layer.bias.requires_grad
    assert [k for k, _ in layer.node_parameters()] == ["pc", "pc"]
    no_bias = PCLayer(_linear(5, 5, False, 0), 2, bias_node=True)
    assert not no_bias.has_bias_node


def test_frozen_node_does_not_move_under_adamw_weight_decay():
    layer = PCLayer(_linear(8, 8, True, 0, torch.float32), 4, bias_node=True)
    params = [p for p in layer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.5)
    x, t = torch.randn(16, 8), torch.randn(16, 8)
    for _ in range(3):  # a few steps with everything live, so AdamW has momentum state
        opt.zero_grad(set_to_none=False)
        ((layer(x) - t) ** 2).mean().backward()
        opt.step()
    frozen = (layer.pc_a[1], layer.pc_b[1])
    for p in frozen:
        p.requires_grad_(False)
        p.grad = None
    before = [p.detach().clone() for p in frozen]
    live_before = layer.pc_a[0].detach().clone()
    for _ in range(5):
        opt.zero_grad(set_to_none=False)  # the zeroing mode that would expose stacked masks
        ((layer(x) - t) ** 2).mean().backward()
        opt.step()
    for p, b in zip(frozen, before):
        assert torch.equal(p.detach(), b)
        assert p.grad is None
    assert not torch.equal(layer.pc_a[0].detach(), live_before)
