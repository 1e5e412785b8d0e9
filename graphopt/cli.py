"""The ``graphopt`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]


def _demo(argv: Sequence[str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv)


# Subcommand name -> (one-line help, runner). Runners import lazily so `graphopt --help`
# stays fast and a missing optional extra only affects the subcommand that needs it.
SUBCOMMANDS: dict[str, tuple[str, Callable[[Sequence[str]], int]]] = {
    "demo": ("solve a sparse GGM and verify it against cvxpy", _demo),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``graphopt <subcommand> [options]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="graphopt", description=__doc__)
    parser.add_argument("subcommand", choices=sorted(SUBCOMMANDS), help="job to run")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        lines = [f"  {name:12s} {help_}" for name, (help_, _) in sorted(SUBCOMMANDS.items())]
        print("\nsubcommands:\n" + "\n".join(lines))
        return 0
    args = parser.parse_args(argv[:1])
    return int(SUBCOMMANDS[args.subcommand][1](argv[1:]) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
