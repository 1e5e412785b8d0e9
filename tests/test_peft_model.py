"""GraphoptModel on tiny BERT / RoBERTa / GPT-2 classifiers: equivalence, counts, save/load, merge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")

from graphopt.peft.config import GGMConfig  # noqa: E402
from graphopt.peft.model import (  # noqa: E402
    CONFIG_FILE,
    WEIGHTS_FILE,
    file_sha256,
    get_graphopt_model,
    load_adapter,
)

ARCHS = ("bert", "roberta", "gpt2")
BUILD = textwrap.dedent("""
    import torch, transformers
    def build(arch, seed=0, hidden=32, labels=3):
        torch.manual_seed(seed)
        if arch == "gpt2":
            cfg = transformers.GPT2Config(n_embd=hidden, n_layer=2, n_head=2, vocab_size=64,
                                          n_positions=32, num_labels=labels, pad_token_id=0,
                                          bos_token_id=1, eos_token_id=2)
            return transformers.GPT2ForSequenceClassification(cfg).eval()
        kw = dict(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=2 * hidden, vocab_size=64, max_position_embeddings=40,
                  num_labels=labels)
        if arch == "bert":
            return transformers.BertForSequenceClassification(transformers.BertConfig(**kw)).eval()
        return transformers.RobertaForSequenceClassification(
            transformers.RobertaConfig(pad_token_id=1, **kw)).eval()
""")
_ns: dict = {}
exec(BUILD, _ns)  # the same builder runs in the fresh process of the round-trip test
build = _ns["build"]


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(3, 64, (4, 9), generator=g)}


def _train(model, steps: int = 3, wd: float = 0.1) -> None:
    """A few AdamW steps so that the adapter differs from its initialisation."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-2, weight_decay=wd)
    batch = _inputs(1)
    labels = torch.tensor([0, 1, 2, 1])
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(**batch, labels=labels).loss.backward()
        opt.step()
    model.eval()


def _logits(model, seed: int = 0) -> torch.Tensor:
    with torch.no_grad():
        return model(**_inputs(seed)).logits


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("targets", ["qkv", "all-linear"])
def test_equivalence_at_init_and_after_merge(arch, targets):
    base = build(arch)
    reference = _logits(base)
    model = get_graphopt_model(base, GGMConfig(rank=3, target_modules=targets, bias_nodes=True))
    torch.testing.assert_close(_logits(model), reference, atol=2e-5, rtol=1e-5)
    _train(model)
    adapted = _logits(model)
    assert (adapted - reference).abs().max() > 1e-3  # training changed something
    plain = model.merge_and_unload()
    assert not any(type(m).__name__ == "PCLayer" for m in plain.modules())
    assert type(plain).__name__.endswith("ForSequenceClassification")
    torch.testing.assert_close(_logits(plain), adapted, atol=2e-5, rtol=1e-5)
    with pytest.raises(RuntimeError, match="merged"):
        model(**_inputs())


@pytest.mark.parametrize("arch", ARCHS)
def test_trainable_count_matches_formula(arch):
    base = build(arch)
    heads = {"bert": ["classifier"], "roberta": ["classifier"], "gpt2": ["score"]}[arch]
    head_count = sum(p.numel() for h in heads for p in base.get_submodule(h).parameters())
    total_before = sum(p.numel() for p in base.parameters())
    model = get_graphopt_model(base, GGMConfig(rank=4, bias_nodes=True,
                                               rank_pattern={r"layer\.1\.|h\.1\.": 2}))
    expected = head_count
    n_nodes = 0
    for name in model.target_names:
        layer = base.get_submodule(name)
        r = 2 if (".1." in name) else 4
        assert layer.rank == r
        d_out, d_in = layer.d_out, layer.d_in
        expected += r * (d_out + d_in) + d_out  # nodes a_i, b_i and the bias node
        n_nodes += r + 1
    trainable, total = model.trainable_parameter_count()
    assert trainable == expected
    assert len(model.nodes) == n_nodes
    # total = original parameters + the r·(d_out + d_in) node vectors added next to W_res
    assert total == total_before + sum(
        base.get_submodule(n).rank * (base.get_submodule(n).d_out + base.get_submodule(n).d_in)
        for n in model.target_names)
    assert model.head_names == heads
    names = model.node_names
    assert names[0].endswith(":pc0") and names[4].endswith(":bias")
    model.train_only_nodes([0, 4])
    first = base.get_submodule(model.target_names[0])
    assert model.trainable_parameter_count()[0] == head_count + (first.d_out + first.d_in) + first.d_out


