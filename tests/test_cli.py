"""The ``graphopt`` dispatcher finds every registered runner and rejects unknown names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from graphopt import cli

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def test_every_registered_runner_imports():
    for _, target in cli.SUBCOMMANDS.values():
        assert callable(cli._load(target))


def test_help_lists_subcommands(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out


def test_unknown_subcommand_is_an_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["frobnicate"])
    assert "frobnicate" in capsys.readouterr().err


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARK_DIR.glob("*.py")
                                           if not p.name.startswith("_")))
def test_benchmark_scripts_run_as_files(script):
    # `python benchmarks/NAME.py` puts benchmarks/ first on sys.path: no script there may
    # shadow a package the benchmarks import (Hugging Face's peft among them), and each
    # script must import with graphopt's public API alone and answer --help.
    done = subprocess.run([sys.executable, str(BENCHMARK_DIR / script), "--help"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout


def test_no_benchmark_script_shadows_an_installed_package():
    import importlib.machinery

    # Search the path a script's imports see beyond its own folder (other tests may have put
    # benchmarks/ on this process's path to import a script as a module).
    elsewhere = [p for p in sys.path if Path(p or ".").resolve() != BENCHMARK_DIR]
    for script in BENCHMARK_DIR.glob("*.py"):
        name = script.stem
        if name.startswith("_"):
            continue
        assert importlib.machinery.PathFinder.find_spec(name, elsewhere) is None, \
            f"benchmarks/{script.name} shadows the installed package {name!r}"
