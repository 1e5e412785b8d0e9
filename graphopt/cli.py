"""The ``graphopt`` command line: one entry point, one subcommand per job.

    graphopt finetune [options]        fine-tune a transformers model (default: MiniLM on BBC News)
    graphopt export-lora RUN_DIR OUT_DIR  write a run's adapter as a peft LoRA adapter
    graphopt demo [options]            solve a sparse GGM and verify it against cvxpy

Benchmarks are scripts in the repository's ``benchmarks/`` folder (``python benchmarks/NAME.py``),
not part of the installed package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "SUBCOMMANDS"]

# Subcommand -> (one-line help, "module:function"). Runners import lazily so `graphopt --help`
# stays fast and a missing optional extra only affects the subcommand that needs it.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "finetune": ("fine-tune a transformers model with GGM allocation or a baseline",
                 "graphopt.peft.finetune:main"),
    "export-lora": ("write a run's adapter as a Hugging Face peft LoRA adapter (vLLM, TGI)",
                    "graphopt.peft.export:main"),
    "demo": ("solve a sparse GGM and verify it against cvxpy", "graphopt.demo:main"),
}

def _load(target: str):
    module_name, function_name = target.split(":")
    return getattr(importlib.import_module(module_name), function_name)


def _dispatch(prog: str, table: dict[str, tuple[str, str]], argv: Sequence[str], doc: str) -> int:
    argv = list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: {prog} {{{','.join(table)}}} [options]\n\n{doc.strip()}\n")
        width = max(len(name) for name in table)
        for name, (help_, _) in table.items():
            print(f"  {name:<{width}}  {help_}")
        return 0
    name = argv[0]
    if name not in table:
        parser = argparse.ArgumentParser(prog=prog)
        parser.error(f"unknown command {name!r}; choose from {', '.join(table)}")
    return int(_load(table[name][1])(argv[1:]) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``graphopt <subcommand> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return _dispatch("graphopt", SUBCOMMANDS, argv, __doc__ or "")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