def test_qkv_targets_per_architecture():
    assert get_graphopt_model(build("bert"), GGMConfig(rank=2)).target_names[:3] == [
        f"bert.encoder.layer.0.attention.self.{m}" for m in ("query", "key", "value")]
    assert get_graphopt_model(build("gpt2"), GGMConfig(rank=2)).target_names == [
        "transformer.h.0.attn.c_attn", "transformer.h.1.attn.c_attn"]
    roberta = get_graphopt_model(build("roberta"), GGMConfig(rank=2, target_modules="all-linear"))
    # The head's own Linear layers (classifier.dense / out_proj) are trained in full, never split.
    assert not any(n.startswith("classifier") for n in roberta.target_names)
    regex = get_graphopt_model(build("bert"), GGMConfig(rank=2, target_modules=r"re:.*layer\.1\..*value"))
    assert regex.target_names == ["bert.encoder.layer.1.attention.self.value"]


def test_frozen_nodes_do_not_change_during_training():
    model = get_graphopt_model(build("bert"), GGMConfig(rank=3, bias_nodes=True))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-2, weight_decay=0.3)
    _train_with(model, opt, 2)
    keep = [0, 5, 9]
    model.train_only_nodes(keep)
    frozen = [n for n in model.nodes if n.index not in keep]
    snap = {n.index: [p.detach().clone() for p in n.params] for n in model.nodes}
    _train_with(model, opt, 3)
    for n in frozen:
        for p, before in zip(n.params, snap[n.index]):
            assert torch.equal(p.detach(), before), n.name
    for i in keep:
        assert any(not torch.equal(p.detach(), b) for p, b in zip(model.nodes[i].params, snap[i]))
    with pytest.raises(ValueError, match="node index 99"):
        model.train_only_nodes([99])


def _train_with(model, opt, steps):
    batch, labels = _inputs(2), torch.tensor([2, 0, 1, 1])
    for _ in range(steps):
        opt.zero_grad(set_to_none=False)
        model(**batch, labels=labels).loss.backward()
        opt.step()


ROUND_TRIP = BUILD + textwrap.dedent("""
    import sys
    from graphopt.peft.model import load_adapter
    root = sys.argv[1]
    results = {}
    for arch in sys.argv[2:]:
        model = load_adapter(build(arch), f"{root}/{arch}")
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(3, 64, (4, 9), generator=g)
        model.eval()
        with torch.no_grad():
            results[arch] = {"logits": model(input_ids=ids).logits,
                             "frozen": [n.index for n in model.nodes if not n.trainable]}
    torch.save(results, f"{root}/out.pt")
""")


def test_save_load_round_trip_in_fresh_process(tmp_path):
    """Save three adapters here; one fresh interpreter loads them into fresh base models."""
    expected = {}
    for arch in ARCHS:
        model = get_graphopt_model(build(arch), GGMConfig(rank=3, bias_nodes=(arch != "bert")))
        _train(model)
        model.train_only_nodes(range(0, len(model.nodes), 2))
        _train(model, steps=1)
        expected[arch] = (_logits(model), [n.index for n in model.nodes if not n.trainable])
        model.save_adapter(tmp_path / arch)
        assert sorted(os.listdir(tmp_path / arch)) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp left
    script = tmp_path / "load.py"
    script.write_text(ROUND_TRIP)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    subprocess.run([sys.executable, str(script), str(tmp_path), *ARCHS],
                   check=True, env=env, timeout=180)
    got = torch.load(tmp_path / "out.pt")
    for arch in ARCHS:
        torch.testing.assert_close(got[arch]["logits"], expected[arch][0], atol=2e-5, rtol=1e-5)
        assert got[arch]["frozen"] == expected[arch][1]


