"""``python benchmarks/budget_sweep.py``: the plan, the paired statistics, and a tiny sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _benchmarks import load_benchmark

sweep = load_benchmark("budget_sweep")


def test_sign_test_exact_values():
    assert sweep.sign_test([0.1] * 5) == pytest.approx(2 / 32)
    assert sweep.sign_test([-0.1] * 5) == pytest.approx(2 / 32)
    assert sweep.sign_test([0.1] * 10) == pytest.approx(2 / 1024)
    assert sweep.sign_test([1.0, -1.0]) == 1.0
    # 4 of 5 positive: 2 * (C(5,0) + C(5,1)) / 32
    assert sweep.sign_test([1, 1, 1, 1, -1]) == pytest.approx(12 / 32)
    # zero differences carry no sign: one positive left, p = 1
    assert sweep.sign_test([0.0, 0.0, 0.3]) == 1.0
    assert sweep.sign_test([]) == 1.0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([-1.0, 0.0, 1.0]), min_size=1, max_size=25))
def test_sign_test_matches_scipy_binomtest(signs):
    from scipy.stats import binomtest

    n = sum(s != 0 for s in signs)
    k = sum(s > 0 for s in signs)
    expected = 1.0 if n == 0 else binomtest(k, n, 0.5, alternative="two-sided").pvalue
    assert sweep.sign_test(signs) == pytest.approx(expected, rel=1e-12)


def test_bootstrap_interval_known_cases():
    assert sweep.bootstrap_mean_interval([0.02] * 5) == (pytest.approx(0.02), pytest.approx(0.02))
    d = [0.01, 0.03, -0.02, 0.05, 0.00]
    a, b = sweep.bootstrap_mean_interval(d)
    assert (a, b) == sweep.bootstrap_mean_interval(d)  # seeded: reproducible
    assert min(d) <= a < np.mean(d) < b <= max(d)
    # A large normal sample: the percentile interval is close to mean ± 1.96 sd/sqrt(n).
    x = np.random.default_rng(3).normal(0.1, 1.0, 400)
    lo, hi = sweep.bootstrap_mean_interval(x, resamples=4000)
    half = 1.96 * x.std(ddof=1) / math.sqrt(x.size)
    assert lo == pytest.approx(x.mean() - half, abs=0.15 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.15 * half)
    assert all(math.isnan(v) for v in sweep.bootstrap_mean_interval([]))


def test_paired_differences_on_hand_made_numbers():
    ref = {0: 0.90, 1: 0.70, 2: 0.50, 3: 0.80}
    # Same offset of +0.02 on every shared seed (seed 3 of ref and seed 9 of the other
    # are unpaired and ignored): the mean is 0.02, sd 0, the interval [0.02, 0.02], a win.
    other = {0: 0.88, 1: 0.68, 2: 0.48, 9: 0.10}
    p = sweep.paired_differences(ref, other)
    assert p["seeds"] == [0, 1, 2] and p["n"] == 3
    assert p["mean"] == pytest.approx(0.02) and p["se"] == pytest.approx(0.0, abs=1e-12)
    assert p["ci95"] == (pytest.approx(0.02), pytest.approx(0.02))
    assert p["verdict"] == "win" and p["sign_p"] == pytest.approx(0.25)
    # The Welch comparison of the same numbers sees a spread of 0.2 between seeds and calls
    # it a tie: pairing removes the seed-to-seed spread.
    rows = {"ggm": {"accuracy": sweep.mean_std([0.90, 0.70, 0.50]), "n_runs": 3, "trainable": 1.0},
            "other": {"accuracy": sweep.mean_std([0.88, 0.68, 0.48]), "n_runs": 3,
                      "trainable": 1.0}}
    assert sweep.compare_to(rows)[0]["verdict"] == "tie"

    lose = sweep.paired_differences({0: 0.5, 1: 0.6, 2: 0.7}, {0: 0.6, 1: 0.65, 2: 0.75})
    assert lose["verdict"] == "lose" and lose["mean"] == pytest.approx(-2 / 30)
    d = [0.05, -0.04, 0.01]
    tie = sweep.paired_differences({0: 0.5 + d[0], 1: 0.5 + d[1], 2: 0.5 + d[2]},
                                   {0: 0.5, 1: 0.5, 2: 0.5})
    assert tie["verdict"] == "tie"
    assert tie["se"] == pytest.approx(np.std(d, ddof=1) / math.sqrt(3))
    few = sweep.paired_differences({0: 0.9, 1: 0.8}, {0: 0.1, 1: 0.2})
    assert few["verdict"] == "n/a" and few["n"] == 2


def test_plan_orders_runs_and_keeps_baselines_at_the_edge_budgets():
    specs = sweep.plan(["full", "8"], [12, 24, 96], ["ggm", "random", "adalora"], [0, 1])
    # selection variants at every K, baselines at the smallest and the largest only
    assert {(s.budget, s.variant) for s in specs if s.variant == "adalora"} == {(12, "adalora"),
                                                                                (96, "adalora")}
    assert len(specs) == 2 * 2 * (3 * 2 + 2)
    assert [s.label for s in specs[:3]] == ["full/K12/ggm/seed0", "full/K12/random/seed0",
                                            "full/K12/adalora/seed0"]
    groups = sweep.prefix_groups(specs)
    assert set(groups) == {("full", 0), ("full", 1), ("8", 0), ("8", 1)}
    assert len(groups[("full", 0)]) == 3 * 2  # 3 budgets x 2 selection variants
    assert all(s.variant != "adalora" for g in groups.values() for s in g)
    assert sweep.variant_args("ggm-no-important", 12) == [
        "--method", "ggm", "--ggm-groups", "all", "--n-select", "12", "--n-important", "6"]
    assert sweep.n_important_for(96) == 48 and sweep.n_important_for(1) == 1


def test_branching_saving_counts_steps():
    specs = sweep.plan(["full"], [12, 24, 48, 96], list(sweep.SELECTION_VARIANTS), [0])
    out = sweep.branching_saving(specs, {"full": 32})
    # 16 runs of 96 steps from scratch; 15 of them skip the 63 steps before the selection
    assert out["steps_from_scratch"] == 16 * 3 * 32
    assert out["steps_branched"] == 16 * 96 - 15 * 63
    assert out["step_ratio"] == pytest.approx(16 * 96 / (16 * 96 - 15 * 63))
    timings = {s.label: {"total_s": 4.0, "prefix_s": 10.0, "branched": i > 0,
                         "skipped_steps": 63 if i > 0 else 0} for i, s in enumerate(specs[:4])}
    got = sweep.branching_saving(specs, {"full": 32}, timings)
    assert (got["finished_runs"], got["branched_runs"]) == (4, 3)
    assert got["measured_saving_s"] == 30.0 and got["branched_total_s"] == 12.0
    assert got["skipped_steps"] == 3 * 63


def test_branch_args_share_each_groups_prefix(tmp_path):
    specs = sweep.plan(["8"], [4, 8], ["ggm", "random", "adalora"], [0, 1])
    groups = sweep.prefix_groups(specs)
    args = {s.label: sweep.branch_args(tmp_path, s, groups) for s in specs}
    owner = sweep.run_dir(tmp_path, sweep.RunSpec("8", 4, "ggm", 1))
    assert args["8/K4/ggm/seed1"] == ["--save-before-selection"]
    assert args["8/K8/random/seed1"] == ["--branch-from", str(owner)]
    assert args["8/K4/adalora/seed0"] == [] and args["8/K8/ggm/seed0"][0] == "--branch-from"
    assert sweep.branch_args(tmp_path, specs[0], {}) == []
    # A first run that finished without a prefix checkpoint (a --no-branch sweep): the
    # others of its group run from scratch.
    owner.mkdir(parents=True)
    (owner / "metrics.json").write_text("{}")
    assert sweep.branch_args(tmp_path, sweep.RunSpec("8", 8, "random", 1), groups) == []


def test_tiny_sweep_runs_pairs_and_renders_a_partial_page(tiny, tmp_path):
    out = tmp_path / "sweep"
    page = tmp_path / "docs" / "budget_sweep.md"
    common = ["--settings", "full", "--seeds", "0", "1", "--output-dir", str(out),
              "--json", str(tmp_path / "sweep.json"), "--no-progress"]
    finetune = ["--", "--model", str(tiny / "model"), "--data", str(tiny / "data.csv"),
                "--epochs", "3", "--steps-per-epoch", "2", "--batch-size", "8",
                "--max-length", "16", "--threads", "1", "--rank", "2"]
    assert sweep.main([*common, "--budgets", "4", "--variants", "ggm", "random", *finetune]) == 0
    spec = sweep.RunSpec("full", 4, "random", 1)
    metrics = json.loads((sweep.run_dir(out, spec) / "metrics.json").read_text())
    # 4 nodes of 32 + 32 parameters and the 3-way head
    assert metrics["trainable_parameters"]["final"] == 4 * 64 + 32 * 3 + 3
    assert metrics["config"]["n_important"] == 2

    # Summarise only, with a budget and a baseline that have not run: the page says it is
    # partial and lists them.
    argv = [*common, "--budgets", "2", "4", "--variants", "ggm", "random", "adalora",
            "--no-run", "--render", str(page)]
    assert sweep.main(argv) == 0
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert result["planned"] == 12 and len(result["missing"]) == 8
    cell = result["summary"]["cells"]["full"]["4"]
    accs = {s: json.loads((sweep.run_dir(out, sweep.RunSpec("full", 4, v, s)) / "metrics.json")
                          .read_text())["test"]["accuracy"] for v in ("ggm",) for s in (0, 1)}
    other = {s: json.loads((sweep.run_dir(out, sweep.RunSpec("full", 4, "random", s))
                            / "metrics.json").read_text())["test"]["accuracy"] for s in (0, 1)}
    assert cell["paired"]["random"]["mean"] == pytest.approx(
        np.mean([accs[s] - other[s] for s in (0, 1)]))
    assert cell["paired"]["random"]["verdict"] == "n/a"  # two pairs
    text = page.read_text()
    assert "Partial results: 8 of 12" in text
    assert "| full | 2 | 0/2 | 0/2 | 0/2 |" in text
    assert "| full | 4 | 2/2 (0,1) | 2/2 (0,1) | 0/2 |" in text
    assert "full/K2/adalora/seed0" in result["missing"]
    # Branched: each seed's first run saved the prefix, the other three started from it,
    # and one of them was trained again from scratch and matched.
    first = json.loads((sweep.run_dir(out, sweep.RunSpec("full", 4, "ggm", 0)) / "metrics.json")
                       .read_text())
    assert first["resumed_from"] is None and first["outputs"]["checkpoints"] == "checkpoints"
    assert metrics["resumed_from"]["branched_from_method"] == "random" or \
        metrics["resumed_from"]["branched_from_method"] == "ggm"
    check = result["branch_check"]
    assert check["run"] == "full/K4/random/seed0" and check["identical"], check
    assert check["max_abs_adapter_diff"] == 0.0
    assert result["branching"]["branched_runs"] == 2
    assert "Branching from the shared prefix" in text and "was trained again from scratch" in text
    assert (tmp_path / "docs" / "budget_sweep_paired_differences.png").is_file()
    assert (tmp_path / "docs" / "budget_sweep_accuracy_vs_trainable.png").is_file()
