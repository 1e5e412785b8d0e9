"""``export_lora`` / ``graphopt export-lora``: a PC adapter served by Hugging Face peft.

The reference is peft itself: ``PeftModel.from_pretrained(base, OUT_DIR)`` (and its
``merge_and_unload()``) must give the graphopt model's logits, on tiny BERT / RoBERTa / GPT-2
built from configs, on the default model and on a run written by ``graphopt finetune``.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from graphopt.cli import main as cli_main
from graphopt.peft import GGMConfig, export_lora, get_graphopt_model
from graphopt.peft.export import lora_factors
from graphopt.peft.layers import linear_weight
from graphopt.peft.model import file_sha256, load_adapter

transformers = pytest.importorskip("transformers")
hf_peft = pytest.importorskip("peft")
from safetensors.torch import load_file  # noqa: E402  (after the importorskip)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: Logit tolerance per dtype: 1e-5 is the contract in float32; float64 shows the identity
#: is exact up to rounding.
ATOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _tiny_model(kind: str, dtype: torch.dtype, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    shape = dict(num_labels=3)
    if kind == "bert":
        c = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=2, intermediate_size=64,
                                    max_position_embeddings=40, **shape)
        m = transformers.BertForSequenceClassification(c)
    elif kind == "roberta":
        c = transformers.RobertaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=2, intermediate_size=64,
                                       max_position_embeddings=40, pad_token_id=1, **shape)
        m = transformers.RobertaForSequenceClassification(c)
    else:
        c = transformers.GPT2Config(vocab_size=60, n_embd=32, n_layer=2, n_head=2, n_positions=40,
                                    pad_token_id=0, bos_token_id=0, eos_token_id=0, **shape)
        m = transformers.GPT2ForSequenceClassification(c)
    return m.to(dtype).eval()


def _batch(kind: str, vocab: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (4, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0  # one padded row: the attention mask and GPT-2's last-token pick matter
    ids[0, 8:] = 0 if kind == "gpt2" else 1
    return {"input_ids": ids, "attention_mask": mask}


def _perturb(gm, moved: dict[int, list[int]], seed: int = 2) -> None:
    """Move nodes ``moved[j]`` of the j-th target layer, and every head parameter."""
    g = torch.Generator().manual_seed(seed)
    layers = list(gm.pc_layers().values())
    with torch.no_grad():
        for j, nodes in moved.items():
            layer = layers[j]
            for i in nodes:
                a, b = layer.pc_a[i], layer.pc_b[i]
                a.add_(0.3 * torch.randn(a.shape, generator=g, dtype=a.dtype))
                if i % 3 != 1:  # some nodes move only in a_i: still a node that moved
                    b.add_(0.3 * b.norm() / b.numel() ** 0.5
                           * torch.randn(b.shape, generator=g, dtype=b.dtype))
        for p in gm.head_parameters().values():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def _logits(model, batch) -> torch.Tensor:
    with torch.no_grad():
        return model(**batch).logits


def _load_peft(base, directory):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = hf_peft.PeftModel.from_pretrained(base, str(directory)).eval()
    bad = [str(w.message) for w in caught
           if "key" in str(w.message).lower() or "fan_in_fan_out" in str(w.message)]
    assert not bad, bad  # every tensor was used, nothing was missing, no orientation fix-up
    return pm


TARGETS = {"bert": "all-linear", "roberta": "all-linear", "gpt2": ["c_attn", "c_proj", "c_fc"]}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["bert", "roberta", "gpt2"])
def test_peft_reproduces_graphopt_logits_before_and_after_merge(kind, dtype, tmp_path):
    base = _tiny_model(kind, dtype)
    reference = copy.deepcopy(base)
    gm = get_graphopt_model(base, GGMConfig(rank=4, target_modules=TARGETS[kind])).eval()
    names = gm.target_names
    # layer 0: nodes 0, 2 (k=2); layer 1: untouched; layer 2: all four (k=4);
    # layer 3: node 1 (moves in a only, k=1), then frozen with layer 2's nodes 0, 1
    _perturb(gm, {0: [0, 2], 2: [0, 1, 2, 3], 3: [1]})
    frozen = {gm.node_names.index(f"{names[2]}:pc0"), gm.node_names.index(f"{names[2]}:pc1"),
              gm.node_names.index(f"{names[3]}:pc1")}
    gm.train_only_nodes([i for i in range(len(gm.nodes)) if i not in frozen])
    batch = _batch(kind, base.config.vocab_size)
    expected = _logits(gm, batch)

    out = tmp_path / "lora"
    result = export_lora(gm, out)
    assert result.ranks == {names[0]: 4, names[2]: 8, names[3]: 2}
    assert result.unchanged == [n for n in names if n not in result.ranks]
    assert names[1] in result.unchanged

    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "SEQ_CLS"
    assert cfg["target_modules"] == list(result.ranks) and names[1] not in cfg["target_modules"]
    assert cfg["modules_to_save"] == gm.head_names
    assert cfg["fan_in_fan_out"] is (kind == "gpt2")
    for n, r in result.ranks.items():  # α/r = 1 for every layer, whichever way r is resolved
        assert cfg["rank_pattern"].get(n, cfg["r"]) == r
        assert cfg["alpha_pattern"].get(n, cfg["lora_alpha"]) == r
    assert cfg["r"] == cfg["lora_alpha"]

    pm = _load_peft(reference, out)
    lora_modules = [n for n, m in pm.base_model.model.named_modules() if hasattr(m, "lora_A")]
    assert lora_modules == list(result.ranks)
    torch.testing.assert_close(_logits(pm, batch), expected, atol=ATOL[dtype], rtol=0)
    # peft writes back exactly the tensors it read: the key names are peft's own
    resaved = tmp_path / "resaved"
    pm.save_pretrained(str(resaved))
    ours, theirs = load_file(str(out / "adapter_model.safetensors")), \
        load_file(str(resaved / "adapter_model.safetensors"))
    assert sorted(ours) == sorted(theirs)
    for k in ours:
        assert torch.equal(ours[k], theirs[k]), k

    merged = pm.merge_and_unload()
    assert not any(hasattr(m, "lora_A") for m in merged.modules())
    torch.testing.assert_close(_logits(merged, batch), expected, atol=ATOL[dtype], rtol=0)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_lora_factors_are_the_pc_update(kind):
    """lora_B lora_A = W_res + A B − W₀ (float64), with 2k columns for k moved nodes."""
    base = _tiny_model(kind, torch.float64)
    w0 = {n: linear_weight(m).detach().clone() for n, m in base.named_modules()
          if n.endswith(("query", "c_attn"))}
    gm = get_graphopt_model(base, GGMConfig(rank=5))
    _perturb(gm, {0: [1, 3, 4]})
    layers = list(gm.pc_layers().items())
    name, layer = layers[0]
    lora_a, lora_b = lora_factors(layer)
    assert lora_a.shape == (6, layer.d_in) and lora_b.shape == (layer.d_out, 6)
    torch.testing.assert_close(lora_b @ lora_a, layer.merged_weight() - w0[name],
                               atol=1e-12, rtol=0)
    assert lora_factors(layers[1][1]) is None


def test_export_refuses_bias_nodes_unmoved_models_and_non_empty_out_dir(tmp_path):
    gm = get_graphopt_model(_tiny_model("bert", torch.float32),
                            GGMConfig(rank=2, target_modules=["query"]))
    with pytest.raises(ValueError, match="no principal-component node moved"):
        export_lora(gm, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    _perturb(gm, {0: [0]})
    out = tmp_path / "b"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        export_lora(gm, out)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    export_lora(gm, out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "adapter_config.json",
                                                    "adapter_model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left
    (tmp_path / "empty").mkdir()
    export_lora(gm, tmp_path / "empty")  # an empty directory is fine

    gb = get_graphopt_model(_tiny_model("bert", torch.float32),
                            GGMConfig(rank=2, target_modules=["query"], bias_nodes=True))
    _perturb(gb, {0: [0]})
    with pytest.raises(ValueError, match="bias_nodes=True"):
        export_lora(gb, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_default_model_exports_exactly(tmp_path):
    from graphopt.peft.finetune import default_model_path

    try:
        path = default_model_path()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(str(exc))
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(str(path), num_labels=5).eval()
    reference = copy.deepcopy(base)
    gm = get_graphopt_model(base, GGMConfig()).eval()  # the published r = 10 on q/k/v
    _perturb(gm, {0: [0, 9], 4: list(range(10)), 17: [3]})
    batch = _batch("bert", 1000)
    expected = _logits(gm, batch)
    result = export_lora(gm, tmp_path / "lora")
    assert sorted(result.ranks.values()) == [2, 4, 20] and len(result.unchanged) == 15
    assert json.loads((tmp_path / "lora" / "adapter_config.json").read_text())[
        "base_model_name_or_path"] == str(path)
    pm = _load_peft(reference, tmp_path / "lora")
    torch.testing.assert_close(_logits(pm, batch), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(_logits(pm.merge_and_unload(), batch), expected, atol=1e-5,
                               rtol=0)


# --------------------------------------------------------------------------- the CLI

@pytest.fixture(scope="module")
def run_dir(tiny, tmp_path_factory):
    """A short ``graphopt finetune --method ggm`` run on the tiny BERT (selection included,
    so some nodes are frozen after moving)."""
    from graphopt.peft.finetune import main as finetune_main

    out = tmp_path_factory.mktemp("run") / "ggm"
    argv = ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"),
            "--output-dir", str(out), "--epochs", "1", "--steps-per-epoch", "6",
            "--batch-size", "8", "--max-length", "16", "--no-progress", "--threads", "1",
            "--rank", "4", "--n-important", "2", "--n-select", "5", "--warmup-steps", "2",
            "--scoring-steps", "2"]
    assert finetune_main(argv) == 0
    return out


def _run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = cli_main(["export-lora", *map(str, argv)])
    return code, capsys.readouterr().err


def _graphopt_and_peft_logits(tiny: Path, adapter: Path, lora: Path):
    from graphopt.peft.runtime import load_classifier

    _, fresh = load_classifier(tiny / "model", 3, ["arts", "business", "sport"], seed=7)
    reference = copy.deepcopy(fresh)
    gm = load_adapter(fresh.eval(), adapter)
    batch = _batch("bert", fresh.config.vocab_size)
    return _logits(gm, batch), _logits(_load_peft(reference.eval(), lora), batch)


def test_cli_exports_a_finetune_run(tiny, run_dir, tmp_path, capsys):
    out = tmp_path / "lora"
    code, err = _run_cli(capsys, run_dir, out)
    assert code == 0, err
    assert "peft LoRA adapter" in err
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny / "model")
    assert cfg["modules_to_save"] == ["classifier"]
    expected, got = _graphopt_and_peft_logits(tiny, run_dir / "adapter", out)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)

    # a bare adapter directory with --base-model gives the same files' tensors
    bare = tmp_path / "bare"
    code, err = _run_cli(capsys, run_dir / "adapter", bare, "--base-model", tiny / "model")
    assert code == 0, err
    a, b = load_file(str(out / "adapter_model.safetensors")), \
        load_file(str(bare / "adapter_model.safetensors"))
    assert sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_cli_bad_input_exits_2_with_the_file_named(tiny, run_dir, tmp_path, capsys):
    # a directory without an adapter
    empty = tmp_path / "empty-run"
    empty.mkdir()
    (empty / "metrics.json").write_text("{}")
    code, err = _run_cli(capsys, empty, tmp_path / "o1")
    assert code == 2 and "no graphopt adapter in" in err and str(empty) in err
    assert len(err.strip().splitlines()) == 1
    code, err = _run_cli(capsys, tmp_path / "missing", tmp_path / "o1")
    assert code == 2 and "does not exist" in err
    # a bare adapter without a recorded base model
    code, err = _run_cli(capsys, run_dir / "adapter", tmp_path / "o1")
    assert code == 2 and "--base-model" in err
    # an adapter for another base model: same architecture, other weights
    other = tmp_path / "other-model"
    torch.manual_seed(99)
    transformers.BertModel(transformers.BertConfig.from_pretrained(tiny / "model")) \
        .save_pretrained(other)
    code, err = _run_cli(capsys, run_dir, tmp_path / "o2", "--base-model", other)
    assert code == 2
    assert str(run_dir / "adapter" / "adapter_config.json") in err and "checksum" in err
    # ... and another architecture
    gpt = tmp_path / "gpt-model"
    _tiny_model("gpt2", torch.float32).save_pretrained(gpt)
    code, err = _run_cli(capsys, run_dir, tmp_path / "o3", "--base-model", gpt)
    assert code == 2 and "adapter_config.json" in err
    # a peft adapter (a lora run) is not a graphopt adapter
    lora_run = tmp_path / "lora-run" / "adapter"
    lora_run.mkdir(parents=True)
    (lora_run / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    code, err = _run_cli(capsys, lora_run.parent, tmp_path / "o4")
    assert code == 2 and "already a peft LORA adapter" in err
    # a damaged weights file
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir / "adapter", damaged)
    (damaged / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    code, err = _run_cli(capsys, damaged, tmp_path / "o4", "--base-model", tiny / "model")
    assert code == 2 and str(damaged / "adapter_model.safetensors") in err
    # a non-empty OUT_DIR is left alone unless --overwrite
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "adapter_config.json").write_text("{}")
    before = file_sha256(busy / "adapter_config.json")
    code, err = _run_cli(capsys, run_dir, busy)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert file_sha256(busy / "adapter_config.json") == before
    code, err = _run_cli(capsys, run_dir, busy, "--overwrite")
    assert code == 0, err
    assert json.loads((busy / "adapter_config.json").read_text())["peft_type"] == "LORA"
    for name in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / name).exists()
