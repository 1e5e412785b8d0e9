"""``graphopt finetune --method adalora / adamss`` (Hugging Face peft) on the tiny BERT."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from graphopt.peft.finetune import main

pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("peft") is None,
                                reason="Hugging Face peft not installed")

HEAD = 32 * 3 + 3  # the 3-way classifier of the tiny BERT


def _run(tiny: Path, out: Path, method: str) -> dict:
    # 2 layers x q/k/v = 6 matrices of 32 x 32; rank 4 -> 24 units; keep 5.
    argv = ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"),
            "--output-dir", str(out), "--epochs", "3", "--steps-per-epoch", "4",
            "--batch-size", "8", "--max-length", "16", "--no-progress", "--threads", "1",
            "--method", method, "--rank", "4", "--n-select", "5", "--n-important", "2"]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def test_adalora_keeps_the_budget_of_triplets(tiny, tmp_path):
    m = _run(tiny, tmp_path / "adalora", "adalora")
    p = m["trainable_parameters"]
    # A triplet (row of A, column of B, entry of E) trains 32 + 32 + 1 parameters.
    assert p["initial"] == 24 * 65 + HEAD
    assert p["final"] == 5 * 65 + HEAD
    assert m["timings"]["steps"] == 12 and len(m["epochs"]) == 3
    assert m["method_info"]["adalora_budget_final_step"] == 8  # warm-up 4 + scoring 4
    adapter = tmp_path / "adalora" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "ADALORA"
    # The saved rank pattern keeps exactly the budget.
    assert sum(sum(v) for v in config["rank_pattern"].values()) == 5
    assert (adapter / "adapter_model.safetensors").is_file()


def test_adamss_freezes_all_but_the_budget_of_subspaces(tiny, tmp_path):
    m = _run(tiny, tmp_path / "adamss", "adamss")
    p = m["trainable_parameters"]
    info = m["method_info"]
    assert info["adamss_total_subspaces"] == 24 and info["adamss_mask_step"] == 8
    assert HEAD < p["final"] < p["initial"]
    adapter = tmp_path / "adamss" / "adapter"
    assert json.loads((adapter / "adapter_config.json").read_text())["peft_type"] == "ADAMSS"
    assert (adapter / "adapter_model.safetensors").is_file()
    assert m["timings"]["steps"] == 12


def test_budget_step_runs_after_every_optimiser_step(tiny):
    """The hook hands peft the 0-based step count, once per optimiser step."""
    from graphopt.peft.adaptive_baselines import PeftBudgetHook

    calls = []

    class Base:
        def update_and_allocate(self, step):
            calls.append(step)

    class Model(torch.nn.Module):
        base_model = Base()

    hook = PeftBudgetHook(Model(), "budget")
    for _ in range(3):
        hook.after_optimizer_step(None)
    assert calls == [0, 1, 2] and hook.state_dict() == {"step": 3}
    hook.load_state_dict({"step": 7})
    hook.after_optimizer_step(None)
    assert calls[-1] == 7


def test_budget_larger_than_the_units_is_an_error(tiny, tmp_path, capsys):
    argv = ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"),
            "--output-dir", str(tmp_path / "x"), "--no-progress", "--method", "adalora",
            "--rank", "2", "--n-select", "40", "--n-important", "2"]
    assert main(argv) == 2
    assert "n_select (40) exceeds the 12 AdaLoRA triplets" in capsys.readouterr().err
