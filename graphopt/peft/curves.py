"""``curves.png``: the training curves of one fine-tune, for every method.

Top panel: the task loss of every optimiser step (and, past 50 steps, its running mean over
a window of ~2% of the steps). Bottom panel: validation accuracy and macro-F1 at the end of
each epoch, placed at the epoch's last global step. For the GGM family the warm-up, scoring
and trained phases (the ``step_phases`` the loop recorded) are shaded in both panels, so
the selection step is where the "trained" band starts. Drawn with matplotlib's Agg canvas
(no display needed) and written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from graphopt._atomic import atomic_path

__all__ = ["plot_curves", "PHASE_COLOURS"]

#: Shading of the allocator's phases (other phase labels are not shaded).
PHASE_COLOURS: dict[str, str] = {"warmup": "#bbbbbb", "scoring": "#f5b041", "trained": "#82e0aa"}


def _phase_runs(phases: Sequence[str]) -> list[tuple[str, int, int]]:
    """Maximal runs (phase, first step, last step) over steps numbered from 1."""
    runs: list[tuple[str, int, int]] = []
    for step, phase in enumerate(phases, start=1):
        if runs and runs[-1][0] == phase:
            runs[-1] = (phase, runs[-1][1], step)
        else:
            runs.append((phase, step, step))
    return runs


def plot_curves(step_losses: Sequence[float], epochs: Sequence[Mapping[str, Any]],
                path: str | os.PathLike[str], *, phases: Sequence[str] | None = None,
                title: str | None = None) -> Path:
    """Draw the loss per step and validation accuracy / macro-F1 per epoch into ``path`` (PNG).

    ``epochs`` are the loop's epoch records (``global_step`` and ``validation`` with
    ``accuracy`` and ``macro_f1``); ``phases`` one label per step (shaded when they are the
    allocator's warm-up / scoring / trained). Returns ``path``.
    """
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    losses = np.asarray(list(step_losses), dtype=float)
    if phases is not None and len(phases) != len(losses):
        raise ValueError(f"phases has {len(phases)} entries, step_losses {len(losses)}")
    steps = np.arange(1, len(losses) + 1)
    fig = Figure(figsize=(7.0, 5.2))
    ax_loss, ax_val = fig.subplots(2, 1, sharex=True)
    runs = _phase_runs(phases) if phases is not None else []
    shaded = [r for r in runs if r[0] in PHASE_COLOURS]
    for ax in (ax_loss, ax_val):
        for phase, first, last in shaded:
            ax.axvspan(first - 0.5, last + 0.5, color=PHASE_COLOURS[phase], alpha=0.35, lw=0)
    ax_loss.plot(steps, losses, lw=0.8, color="#1f4e79", label="loss per step")
    if len(losses) > 50:
        w = max(2, len(losses) // 50)
        mean = np.convolve(losses, np.ones(w) / w, mode="valid")
        ax_loss.plot(steps[w - 1:], mean, lw=1.6, color="#c0392b", label=f"mean of {w} steps")
    ax_loss.set_ylabel("training loss")
    handles, _ = ax_loss.get_legend_handles_labels()
    seen = list(dict.fromkeys(r[0] for r in shaded))
    handles += [Patch(color=PHASE_COLOURS[p], alpha=0.5, label=p) for p in seen]
    ax_loss.legend(handles=handles, fontsize=8, loc="upper right")
    x = [e["global_step"] for e in epochs]
    for key, label, marker in (("accuracy", "accuracy", "o"), ("macro_f1", "macro-F1", "s")):
        ax_val.plot(x, [e["validation"][key] for e in epochs], marker=marker, lw=1.2,
                    label=f"validation {label}")
    ax_val.set_ylim(-0.02, 1.02)
    ax_val.set_xlabel("optimiser step (validation at the end of each epoch)")
    ax_val.set_ylabel("validation")
    ax_val.legend(fontsize=8, loc="best")
    if title:
        ax_loss.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path
