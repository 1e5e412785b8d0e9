"""The fine-tuning layer's torch paths on each device × dtype, against CPU float64.

PC adapters (forward, backward, save/load, merge), the allocation (scores → covariance →
ℓ2,g-GGM → selection) and one short ``graphopt finetune`` run, on CPU in the normal suite and
on CUDA under ``pytest -m cuda`` (skipped without a device). The reference for each check is
the same model built from the same seed in float64 on the CPU.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from _devices import DEVICES, DTYPES, assert_on, numpy64

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from graphopt.exceptions import RegularizationWarning  # noqa: E402
from graphopt.peft.allocation import allocate  # noqa: E402
from graphopt.peft.allocator import GGMAllocator  # noqa: E402
from graphopt.peft.config import GGMConfig  # noqa: E402
from graphopt.peft.model import get_graphopt_model, load_adapter  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Absolute tolerance on logits / gradients against the float64 CPU reference.
ATOL = {torch.float64: 1e-9, torch.float32: 2e-4}


def _bert(seed: int = 0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, vocab_size=64, max_position_embeddings=40,
                                  num_labels=3, hidden_dropout_prob=0.0,
                                  attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(cfg).eval()


def _batch(device: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 64, (4, 9), generator=g)
    return {"input_ids": ids.to(device)}, torch.tensor([0, 1, 2, 1], device=device)


def _adapted(device: str, dtype: torch.dtype, seed: int = 0):
    base = _bert(seed).to(device=device, dtype=dtype)
    return get_graphopt_model(base, GGMConfig(rank=3, bias_nodes=True))


def _logits(model, device: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**_batch(device)[0]).logits


def _train(model, device: str, steps: int = 3) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-2)
    inputs, labels = _batch(device)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(**inputs, labels=labels).loss.backward()
        opt.step()
    model.eval()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pc_forward_and_backward_match_cpu_float64(device, dtype):
    reference = _adapted("cpu", torch.float64)
    model = _adapted(device, dtype)
    for layer in model.pc_layers().values():
        for t in (layer.a0, layer.b0, layer.pc_a[0], layer.pc_b[0], layer.base_layer.weight):
            assert_on(t, device, dtype)
    # Forward: the adapted model reproduces the base model, and the CPU float64 logits.
    base_logits = _logits(_bert().to(device=device, dtype=dtype), device)
    logits = _logits(model, device)
    assert_on(logits, device, dtype)
    torch.testing.assert_close(logits, base_logits, atol=ATOL[dtype], rtol=0)
    np.testing.assert_allclose(numpy64(logits), numpy64(_logits(reference, "cpu")),
                               atol=ATOL[dtype])
    # Backward: gradients of every trainable node vector equal the reference's.
    for m, dev in ((model, device), (reference, "cpu")):
        inputs, labels = _batch(dev)
        m(**inputs, labels=labels).loss.backward()
    got = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    want = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}
    assert got.keys() == want.keys() and got
    for n, grad in got.items():
        assert grad is not None, n
        assert_on(grad, device, dtype)
        np.testing.assert_allclose(numpy64(grad), numpy64(want[n]), atol=ATOL[dtype] * 10,
                                   err_msg=n)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pc_save_load_and_merge_on_device(device, dtype, tmp_path):
    model = _adapted(device, dtype)
    _train(model, device)
    model.train_only_nodes(list(range(0, len(model.nodes), 2)))
    adapted = _logits(model, device)
    model.save_adapter(tmp_path / "adapter")
    # Load onto a fresh base on the same device: same outputs, same frozen nodes.
    loaded = load_adapter(_bert().to(device=device, dtype=dtype), tmp_path / "adapter")
    assert [n.trainable for n in loaded.nodes] == [n.trainable for n in model.nodes]
    for layer in loaded.pc_layers().values():
        assert_on(layer.pc_a[0], device, dtype)
    torch.testing.assert_close(_logits(loaded, device), adapted, atol=ATOL[dtype], rtol=0)
    # Load the same files onto a CPU float64 base: the adapter travels between devices.
    on_cpu = load_adapter(_bert().double(), tmp_path / "adapter")
    np.testing.assert_allclose(numpy64(_logits(on_cpu, "cpu")), numpy64(adapted),
                               atol=ATOL[dtype] * 10)
    # Merge: a plain model with the adapted outputs, weights still on the device.
    plain = loaded.merge_and_unload()
    assert not any(type(m).__name__ == "PCLayer" for m in plain.modules())
    assert_on(plain.bert.encoder.layer[0].attention.self.query.weight, device, dtype)
    torch.testing.assert_close(_logits(plain, device), adapted, atol=ATOL[dtype] * 5, rtol=0)


def _samples(T: int, n: int, seed: int = 0) -> np.ndarray:
    """Positive node scores with a few nodes that co-vary (what selection should find)."""
    rng = np.random.default_rng(seed)
    common = rng.lognormal(size=(T, 1))
    x = rng.lognormal(size=(T, n))
    x[:, :4] *= common
    return x


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("T", [40, 8])  # T < n: a singular covariance, the solver's ridge
def test_allocation_on_device_matches_numpy(device, dtype, T):
    n = 18
    x = _samples(T, n)
    names = [f"node{i}" for i in range(n)]
    config = GGMConfig(rank=3, n_important=3, n_select=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegularizationWarning)
        ref = allocate(x, names, config)
        got = allocate(torch.tensor(x, dtype=dtype, device=device), names, config)
    assert got.important == ref.important
    assert got.selected == ref.selected
    assert got.solver["converged"] and ref.solver["converged"]
    assert got.regularization == pytest.approx(ref.regularization, rel=1e-6)
    scale = np.abs(ref.omega).max()
    np.testing.assert_allclose(got.omega, ref.omega, atol=1e-5 * scale)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_allocator_scores_and_selects_on_device(device, dtype):
    model = _adapted(device, dtype)
    config = GGMConfig(rank=3, bias_nodes=True, n_important=2, n_select=5, warmup_steps=1,
                       scoring_steps=4)
    allocator = GGMAllocator(model, config)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    inputs, labels = _batch(device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegularizationWarning)
        for _ in range(6):
            opt.zero_grad()
            model(**inputs, labels=labels).loss.backward()
            opt.step()
            allocator.step()
    alloc = allocator.allocation
    assert alloc is not None and alloc.step == 5 and len(alloc.selected) == 5
    assert alloc.samples.shape == (4, len(model.nodes))
    assert np.all(np.isfinite(alloc.samples)) and np.all(alloc.samples >= 0)
    trainable = [n.index for n in model.nodes if n.trainable]
    assert trainable == sorted(alloc.selected)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", ["ggm", "lora"])
def test_finetune_cli_on_device(device, method, tiny, tmp_path):
    if method == "lora":
        pytest.importorskip("peft")
    from graphopt.peft.finetune import main

    out = tmp_path / method
    argv = ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"),
            "--output-dir", str(out), "--epochs", "2", "--steps-per-epoch", "3",
            "--batch-size", "8", "--max-length", "16", "--no-progress", "--threads", "1",
            "--device", device, "--method", method]
    if method == "ggm":
        argv += ["--rank", "3", "--n-important", "2", "--n-select", "5",
                 "--warmup-steps", "1", "--scoring-steps", "3"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RegularizationWarning)
        assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["resolved"]["device"].startswith(device)
    assert m["timings"]["steps"] == 6
    assert all(np.isfinite(e["train_loss"]) for e in m["epochs"])
    assert 0.0 <= m["test"]["accuracy"] <= 1.0
    cuda_mib = m["peak_memory"]["cuda_max_allocated_mib"]
    assert (cuda_mib is None) == (device == "cpu")
    if device == "cuda":
        assert cuda_mib > 0
    if method == "ggm":
        assert len(m["allocation"]["selected"]) == 5
