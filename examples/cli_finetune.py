"""Fine-tune from the command line: ``python -m graphopt.peft.finetune``.

The CLI (also installed as ``graphopt finetune``) loads a local checkpoint and a labelled CSV
/ JSONL data set, wraps the model with principal-component adapters, runs the GGM allocation
(warm-up, scoring, selection of ``--n-select`` nodes), trains, evaluates on the test split and
writes ``metrics.json``, the adapter, the allocation and a PNG of the selected nodes into
``--output-dir``. This script runs the same command line as a subprocess, so it doubles as a
copy-and-paste recipe, e.g.::

    python -m graphopt.peft.finetune --model MODEL_DIR --data data.csv --output-dir out \\
        --epochs 3 --steps-per-epoch 4 --batch-size 8 --max-length 16 --no-progress \\
        --threads 1 --rank 4 --n-important 2 --n-select 5 --warmup-steps 2 --scoring-steps 3

then prints the results table from ``metrics.json`` with
:func:`graphopt.peft.report.result_row` / :func:`graphopt.peft.report.format_table`.

With ``--small`` (CI) the model is the tiny random BERT of ``examples/_tiny.py``.

Run: ``python examples/cli_finetune.py --small``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _tiny import build_tiny
from graphopt.peft.report import format_table, result_row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="tiny BERT, CI sizes")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="keep the run here (default: a temporary directory)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="graphopt-cli-") as tmp:
        work = Path(tmp)
        model_dir, data_csv = build_tiny(work / "tiny")
        out = args.output_dir or work / "run"
        epochs = args.epochs or (3 if args.small else 10)
        cmd = [sys.executable, "-m", "graphopt.peft.finetune",
               "--model", str(model_dir), "--data", str(data_csv), "--output-dir", str(out),
               "--epochs", str(epochs), "--steps-per-epoch", "4", "--batch-size", "8",
               "--max-length", "16", "--no-progress", "--threads", "1",
               # 24 nodes (2 layers x q,k,v x rank 4); keep 5, 2 of them "important"
               "--rank", "4", "--n-important", "2", "--n-select", "5",
               "--warmup-steps", "2", "--scoring-steps", "3"]
        print("$ python", " ".join(cmd[1:]))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-3000:], sep="\n", file=sys.stderr)
            print(f"FAIL: the CLI exited with {proc.returncode}", file=sys.stderr)
            return 1
        metrics = json.loads((out / "metrics.json").read_text())
        print(format_table([result_row(metrics)]))
        sel = metrics["allocation"]["selected"]
        print(f"selected {len(sel)} of {metrics['method_info']['n_nodes']} nodes; "
              f"outputs: {sorted(p.name for p in out.iterdir())}")
        if len(sel) != 5 or not 0.0 <= metrics["test"]["accuracy"] <= 1.0:
            print("FAIL: unexpected metrics", file=sys.stderr)
            return 1
    print("OK: CLI fine-tuning finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
