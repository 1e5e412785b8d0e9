"""Checkpoints and resume: a run killed with SIGKILL and resumed ends exactly as an
uninterrupted one; a checkpoint of another config / model / data is refused; a torn save is
never picked; every method writes curves.png."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from graphopt.peft.checkpoint import (find_checkpoint, load_checkpoint, rng_state,
                                      save_checkpoint, set_rng_state)
from graphopt.peft.finetune import main

pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent

#: Runs the CLI in a child that SIGKILLs itself at a chosen point, from outside the
#: library: inside the n-th optimiser step (after backward, before the update), or while
#: the n-th checkpoint is being written (state.pt on disk, the marker not yet, no rename).
KILL_DRIVER = r"""
import os, signal, sys, torch
mode, n, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
calls = [0]
if mode == "step":
    original_step = torch.optim.AdamW.step
    def step(self, *a, **k):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original_step(self, *a, **k)
    torch.optim.AdamW.step = step
else:
    original_save = torch.save
    def save(obj, f, *a, **k):
        original_save(obj, f, *a, **k)
        if str(f).endswith("state.pt"):
            calls[0] += 1
            if calls[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)
    torch.save = save
from graphopt.peft.finetune import main
sys.exit(main(argv))
"""

#: 3 epochs x 4 steps; warm-up 2, scoring 3: the selection is made after step 5.
GGM = ["--rank", "4", "--n-important", "2", "--n-select", "5", "--warmup-steps", "2",
       "--scoring-steps", "3"]
#: Spectral coordination on a scores graph: its window, graph and rebuilds are hook state.
#: After the selection (step 5) the window restarts: scores of steps 6-8 build the graph at
#: step 8, rebuilt every 2 steps from the last 3; a resume at step 9 needs both the window
#: and the scores the current graph was built from.
SPECTRAL = ["--spectral-graph", "scores", "--spectral-window", "3",
            "--spectral-rebuild-every", "2", "--spectral-filter", "heat:t=0.5",
            "--spectral-reg", "0.1", "--spectral-k", "3"]


def _argv(tiny: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(tiny / "model"), "--data", str(tiny / "data.csv"),
            "--output-dir", str(out), "--epochs", "3", "--steps-per-epoch", "4",
            "--batch-size", "8", "--max-length", "16", "--no-progress", "--threads", "1",
            *extra]


def _run(argv: list[str]) -> dict:
    assert main(argv) == 0
    return json.loads((Path(argv[argv.index("--output-dir") + 1]) / "metrics.json").read_text())


def _killed(argv: list[str], mode: str, n: int) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", KILL_DRIVER, mode, str(n), *argv], env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


def _comparable(m: dict) -> dict:
    """Everything a run computes, without timings, paths and the resume record."""
    epochs = [{k: v for k, v in e.items() if k not in ("train_s", "eval_s")} for e in m["epochs"]]
    spectral = m["spectral"]
    if spectral is not None:
        spectral = {k: v for k, v in spectral.items() if k != "hook_seconds_per_step"}
    return {"test": m["test"], "epochs": epochs, "step_losses": m["step_losses"],
            "phases": m["timings"]["step_phases"], "selection": m["timings"]["selection_step"],
            "trainable": m["trainable_parameters"], "allocation": m.get("allocation"),
            "spectral": spectral}


def _assert_same_outputs(a: Path, b: Path) -> None:
    """Same adapter tensors and config; adapter_config.json and the safetensors metadata carry
    a random save_id per save, so those files are compared without it. Allocation files
    byte for byte."""
    from safetensors.torch import load_file

    ta, tb = load_file(a / "adapter" / "adapter_model.safetensors"), \
        load_file(b / "adapter" / "adapter_model.safetensors")
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    ca, cb = (json.loads((d / "adapter" / "adapter_config.json").read_text()) for d in (a, b))
    assert ca.pop("save_id") != cb.pop("save_id")
    assert ca == cb
    for f in ("allocation.json", "allocation.safetensors"):
        assert (a / "allocation" / f).read_bytes() == (b / "allocation" / f).read_bytes()


@pytest.fixture(scope="module")
def reference(tiny, tmp_path_factory):
    """Uninterrupted runs (no checkpoints), computed once: plain GGM, and GGM + spectral."""
    out = tmp_path_factory.mktemp("reference")
    runs = {}
    for name, extra in (("ggm", GGM), ("spectral", GGM + SPECTRAL)):
        runs[name] = (out / name, _run(_argv(tiny, out / name, *extra)))
    return runs


@pytest.mark.parametrize("name,mode,n,resumed_step", [
    ("ggm", "step", 4, 3),        # killed inside step 4: resumes in the scoring phase
    ("spectral", "step", 10, 9),  # after the selection, mid-epoch, scores graph built
    ("ggm", "save", 5, 4),        # killed while writing the selection step's checkpoint
])
def test_sigkill_then_resume_matches_uninterrupted(tiny, tmp_path, reference, name, mode, n,
                                                   resumed_step):
    ref_dir, ref = reference[name]
    extra = GGM + (SPECTRAL if name == "spectral" else [])
    out = tmp_path / "run"
    _killed(_argv(tiny, out, *extra, "--save-every", "1"), mode, n)
    assert not (out / "metrics.json").exists()
    if mode == "save":  # the torn save is still there, unrenamed; it must not be picked
        assert any(p.name.startswith(f".step-{n:08d}") for p in (out / "checkpoints").iterdir())
    assert find_checkpoint(out).name == f"step-{resumed_step:08d}"
    m = _run(["--resume", str(out), *_argv(tiny, out, *extra, "--save-every", "1")])
    assert m["resumed_from"]["step"] == resumed_step
    assert _comparable(m) == _comparable(ref)
    assert m["timings"]["selection_step"] == 5
    _assert_same_outputs(out, ref_dir)
    # Only the last 2 complete checkpoints are kept, and the torn leftovers are gone.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        ["step-00000011", "step-00000012"]


@pytest.fixture(scope="module")
def checkpointed(tiny, tmp_path_factory):
    """A run that stopped (SIGKILL) after checkpoint 2, to try resuming with changes."""
    out = tmp_path_factory.mktemp("checkpointed") / "run"
    _killed(_argv(tiny, out, *GGM, "--save-every", "2"), "step", 3)
    return out


def _refused(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    return capsys.readouterr().err


def test_resume_refuses_a_different_config(tiny, checkpointed, capsys):
    err = _refused(["--resume", str(checkpointed), *_argv(tiny, checkpointed, *GGM,
                                                          "--lr", "0.02")], capsys)
    assert "cannot resume" in err and "a different config" in err and "lr" in err
    err = _refused(["--resume", str(checkpointed), *_argv(tiny, checkpointed, "--rank", "4",
                                                          "--n-important", "2", "--n-select",
                                                          "6", "--warmup-steps", "2",
                                                          "--scoring-steps", "3")], capsys)
    assert "n_select: 5 in the checkpoint, 6 now" in err


def test_resume_refuses_a_different_model(tiny, checkpointed, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    model = tmp_path / "model"
    shutil.copytree(tiny / "model", model)
    weights = load_file(model / "model.safetensors")
    name = sorted(weights)[0]
    weights[name] = weights[name] + 1e-3
    save_file(weights, str(model / "model.safetensors"), metadata={"format": "pt"})
    argv = _argv(tiny, checkpointed, *GGM)
    argv[argv.index("--model") + 1] = str(model)
    err = _refused(["--resume", str(checkpointed), *argv], capsys)
    assert "cannot resume" in err and "a different model" in err
    assert "config" not in err.split("cannot resume")[1]


def test_resume_refuses_different_data(tiny, checkpointed, tmp_path, capsys):
    lines = (tiny / "data.csv").read_text().splitlines()
    text, label = lines[5].rsplit(",", 1)
    lines[5] = " ".join(reversed(text.split())) + "," + label
    data = tmp_path / "data.csv"
    data.write_text("\n".join(lines) + "\n")
    argv = _argv(tiny, checkpointed, *GGM)
    argv[argv.index("--data") + 1] = str(data)
    err = _refused(["--resume", str(checkpointed), *argv], capsys)
    assert "cannot resume" in err and "a different data" in err


def test_resume_without_checkpoint_is_a_clear_error(tiny, tmp_path, capsys):
    err = _refused(["--resume", str(tmp_path), *_argv(tiny, tmp_path / "x", *GGM)], capsys)
    assert "no complete checkpoint under" in err and str(tmp_path) in err


# -- the checkpoint functions in a plain loop ---------------------------------------------------
class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.Dropout(0.3), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        return self.body(x)


def _loop(net, opt, order_rng, steps, start=0):
    """A user's loop: numpy-drawn batches, dropout (torch RNG), Python random noise."""
    import random

    x = torch.randn(64, 6, generator=torch.Generator().manual_seed(1))
    y = torch.arange(64) % 3
    for _ in range(start, steps):
        idx = order_rng.choice(64, size=8, replace=False)
        loss = nn.functional.cross_entropy(net(x[idx] * (1 + random.random())), y[idx])
        loss.backward()
        opt.step()
        opt.zero_grad()


