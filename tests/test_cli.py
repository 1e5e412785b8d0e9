"""The ``graphopt`` dispatcher finds every registered runner and rejects unknown names."""

from __future__ import annotations

import pytest

from graphopt import cli


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
