"""Several processes or GPUs with ``torchrun``.

``graphopt.peft.finetune`` detects ``torchrun`` (the ``RANK`` / ``WORLD_SIZE`` environment):
each process trains on its shard of every batch under ``DistributedDataParallel``, the
importance samples of all ranks are averaged with one all-reduce at selection time, rank 0's
node selection is broadcast so every rank freezes the same nodes, and only rank 0 writes the
outputs. The backend is NCCL on GPUs and gloo on CPUs. The launched command is::

    torchrun --standalone --nproc_per_node N -m graphopt.peft.finetune --model ... --data ...

(here as ``python -m torch.distributed.run``, the same launcher, to use this interpreter).
With ``--small`` (CI) it runs 2 CPU processes (gloo) on the tiny BERT of ``examples/_tiny.py``,
with the spectral options on as well; otherwise one process per visible GPU (at least 2).

Prints the number of processes, the selected nodes and the test accuracy.

Run: ``python examples/torchrun_ddp.py --small``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from _tiny import build_tiny


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="2 CPU processes, tiny BERT")
    parser.add_argument("--nproc", type=int, default=None, help="processes (default: see above)")
    args = parser.parse_args(argv)
    gpus = torch.cuda.device_count()
    nproc = args.nproc or (2 if args.small or gpus < 2 else gpus)
    device = "cuda" if gpus >= nproc and not args.small else "cpu"
    print(f"launching {nproc} processes on {device}"
          + ("" if device == "cuda" else " (gloo backend)"))
    with tempfile.TemporaryDirectory(prefix="graphopt-ddp-") as tmp:
        model_dir, data_csv = build_tiny(Path(tmp) / "tiny")
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(nproc),
               "-m", "graphopt.peft.finetune", "--model", str(model_dir),
               "--data", str(data_csv), "--output-dir", str(out), "--device", device,
               "--epochs", "2", "--steps-per-epoch", "4", "--batch-size", "8",
               "--max-length", "16", "--no-progress", "--threads", "1",
               "--rank", "4", "--n-important", "2", "--n-select", "5",
               "--warmup-steps", "2", "--scoring-steps", "3",
               # spectral coordination of the node updates, also synchronised across ranks
               "--spectral-filter", "heat:t=0.5", "--spectral-reg", "0.1", "--spectral-k", "3"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            print(f"FAIL: torchrun exited with {proc.returncode}", file=sys.stderr)
            return 1
        m = json.loads((out / "metrics.json").read_text())
    procs, sel = m["resolved"]["processes"], m["allocation"]["selected_names"]
    print(f"processes: {procs}; selected nodes ({len(sel)}): {', '.join(sel)}")
    print(f"test accuracy: {m['test']['accuracy']:.3f} (macro F1 {m['test']['macro_f1']:.3f})")
    if procs != nproc or len(sel) != 5:
        print("FAIL: unexpected metrics", file=sys.stderr)
        return 1
    print("OK: torchrun fine-tuning finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