def _fresh(seed=0):
    torch.manual_seed(seed)
    net = _Net()
    return net, torch.optim.AdamW(net.parameters(), lr=1e-2), np.random.default_rng(5)


def test_plain_loop_resume_is_bit_identical(tmp_path):
    import random

    random.seed(3)
    net, opt, rng = _fresh()
    _loop(net, opt, rng, 6)
    expected = [p.detach().clone() for p in net.parameters()]

    random.seed(3)
    net, opt, rng = _fresh()
    _loop(net, opt, rng, 3)
    save_checkpoint(tmp_path / "checkpoints", step=3, model=net, optimizer=opt,
                    generators={"order": rng}, loop={"note": "user state"},
                    fingerprint={"config": {"lr": 1e-2}})
    _loop(net, opt, rng, 5)  # progress after the save is lost in a crash

    net, opt, rng = _fresh(seed=99)  # a new process: other init, other RNG positions
    random.seed(1234)
    ck = load_checkpoint(tmp_path, model=net, optimizer=opt, generators={"order": rng},
                         fingerprint={"config": {"lr": 1e-2}})
    assert ck.step == 3 and ck.loop == {"note": "user state"}
    _loop(net, opt, rng, 6, start=3)
    for a, b in zip(expected, net.parameters()):
        assert torch.equal(a, b)


