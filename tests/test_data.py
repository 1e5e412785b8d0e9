"""Data loading for ``graphopt finetune``: BBC News, local tables, seeded stratified splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import accuracy_score, f1_score

from graphopt.peft.data import (
    TextDataset,
    detect_columns,
    few_shot_indices,
    load_bbc_news,
    load_splits,
    read_table,
    stratified_split,
)
from graphopt.peft.train import classification_metrics

labels_strategy = st.lists(st.integers(0, 4), min_size=10, max_size=200)


@settings(max_examples=25, deadline=None)
@given(labels=labels_strategy, seed=st.integers(0, 2**31 - 1))
def test_stratified_split_partitions_and_keeps_class_proportions(labels, seed):
    y = np.array(labels)
    parts = stratified_split(y, (0.7, 0.1, 0.2), seed)
    allidx = np.concatenate(parts)
    # a partition of range(n)
    assert np.array_equal(np.sort(allidx), np.arange(y.size))
    # per class, each part holds round(n_c * cumulative fraction) differences
    for c in np.unique(y):
        n_c = int(np.sum(y == c))
        cuts = np.round(np.array([0.7, 0.8]) * n_c).astype(int)
        expected = np.diff(np.concatenate([[0], cuts, [n_c]]))
        got = [int(np.sum(y[p] == c)) for p in parts]
        assert got == expected.tolist()
    # deterministic for a seed
    again = stratified_split(y, (0.7, 0.1, 0.2), seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_stratified_split_depends_on_seed_and_rejects_bad_fractions():
    y = np.repeat(np.arange(3), 50)
    a = stratified_split(y, seed=0)[0]
    b = stratified_split(y, seed=1)[0]
    assert not np.array_equal(a, b)
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(y, (0.5, 0.6))
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(y, (1.0,))
    with pytest.raises(ValueError, match="labels"):
        stratified_split([], (0.5, 0.5))


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 5), seed=st.integers(0, 1000))
def test_few_shot_takes_exactly_k_per_class(k, seed):
    y = np.repeat(np.arange(4), [5, 7, 9, 6])
    idx = few_shot_indices(y, k, seed)
    assert np.bincount(y[idx], minlength=4).tolist() == [k] * 4
    assert len(set(idx.tolist())) == idx.size
    assert np.array_equal(idx, few_shot_indices(y, k, seed))


def test_few_shot_errors():
    y = np.repeat(np.arange(2), [3, 10])
    with pytest.raises(ValueError, match="class 0 has only 3"):
        few_shot_indices(y, 4)
    with pytest.raises(ValueError, match="positive"):
        few_shot_indices(y, 0)


@pytest.mark.parametrize("columns,expected", [
    (["sentence", "label"], ("sentence", None, "label")),
    (["idx", "sentence1", "sentence2", "label"], ("sentence1", "sentence2", "label")),
    (["question", "sentence", "label"], ("question", "sentence", "label")),
    (["premise", "hypothesis", "label"], ("premise", "hypothesis", "label")),
    (["question1", "question2", "is_duplicate", "label"], ("question1", "question2", "label")),
    (["text", "category"], ("text", None, "category")),
])
def test_detect_columns_glue_conventions(columns, expected):
    assert detect_columns(columns) == expected


def test_detect_columns_explicit_and_errors():
    cols = ["body", "title", "stars"]
    assert detect_columns(cols, text_column="title", text_pair_column="body",
                          label_column="stars") == ("title", "body", "stars")
    with pytest.raises(ValueError, match="--label-column"):
        detect_columns(["body"], text_column="body")
    with pytest.raises(ValueError, match="--text-column 'nope' is not a column"):
        detect_columns(cols, text_column="nope", label_column="stars")
    with pytest.raises(ValueError, match="cannot tell which column holds the text"):
        detect_columns(["foo", "label"])
    with pytest.raises(ValueError, match="needs --text-column"):
        detect_columns(cols, text_pair_column="body")


def _write_csv(path, rows, header=("text", "label"), sep=","):
    lines = [sep.join(header)] + [sep.join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_read_table_formats_and_errors(tmp_path):
    _write_csv(tmp_path / "a.csv", [("good movie", "pos"), ("bad film", "neg")])
    _write_csv(tmp_path / "a.tsv", [('a "quoted word', 1), ("plain", 0)], sep="\t")
    (tmp_path / "a.jsonl").write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n')
    assert read_table(tmp_path / "a.csv")[1] == {"text": "bad film", "label": "neg"}
    assert read_table(tmp_path / "a.tsv")[0]["text"] == 'a "quoted word'
    assert [r["label"] for r in read_table(tmp_path / "a.jsonl")] == [1, 0]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "a.parquet").write_text("x")
    with pytest.raises(ValueError, match="unsupported format"):
        read_table(tmp_path / "a.parquet")
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2: invalid JSON"):
        read_table(tmp_path / "bad.jsonl")
    (tmp_path / "empty.csv").write_text("text,label\n")
    with pytest.raises(ValueError, match="no rows"):
        read_table(tmp_path / "empty.csv")


def test_load_splits_single_file_string_labels(tmp_path):
    rows = [(f"doc {i}", ["b", "a", "c"][i % 3]) for i in range(60)]
    _write_csv(tmp_path / "d.csv", rows)
    s = load_splits(tmp_path / "d.csv", seed=3)
    assert s.label_names == ["a", "b", "c"]  # sorted
    assert (len(s.train), len(s.validation), len(s.test)) == (42, 6, 12)
    for d in (s.train, s.validation, s.test):
        for text, lab in zip(d.texts, d.labels):
            i = int(text.split()[1])
            assert s.label_names[lab] == ["b", "a", "c"][i % 3]
    t = load_splits(tmp_path / "d.csv", seed=3)
    assert t.test.texts == s.test.texts
    few = load_splits(tmp_path / "d.csv", seed=3, few_shot=2)
    assert np.bincount(few.train.labels).tolist() == [2, 2, 2]
    assert few.test.texts == s.test.texts


def test_load_splits_numeric_labels_sort_numerically(tmp_path):
    rows = [(f"d{i}", [2, 10, 1][i % 3]) for i in range(30)]
    _write_csv(tmp_path / "d.csv", rows)
    assert load_splits(tmp_path / "d.csv").label_names == ["1", "2", "10"]


def test_load_splits_directory_glue_style(tmp_path):
    header = ("sentence1", "sentence2", "label")
    _write_csv(tmp_path / "train.tsv", [(f"a{i}", f"b{i}", i % 2) for i in range(40)], header, "\t")
    _write_csv(tmp_path / "dev.tsv", [(f"c{i}", f"d{i}", i % 2) for i in range(10)], header, "\t")
    s = load_splits(tmp_path)
    # no test file: dev becomes the test split, validation is carved from train (1/8)
    assert len(s.test) == 10 and s.test.text_pairs[0] == "d0"
    # per class (20 each) train keeps round(20 * 7/8) = 18 (numpy rounds half to even)
    assert (len(s.train), len(s.validation)) == (36, 4)
    assert s.info["columns"] == {"text": "sentence1", "text_pair": "sentence2", "label": "label"}
    assert s.info["validation_from_train"] is True
    _write_csv(tmp_path / "test.tsv", [(f"e{i}", f"f{i}", i % 2) for i in range(8)], header, "\t")
    s = load_splits(tmp_path)
    assert (len(s.train), len(s.validation), len(s.test)) == (40, 10, 8)


def test_load_splits_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_splits(tmp_path / "nope.csv")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="no train file"):
        load_splits(tmp_path / "empty_dir")
    d = tmp_path / "only_train"
    d.mkdir()
    _write_csv(d / "train.csv", [("x", 0), ("y", 1)])
    with pytest.raises(FileNotFoundError, match="no validation/dev or test"):
        load_splits(d)
    _write_csv(tmp_path / "one.csv", [(f"x{i}", 0) for i in range(10)])
    with pytest.raises(ValueError, match="at least 2 classes"):
        load_splits(tmp_path / "one.csv")
    _write_csv(tmp_path / "gap.csv", [("x", 0), ("", 1), ("z", 1)])
    with pytest.raises(ValueError, match="row 2 has no value"):
        load_splits(tmp_path / "gap.csv")
    _write_csv(tmp_path / "cols.csv", [("x", 0), ("y", 1)], header=("txt", "label"))
    with pytest.raises(ValueError, match="cannot tell which column holds the text"):
        load_splits(tmp_path / "cols.csv")
    with pytest.raises(ValueError, match="--label-column 'lab'"):
        load_splits(tmp_path / "cols.csv", text_column="txt", label_column="lab")


def test_text_dataset_validates_lengths():
    with pytest.raises(ValueError, match="one entry per text"):
        TextDataset(["a", "b"], np.array([0]))
    with pytest.raises(ValueError, match="text_pairs"):
        TextDataset(["a"], np.array([0]), ["x", "y"])


def test_bbc_news_is_the_full_corpus_and_split_is_stratified():
    data, names = load_bbc_news()
    assert len(data) == 2225
    assert names == ["business", "entertainment", "politics", "sports", "tech"]
    assert np.bincount(data.labels).tolist() == [510, 386, 417, 511, 401]
    assert all(t for t in data.texts)
    s = load_splits(seed=0)
    sizes = s.summary()["sizes"]
    assert sum(sizes.values()) == 2225
    assert json.loads(json.dumps(s.summary()))["label_names"] == names
    train_frac = np.bincount(s.train.labels) / np.bincount(data.labels)
    assert np.all(np.abs(train_frac - 0.7) < 0.01)
    # the split is by document index: every document lands in exactly one split
    assert sorted(s.train.texts + s.validation.texts + s.test.texts) == sorted(data.texts)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=60))
def test_classification_metrics_match_sklearn(pairs):
    y = np.array([a for a, _ in pairs])
    p = np.array([b for _, b in pairs])
    m = classification_metrics(y, p, 4)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p))
    ref = f1_score(y, p, average="macro", labels=list(range(4)), zero_division=0)
    assert m["macro_f1"] == pytest.approx(ref)
