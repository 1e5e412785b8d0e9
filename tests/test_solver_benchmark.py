"""benchmarks/solvers.py: what it reports is right (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "solvers.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark_solvers", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_generators_give_correlation_matrices(bench):
    for S in (bench.sparse_spd(20, 10, 0.9, 0), bench.chain(15, 40, 1), bench.hub(18, 40, 6, 2),
              bench.blocks(30, 3, 3), bench.sklearn_dataset("wine")):
        assert np.array_equal(S, S.T) and np.allclose(np.diag(S), 1.0)
        assert np.linalg.eigvalsh(S)[0] > -1e-10
    S = bench.blocks(30, 3, 3)
    assert np.count_nonzero(S) <= 3 * 10 * 10        # exact zeros across the blocks


def test_runner_scores_and_summarises(bench, tmp_path):
    S = bench.sparse_spd(20, 40, 0.9, 3)
    alpha = bench.alpha_grid(S, (0.9,))[0]
    # gglasso is a benchmark peer (the `bench` extra), not a test dependency.
    peers = ("graphopt-auto", "sklearn-enet") + (
        ("gglasso",) if importlib.util.find_spec("gglasso") is not None else ())
    runs = {m: bench.run_one(m, S, alpha) for m in peers}
    assert runs["graphopt-auto"]["status"] == "converged"
    assert runs["graphopt-auto"]["own_certified_rel_gap"] <= 1e-6
    # The same check for every solver (W̃ from Θ⁻¹ alone) is looser but still small.
    assert 0 <= runs["graphopt-auto"]["certified_rel_gap"] <= 1e-4
    row = {"case": "t", "family": "sparse_spd", "p": 20, "quantile": 0.9, "alpha": alpha,
           "note": "", "runs": runs}
    bench._score(row)
    assert min(r["gap_to_best"] for r in runs.values()) == 0.0
    assert runs["graphopt-auto"]["solved"]
    # A fabricated peer that "converged" to a worse point is not counted as solved.
    row["runs"]["sklearn-default"] = dict(runs["sklearn-enet"],
                                          objective=row["best_objective"] + 1e-3)
    bench._score(row)
    assert not row["runs"]["sklearn-default"]["solved"]
    summary = bench.summarise([row])
    sk = summary["ratios"]["sklearn"]
    assert sk["rows_both_solved"] == int(runs["sklearn-enet"]["solved"])
    result = {"quick": True, "elapsed_s": 1.0, "budget_s": 1.0, "records": [row],
              "batch": None, "summary": summary, "machine": {"cpus": 1, "load_avg": None}}
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{bench.MARK_START}\nold\n{bench.MARK_END}\nafter\n")
    bench.render(doc, json.loads(json.dumps(result)))
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| t | 20 |" in text


def test_unknown_method_is_refused(bench):
    with pytest.raises(SystemExit, match="unknown"):
        bench.main(["--methods", "nope", "--case", "wine"])
