"""``python benchmarks/study.py``: methods × settings × seeds of ``graphopt finetune``, resumable.

Each run is one ``graphopt finetune`` process writing into
``<output-dir>/<setting>/<variant>/seed<k>/``; a run whose ``metrics.json`` exists is done
(the file is written atomically as the run's last act), so an interrupted study picks up
where it stopped. A failed run leaves its log (``log.txt``) and is retried next time.

Variants (``--variants``), all on the same data, split and seeds:

- ``full``, ``bitfit``, ``lora``, ``pissa`` (Hugging Face peft, r = 8 on query/value);
- ``pc-all`` (all principal-component nodes, no selection);
- ``ggm`` (exact Ω-step) and ``ggm-released`` (the released code's Ω-update);
- ``ggm-no-important`` (no important nodes: the penalty groups are every column's
  off-diagonal entries, the K best-linked nodes are kept);
- ``random`` and ``top-importance`` (the same node budget, no GGM);
- ``ggm+filter`` (``ggm`` with the spectral gradient filter, heat t = 0.5, β = 0.5).

Settings (``--settings``): ``full`` (the whole training split) and few-shot sizes K (K
training examples per class). Arguments after ``--`` go to every ``graphopt finetune`` call
(e.g. ``-- --data glue/SST-2 --max-length 64``).

Writes ``<output-dir>/study.json`` (every run's summary and the aggregate per setting and
variant), prints one table per setting, and with ``--render PATH`` a Markdown page with the
tables and two plots: test accuracy against trainable parameters (log scale, Pareto front
marked) and validation accuracy per epoch.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from _common import REPO_ROOT, mean_std

__all__ = ["VARIANTS", "compare_to", "main", "pareto_front", "run_dir", "run_jobs",
           "split_command", "summarise"]

#: Study variant -> ``graphopt finetune`` arguments.
VARIANTS: dict[str, list[str]] = {
    "full": ["--method", "full"],
    "bitfit": ["--method", "bitfit"],
    "lora": ["--method", "lora"],
    "pissa": ["--method", "pissa"],
    "pc-all": ["--method", "pc-all"],
    "ggm": ["--method", "ggm"],
    "ggm-released": ["--method", "ggm", "--omega-step", "released"],
    "ggm-no-important": ["--method", "ggm", "--ggm-groups", "all"],
    "random": ["--method", "random"],
    "top-importance": ["--method", "top-importance"],
    "ggm+filter": ["--method", "ggm", "--spectral-filter", "heat:t=0.5", "--spectral-mix", "0.5"],
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="benchmarks/study.py", description=__doc__.split("\n\n")[0],
                                epilog="arguments after -- are passed to graphopt finetune")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--settings", nargs="+", default=["full", "8", "32"],
                   help="'full' and/or few-shot sizes K per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--output-dir", type=Path, default=REPO_ROOT / "runs" / "study")
    p.add_argument("--render", type=Path, default=None,
                   help="write a Markdown results page here (plots next to it)")
    p.add_argument("--no-run", action="store_true", help="only summarise finished runs")
    p.add_argument("--no-progress", action="store_true")
    return p


def _check_settings(settings: Sequence[str]) -> None:
    for s in settings:
        if s != "full" and not (s.isdigit() and int(s) > 0):
            raise SystemExit(f"study.py: error: --settings takes 'full' or a "
                             f"positive few-shot size, got {s!r}")


def run_dir(root: Path, setting: str, variant: str, seed: int) -> Path:
    """Where one run writes: ``<root>/<setting>/<variant>/seed<seed>``."""
    return root / setting / variant / f"seed{seed}"


def _command(variant: str, setting: str, seed: int, out: Path, extra: Sequence[str]) -> list[str]:
    cmd = [sys.executable, "-m", "graphopt.peft.finetune", *VARIANTS[variant],
           "--seed", str(seed), "--output-dir", str(out), "--no-progress"]
    if setting != "full":
        cmd += ["--few-shot", setting]
    return cmd + list(extra)


def run_jobs(jobs: Sequence[tuple[dict[str, Any], Path, list[str]]], *, desc: str = "study",
             progress: bool = True) -> list[dict[str, Any]]:
    """Run each (labels, output folder, command) whose folder has no ``metrics.json`` yet,
    one subprocess at a time, its output in ``<folder>/log.txt``; returns the failures
    (labels + exit code + log path). Finished runs are skipped: a study resumes by rerunning."""
    from tqdm.auto import tqdm

    todo = [j for j in jobs if not (j[1] / "metrics.json").is_file()]
    failures = []
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc=desc, unit="run",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    for labels, out, cmd in todo:
        out.mkdir(parents=True, exist_ok=True)
        bar.set_postfix(labels)
        what = " ".join(str(v) for v in labels.values())
        t0 = time.perf_counter()
        with open(out / "log.txt", "w", encoding="utf-8") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
        if code != 0:
            failures.append({**labels, "exit_code": code, "log": str(out / "log.txt")})
            tqdm.write(f"run failed (exit {code}): {what}; see {out / 'log.txt'}",
                       file=sys.stderr)
        else:
            tqdm.write(f"done in {time.perf_counter() - t0:6.1f}s: {what}", file=sys.stderr)
        bar.update(1)
    bar.close()
    return failures


def _run_all(args: argparse.Namespace, extra: Sequence[str]) -> list[dict[str, Any]]:
    jobs = [({"setting": s, "variant": v, "seed": k}, run_dir(args.output_dir, s, v, k),
             _command(v, s, k, run_dir(args.output_dir, s, v, k), extra))
            for s in args.settings for v in args.variants for k in args.seeds]
    return run_jobs(jobs, progress=not args.no_progress)


def _run_record(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
        "trainable": metrics["trainable_parameters"]["final"],
        "trainable_initial": metrics["trainable_parameters"]["initial"],
        "total_parameters": metrics["trainable_parameters"]["total"],
        "wall_s": metrics["timings"]["total_s"],
        "peak_rss_mib": metrics["peak_memory"]["peak_rss_mib"],
        "cuda_mib": metrics["peak_memory"]["cuda_max_allocated_mib"],
        "validation_curve": [e["validation"]["accuracy"] for e in metrics["epochs"]],
    }


def summarise(root: Path, settings: Sequence[str], variants: Sequence[str],
              seeds: Sequence[int]) -> dict[str, Any]:
    """Per setting and variant: mean ± std over seeds of test accuracy and macro-F1, mean
    trainable parameters, wall time and peak memory, from the finished runs' metrics.json."""
    from graphopt.peft.report import read_json

    out: dict[str, Any] = {}
    for setting in settings:
        rows = {}
        for variant in variants:
            runs = {}
            for seed in seeds:
                path = run_dir(root, setting, variant, seed) / "metrics.json"
                if path.is_file():
                    runs[seed] = _run_record(read_json(path))
            if not runs:
                continue
            recs = list(runs.values())
            rows[variant] = {
                "n_runs": len(recs), "seeds": sorted(runs),
                "accuracy": mean_std([r["accuracy"] for r in recs]),
                "macro_f1": mean_std([r["macro_f1"] for r in recs]),
                "trainable": float(np.mean([r["trainable"] for r in recs])),
                "total_parameters": recs[0]["total_parameters"],
                "wall_s": mean_std([r["wall_s"] for r in recs]),
                "peak_rss_mib": float(np.mean([r["peak_rss_mib"] for r in recs])),
                "cuda_mib": (None if recs[0]["cuda_mib"] is None
                             else float(np.mean([r["cuda_mib"] for r in recs]))),
                "runs": runs,
            }
        out[setting] = rows
    return out


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated by another (fewer-or-equal parameters and
    higher-or-equal accuracy, one of them strictly): the accuracy/size Pareto front."""
    front = []
    for i, (n_i, a_i) in enumerate(points):
        dominated = any((n_j <= n_i and a_j >= a_i) and (n_j < n_i or a_j > a_i)
                        for j, (n_j, a_j) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def _fmt(ms: tuple[float, float]) -> str:
    m, s = ms
    return "n/a" if math.isnan(m) else f"{m:.4f} ± {s:.4f}"


def format_setting_table(rows: dict[str, Any]) -> str:
    """Markdown table of one setting (variants in study order)."""
    lines = ["| variant | runs | test accuracy | test macro-F1 | trainable params | trainable % "
             "| wall time (s) | peak RSS (MiB) |", "|---|---|---|---|---|---|---|---|"]
    for variant, r in rows.items():
        pct = 100.0 * r["trainable"] / max(r["total_parameters"], 1)
        lines.append(f"| {variant} | {r['n_runs']} | {_fmt(r['accuracy'])} | "
                     f"{_fmt(r['macro_f1'])} | {r['trainable']:,.0f} | {pct:.3f} | "
                     f"{r['wall_s'][0]:.1f} | {r['peak_rss_mib']:.0f} |")
    return "\n".join(lines)


def _setting_title(setting: str) -> str:
    return "full training split" if setting == "full" else f"few-shot, {setting} per class"


_MARKERS = "osD^vP*Xph<>"


def _variant_styles(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One colour and marker per variant, the same in every panel and both plots (the
    default colour cycle has 10 entries, fewer than the study's variants)."""
    import matplotlib

    names = list(dict.fromkeys(v for rows in summary.values() for v in rows))
    cmap = matplotlib.colormaps["tab20"]
    return {v: {"color": cmap(i % 20), "marker": _MARKERS[i % len(_MARKERS)]}
            for i, v in enumerate(names)}