def test_torn_and_corrupt_checkpoints_are_never_resumed(tmp_path):
    net, opt, _ = _fresh()
    d = tmp_path / "checkpoints"
    for step in (1, 2):
        save_checkpoint(d, step=step, model=net, optimizer=opt)
    # A save that died before its rename, and a directory whose marker was never written.
    torn = d / ".step-00000003.abcdef.tmp"
    torn.mkdir()
    shutil.copy(d / "step-00000002" / "state.pt", torn / "state.pt")
    no_marker = d / "step-00000004"
    no_marker.mkdir()
    shutil.copy(d / "step-00000002" / "state.pt", no_marker / "state.pt")
    # A marker that promises more bytes than were written (a truncated state.pt).
    truncated = d / "step-00000005"
    shutil.copytree(d / "step-00000002", truncated)
    data = (truncated / "state.pt").read_bytes()
    (truncated / "state.pt").write_bytes(data[:len(data) // 2])
    assert find_checkpoint(tmp_path) == d / "step-00000002"
    assert load_checkpoint(tmp_path, model=net, optimizer=opt).step == 2
    # Same size, flipped bytes: found, but refused by its checksum before anything changes.
    raw = bytearray((d / "step-00000002" / "state.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (d / "step-00000002" / "state.pt").write_bytes(bytes(raw))
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(d / "step-00000002", model=net, optimizer=opt)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
    # The next save removes the torn leftovers and keeps the last two complete ones (the
    # directories it cannot recognise as its own checkpoints are left alone).
    save_checkpoint(d, step=6, model=net, optimizer=opt)
    assert not torn.exists() and not (d / "step-00000001").exists()
    assert find_checkpoint(d) == d / "step-00000006"
    assert sorted(p.name for p in d.iterdir()) == ["step-00000002", "step-00000004",
                                                   "step-00000005", "step-00000006"]


def test_load_validates_names_shapes_and_hooks(tmp_path):
    from graphopt.peft.hooks import TrainingHook

    class Counter(TrainingHook):
        name = "counter"

        def __init__(self):
            self.n = 0

        def state_dict(self):
            return {"n": self.n, "arr": np.arange(3.0)}

        def load_state_dict(self, state):
            assert isinstance(state["arr"], np.ndarray)
            self.n = state["n"]

    net, opt, _ = _fresh()
    hook = Counter()
    hook.n = 7
    save_checkpoint(tmp_path, step=1, model=net, optimizer=opt, hooks=[hook])
    other = nn.Sequential(nn.Linear(6, 8))
    with pytest.raises(ValueError, match="do not match this model"):
        load_checkpoint(tmp_path, model=other, optimizer=torch.optim.AdamW(other.parameters()))
    net2, opt2, _ = _fresh()
    with pytest.raises(ValueError, match="hooks"):
        load_checkpoint(tmp_path, model=net2, optimizer=opt2)
    fresh = Counter()
    load_checkpoint(tmp_path, model=net2, optimizer=opt2, hooks=[fresh])
    assert fresh.n == 7


def test_rng_state_round_trip():
    import random

    g = torch.Generator().manual_seed(0)
    state = rng_state({"g": g})
    a = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=g))
    set_rng_state(state, {"g": g})
    b = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=g))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert torch.equal(a[3], b[3])


