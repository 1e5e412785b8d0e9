"""Import a benchmark script (``benchmarks/NAME.py``) as a module, the way running it would."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` as module ``benchmark_<name>``; its folder goes on sys.path
    (as ``python benchmarks/<name>.py`` puts it) so that it finds ``_common``."""
    if str(BENCHMARK_DIR) not in sys.path:
        sys.path.append(str(BENCHMARK_DIR))
    key = f"benchmark_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, BENCHMARK_DIR / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