def _dodge(trainable: list[float]) -> list[float]:
    """Spread variants with the same parameter count over ±0.06 decades so that their error
    bars do not hide each other (the axis is logarithmic; the table has the exact counts)."""
    out = list(trainable)
    for n in set(trainable):
        same = [i for i, t in enumerate(trainable) if t == n]
        for k, i in enumerate(same):
            out[i] = n * 10.0 ** (0.12 * ((k + 0.5) / len(same) - 0.5)) if len(same) > 1 else n
    return out


def _panels(summary: dict[str, Any]):
    """A figure with one panel per setting that has runs (room on the right for a shared
    legend), the (axes, setting) pairs, and the variants' styles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = [s for s, rows in summary.items() if rows]
    fig, axes = plt.subplots(1, len(settings), figsize=(5.5 * len(settings) + 2.0, 4.2),
                             squeeze=False)
    return fig, list(zip(axes[0], settings)), _variant_styles(summary)


def _save_with_legend(fig, first_ax, path: Path) -> None:
    """One legend for all panels (taken from the first), at the right; write and close."""
    import matplotlib.pyplot as plt

    handles, labels = first_ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8)
    fig.tight_layout(rect=(0.0, 0.0, 1.0 - 1.9 / fig.get_figwidth(), 1.0))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_vs_parameters(summary: dict[str, Any], path: Path) -> None:
    """Test accuracy (mean ± std) against trainable parameters, log x, Pareto front joined."""
    fig, panels, styles = _panels(summary)
    for ax, setting in panels:
        rows = summary[setting]
        names = list(rows)
        pts = [(rows[v]["trainable"], rows[v]["accuracy"][0]) for v in names]
        xs = _dodge([n for n, _ in pts])
        for x, (_, a), v in zip(xs, pts, names):
            ax.errorbar(x, a, yerr=rows[v]["accuracy"][1], fmt=styles[v]["marker"],
                        color=styles[v]["color"], capsize=3, label=v)
        front = sorted((pts[i] for i in pareto_front(pts)), key=lambda p: p[0])
        ax.plot([p[0] for p in front], [p[1] for p in front], "k--", lw=1, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters (log scale)")
        ax.set_ylabel("test accuracy")
        ax.set_title(_setting_title(setting))
        ax.grid(alpha=0.3)
    _save_with_legend(fig, panels[0][0], path)


def plot_validation_curves(summary: dict[str, Any], path: Path) -> None:
    """Validation accuracy after each epoch, mean over seeds, one panel per setting."""
    from matplotlib.ticker import MaxNLocator

    fig, panels, styles = _panels(summary)
    for ax, setting in panels:
        for variant, r in summary[setting].items():
            curves = [run["validation_curve"] for run in r["runs"].values()]
            length = min(len(c) for c in curves)
            mean = np.mean([c[:length] for c in curves], axis=0)
            ax.plot(range(1, length + 1), mean, label=variant, **styles[variant])
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (mean over seeds)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(_setting_title(setting))
        ax.grid(alpha=0.3)
    _save_with_legend(fig, panels[0][0], path)


def compare_to(rows: dict[str, Any], reference: str = "ggm") -> list[dict[str, Any]]:
    """Win / tie / lose of ``reference`` against every other variant on test accuracy.

    d = mean_ref − mean_other, se = sqrt(s_ref²/n_ref + s_other²/n_other) (Welch); a win
    when d > 2·se, a loss when d < −2·se, otherwise a tie (the seeds cannot tell them apart).
    With a single run on either side se has no meaning: then only d is reported ("n/a").
    """
    if reference not in rows:
        return []
    ref = rows[reference]
    (m_r, s_r), n_r = ref["accuracy"], ref["n_runs"]
    out = []
    for name, row in rows.items():
        if name == reference:
            continue
        (m_o, s_o), n_o = row["accuracy"], row["n_runs"]
        d = m_r - m_o
        if min(n_r, n_o) < 2:
            verdict, se = "n/a", math.nan
        else:
            se = math.sqrt(s_r ** 2 / n_r + s_o ** 2 / n_o)
            verdict = "win" if d > 2 * se else "lose" if d < -2 * se else "tie"
        out.append({"variant": name, "difference": d, "se": se, "verdict": verdict,
                    "trainable_ratio": ref["trainable"] / row["trainable"]})
    return out


def format_verdicts(rows: dict[str, Any], reference: str = "ggm") -> str:
    """One Markdown bullet per comparison of ``compare_to``, with the numbers."""
    comparisons = compare_to(rows, reference)
    groups = {v: [f"`{c['variant']}`" for c in comparisons if c["verdict"] == v]
              for v in ("win", "tie", "lose", "n/a")}
    said = [f"{label} {', '.join(groups[v])}" for v, label in
            (("win", "beats"), ("tie", "ties with"), ("lose", "loses to"),
             ("n/a", "cannot yet be compared (one run) with")) if groups[v]]
    lines = [f"In short, `{reference}` " + "; ".join(said) + ".", ""] if said else []
    for c in comparisons:
        se = "" if math.isnan(c["se"]) else f", 2·se = {2 * c['se']:.4f}"
        lines.append(f"- vs `{c['variant']}`: **{c['verdict']}** — accuracy difference "
                     f"{c['difference']:+.4f}{se}; `{reference}` trains "
                     f"{c['trainable_ratio']:.3g}x its parameters")
    return "\n".join(lines)


def render_markdown(summary: dict[str, Any], path: Path, command: str,
                    missing: Sequence[str] = ()) -> None:
    """A results page: one table per setting and the two plots (written next to ``path``).

    ``missing`` names the planned runs without a ``metrics.json``; the page says the study is
    incomplete and lists them, so a partial page cannot pass for the finished study."""
    from graphopt.peft.report import write_text_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    stem = path.with_suffix("")
    acc_png = Path(f"{stem}_accuracy_vs_parameters.png")
    curve_png = Path(f"{stem}_validation_curves.png")
    plot_accuracy_vs_parameters(summary, acc_png)
    plot_validation_curves(summary, curve_png)
    parts = [f"# Study results\n\nGenerated by `{command}`; test metrics are mean ± std over "
             "seeds (sample standard deviation). Wall time and peak memory are per run on "
             "the machine that ran the study; when other work shared that machine the wall "
             "times are inflated, so compare step costs with `python benchmarks/finetune_cost.py` "
             "(docs/finetune.md), which times the methods side by side.\n"]
    parts.append("The node budget is studied on its own, with seeds paired, in the "
                 "[budget sweep](budget_sweep.md) (`python benchmarks/budget_sweep.py`).\n")
    if missing:
        parts.append(f"**Incomplete study: {len(missing)} planned runs have not finished** "
                     f"(resume with `python benchmarks/study.py`): {', '.join(missing)}.\n")
    for setting, rows in summary.items():
        if rows:
            parts.append(f"## {_setting_title(setting)}\n\n{format_setting_table(rows)}\n")
            verdicts = format_verdicts(rows)
            if verdicts:
                parts.append("`ggm` against each variant (test accuracy; win / lose = the "
                             "difference exceeds twice its Welch standard error over seeds):"
                             f"\n\n{verdicts}\n")
    parts.append(f"![accuracy vs trainable parameters]({acc_png.name})\n\n"
                 "Test accuracy, mean ± std over seeds, against trainable parameters; the "
                 "dashed line joins the Pareto front. Variants with the same parameter count "
                 "are spread over ±0.06 decades so that their error bars stay visible.\n\n"
                 f"![validation curves]({curve_png.name})\n")
    write_text_atomic(path, "\n".join(parts))


def split_command(script: str, argv: Sequence[str] | None) -> tuple[str, list[str], list[str]]:
    """(the command line as typed, the script's own arguments, the arguments after ``--``
    that go to every ``graphopt finetune`` run)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = " ".join([f"python benchmarks/{script}", *argv])
    if "--" not in argv:
        return command, argv, []
    cut = argv.index("--")
    return command, argv[:cut], argv[cut + 1:]


def main(argv: Sequence[str] | None = None) -> int:
    """Run (or resume) the study, print the tables, write study.json (and the page)."""
    command, argv, extra = split_command("study.py", argv)
    args = _parser().parse_args(argv)
    _check_settings(args.settings)
    from graphopt.peft.report import write_json_atomic

    failures = [] if args.no_run else _run_all(args, extra)
    summary = summarise(args.output_dir, args.settings, args.variants, args.seeds)
    for setting, rows in summary.items():
        if rows:
            print(f"\n{_setting_title(setting)}\n{format_setting_table(rows)}")
    write_json_atomic(args.output_dir / "study.json",
                      {"variants": {v: VARIANTS[v] for v in args.variants},
                       "settings": args.settings, "seeds": args.seeds, "finetune_args": extra,
                       "summary": summary, "failures": failures})
    if args.render is not None:
        plan = [(s, v, k) for s in args.settings for v in args.variants for k in args.seeds]
        missing = [f"{s}/{v}/seed{k}" for s, v, k in plan
                   if not (run_dir(args.output_dir, s, v, k) / "metrics.json").is_file()]
        render_markdown(summary, args.render, command, missing)
    print(f"wrote {args.output_dir / 'study.json'}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