# -- curves.png -------------------------------------------------------------------------------
PNG = b"\x89PNG\r\n\x1a\n"


def test_curves_for_ggm_and_bitfit(tiny, tmp_path, reference):
    ref_dir, m = reference["ggm"]
    assert (ref_dir / "curves.png").read_bytes()[:8] == PNG
    assert m["outputs"]["curves"] == "curves.png" and len(m["step_losses"]) == 12
    out = tmp_path / "bitfit"
    m = _run(_argv(tiny, out, "--method", "bitfit", "--epochs", "2", "--steps-per-epoch", "2"))
    assert (out / "curves.png").read_bytes()[:8] == PNG
    assert m["outputs"]["curves"] == "curves.png" and len(m["step_losses"]) == 4


def test_plot_curves_checks_its_inputs(tmp_path):
    from graphopt.peft.curves import _phase_runs, plot_curves

    assert _phase_runs(["warmup", "warmup", "scoring", "trained", "trained"]) == \
        [("warmup", 1, 2), ("scoring", 3, 3), ("trained", 4, 5)]
    epochs = [{"global_step": 60, "validation": {"accuracy": 0.5, "macro_f1": 0.4}}]
    path = plot_curves(np.linspace(1, 0, 60), epochs, tmp_path / "c.png", phases=["train"] * 60)
    assert path.read_bytes()[:8] == PNG
    with pytest.raises(ValueError, match="phases has 3 entries"):
        plot_curves([1.0, 0.5], epochs, tmp_path / "d.png", phases=["a"] * 3)


