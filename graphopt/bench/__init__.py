"""Benchmarks reachable from the CLI (`graphopt bench <name>`); `benchmarks/*.py` wrap these."""

from __future__ import annotations

import importlib
import os
import sys

__all__ = ["run_script"]


def run_script(script_file: str, module: str) -> int:
    """Run ``module.main()`` for a wrapper script ``benchmarks/<name>.py``; return its status.

    Python puts a script's own folder first on ``sys.path``, and ``benchmarks/peft.py`` there
    would shadow Hugging Face's ``peft`` (which transformers imports). The folder is dropped
    from the path before the benchmark module is imported.
    """
    here = os.path.dirname(os.path.abspath(script_file))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    return int(importlib.import_module(module).main() or 0)
