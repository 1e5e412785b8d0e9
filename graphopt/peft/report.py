"""Results of ``graphopt finetune``: the printed table and the atomic ``metrics.json``."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from graphopt._atomic import atomic_write_json, atomic_write_text

__all__ = ["TABLE_COLUMNS", "format_table", "result_row", "write_text_atomic", "write_json_atomic",
           "read_json", "to_jsonable"]

#: (header, row key, format) of the results table.
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("method", "method", "{}"),
    ("test acc", "accuracy", "{:.4f}"),
    ("test macro-F1", "macro_f1", "{:.4f}"),
    ("trainable params", "trainable", "{:,}"),
    ("trainable %", "trainable_pct", "{:.3f}"),
    ("wall time (s)", "wall_s", "{:.1f}"),
    ("peak RSS (MiB)", "peak_rss_mib", "{:.0f}"),
    ("peak CUDA (MiB)", "cuda_mib", "{:.0f}"),
)


def result_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The table row of one run's ``metrics.json`` content."""
    params = metrics["trainable_parameters"]
    mem = metrics["peak_memory"]
    return {
        "method": metrics["method"],
        "accuracy": metrics["test"]["accuracy"],
        "macro_f1": metrics["test"]["macro_f1"],
        "trainable": params["final"],
        "trainable_pct": 100.0 * params["final"] / max(params["total"], 1),
        "wall_s": metrics["timings"]["total_s"],
        "peak_rss_mib": mem["peak_rss_mib"],
        "cuda_mib": mem["cuda_max_allocated_mib"],
    }


def format_table(rows: Sequence[Mapping[str, Any]],
                 columns: Sequence[tuple[str, str, str]] = TABLE_COLUMNS) -> str:
    """A Markdown table (renders in docs, reads fine in a terminal); None prints as "-"."""
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        cells.append(["-" if row.get(k) is None else fmt.format(row[k]) for _, k, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def to_jsonable(value: Any) -> Any:
    """NumPy scalars/arrays, paths, tuples and non-finite floats made JSON-safe."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy / torch
        return to_jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


#: Write text to a file atomically (temp file in the same directory, then ``os.replace``).
write_text_atomic = atomic_write_text


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` made JSON-safe (:func:`to_jsonable`) as indented JSON, atomically."""
    atomic_write_json(path, to_jsonable(obj), indent=2)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; a broken file is a ValueError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
