"""Benchmark of ``graphopt.peft``: training-step cost of GGM vs LoRA vs full fine-tuning.

On the default model (all-MiniLM-L6-v2) and data (BBC News, max_length 128, batch 16), each
method trains in its own child process (so each peak RSS is its own):

- ``ggm``: warm-up, a scoring phase, the selection (covariance + l2,g-GGM + freezing), then
  ``--steps`` steps with only the selected nodes training;
- ``lora``: Hugging Face peft, r = 8 on query/value, ``--steps`` steps;
- ``full``: every parameter, ``--steps`` steps.

Reported: median seconds per optimiser step (GGM: after selection; the first step of every
method is excluded as warm-up), peak RSS / CUDA memory, trainable parameters, and the share
of the fine-tune spent inside the allocator (scoring + covariance + GGM solve + selection).
That share is taken from a full ``graphopt finetune`` run's metrics.json when
``--finetune-metrics`` is given (the whole-job target), and from the benchmark's own GGM run
(relative to its training time) otherwise.

Targets (what makes the adapter worth using instead of LoRA): GGM step after selection <= 1.2x a LoRA step; allocator share <= 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from _common import RESULTS_DIR
from graphopt.peft.config import CPU_STEPS_PER_EPOCH

__all__ = ["main", "run_worker"]

STEP_RATIO_TARGET = 1.2
OVERHEAD_TARGET = 0.05


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/finetune_cost.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="ggm,lora,full",
                   help="comma-separated methods to time (default: ggm,lora,full)")
    p.add_argument("--steps", type=int, default=8,
                   help="timed steps per method (GGM: after selection)")
    p.add_argument("--warmup-steps", type=int, default=2, help="GGM warm-up steps")
    p.add_argument("--scoring-steps", type=int, default=CPU_STEPS_PER_EPOCH,
                   help="GGM scoring steps (= samples T of the covariance; default as in the "
                        f"default CPU fine-tune: {CPU_STEPS_PER_EPOCH})")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads per worker")
    p.add_argument("--finetune-metrics", type=Path, default=None,
                   help="metrics.json of a full `graphopt finetune` run (whole-job overhead)")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "peft.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--worker-json", type=Path, default=None, help=argparse.SUPPRESS)
    return p


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Train one method on the default data and time every step (runs in a child process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    from graphopt.peft.data import load_splits
    from graphopt.peft.config import GGMConfig
    from graphopt.peft.methods import DEFAULT_LR, prepare_method
    from graphopt.peft.runtime import default_model_path, load_classifier, resolve_device
    from graphopt.peft.train import encode, peak_memory, train_model

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    splits = load_splits(seed=0)
    tok, model = load_classifier(default_model_path(), splits.num_labels, splits.label_names, 0)
    method = args.worker
    is_ggm = method == "ggm"
    total = args.steps + 1 + (args.warmup_steps + args.scoring_steps if is_ggm else 0)
    train = encode(tok, splits.train.subset(range(min(len(splits.train),
                                                      total * args.batch_size))),
                   args.max_length)
    # A token validation set: the benchmark times training, not evaluation.
    val = encode(tok, splits.validation.subset(range(8)), args.max_length)
    model.to(device)
    opts = GGMConfig(warmup_steps=args.warmup_steps, scoring_steps=args.scoring_steps)
    t0 = time.perf_counter()
    prepared = prepare_method(method, model, opts, steps_per_epoch=total)
    prepared.model.to(device)
    setup_s = time.perf_counter() - t0
    trainable0 = prepared.trainable_parameter_count()
    res = train_model(prepared.model, train, val, num_labels=splits.num_labels, epochs=1,
                      steps_per_epoch=total, batch_size=args.batch_size,
                      lr=DEFAULT_LR[method], pad_id=tok.pad_token_id, device=device,
                      hooks=prepared.hooks, progress=False,
                      count_trainable=lambda: prepared.trainable_parameter_count()[0])
    times = np.array(res.step_times)
    cpu = np.array(res.step_cpu_times)
    phases = np.array(res.step_phases)
    keep = phases == "trained" if is_ggm else np.arange(times.size) >= 1
    timed, timed_cpu = times[keep], cpu[keep]
    out: dict[str, Any] = {
        "method": method, "device": str(device), "threads": torch.get_num_threads(),
        "steps": int(times.size), "timed_steps": int(timed.size),
        "step_median_s": float(np.median(timed)) if timed.size else None,
        "step_mean_s": float(np.mean(timed)) if timed.size else None,
        "cpu_step_median_s": float(np.median(timed_cpu)) if timed.size else None,
        "step_times_s": times.tolist(), "step_cpu_times_s": cpu.tolist(),
        "step_phases": phases.tolist(),
        "trainable": prepared.trainable_parameter_count()[0], "trainable_initial": trainable0[0],
        "total_params": trainable0[1], "setup_s": setup_s, "train_s": res.train_s,
        **peak_memory(device),
    }
    if is_ggm:
        alloc = np.array(res.hook_seconds["ggm_allocator"])
        pre = times[phases != "trained"][1:]
        pre_cpu = cpu[phases != "trained"][1:]
        sel = res.selection_step
        out.update({
            "step_median_before_selection_s": float(np.median(pre)) if pre.size else None,
            "cpu_step_median_before_selection_s":
                float(np.median(pre_cpu)) if pre_cpu.size else None,
            "allocator_s": float(alloc.sum()),
            "selection_s": float(alloc[sel - 1]) if sel else None,
            "scoring_s": float(alloc.sum() - (alloc[sel - 1] if sel else 0.0)),
            "selection_step": sel,
            # SVD split of the target matrices: part of the setup, not of the allocator
            "pc_split_s": setup_s,
        })
    return out


def _spawn(method: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method,
               "--worker-json", str(path), "--steps", str(args.steps),
               "--warmup-steps", str(args.warmup_steps),
               "--scoring-steps", str(args.scoring_steps), "--batch-size", str(args.batch_size),
               "--max-length", str(args.max_length), "--device", args.device]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark worker for {method!r} failed:\n{proc.stderr[-3000:]}")
        return json.loads(path.read_text())


def _table(rows: list[dict[str, Any]]) -> str:
    from graphopt.peft.report import format_table

    cols = (("method", "method", "{}"), ("step median (s)", "step_median_s", "{:.3f}"),
            ("step mean (s)", "step_mean_s", "{:.3f}"), ("timed steps", "timed_steps", "{}"),
            ("vs LoRA", "vs_lora", "{:.2f}x"), ("CPU s/step (median)", "cpu_step_median_s", "{:.3f}"),
            ("CPU vs LoRA", "cpu_vs_lora", "{:.2f}x"), ("trainable params", "trainable", "{:,}"),
            ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
            ("peak CUDA (MiB)", "cuda_max_allocated_mib", "{:.0f}"))
    return format_table(rows, cols)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table, write JSON to ``--output``."""
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    for name in ("steps", "batch_size", "max_length"):
        if getattr(args, name) <= 0:
            print(f"finetune_cost.py: error: --{name.replace('_', '-')} must be > 0",
                  file=sys.stderr)
            return 2
    if args.scoring_steps < 2 or args.warmup_steps < 0:
        print("finetune_cost.py: error: --scoring-steps must be >= 2 and --warmup-steps >= 0",
              file=sys.stderr)
        return 2
    if args.worker:
        result = run_worker(args)
        args.worker_json.write_text(json.dumps(result))
        return 0
    from graphopt.peft.report import write_json_atomic

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    rows = []
    for m in methods:
        print(f"timing {m} ...", file=sys.stderr, flush=True)
        rows.append(_spawn(m, args))
    by = {r["method"]: r for r in rows}
    lora = by.get("lora", {}).get("step_median_s")
    lora_cpu = by.get("lora", {}).get("cpu_step_median_s")
    for r in rows:
        r["vs_lora"] = r["step_median_s"] / lora if lora and r["step_median_s"] else None
        r["cpu_vs_lora"] = (r["cpu_step_median_s"] / lora_cpu
                            if lora_cpu and r["cpu_step_median_s"] else None)
    summary: dict[str, Any] = {"step_ratio_target": STEP_RATIO_TARGET,
                               "overhead_target": OVERHEAD_TARGET}
    lines = []
    if "ggm" in by and lora:
        for key, label in (("vs_lora", "wall"), ("cpu_vs_lora", "CPU")):
            ratio = by["ggm"][key]
            summary[f"ggm_step_over_lora_{label.lower()}"] = ratio
            verdict = "met" if ratio <= STEP_RATIO_TARGET else "NOT met"
            lines.append(f"GGM step after selection / LoRA step ({label} time) = {ratio:.2f} "
                         f"(target <= {STEP_RATIO_TARGET}): {verdict}")
    if "ggm" in by:
        g = by["ggm"]
        frac = g["allocator_s"] / g["train_s"]
        summary["allocator_share_of_benchmark_training"] = frac
        lines.append(f"benchmark GGM run: scoring {g['scoring_s']:.2f} s + covariance/GGM/selection "
                     f"{g['selection_s']:.2f} s = {100 * frac:.2f} % of its training time")
    if args.finetune_metrics is not None:
        fm = json.loads(args.finetune_metrics.read_text())
        t = fm["timings"]
        share = t["allocator_s"] / t["total_s"]
        summary["finetune_run"] = {"path": str(args.finetune_metrics), "total_s": t["total_s"],
                                   "scoring_s": t["scoring_s"], "selection_s": t["selection_s"],
                                   "allocator_share": share}
        lines.append(f"whole fine-tune ({args.finetune_metrics}): scoring {t['scoring_s']:.2f} s + "
                     f"covariance/GGM/selection {t['selection_s']:.2f} s of {t['total_s']:.1f} s = "
                     f"{100 * share:.2f} % (target <= {100 * OVERHEAD_TARGET:.0f} %): "
                     f"{'met' if share <= OVERHEAD_TARGET else 'NOT met'}")
    table = _table(rows)
    print(table)
    for line in lines:
        print(line)
    write_json_atomic(args.output, {"config": {k: str(v) if isinstance(v, Path) else v
                                               for k, v in vars(args).items()},
                                    "results": rows, "summary": summary, "table": table})
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
