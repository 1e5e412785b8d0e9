"""``graphopt bench solvers`` forwards to the standalone ``benchmarks/solvers.py`` of a source
checkout (the benchmark uses only graphopt's public API and lives outside the package)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "solvers.py"


def main(argv: Sequence[str] | None = None) -> int:
    """Run benchmarks/solvers.py with ``argv``; a clear error outside a source checkout."""
    if not SCRIPT.is_file():
        print(f"graphopt bench solvers needs a source checkout: {SCRIPT} not found",
              file=sys.stderr)
        return 2
    # A subprocess, not runpy: the benchmark's spawned workers re-import its __main__.
    args = list(sys.argv[1:] if argv is None else argv)
    return subprocess.call([sys.executable, str(SCRIPT), *args])
