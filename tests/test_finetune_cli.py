"""``graphopt finetune`` end to end on a tiny BERT built in the test (random init, CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from graphopt.peft.finetune import main
from graphopt.peft.report import format_table, write_json_atomic

transformers = pytest.importorskip("transformers")

HAS_HF_PEFT = importlib.util.find_spec("peft") is not None


def _run(tiny: Path, out: Path, *extra: str) -> dict:
    argv = ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"),
            "--output-dir", str(out), "--epochs", "3", "--steps-per-epoch", "4",
            "--batch-size", "8", "--max-length", "16", "--no-progress", "--threads", "1", *extra]
    assert main(argv) == 0
    return json.loads((out / "metrics.json").read_text())


def _check_common(m: dict, epochs: int = 3) -> None:
    assert [e["epoch"] for e in m["epochs"]] == list(range(1, epochs + 1))
    for e in m["epochs"]:
        assert 0.0 <= e["validation"]["accuracy"] <= 1.0
        assert np.isfinite(e["train_loss"])
    assert set(m["test"]) == {"accuracy", "macro_f1", "loss"}
    assert m["data"]["sizes"] == {"train": 63, "validation": 9, "test": 18}
    assert m["data"]["label_names"] == ["arts", "business", "sport"]
    assert m["peak_memory"]["peak_rss_mib"] > 0
    assert m["peak_memory"]["cuda_max_allocated_mib"] is None
    assert m["timings"]["steps"] == len(m["timings"]["step_times_s"]) == 4 * epochs
    assert m["timings"]["total_s"] >= m["timings"]["train_s"] > 0


def test_ggm_end_to_end_writes_metrics_adapter_allocation_plot(tiny, tmp_path):
    out = tmp_path / "ggm"
    m = _run(tiny, out, "--rank", "4", "--n-important", "2", "--n-select", "5",
             "--warmup-steps", "2", "--scoring-steps", "3")
    _check_common(m)
    # 2 layers x (query, key, value) x r=4 nodes; selection after warm-up + scoring steps
    assert m["method_info"]["n_nodes"] == 24
    t = m["timings"]
    assert t["selection_step"] == 5
    assert t["step_phases"][:2] == ["warmup", "warmup"]
    assert t["step_phases"][2:5] == ["scoring"] * 3 and set(t["step_phases"][5:]) == {"trained"}
    assert t["allocator_s"] == pytest.approx(t["scoring_s"] + t["selection_s"])
    sel = m["allocation"]["selected"]
    assert len(sel) == 5 and set(m["allocation"]["important"]) <= set(sel)
    # selection freezes 24 - 5 nodes of (a: d_out + b: d_in) = 64 parameters each
    params = m["trainable_parameters"]
    assert params["initial"] - params["final"] == (24 - 5) * (32 + 32)
    assert params["final"] == params["after_selection"]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert any((out / "allocation").iterdir())
    assert (out / "selected_nodes.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert m["outputs"]["plot"] == "selected_nodes.png"


def test_ggm_adapter_reproduces_reported_test_accuracy(tiny, tmp_path):
    """The saved adapter, loaded onto a fresh base model, gives the reported test metrics."""
    from graphopt.peft.data import load_splits
    from graphopt.peft.runtime import load_classifier
    from graphopt.peft.model import load_adapter
    from graphopt.peft.train import encode, evaluate

    out = tmp_path / "ggm"
    m = _run(tiny, out, "--rank", "4", "--n-important", "2", "--n-select", "5",
             "--warmup-steps", "2", "--scoring-steps", "3", "--seed", "1", "--lr", "1e-2")
    splits = load_splits(tiny / "data.csv", seed=1)
    tok, base = load_classifier(tiny / "model", splits.num_labels, splits.label_names, seed=123)
    gm = load_adapter(base, out / "adapter")
    res = evaluate(gm, encode(tok, splits.test, 16), batch_size=16, pad_id=tok.pad_token_id,
                   device=torch.device("cpu"), num_labels=3, progress=False)
    assert res["accuracy"] == pytest.approx(m["test"]["accuracy"])
    assert res["loss"] == pytest.approx(m["test"]["loss"], rel=1e-4)


@pytest.mark.parametrize("method", ["pc-all", "bitfit", "full"])
def test_baselines_end_to_end(tiny, tmp_path, method):
    out = tmp_path / method
    m = _run(tiny, out, "--method", method, "--rank", "4")
    _check_common(m)
    p = m["trainable_parameters"]
    assert p["initial"] == p["final"]
    cls = 32 * 3 + 3
    if method == "full":
        assert p["final"] == p["total"]
        assert (out / "adapter" / "model.safetensors").is_file()
    elif method == "bitfit":
        # biases of 2 layers: q,k,v,attn-out (32 each), 2 LayerNorms (32), intermediate (64),
        # output (32); embeddings LayerNorm, pooler, classifier
        per_layer = 4 * 32 + 2 * 32 + 64 + 32
        assert p["final"] == 2 * per_layer + 32 + 32 + cls
    else:  # pc-all: 24 nodes x 64 + classifier head
        assert p["final"] == 24 * 64 + cls
        assert "allocation" not in m
        assert (out / "adapter" / "adapter_config.json").is_file()
    assert not (out / "selected_nodes.png").exists()


@pytest.mark.skipif(not HAS_HF_PEFT, reason="Hugging Face peft not installed")
@pytest.mark.parametrize("method", ["lora", "pissa"])
def test_lora_baselines(tiny, tmp_path, method):
    out = tmp_path / method
    m = _run(tiny, out, "--method", method, "--max-steps", "5")
    assert m["timings"]["steps"] == 5
    assert len(m["epochs"]) == 2  # 4 steps, then 1 step in epoch 2, then stop
    # r = 8 on query and value of 2 layers: 8 * (32 + 32) each, plus the classifier copy
    assert m["trainable_parameters"]["final"] == 4 * 8 * 64 + 32 * 3 + 3
    assert (out / "adapter" / "adapter_config.json").is_file()


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny, tmp_path):
    """Under torchrun (gloo, 2 processes) the job trains with the spectral hooks on, selects
    once and rank 0 writes."""
    import subprocess
    import sys

    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "-m", "graphopt.peft.finetune", "--model", str(tiny / "model"),
           "--data", str(tiny / "data.csv"), "--output-dir", str(out), "--epochs", "2",
           "--steps-per-epoch", "4", "--batch-size", "8", "--max-length", "16",
           "--no-progress", "--threads", "1", "--rank", "4", "--n-important", "2",
           "--n-select", "5", "--warmup-steps", "2", "--scoring-steps", "3",
           "--spectral-filter", "heat:t=0.5", "--spectral-reg", "0.1", "--spectral-k", "3"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["resolved"]["processes"] == 2
    assert m["timings"]["selection_step"] == 5 and len(m["allocation"]["selected"]) == 5
    assert m["trainable_parameters"]["initial"] - m["trainable_parameters"]["final"] == 19 * 64
    assert (out / "selected_nodes.png").is_file()
    assert m["spectral"]["steps"] == 8 and m["spectral"]["reg_per_step"][-1] > 0


@pytest.mark.parametrize("method,extra", [
    ("ggm", ["--rank", "4", "--n-important", "2", "--n-select", "5", "--warmup-steps", "2",
             "--scoring-steps", "3"]),
    ("pc-all", ["--rank", "4"]),
    ("full", []),
])
def test_spectral_options_combine_with_methods(tiny, tmp_path, method, extra):
    """--spectral-reg / --spectral-filter run with each method family and are recorded per step."""
    m = _run(tiny, tmp_path / method, "--method", method, *extra, "--spectral-reg", "0.1",
             "--spectral-filter", "heat:t=0.5", "--spectral-mix", "0.5", "--spectral-k", "3",
             *(["--spectral-graph", "rows"] if method == "full" else []))
    _check_common(m)
    sp = m["spectral"]
    assert sp["mu"] == 0.1 and sp["filter"].startswith("heat") and sp["beta"] == 0.5
    assert sp["steps"] == 12
    assert len(sp["reg_per_step"]) == len(sp["removed_energy_per_step"]) == 12
    # Θ = Θ⁰ before the first step: the regulariser starts at 0 and grows as Θ moves.
    assert sp["reg_per_step"][0] == pytest.approx(0.0, abs=1e-12) and sp["reg_per_step"][-1] > 0
    assert all(0.0 <= e <= 1.0 for e in sp["removed_energy_per_step"])
    assert m["timings"]["spectral_s"] > 0
    if method == "ggm":
        assert len(m["allocation"]["selected"]) == 5


def test_spectral_mix_zero_leaves_training_bit_identical(tiny, tmp_path):
    """β = 0 and μ = 0: the hooks run, but the trajectory equals the plain run exactly."""
    plain = _run(tiny, tmp_path / "plain", "--method", "pc-all", "--rank", "4")
    mixed = _run(tiny, tmp_path / "mix0", "--method", "pc-all", "--rank", "4",
                 "--spectral-filter", "heat:t=1", "--spectral-mix", "0", "--spectral-k", "3")
    assert mixed["spectral"]["steps"] == 12
    assert [e["train_loss"] for e in mixed["epochs"]] == [e["train_loss"] for e in plain["epochs"]]
    assert mixed["test"] == plain["test"]


def test_bad_spectral_options_exit_with_clear_message(capsys):
    for argv, message in [(["--spectral-mix", "2"], "--spectral-mix"),
                          (["--spectral-filter", "wobble:x=1"], "--spectral-filter"),
                          (["--spectral-reg", "-1"], "--spectral-reg")]:
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        assert message in capsys.readouterr().err


def test_regularization_option_reaches_the_ggm_solver(tiny, tmp_path, capsys):
    ggm = ["--rank", "4", "--n-important", "2", "--n-select", "5", "--warmup-steps", "2",
           "--scoring-steps", "3"]
    m = _run(tiny, tmp_path / "eps", *ggm, "--regularization", "0.01")
    # 3 score samples for 24 nodes: S is singular; the ridge is the one asked for, no warning.
    assert m["allocation"]["regularization"] == 0.01
    assert "RegularizationWarning" not in capsys.readouterr().err
    m = _run(tiny, tmp_path / "auto", *ggm)
    assert m["allocation"]["regularization"] > 0
    assert "RegularizationWarning" in capsys.readouterr().err
    # Refusing the ridge on a singular S is an error naming the option's effect, exit 2.
    argv = ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"), "--no-progress",
            "--output-dir", str(tmp_path / "none"), "--epochs", "3", "--steps-per-epoch", "4",
            "--batch-size", "8", "--max-length", "16", "--threads", "1", *ggm,
            "--regularization", "none"]
    assert main(argv) == 2
    assert "unbounded" in capsys.readouterr().err
    assert not (tmp_path / "none" / "metrics.json").exists()


def test_max_steps_before_selection_warns_and_skips_allocation(tiny, tmp_path, capsys):
    out = tmp_path / "short"
    m = _run(tiny, out, "--rank", "4", "--n-important", "2", "--n-select", "5",
             "--max-steps", "3")
    assert m["timings"]["selection_step"] is None and "allocation" not in m
    assert "before the selection step" in capsys.readouterr().err
    assert not (out / "selected_nodes.png").exists()


def test_jsonl_data_and_few_shot(tiny, tmp_path):
    rows = [dict(zip(("sentence", "label"), line.split(",")))
            for line in (tiny / "data.csv").read_text().splitlines()[1:]]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "fs"
    argv = ["--model", str(tiny / "model"), "--data", str(path), "--output-dir", str(out),
            "--method", "bitfit", "--few-shot", "4", "--epochs", "1", "--batch-size", "4",
            "--max-length", "16", "--no-progress"]
    assert main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["data"]["sizes"]["train"] == 12 and m["data"]["class_counts"]["train"] == [4, 4, 4]
    assert m["resolved"]["steps_per_epoch"] == 3  # ceil(12 / 4): full epoch under the cap
    assert m["data"]["columns"]["text"] == "sentence"


@pytest.mark.parametrize("argv,message", [
    (["--n-important", "9", "--n-select", "4"], "must not exceed --n-select"),
    (["--g", "1.5"], "--g must lie in"),
    (["--tau", "-1"], "--tau"),
    (["--batch-size", "0"], "positive integer"),
    (["--method", "nope"], "invalid choice"),
    (["--model", "/nonexistent/model"], "not a Hugging Face checkpoint"),
    (["--data", "/nonexistent/data.csv"], "does not exist"),
])
def test_bad_options_exit_with_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_column_and_oversized_selection_return_error(tiny, tmp_path, capsys):
    base = ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"), "--no-progress",
            "--output-dir", str(tmp_path / "x")]
    assert main(base + ["--label-column", "nope"]) == 2
    assert "--label-column 'nope' is not a column" in capsys.readouterr().err
    assert main(base + ["--rank", "2", "--n-important", "2", "--n-select", "20"]) == 2  # 12 nodes
    assert "exceeds" in capsys.readouterr().err
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_cuda_request_without_cuda_is_an_error(tiny, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    argv = ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"),
            "--device", "cuda", "--output-dir", str(tmp_path / "c")]
    assert main(argv) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_report_table_and_atomic_json(tmp_path):
    rows = [{"method": "ggm", "accuracy": 0.5, "macro_f1": 0.25, "trainable": 1234,
             "trainable_pct": 1.0, "wall_s": 2.0, "peak_rss_mib": 100.0, "cuda_mib": None}]
    table = format_table(rows).splitlines()
    assert table[0].startswith("| method") and "1,234" in table[2]
    assert table[2].split("|")[-2].strip() == "-"  # no CUDA number
    path = tmp_path / "m.json"
    write_json_atomic(path, {"a": np.float64(1.5), "b": np.arange(3), "c": float("nan"),
                             "d": Path("x")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1, 2], "c": None, "d": "x"}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
