"""Results of ``graphopt finetune``: the printed table and the atomic ``metrics.json``."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to a temp file next to ``path``, then ``os.replace`` it into place, so
    a crash never leaves a truncated file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (see :func:`write_text_atomic`)."""
    write_text_atomic(path, json.dumps(to_jsonable(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; a broken file is a ValueError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
