"""``python benchmarks/study.py`` on the tiny BERT: runs, resumes without redoing, summarises, renders."""

from __future__ import annotations

import json

import pytest

from _benchmarks import load_benchmark

study = load_benchmark("study")


def test_pareto_front_keeps_only_undominated_points():
    pts = [(10, 0.5), (100, 0.9), (50, 0.4), (100, 0.8), (1000, 0.9), (5, 0.5)]
    # (10, 0.5) is dominated by (5, 0.5); (1000, 0.9) by (100, 0.9).
    assert study.pareto_front(pts) == [1, 5]


def test_study_runs_resumes_and_renders(tiny, tmp_path, capsys):
    out = tmp_path / "study"
    page = tmp_path / "docs" / "results.md"
    argv = ["--variants", "pc-all", "bitfit", "--settings", "full", "--seeds", "0", "1",
            "--output-dir", str(out), "--render", str(page), "--no-progress", "--",
            "--model", str(tiny / "model"), "--data", str(tiny / "data.csv"), "--epochs", "2",
            "--steps-per-epoch", "2", "--batch-size", "8", "--max-length", "16", "--threads", "1",
            "--rank", "2"]
    assert study.main(argv) == 0
    metrics = {v: [study.run_dir(out, "full", v, s) / "metrics.json" for s in (0, 1)]
               for v in ("pc-all", "bitfit")}
    assert all(p.is_file() for ps in metrics.values() for p in ps)
    stamps = {p: p.stat().st_mtime_ns for ps in metrics.values() for p in ps}

    # An interrupted run (no metrics.json) is redone; finished runs are not touched.
    lost = metrics["bitfit"][1]
    lost.unlink()
    assert study.main(argv) == 0
    assert lost.is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p != lost)

    result = json.loads((out / "study.json").read_text())
    rows = result["summary"]["full"]
    assert set(rows) == {"pc-all", "bitfit"}
    for variant, row in rows.items():
        accs = [json.loads(p.read_text())["test"]["accuracy"] for p in metrics[variant]]
        assert row["n_runs"] == 2 and row["seeds"] == [0, 1]
        assert row["accuracy"][0] == pytest.approx(sum(accs) / 2)
    # 2 layers x (q, k, v) x r=2 nodes of 32 + 32 parameters, plus the 3-way head.
    assert rows["pc-all"]["trainable"] == 12 * 64 + 32 * 3 + 3
    text = page.read_text()
    assert "| pc-all | 2 |" in text and "| bitfit | 2 |" in text
    assert (tmp_path / "docs" / "results_accuracy_vs_parameters.png").is_file()
    assert (tmp_path / "docs" / "results_validation_curves.png").is_file()


def test_failed_run_is_reported_and_retried(tiny, tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["--variants", "ggm", "--settings", "full", "--seeds", "0", "--output-dir", str(out),
            "--no-progress", "--", "--model", str(tiny / "model"), "--data",
            str(tiny / "data.csv"), "--rank", "2", "--n-select", "500"]  # more nodes than exist
    assert study.main(argv) == 1
    result = json.loads((out / "study.json").read_text())
    assert result["failures"][0]["variant"] == "ggm" and result["failures"][0]["exit_code"] == 2
    assert "exceeds" in (study.run_dir(out, "full", "ggm", 0) / "log.txt").read_text()
    assert result["summary"]["full"] == {}


def test_bad_setting_is_an_error():
    with pytest.raises(SystemExit, match="--settings"):
        study.main(["--settings", "few", "--no-run"])


def test_compare_to_classifies_by_twice_the_welch_standard_error():
    compare_to = study.compare_to

    rows = {
        "ggm": {"accuracy": (0.90, 0.01), "n_runs": 3, "trainable": 100.0},
        "worse": {"accuracy": (0.80, 0.01), "n_runs": 3, "trainable": 200.0},
        "close": {"accuracy": (0.905, 0.02), "n_runs": 3, "trainable": 100.0},
        "better": {"accuracy": (0.99, 0.001), "n_runs": 3, "trainable": 50.0},
        "single": {"accuracy": (0.5, 0.0), "n_runs": 1, "trainable": 100.0},
    }
    got = {c["variant"]: c for c in compare_to(rows)}
    assert got["worse"]["verdict"] == "win" and got["worse"]["trainable_ratio"] == 0.5
    assert got["close"]["verdict"] == "tie"
    assert got["better"]["verdict"] == "lose"
    assert got["single"]["verdict"] == "n/a"
    se = (0.01 ** 2 / 3 + 0.02 ** 2 / 3) ** 0.5
    assert abs(got["close"]["se"] - se) < 1e-15 and abs(got["close"]["difference"] + 0.005) < 1e-12
    assert compare_to({"lora": rows["worse"]}) == []
