"""The ``graphopt`` dispatcher finds every registered runner and rejects unknown names."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from graphopt import cli

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("table", [cli.SUBCOMMANDS, cli.BENCHMARKS])
def test_every_registered_runner_imports(table):
    for _, target in table.values():
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


def test_unknown_benchmark_is_an_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "nope"])
    assert "nope" in capsys.readouterr().err


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARK_DIR.glob("*.py")))
def test_benchmark_scripts_run_as_files(script):
    # `python benchmarks/peft.py` puts benchmarks/ first on sys.path, where peft.py would
    # shadow Hugging Face's peft; each script must still import and answer --help.
    done = subprocess.run([sys.executable, str(BENCHMARK_DIR / script), "--help"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "usage" in done.stdout


def test_run_script_keeps_benchmarks_peft_from_shadowing_hf_peft(monkeypatch):
    """Python puts a script's folder first on sys.path; run_script must drop it before the
    benchmark imports transformers (which imports Hugging Face's peft)."""
    import importlib.machinery
    import types

    from graphopt.bench import run_script

    monkeypatch.setattr(sys, "path", [str(BENCHMARK_DIR), *sys.path])
    seen = {}

    def main():
        spec = importlib.machinery.PathFinder.find_spec("peft")  # searches sys.path itself
        seen["origin"] = None if spec is None else spec.origin
        return 0

    monkeypatch.setitem(sys.modules, "fake_benchmark", types.SimpleNamespace(main=main))
    assert run_script(str(BENCHMARK_DIR / "peft.py"), "fake_benchmark") == 0
    assert seen["origin"] is None or Path(seen["origin"]).parent != BENCHMARK_DIR