def test_adapter_stores_only_trained_tensors(tmp_path):
    from safetensors import safe_open

    model = get_graphopt_model(build("bert"), GGMConfig(rank=2))
    model.save_adapter(tmp_path)
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="pt") as fh:
        keys = set(fh.keys())
    assert all(k.startswith("head.classifier.") or k.rsplit(".", 1)[1] in {"a", "b", "a0", "b0"}
               for k in keys)
    assert len(keys) == 4 * len(model.target_names) + 2
    meta = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert meta["fingerprint"]["architecture"] == "BertForSequenceClassification"
    assert GGMConfig.from_dict(meta["config"]) == model.config


def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\['qry'\] match no .*available linear modules: .*query"):
        get_graphopt_model(build("bert"), GGMConfig(target_modules=["qry", "value"]))
    with pytest.raises(ValueError, match="matches no nn.Linear"):
        get_graphopt_model(build("bert"), GGMConfig(target_modules="re:nothing"))
    with pytest.raises(ValueError, match=r"rank r=40 .* exceeds min"):
        get_graphopt_model(build("bert"), GGMConfig(rank=40))
    with pytest.raises(ValueError, match="modules_to_save entry 'head'"):
        get_graphopt_model(build("bert"), GGMConfig(modules_to_save=["head"]))
    with pytest.raises(ValueError, match="n_important"):
        GGMConfig(n_important=10, n_select=5)
    with pytest.raises(ValueError, match="selection"):
        GGMConfig(selection="best")
    with pytest.raises(ValueError, match="unknown GGMConfig fields"):
        GGMConfig.from_dict({"rnk": 3})
    model = get_graphopt_model(build("bert"), GGMConfig(rank=2))
    with pytest.raises(ValueError, match="already contains PC layers"):
        get_graphopt_model(model.base_model, GGMConfig(rank=2))


def test_load_rejects_missing_files_and_foreign_models_without_touching_files(tmp_path):
    model = get_graphopt_model(build("bert"), GGMConfig(rank=2))
    _train(model, steps=1)
    d = tmp_path / "ad"
    model.save_adapter(d)
    hashes = {f: file_sha256(d / f) for f in (CONFIG_FILE, WEIGHTS_FILE)}
    cases = [
        (lambda: build("bert", seed=1), "checksum mismatch"),        # same shape, other weights
        (lambda: build("roberta"), "saved for a BertForSequenceClassification"),
        (lambda: build("bert", hidden=16), "shape"),
    ]
    for make, msg in cases:
        fresh = make()
        before = {k: v.clone() for k, v in fresh.state_dict().items()}
        with pytest.raises(ValueError, match=msg):
            load_adapter(fresh, d)
        # a rejected load leaves the model as it was
        assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    bad_head = build("bert", labels=5)
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="classifier"):
        load_adapter(bad_head, d)
    assert {f: file_sha256(d / f) for f in hashes} == hashes
    for missing in (WEIGHTS_FILE, CONFIG_FILE):
        partial = tmp_path / f"no-{missing}"
        model.save_adapter(partial)
        (partial / missing).unlink()
        with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
            load_adapter(build("bert"), partial)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_adapter(build("bert"), tmp_path / "nowhere")
    # A torn pair (weights from another save) is detected.
    other = tmp_path / "other"
    model.save_adapter(other)
    (d / WEIGHTS_FILE).write_bytes((other / WEIGHTS_FILE).read_bytes())
    with pytest.raises(ValueError, match="different saves"):
        load_adapter(build("bert"), d)
    # Loading never writes: the original good files still load and stay byte-identical.
    hashes_other = {f: file_sha256(other / f) for f in (CONFIG_FILE, WEIGHTS_FILE)}
    load_adapter(build("bert"), other)
    assert {f: file_sha256(other / f) for f in hashes_other} == hashes_other


def test_config_json_round_trip():
    cfg = GGMConfig(rank=4, target_modules=["query", "value"], rank_pattern={"x": 2},
                    selection="random", n_important=3, n_select=7, warmup_steps=5)
    assert GGMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.phase_lengths(10) == (5, 10)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        GGMConfig().phase_lengths(None)