@pytest.mark.slow
def test_ddp_two_processes_sigkill_then_resume(tiny, tmp_path):
    """torchrun, 2 gloo processes: rank 0 writes the checkpoints, both ranks are killed inside
    step 7 (after the selection), both resume; the result equals the uninterrupted DDP run."""
    driver = tmp_path / "kill_driver.py"
    driver.write_text(KILL_DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    extra = [*GGM, "--epochs", "2", "--spectral-filter", "heat:t=0.5", "--spectral-k", "3"]

    def launch(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run([*torchrun, *cmd], env=env, capture_output=True, text=True,
                              timeout=400)

    ref, out = tmp_path / "ref", tmp_path / "run"
    proc = launch("-m", "graphopt.peft.finetune", *_argv(tiny, ref, *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = launch(str(driver), "step", "7", *_argv(tiny, out, *extra, "--save-every", "2"))
    assert proc.returncode != 0 and not (out / "metrics.json").exists()
    assert find_checkpoint(out).name == "step-00000006"
    proc = launch("-m", "graphopt.peft.finetune", "--resume", str(out),
                  *_argv(tiny, out, *extra, "--save-every", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    m, r = (json.loads((d / "metrics.json").read_text()) for d in (out, ref))
    assert m["resumed_from"]["step"] == 6 and m["resolved"]["processes"] == 2
    assert _comparable(m) == _comparable(r)
    _assert_same_outputs(out, ref)


# -- branching from a shared prefix -------------------------------------------------------------
@pytest.fixture(scope="module")
def prefix(tiny, tmp_path_factory):
    """A GGM run that saved its prefix (step 4, one before the selection at step 5)."""
    out = tmp_path_factory.mktemp("prefix") / "ggm"
    return out, _run(_argv(tiny, out, *GGM, "--save-before-selection"))


def test_save_before_selection_leaves_the_run_unchanged(prefix, reference):
    out, m = prefix
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000004"]
    assert _comparable(m) == _comparable(reference["ggm"][1])
    _assert_same_outputs(out, reference["ggm"][0])


@pytest.mark.parametrize("variant", [
    ["--method", "random", "--n-select", "4"],
    ["--method", "top-importance", "--n-select", "6", "--n-important", "3"],
    ["--method", "ggm", "--n-select", "3", "--n-important", "1", "--ggm-groups", "all"],
])
def test_branched_run_equals_a_run_from_scratch(tiny, tmp_path, prefix, variant):
    # The variant's options come last, so they override those of GGM.
    scratch = _run(_argv(tiny, tmp_path / "scratch", *GGM, *variant))
    branched = _run(_argv(tiny, tmp_path / "branched", *GGM, *variant,
                          "--branch-from", str(prefix[0])))
    assert branched["resumed_from"]["step"] == 4
    assert branched["resumed_from"]["branched_from_method"] == "ggm"
    assert _comparable(branched) == _comparable(scratch)
    assert branched["allocation"]["selected"] != prefix[1]["allocation"]["selected"]
    _assert_same_outputs(tmp_path / "branched", tmp_path / "scratch")


def test_branch_refuses_what_the_prefix_does_not_share(tiny, tmp_path, prefix, capsys):
    out = prefix[0]
    err = _refused(_argv(tiny, tmp_path / "a", *GGM, "--method", "random", "--lr", "0.02",
                         "--branch-from", str(out)), capsys)
    assert "cannot resume" in err and "lr" in err and "n_select" not in err
    err = _refused(_argv(tiny, tmp_path / "b", *GGM, "--method", "random", "--seed", "1",
                         "--branch-from", str(out)), capsys)
    assert "seed: 0 in the checkpoint, 1 now" in err
    # A checkpoint saved after the selection holds another method's choice of nodes.
    late = tmp_path / "late"
    _run(_argv(tiny, late, *GGM, "--save-every", "3"))
    err = _refused(_argv(tiny, tmp_path / "c", *GGM, "--method", "random",
                         "--branch-from", str(late)), capsys)
    assert "saved after the selection step" in err and "--save-before-selection" in err
    with pytest.raises(SystemExit):
        main(_argv(tiny, tmp_path / "d", "--method", "bitfit", "--branch-from", str(out)))
    assert "branch_from needs a selection method" in capsys.readouterr().err.replace(
        "--branch-from", "branch_from")
    with pytest.raises(SystemExit):
        main(_argv(tiny, tmp_path / "e", *GGM, "--branch-from", str(out), "--resume", str(out)))
    assert "exclude each other" in capsys.readouterr().err
