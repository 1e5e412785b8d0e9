"""``python benchmarks/budget_sweep.py``: when does the GGM allocation pay? A paired budget sweep.

The node budget K (nodes kept trainable after the selection step) runs over
``--budgets`` (default 12, 24, 48, 96 of the 180 principal-component nodes of the default
model), with ``n_important`` scaled as the published 30 of 60 (k = round(K/2)). At each K
the selection variants ``ggm``, ``ggm-no-important``, ``random`` and ``top-importance`` run
with the same seeds, and the peer baselines ``adalora`` and ``adamss`` (Hugging Face peft,
the same budget of K rank-one units, see docs/finetune.md) run at the smallest and the
largest K. Settings are ``full`` (the whole training split) and few-shot sizes.

Each run is one ``graphopt finetune`` process writing
``<output-dir>/<setting>/K<K>/<variant>/seed<s>/metrics.json``; finished runs are skipped,
so the sweep resumes where it stopped.

**Paired analysis.** With the same (setting, seed) the warm-up, the scoring phase and the
data order are identical across the selection variants: only the selected nodes differ.
So for each (setting, K) the page reports the mean paired difference
d̄ = mean_s (acc_ggm,s − acc_other,s) over the seeds both ran, its standard error
sd(d)/√n, an exact two-sided sign test and a seeded bootstrap 95 % interval of d̄; the
verdict is *win* / *lose* when that interval lies above / below 0, otherwise *tie*. The
unpaired (Welch) comparison of ``study.compare_to`` is kept beside it.

**Branching from the shared prefix.** All selection variants and all K of one
(setting, seed) share the warm-up and scoring steps (:func:`prefix_groups`). The first run
of each group (in plan order) is trained with ``--save-before-selection``, which writes one
checkpoint a step before the selection; every other run of the group starts from it with
``--branch-from`` and trains only the selection step and the last epoch (``--no-branch``
trains every run from scratch). Once a branched run has finished, one of them is trained
again from scratch into ``<output-dir>/branch_check/`` and compared with it (test metrics,
per-step losses, selection, adapter tensors); :func:`branching_saving` puts the steps and
seconds saved on the page.

Writes ``<output-dir>/budget_sweep.json`` and, with ``--render PATH``, a Markdown page with
the tables and two plots (accuracy against trainable parameters; paired differences).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from _common import REPO_ROOT, RESULTS_DIR, mean_std
from study import (_check_settings, _run_record, _setting_title, compare_to, run_jobs,
                   split_command)

__all__ = ["BUDGETS", "SELECTION_VARIANTS", "BASELINE_VARIANTS", "RunSpec", "plan",
           "prefix_groups", "branch_args", "variant_args", "run_dir", "paired_differences",
           "sign_test", "bootstrap_mean_interval", "summarise", "branching_saving",
           "check_branch", "main"]

#: Default node budgets K (of 180 nodes: r = 10 on the 18 query/key/value matrices).
BUDGETS: tuple[int, ...] = (12, 24, 48, 96)
#: The published ratio of important to selected nodes (k = 30 of K = 60).
IMPORTANT_RATIO = 30 / 60
#: Selection variants: same nodes, same warm-up and scoring, only the selection differs.
SELECTION_VARIANTS: dict[str, list[str]] = {
    "ggm": ["--method", "ggm"],
    "ggm-no-important": ["--method", "ggm", "--ggm-groups", "all"],
    "random": ["--method", "random"],
    "top-importance": ["--method", "top-importance"],
}
#: Peer baselines, run at the smallest and the largest budget only.
BASELINE_VARIANTS: dict[str, list[str]] = {
    "adalora": ["--method", "adalora"],
    "adamss": ["--method", "adamss"],
}
VARIANTS: dict[str, list[str]] = {**SELECTION_VARIANTS, **BASELINE_VARIANTS}
#: The reference of every comparison.
REFERENCE = "ggm"
#: Bootstrap resamples and seed of the interval (fixed so that the page is reproducible).
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


def n_important_for(budget: int) -> int:
    """k = round(K · 30/60), at least 1 (the published 30 important of 60 selected)."""
    return max(1, int(round(budget * IMPORTANT_RATIO)))


def variant_args(variant: str, budget: int) -> list[str]:
    """``graphopt finetune`` arguments of one variant at budget K."""
    return [*VARIANTS[variant], "--n-select", str(budget),
            "--n-important", str(n_important_for(budget))]


@dataclass(frozen=True)
class RunSpec:
    """One planned run."""

    setting: str
    budget: int
    variant: str
    seed: int

    @property
    def label(self) -> str:
        return f"{self.setting}/K{self.budget}/{self.variant}/seed{self.seed}"


def run_dir(root: Path, spec: RunSpec) -> Path:
    """``<root>/<setting>/K<K>/<variant>/seed<s>``."""
    return root / spec.setting / f"K{spec.budget}" / spec.variant / f"seed{spec.seed}"


def plan(settings: Sequence[str], budgets: Sequence[int], variants: Sequence[str],
         seeds: Sequence[int]) -> list[RunSpec]:
    """Every run, in priority order: setting, then budget, then seed, then variant, so that
    an interrupted sweep has complete (setting, K, seed) pairs first. Baselines only at
    min(budgets) and max(budgets)."""
    edge = {min(budgets), max(budgets)} if budgets else set()
    return [RunSpec(s, k, v, seed) for s in settings for k in budgets for seed in seeds
            for v in variants if v in SELECTION_VARIANTS or k in edge]


def prefix_groups(specs: Sequence[RunSpec]) -> dict[tuple[str, int], list[RunSpec]]:
    """(setting, seed) -> the selection-variant runs that share one warm-up + scoring
    prefix (identical data order, initialisation and scores; they differ from the
    selection step on). A branched sweep trains each prefix once and starts these runs
    from its checkpoint; the baselines have their own adapters and are not in any group."""
    groups: dict[tuple[str, int], list[RunSpec]] = {}
    for s in specs:
        if s.variant in SELECTION_VARIANTS:
            groups.setdefault((s.setting, s.seed), []).append(s)
    return groups


def branch_args(root: Path, spec: RunSpec, groups: dict[tuple[str, int], list[RunSpec]]
                ) -> list[str]:
    """``graphopt finetune`` arguments that share the prefix of ``spec``'s group: the
    group's first run saves it (``--save-before-selection``), the others branch from that
    run's directory. Baselines, and the runs of a group whose first run finished without a
    prefix checkpoint (a sweep started with ``--no-branch``), run from scratch."""
    group = groups.get((spec.setting, spec.seed))
    if not group or spec not in group:
        return []
    owner = run_dir(root, group[0])
    if spec == group[0]:
        return ["--save-before-selection"]
    if (owner / "metrics.json").is_file() and not (owner / "checkpoints").is_dir():
        return []
    return ["--branch-from", str(owner)]


def _command(spec: RunSpec, out: Path, extra: Sequence[str],
             branch: Sequence[str] = ()) -> list[str]:
    cmd = [sys.executable, "-m", "graphopt.peft.finetune", *variant_args(spec.variant, spec.budget),
           "--seed", str(spec.seed), "--output-dir", str(out), "--no-progress", *branch]
    if spec.setting != "full":
        cmd += ["--few-shot", spec.setting]
    return cmd + list(extra)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/budget_sweep.py",
                                description=__doc__.split("\n\n")[0],
                                epilog="arguments after -- are passed to graphopt finetune")
    p.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--settings", nargs="+", default=["full", "8"],
                   help="'full' and/or few-shot sizes K per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--output-dir", type=Path, default=REPO_ROOT / "runs" / "budget_sweep")
    p.add_argument("--json", type=Path, default=RESULTS_DIR / "budget_sweep.json",
                   help="the summary (also written as <output-dir>/budget_sweep.json)")
    p.add_argument("--render", type=Path, default=None,
                   help="write a Markdown results page here (plots next to it)")
    p.add_argument("--findings", type=Path, default=None,
                   help="a Markdown paragraph for the page's 'What we found' section")
    p.add_argument("--plan-only", "--no-run", dest="no_run", action="store_true",
                   help="only summarise finished runs")
    p.add_argument("--no-branch", action="store_true",
                   help="train every run from scratch instead of branching the selection "
                        "runs from their group's prefix checkpoint")
    p.add_argument("--no-progress", action="store_true")
    return p


# ---------------------------------------------------------------- paired statistics

def sign_test(differences: Sequence[float]) -> float:
    """Exact two-sided sign test p-value of H0 "a positive and a negative difference are
    equally likely": with n non-zero differences of which k are positive,
    p = min(1, 2 · Σ_{i ≤ min(k, n−k)} C(n, i) / 2ⁿ). Zero differences are dropped
    (ties carry no sign); p = 1 when none are left."""
    d = [x for x in differences if x != 0]
    n = len(d)
    if n == 0:
        return 1.0
    k = sum(x > 0 for x in d)
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1))
    return min(1.0, 2.0 * tail / 2 ** n)


def bootstrap_mean_interval(differences: Sequence[float], level: float = 0.95,
                            resamples: int = BOOTSTRAP_RESAMPLES,
                            seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: the (1 ± level)/2 quantiles of the means of
    ``resamples`` resamples (with replacement, n of n) drawn by ``numpy`` with ``seed``."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


#: Fewest pairs for a verdict: with one or two pairs a bootstrap interval is just the
#: observed range and says nothing about the seeds' spread.
MIN_PAIRS = 3


def paired_differences(reference: dict[int, float], other: dict[int, float]) -> dict[str, Any]:
    """Paired comparison over the seeds both ran: d_s = ref_s − other_s; mean d̄, its
    standard error sd(d)/√n (ddof = 1), the sign test, the bootstrap 95 % interval and the
    verdict: *win* when the interval lies above 0, *lose* below, *tie* when it holds 0,
    *n/a* with fewer than ``MIN_PAIRS`` pairs."""
    seeds = sorted(set(reference) & set(other))
    d = [reference[s] - other[s] for s in seeds]
    n = len(d)
    mean, sd = mean_std(d)
    se = sd / math.sqrt(n) if n >= 2 else math.nan
    lo, hi = bootstrap_mean_interval(d) if n else (math.nan, math.nan)
    if n < MIN_PAIRS:
        verdict = "n/a"
    else:
        verdict = "win" if lo > 0 else "lose" if hi < 0 else "tie"
    return {"n": n, "seeds": seeds, "differences": d, "mean": mean, "se": se,
            "sign_p": sign_test(d) if n else math.nan, "n_positive": sum(x > 0 for x in d),
            "n_negative": sum(x < 0 for x in d), "ci95": (lo, hi), "verdict": verdict}


# ---------------------------------------------------------------- summary

def _row(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    recs = list(runs.values())
    return {"n_runs": len(recs), "seeds": sorted(runs),
            "accuracy": mean_std([r["accuracy"] for r in recs]),
            "macro_f1": mean_std([r["macro_f1"] for r in recs]),
            "trainable": float(np.mean([r["trainable"] for r in recs])),
            "total_parameters": recs[0]["total_parameters"],
            "wall_s": mean_std([r["wall_s"] for r in recs]), "runs": runs}


def _prefix_seconds(metrics: dict[str, Any]) -> float | None:
    """Seconds a run spent in the warm-up and scoring steps and in the validations at the
    end of prefix epochs: what branching from a checkpoint of the prefix would skip."""
    t = metrics["timings"]
    phases, times = t.get("step_phases") or [], t.get("step_times_s") or []
    if not phases or "trained" not in phases:
        return None
    end = phases.index("trained")
    eval_s = sum(e["eval_s"] for e in metrics["epochs"] if e["global_step"] <= end)
    return float(sum(times[:end])) + float(eval_s)


def summarise(root: Path, specs: Sequence[RunSpec]) -> dict[str, Any]:
    """From the finished runs' metrics.json: per setting and K, one row per variant (mean ±
    std over seeds, as in study.py), the paired and the unpaired (Welch) comparisons of
    ``ggm`` against every other variant, and the measured prefix seconds per run."""
    from graphopt.peft.report import read_json

    rows: dict[str, dict[int, dict[str, Any]]] = {}
    timings: dict[str, dict[str, Any]] = {}
    for spec in specs:
        path = run_dir(root, spec) / "metrics.json"
        if not path.is_file():
            continue
        metrics = read_json(path)
        cell = rows.setdefault(spec.setting, {}).setdefault(spec.budget, {})
        cell.setdefault(spec.variant, {})[spec.seed] = _run_record(metrics)
        if spec.variant in SELECTION_VARIANTS:
            s = _prefix_seconds(metrics)
            if s is not None:
                resumed = metrics.get("resumed_from") or {}
                branched = "branched_from_method" in resumed
                timings[spec.label] = {"total_s": float(metrics["timings"]["total_s"]),
                                       "prefix_s": s, "branched": branched,
                                       "skipped_steps": int(resumed["step"]) if branched else 0}
    summary: dict[str, Any] = {}
    for setting, by_budget in rows.items():
        summary[setting] = {}
        for budget in sorted(by_budget):
            order = sorted(by_budget[budget].items(), key=lambda kv: list(VARIANTS).index(kv[0]))
            variants = {v: _row(runs) for v, runs in order}
            paired = {}
            if REFERENCE in variants:
                ref = {s: r["accuracy"] for s, r in variants[REFERENCE]["runs"].items()}
                for v, row in variants.items():
                    if v != REFERENCE:
                        paired[v] = paired_differences(
                            ref, {s: r["accuracy"] for s, r in row["runs"].items()})
            summary[setting][budget] = {"rows": variants, "paired": paired,
                                        "unpaired": compare_to(variants, REFERENCE)}
    return {"cells": summary, "timings": timings}


def branching_saving(specs: Sequence[RunSpec], steps_per_epoch: dict[str, int],
                     timings: dict[str, dict[str, Any]] | None = None, epochs: int = 3,
                     prefix_epochs: int = 2) -> dict[str, Any]:
    """What branching the selection runs from one prefix checkpoint per (setting, seed)
    saves. In optimiser steps, for the planned runs: with S = E·spe steps per run and a
    prefix checkpoint after P·spe − 1 steps (one before the selection), a group of n runs
    costs n·S from scratch and n·S − (n − 1)·(P·spe − 1) branched. In seconds, for the
    finished branched runs: the prefix seconds each skipped (its group's first run's
    warm-up, scoring and their validations, which it inherits) against what they took."""
    groups = prefix_groups(specs)
    scratch = branched = 0
    for (setting, _), runs in groups.items():
        spe = steps_per_epoch.get(setting)
        if spe is None:
            continue
        scratch += len(runs) * epochs * spe
        branched += len(runs) * epochs * spe - (len(runs) - 1) * (prefix_epochs * spe - 1)
    timings = timings or {}
    done = [timings[r.label] for runs in groups.values() for r in runs if r.label in timings]
    took = [t for t in done if t["branched"]]
    return {"steps_from_scratch": scratch, "steps_branched": branched,
            "step_ratio": scratch / branched if branched else math.nan,
            "groups": len(groups), "finished_runs": len(done), "branched_runs": len(took),
            "measured_total_s": sum(t["total_s"] for t in done),
            "branched_total_s": sum(t["total_s"] for t in took),
            "measured_saving_s": sum(t["prefix_s"] for t in took),
            "skipped_steps": sum(t["skipped_steps"] for t in took)}


def _comparable(metrics: dict[str, Any]) -> dict[str, Any]:
    """What a run computes (no timings, paths or resume record)."""
    return {"test": metrics["test"], "step_losses": metrics["step_losses"],
            "validation": [e["validation"] for e in metrics["epochs"]],
            "selected": (metrics.get("allocation") or {}).get("selected"),
            "trainable": metrics["trainable_parameters"]["final"]}


def check_branch(root: Path, specs: Sequence[RunSpec], extra: Sequence[str],
                 progress: bool = True) -> dict[str, Any] | None:
    """Train the first finished branched run again from scratch (into
    ``<root>/branch_check/<label>``, once) and compare the two: test metrics, per-step
    losses, validation curve, selected nodes, and the adapter tensors (max |Δ|). None when
    no branched run has finished."""
    from safetensors.torch import load_file

    from graphopt.peft.report import read_json

    for spec in specs:
        path = run_dir(root, spec) / "metrics.json"
        if not path.is_file() or "branched_from_method" not in (
                read_json(path).get("resumed_from") or {}):
            continue
        out = root / "branch_check" / spec.setting / f"K{spec.budget}" / spec.variant / \
            f"seed{spec.seed}"
        failures = run_jobs([({"run": f"{spec.label} (from scratch)"}, out,
                              _command(spec, out, extra))], desc="branch check",
                            progress=progress)
        if failures:
            return {"run": spec.label, "failed": failures}
        branched, scratch = read_json(path), read_json(out / "metrics.json")
        ta = load_file(run_dir(root, spec) / "adapter" / "adapter_model.safetensors")
        tb = load_file(out / "adapter" / "adapter_model.safetensors")
        diff = max((float((ta[k] - tb[k]).abs().max()) for k in ta if k in tb), default=0.0)
        same = _comparable(branched) == _comparable(scratch) and ta.keys() == tb.keys() \
            and diff == 0.0
        return {"run": spec.label, "identical": same, "max_abs_adapter_diff": diff,
                "test_accuracy": {"branched": branched["test"]["accuracy"],
                                  "scratch": scratch["test"]["accuracy"]},
                "total_s": {"branched": branched["timings"]["total_s"],
                            "scratch": scratch["timings"]["total_s"]},
                "steps_run": {"branched": len(branched["step_losses"])
                              - branched["resumed_from"]["step"],
                              "scratch": len(scratch["step_losses"])}}
    return None


# ---------------------------------------------------------------- plots and page

def _styles() -> dict[str, dict[str, Any]]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {v: {"color": cmap(i), "marker": "osD^vP"[i % 6]} for i, v in enumerate(VARIANTS)}


def _figure(n: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(5.5 * n + 2.0, 4.2), squeeze=False)
    return fig, list(axes[0])


def _save(fig, axes, path: Path) -> None:
    """One legend for all panels (the union of their labels, in order), at the right."""
    import matplotlib.pyplot as plt

    seen: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - 1.9 / fig.get_figwidth(), 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_vs_trainable(cells: dict[str, Any], path: Path) -> None:
    """Test accuracy (mean ± std over seeds) against trainable parameters (log x), one line
    per variant across the budgets, one panel per setting."""
    settings = [s for s in cells if cells[s]]
    fig, axes = _figure(len(settings))
    styles = _styles()
    for ax, setting in zip(axes, settings):
        for variant in VARIANTS:
            pts = [(c["rows"][variant]["trainable"], *c["rows"][variant]["accuracy"])
                   for _, c in sorted(cells[setting].items()) if variant in c["rows"]]
            if pts:
                x, m, s = zip(*pts)
                ax.errorbar(x, m, yerr=s, capsize=3, label=variant, **styles[variant])
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel("test accuracy")
        ax.set_title(_setting_title(setting))
        ax.grid(alpha=0.3)
    _save(fig, axes, path)


def plot_paired_differences(cells: dict[str, Any], path: Path) -> None:
    """Mean paired difference ggm − other (bootstrap 95 % interval as error bar) against K,
    one series per other variant, a zero line, one panel per setting."""
    settings = [s for s in cells if any(c["paired"] for c in cells[s].values())]
    if not settings:
        return
    fig, axes = _figure(len(settings))
    styles = _styles()
    others = [v for v in VARIANTS if v != REFERENCE]
    for ax, setting in zip(axes, settings):
        ax.axhline(0.0, color="k", lw=1)
        for j, variant in enumerate(others):
            pts = [(k, c["paired"][variant]) for k, c in sorted(cells[setting].items())
                   if variant in c["paired"] and c["paired"][variant]["n"] >= 1]
            if not pts:
                continue
            # offset the series a little along log2 K so the intervals do not overlap
            x = [k * 2 ** (0.08 * (j - len(others) / 2)) for k, _ in pts]
            m = [p["mean"] for _, p in pts]
            lo = [p["mean"] - p["ci95"][0] for _, p in pts]
            hi = [p["ci95"][1] - p["mean"] for _, p in pts]
            ax.errorbar(x, m, yerr=[lo, hi], capsize=3, label=f"ggm − {variant}",
                        **styles[variant])
        ax.set_xscale("log", base=2)
        ks = sorted(cells[setting])
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("node budget K")
        ax.set_ylabel("paired test-accuracy difference")
        ax.set_title(_setting_title(setting))
        ax.grid(alpha=0.3)
    _save(fig, axes, path)


def _f(x: float, digits: int = 4, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def format_cell_tables(cell: dict[str, Any]) -> str:
    """The unpaired table (mean ± std) and the paired table of one (setting, K)."""
    lines = ["| variant | runs | seeds | test accuracy | trainable params |",
             "|---|---|---|---|---|"]
    for v, r in cell["rows"].items():
        m, s = r["accuracy"]
        lines.append(f"| {v} | {r['n_runs']} | {','.join(map(str, r['seeds']))} | "
                     f"{_f(m)} ± {_f(s)} | {r['trainable']:,.0f} |")
    if cell["paired"]:
        welch = {c["variant"]: c for c in cell["unpaired"]}
        lines += ["", "| ggm vs | pairs | mean paired diff | se | bootstrap 95 % | sign test p "
                  "(+/−) | paired verdict | Welch diff ± 2·se | Welch verdict |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for v, p in cell["paired"].items():
            lo, hi = p["ci95"]
            w = welch.get(v, {})
            wd = (f"{_f(w['difference'], signed=True)} ± {_f(2 * w['se'])}"
                  if w else "n/a")
            lines.append(f"| {v} | {p['n']} | {_f(p['mean'], signed=True)} | {_f(p['se'])} | "
                         f"[{_f(lo, signed=True)}, {_f(hi, signed=True)}] | "
                         f"{_f(p['sign_p'], 3)} ({p['n_positive']}/{p['n_negative']}) | "
                         f"**{p['verdict']}** | {wd} | {w.get('verdict', 'n/a')} |")
    return "\n".join(lines)


def format_coverage(root: Path, specs: Sequence[RunSpec]) -> str:
    """Markdown table: per (setting, K) and variant, the finished seeds of the planned ones
    ("–" where the variant is not planned at that K)."""
    variants = list(dict.fromkeys(s.variant for s in specs))
    cells: dict[tuple[str, int], dict[str, list[tuple[int, bool]]]] = {}
    for s in specs:
        done = (run_dir(root, s) / "metrics.json").is_file()
        cells.setdefault((s.setting, s.budget), {}).setdefault(s.variant, []).append((s.seed, done))
    lines = ["| setting | K | " + " | ".join(variants) + " |",
             "|---|---|" + "---|" * len(variants)]
    for (setting, budget), row in cells.items():
        out = []
        for v in variants:
            got = row.get(v)
            if got is None:
                out.append("–")
            else:
                seeds = [str(k) for k, done in got if done]
                out.append(f"{len(seeds)}/{len(got)}" + (f" ({','.join(seeds)})" if seeds else ""))
        lines.append(f"| {setting} | {budget} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def format_branching(saving: dict[str, Any], check: dict[str, Any] | None) -> str:
    """The page's section on branching from the shared prefix: what it saved, and the
    branched-against-scratch check."""
    text = [
        "## Branching from the shared prefix\n\n"
        "All selection variants and all budgets of one (setting, seed) share the warm-up and "
        "scoring steps; only the selection step and the last epoch differ. The first run of "
        "each (setting, seed) saves a checkpoint one step before its selection "
        "(`graphopt finetune --save-before-selection`), and the other selection runs of that "
        "(setting, seed) start from it (`--branch-from`), so they train only the selection "
        "step and the last epoch. The baselines have their own adapters and always run from "
        f"scratch. For the planned selection runs ({saving['groups']} groups) this cuts the "
        f"optimiser steps from {saving['steps_from_scratch']:,} to "
        f"{saving['steps_branched']:,} ({saving['step_ratio']:.2f}× fewer)."]
    if saving["branched_runs"]:
        took, saved = saving["branched_total_s"], saving["measured_saving_s"]
        text.append(
            f" Measured: the {saving['branched_runs']} finished branched runs took "
            f"{took:,.0f} s and skipped {saving['skipped_steps']:,} steps, whose training and "
            f"validations had cost their groups' first runs {saved:,.0f} s, so from scratch "
            f"they would have taken about {took + saved:,.0f} s "
            f"({(took + saved) / took:.2f}× the time). Loading, encoding and the test "
            "evaluation are not shared, so at 8 per class, where an epoch is 3 steps, the "
            "saving in seconds is far below the step ratio (wall seconds on a shared 2-core "
            "machine).")
    if check is None:
        text.append(" No branched run has finished yet, so the branched-against-scratch "
                    "check has not run.")
    elif "failed" in check:
        text.append(f" The from-scratch check run of `{check['run']}` failed: "
                    f"{check['failed']}.")
    else:
        verdict = ("identical" if check["identical"] else "**different** (the sweep's "
                   "branched numbers are suspect)")
        text.append(
            f"\n\n**Check.** `{check['run']}` was trained again from scratch: test accuracy "
            f"{check['test_accuracy']['scratch']:.4f} from scratch and "
            f"{check['test_accuracy']['branched']:.4f} branched, per-step losses, validation "
            f"curve and selected nodes {verdict}, adapter tensors max |Δ| = "
            f"{check['max_abs_adapter_diff']:.1e}; {check['steps_run']['scratch']} steps in "
            f"{check['total_s']['scratch']:.1f} s from scratch, "
            f"{check['steps_run']['branched']} steps in {check['total_s']['branched']:.1f} s "
            "branched.")
    return "".join(text) + "\n"


def render_markdown(summary: dict[str, Any], saving: dict[str, Any], path: Path,
                    command: str, missing: Sequence[str], planned: int,
                    findings: str | None = None, coverage: str = "",
                    check: dict[str, Any] | None = None) -> None:
    """The sweep's page: status (partial or not, which runs finished), method, one pair of
    tables per (setting, K), the two plots, the branching cost, and ``findings``."""
    from graphopt.peft.report import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("")
    acc_png = Path(f"{stem}_accuracy_vs_trainable.png")
    diff_png = Path(f"{stem}_paired_differences.png")
    cells = summary["cells"]
    have_plots = any(cells.values())
    if have_plots:
        plot_accuracy_vs_trainable(cells, acc_png)
        plot_paired_differences(cells, diff_png)
    have_pairs = any(c["paired"] for by_budget in cells.values() for c in by_budget.values())
    done = planned - len(missing)
    parts = [f"# Budget sweep: when does the GGM allocation pay?\n\nGenerated by `{command}` "
             f"from the runs under `runs/budget_sweep/` ({done} of {planned} planned runs "
             "finished).\n"]
    if missing:
        parts.append(f"**Partial results: {len(missing)} of {planned} planned runs have not "
                     "run yet.** The sweep is resumable (`python benchmarks/budget_sweep.py` "
                     "runs only what is missing); every number below may change when it "
                     "finishes. Finished seeds per cell (the missing runs are listed by name "
                     "under `missing` in `benchmarks/results/budget_sweep.json`):\n\n"
                     f"{coverage}\n")
    if findings:
        parts.append(f"## What we found\n\n{findings}\n")
    parts.append(
        "## How to read it\n\n"
        "Budget K = nodes kept trainable after the selection step (of 180: r = 10 principal "
        "components on the 18 query/key/value matrices of all-MiniLM-L6-v2), with "
        "`--n-important` = round(K/2) as in the published 30 of 60; everything else is the "
        "default `graphopt finetune` (1 warm-up epoch, 1 scoring epoch, selection, 1 training "
        "epoch; 32 steps of 16 examples per epoch on this CPU, or the whole 8-per-class set). "
        "`adalora` and `adamss` (Hugging Face peft) run on the same matrices with the same "
        "budget of K units and the same schedule, at the smallest and the largest K "
        "(docs/finetune.md).\n\n"
        "**Paired analysis.** With one seed every selection variant has the same split, "
        "initialisation, warm-up, scores and batches; only the selected nodes differ. For "
        "each seed both variants ran, d = accuracy(`ggm`) − accuracy(other); the table gives "
        "the mean d̄, its standard error sd(d)/√n, a percentile bootstrap 95 % interval of d̄ "
        f"({BOOTSTRAP_RESAMPLES:,} resamples, numpy seed {BOOTSTRAP_SEED}) and the exact "
        "two-sided sign test (counts of positive/negative d). **The verdict is win / lose when "
        "the bootstrap interval lies above / below 0, tie otherwise**, and n/a with fewer "
        f"than {MIN_PAIRS} pairs. With 5 pairs a percentile bootstrap is optimistic (its "
        "interval never reaches beyond the smallest and the largest observed d), and the "
        "sign test "
        "cannot reach p < 0.0625, so a *win* from 5 seeds is a lead, not proof. The unpaired "
        "Welch comparison of `benchmarks/study.py` (win / lose beyond twice its standard "
        "error) is kept beside it; the baselines are compared the same way, although their "
        "runs share only the data order with `ggm`, not the adapter.\n")
    for setting, by_budget in cells.items():
        for budget, cell in by_budget.items():
            parts.append(f"## {_setting_title(setting)}, K = {budget}\n\n"
                         f"{format_cell_tables(cell)}\n")
    if have_plots:
        parts.append(f"## Plots\n\n![accuracy vs trainable parameters]({acc_png.name})\n\n"
                     "Test accuracy (mean ± std over seeds) against trainable parameters, one "
                     "line per method across the budgets.\n")
        if have_pairs:
            parts.append(f"![paired differences]({diff_png.name})\n\n"
                         "Mean paired difference `ggm` − other, with its bootstrap 95 % "
                         "interval; above the zero line `ggm` is ahead (settings without "
                         "pairs yet have no panel).\n")
    parts.append(format_branching(saving, check))
    write_text_atomic(path, "\n".join(parts))


def _steps_per_epoch(root: Path, specs: Sequence[RunSpec]) -> dict[str, int]:
    """Optimiser steps per epoch of each setting, from a finished run (the default CPU cap
    of 32 for the full split; the whole few-shot set in batches of 16 otherwise)."""
    from graphopt.peft.report import read_json

    out: dict[str, int] = {}
    for spec in specs:
        path = run_dir(root, spec) / "metrics.json"
        if spec.setting not in out and path.is_file():
            out[spec.setting] = int(read_json(path)["resolved"]["steps_per_epoch"])
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the sweep, summarise, write the JSON (and the page)."""
    command, argv, extra = split_command("budget_sweep.py", argv)
    p = _parser()
    args = p.parse_args(argv)
    _check_settings(args.settings)
    if any(k < 1 for k in args.budgets):
        p.error(f"--budgets must be positive node counts, got {args.budgets}")
    from graphopt.peft.report import write_json_atomic

    specs = plan(args.settings, args.budgets, args.variants, args.seeds)
    failures: list[dict[str, Any]] = []
    groups = {} if args.no_branch else prefix_groups(specs)
    check = None
    if not args.no_run:
        # run_jobs runs one job at a time in plan order, so a group's first run (which
        # saves the prefix) always finishes before the runs that branch from it.
        jobs = [({"run": s.label}, run_dir(args.output_dir, s),
                 _command(s, run_dir(args.output_dir, s), extra,
                          branch_args(args.output_dir, s, groups))) for s in specs]
        failures = run_jobs(jobs, desc="budget sweep", progress=not args.no_progress)
        if groups:
            check = check_branch(args.output_dir, specs, extra, progress=not args.no_progress)
    elif (args.output_dir / "budget_sweep.json").is_file():
        from graphopt.peft.report import read_json

        check = read_json(args.output_dir / "budget_sweep.json").get("branch_check")
    summary = summarise(args.output_dir, specs)
    spe = _steps_per_epoch(args.output_dir, specs)
    saving = branching_saving(specs, spe, summary["timings"])
    missing = [s.label for s in specs
               if not (run_dir(args.output_dir, s) / "metrics.json").is_file()]
    for setting, by_budget in summary["cells"].items():
        for budget, cell in by_budget.items():
            print(f"\n{_setting_title(setting)}, K = {budget}\n{format_cell_tables(cell)}")
    result = {"budgets": args.budgets, "variants": {v: VARIANTS[v] for v in args.variants},
              "settings": args.settings, "seeds": args.seeds, "finetune_args": extra,
              "planned": len(specs), "missing": missing, "branching": saving,
              "steps_per_epoch": spe, "branch_check": check, "summary": summary,
              "failures": failures}
    for target in {args.output_dir / "budget_sweep.json", args.json}:
        write_json_atomic(target, result)
    if args.render is not None:
        findings = (args.findings.read_text(encoding="utf-8").strip()
                    if args.findings is not None else None)
        render_markdown(summary, saving, args.render, command, missing, len(specs), findings,
                        format_coverage(args.output_dir, specs), check)
    print(f"wrote {args.json}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