def test_failed_save_leaves_the_previous_adapter_intact(tmp_path, monkeypatch):
    import safetensors.torch

    model = get_graphopt_model(build("bert"), GGMConfig(rank=2))
    model.save_adapter(tmp_path)
    hashes = {f: file_sha256(tmp_path / f) for f in (CONFIG_FILE, WEIGHTS_FILE)}
    _train(model, steps=1)

    def disk_full(state, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        model.save_adapter(tmp_path)
    assert sorted(os.listdir(tmp_path)) == [CONFIG_FILE, WEIGHTS_FILE]  # no temp left
    assert {f: file_sha256(tmp_path / f) for f in hashes} == hashes
    load_adapter(build("bert"), tmp_path)  # the old pair still loads


def _rewrite_weights(directory, change):
    """Apply ``change`` to the saved tensors and rewrite the file with the same save_id."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(directory / WEIGHTS_FILE), framework="pt") as fh:
        metadata = fh.metadata()
        state = {k: fh.get_tensor(k) for k in fh.keys()}
    change(state)
    save_file(state, str(directory / WEIGHTS_FILE), metadata=metadata)


def _rewrite_config(directory, change):
    meta = json.loads((directory / CONFIG_FILE).read_text())
    change(meta)
    (directory / CONFIG_FILE).write_text(json.dumps(meta))


def _truncate(directory):
    data = (directory / WEIGHTS_FILE).read_bytes()
    (directory / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])


def _garble_header(directory):
    data = bytearray((directory / WEIGHTS_FILE).read_bytes())
    data[8:40] = b"#" * 32  # the JSON header starts after an 8-byte length
    (directory / WEIGHTS_FILE).write_bytes(bytes(data))


_Q1 = "bert.encoder.layer.1.attention.self.value"  # the last target: the old code swapped
_Q0 = "bert.encoder.layer.0.attention.self.key"    # earlier layers before failing on it


def _set(mapping, key, value):
    mapping[key] = value


MISMATCHES = {
    "factor a has a wrong shape": (
        lambda d: _rewrite_weights(d, lambda s: _set(s, f"{_Q0}.a",
                                                      s[f"{_Q0}.a"][:, :-1].contiguous())),
        WEIGHTS_FILE, rf"tensor {_Q0}\.a has shape \(2, 31\), this model needs \(2, 32\)"),
    "initial factor a0 of the last target has an extra row": (
        lambda d: _rewrite_weights(d, lambda s: _set(s, f"{_Q1}.a0",
                                                      torch.cat([s[f"{_Q1}.a0"]] * 2))),
        WEIGHTS_FILE, rf"tensor {_Q1}\.a0 has shape \(4, 32\)"),
    "factor b is an integer tensor": (
        lambda d: _rewrite_weights(d, lambda s: _set(s, f"{_Q0}.b", s[f"{_Q0}.b"].long())),
        WEIGHTS_FILE, rf"{_Q0}\.b has dtype torch\.int64, expected a floating-point"),
    "a tensor is missing": (
        lambda d: _rewrite_weights(d, lambda s: s.pop(f"{_Q1}.bias")),
        WEIGHTS_FILE, rf"missing tensors \['{_Q1}\.bias'\]"),
    "an unexpected tensor": (
        lambda d: _rewrite_weights(d, lambda s: _set(s, "bert.pooler.dense.a", torch.ones(2, 32))),
        WEIGHTS_FILE, r"unexpected \['bert\.pooler\.dense\.a'\]"),
    "an unknown node name": (
        lambda d: _rewrite_config(d, lambda m: m["node_names"].__setitem__(1, "bert.nowhere:pc1")),
        CONFIG_FILE, r"node names do not match .*unknown: \['bert\.nowhere:pc1'\]"),
    "nodes in another order": (
        lambda d: _rewrite_config(d, lambda m: m["node_names"].reverse()),
        CONFIG_FILE, r"node names do not match .*another order"),
    "a config rank the tensors do not have": (
        lambda d: _rewrite_config(d, lambda m: m["config"].__setitem__("rank", 3)),
        CONFIG_FILE, r"node names do not match .*missing: \['bert[^']*:pc2'"),
    "a fingerprint of other base weights": (
        lambda d: _rewrite_config(d, lambda m: m["fingerprint"]["targets"][_Q0]["checksum"]
                                  .__setitem__(1, 1.01 * m["fingerprint"]["targets"][_Q0]
                                               ["checksum"][1])),
        CONFIG_FILE, rf"base weight of {_Q0} differs .*checksum mismatch"),
    "a fingerprint of another architecture": (
        lambda d: _rewrite_config(d, lambda m: m["fingerprint"].__setitem__("architecture",
                                                                           "GPT2Model")),
        CONFIG_FILE, r"saved for a GPT2Model, got a BertForSequenceClassification"),
    "a malformed fingerprint": (
        lambda d: _rewrite_config(d, lambda m: m["fingerprint"].pop("targets")),
        CONFIG_FILE, r"fingerprint is malformed"),
    "targets that match nothing here": (
        lambda d: _rewrite_config(d, lambda m: m["config"].__setitem__("target_modules",
                                                                       ["c_attn"])),
        CONFIG_FILE, r"does not fit this model: target_modules \['c_attn'\] match no"),
    "an invalid config": (
        lambda d: _rewrite_config(d, lambda m: m["config"].__setitem__("rnk", 2)),
        CONFIG_FILE, r"invalid config: unknown GGMConfig fields"),
    "a config entry missing": (
        lambda d: _rewrite_config(d, lambda m: m.pop("node_names")),
        CONFIG_FILE, r"lacks the entries \['node_names'\]"),
    "frozen nodes out of range": (
        lambda d: _rewrite_config(d, lambda m: m.__setitem__("frozen_nodes", [0, 999])),
        CONFIG_FILE, r"frozen_nodes must be node indices in 0\.\.\d+, got \[0, 999\]"),
    "a truncated weights file": (_truncate, WEIGHTS_FILE, r"not a readable safetensors file"),
    "a garbled weights header": (_garble_header, WEIGHTS_FILE, r"not a readable safetensors file"),
    "a config that is not JSON": (
        lambda d: (d / CONFIG_FILE).write_text('{"format": "graphopt-pc-adapter", '),
        CONFIG_FILE, r"is not valid JSON"),
}


@pytest.fixture(scope="module")
def saved_bert_adapter(tmp_path_factory):
    model = get_graphopt_model(build("bert"), GGMConfig(rank=2, bias_nodes=True))
    _train(model, steps=1)
    model.train_only_nodes([0, 3])
    directory = tmp_path_factory.mktemp("adapter")
    model.save_adapter(directory)
    return directory


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_rejected_load_names_the_file_and_leaves_the_model_bit_identical(
        case, saved_bert_adapter, tmp_path):
    import shutil

    corrupt, bad_file, problem = MISMATCHES[case]
    d = tmp_path / "ad"
    shutil.copytree(saved_bert_adapter, d)
    load_adapter(build("bert"), d)  # the copy loads before it is damaged
    corrupt(d)
    fresh = build("bert")
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    types = [(n, type(m)) for n, m in fresh.named_modules()]
    flags = {n: p.requires_grad for n, p in fresh.named_parameters()}
    with pytest.raises(ValueError, match=problem) as err:
        load_adapter(fresh, d)
    assert str(d / bad_file) in str(err.value)
    after = fresh.state_dict()
    assert list(after) == list(before)
    for k, v in after.items():
        assert v.dtype == before[k].dtype and torch.equal(v, before[k]), k
    assert [(n, type(m)) for n, m in fresh.named_modules()] == types
    assert {n: p.requires_grad for n, p in fresh.named_parameters()} == flags


@pytest.mark.parametrize("arch", ARCHS)
def test_expected_adapter_layout_is_what_wrapping_produces(arch):
    """The shapes and node names load_adapter checks against, computed without wrapping,
    equal those of the wrapped model (every arch, a rank pattern, bias nodes)."""
    from graphopt.peft.model import _expected_adapter, find_head_modules, find_target_modules

    config = GGMConfig(rank=3, bias_nodes=True, target_modules="all-linear",
                       rank_pattern={r"\.1\.": 2})
    base = build(arch)
    heads = find_head_modules(base, config.modules_to_save)
    targets = find_target_modules(base, config.target_modules, heads)
    shapes, names = _expected_adapter(base, config, targets, heads)
    model = get_graphopt_model(base, config)
    assert names == model.node_names
    assert shapes == {k: tuple(v.shape) for k, v in model.adapter_state().items()}
    assert {k.rsplit(".", 1)[1] for k in shapes if not k.startswith("head.")} == {
        "a", "b", "a0", "b0", "bias"}
