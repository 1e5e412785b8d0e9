"""Malformed ``--data`` files through ``graphopt finetune``: exit status 2 and one clear line
naming the file (and the line, where there is one), before any model is loaded.

``--model`` points at a directory whose ``config.json`` is ``{}``: loading it would fail with
a transformers error, so an error about the data proves the data was checked first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from graphopt.cli import main as cli_main
from graphopt.peft.data import MAX_FIELD_CHARS


@pytest.fixture(scope="module")
def no_model(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("not-a-model")
    (d / "config.json").write_text("{}")
    return d


def _finetune(capsys, model: Path, data: Path, *extra: str) -> tuple[int, str]:
    code = cli_main(["finetune", "--model", str(model), "--data", str(data), "--threads", "1",
                     "--no-progress", "--output-dir", str(data.parent / "out"), *extra])
    return code, capsys.readouterr().err


def _good_rows(n: int = 12) -> list[str]:
    return [f"word{i} text,{'ab'[i % 2]}" for i in range(n)]


LATIN1 = "caf\xe9 \xe1rbol".encode("latin-1")  # 0xe9 / 0xe1: not UTF-8
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10"

# name -> (file name, content, extra CLI args, expected substrings of the error)
CASES: dict[str, tuple[str, bytes, tuple[str, ...], tuple[str, ...]]] = {
    "csv-truncated-quote": (
        "d.csv", ("text,label\n" + "\n".join(_good_rows(3)) + '\n"an open quote,a\nmore,b\n')
        .encode(), (), ("line 5", "never closed")),
    "csv-stray-quote": ("d.csv", b'text,label\n"ab"c,a\nx,b\n', (), ("line 2", "malformed CSV")),
    "csv-empty": ("d.csv", b"", (), ("is empty",)),
    "csv-header-only": ("d.csv", b"text,label\n", (), ("header but no rows",)),
    "csv-binary": ("d.csv", PNG, (), ("line 3", "binary")),
    "csv-not-utf8": ("d.csv", b"text,label\nok,a\n" + LATIN1 + b",b\n", (),
                     ("line 3, byte 4", "not UTF-8", "0xe9")),
    "csv-utf16": ("d.csv", "text,label\nx,a\n".encode("utf-16"), (), ("UTF-16",)),
    "csv-one-class": ("d.csv", ("text,label\n" + "\n".join(f"t{i},a" for i in range(9)))
                      .encode(), (), ("at least 2 classes", "'label'")),
    "csv-missing-label-column": ("d.csv", b"text,stars\nx,1\ny,2\n", (),
                                 ("cannot tell which column holds the labels", "stars")),
    "csv-missing-named-column": ("d.csv", b"text,label\nx,a\ny,b\n",
                                 ("--text-column", "body"), ("--text-column 'body'",)),
    "csv-ragged-row": ("d.csv", ("text,label\n" + "\n".join(_good_rows(2))
                                 + "\nan unquoted, comma,a\n").encode(), (),
                       ("line 4", "3 fields", "header has 2", "quoted")),
    "csv-missing-value": ("d.csv", b"text,label\nx,a\n,b\nz,a\n", (),
                          ("line 3", "row 2 has no value", "'text'")),
    "csv-duplicate-header": ("d.csv", b"text,label,text\nx,a,y\n", (),
                             ("line 1", "duplicate column names ['text']",)),
    "csv-huge-line": ("d.csv", b"text,label\nx,a\n" + b"y" * (MAX_FIELD_CHARS + 10) + b",b\n",
                      (), ("line 3", "longer than")),
    "tsv-not-utf8": ("d.tsv", b"sentence\tlabel\n" + LATIN1 + b"\t1\n", (),
                     ("line 2, byte 4", "not UTF-8")),
    "tsv-ragged-row": ("d.tsv", b"sentence\tlabel\nx\t1\ny\t0\textra\n", (),
                       ("line 3", "3 fields", "tab")),
    "tsv-empty": ("d.tsv", b"", (), ("is empty",)),
    "tsv-binary": ("d.tsv", b"sentence\tlabel\n\x00\x01\x02\t1\n", (), ("line 2", "binary")),
    "tsv-one-class": ("d.tsv", b"sentence\tlabel\n" + b"".join(b"s%d\t1\n" % i for i in range(6)),
                      (), ("at least 2 classes",)),
    "tsv-missing-columns": ("d.tsv", b"a\tb\nx\t1\n", (), ("cannot tell which column holds the text",
                                                            "['a', 'b']")),
    "tsv-huge-line": ("d.tsv", b"sentence\tlabel\n" + b"w" * (MAX_FIELD_CHARS + 1) + b"\t1\n",
                      (), ("line 2", "longer than")),
    "jsonl-truncated": ("d.jsonl", b'{"text": "x", "label": "a"}\n{"text": "y", "lab\n', (),
                        ("line 2", "invalid JSON")),
    "jsonl-huge-truncated-line": ("d.jsonl", b'{"text": "x", "label": "a"}\n{"text": "'
                                  + b"z" * (MAX_FIELD_CHARS + 1) + b"\n", (),
                                  ("line 2", "invalid JSON")),
    "jsonl-not-object": ("d.jsonl", b'{"text": "x", "label": "a"}\n\n["y", "b"]\n', (),
                         ("line 3", "must be an object", "list")),
    "jsonl-empty": ("d.jsonl", b"\n\n", (), ("is empty",)),
    "jsonl-binary": ("d.jsonl", PNG, (), ("binary",)),
    "jsonl-not-utf8": ("d.jsonl", b'{"text": "x", "label": "a"}\n{"text": "' + LATIN1
                       + b'", "label": "b"}\n', (), ("line 2, byte 14", "not UTF-8")),
    "jsonl-one-class": ("d.jsonl", b"".join(b'{"text": "t%d", "label": 1}\n' % i for i in range(5)),
                        (), ("at least 2 classes",)),
    "jsonl-missing-key": ("d.jsonl", b'{"text": "x", "label": "a"}\n{"text": "y"}\n'
                          b'{"text": "z", "label": "b"}\n', (),
                          ("line 2", "row 2 has no value", "'label'")),
    "json-list-invalid": ("d.json", b'[{"text": "x", "label": "a"},\n {"text": }]\n', (),
                          ("line 2, column 11", "invalid JSON")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_malformed_data_file_exits_2_naming_the_file(case, no_model, tmp_path, capsys):
    name, content, extra, expected = CASES[case]
    data = tmp_path / name
    data.write_bytes(content)
    code, err = _finetune(capsys, no_model, data, *extra)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line: no traceback, nothing printed before the error
    assert lines[0].startswith("graphopt finetune: error: ")
    assert str(data) in lines[0]
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_a_bad_file_in_a_data_directory_is_named(no_model, tmp_path, capsys):
    d = tmp_path / "glue"
    d.mkdir()
    (d / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(8)))
    (d / "dev.tsv").write_bytes(b"sentence\tlabel\ngood\t1\n" + LATIN1 + b"\t0\n")
    code, err = _finetune(capsys, no_model, d)
    assert code == 2
    assert str(d / "dev.tsv") in err and "line 3" in err and "not UTF-8" in err


def test_good_data_reaches_the_model_which_then_fails(no_model, tmp_path, capsys):
    """The fixture's model is really unloadable: the data checks above ran before it."""
    data = tmp_path / "ok.csv"
    data.write_text("text,label\n" + "\n".join(_good_rows(20)) + "\n")
    code, err = _finetune(capsys, no_model, data)
    assert code != 0
    assert str(data) not in err


def test_byte_order_mark_and_long_fields_under_the_limit_are_read(tmp_path):
    from graphopt.peft.data import read_table

    p = tmp_path / "bom.csv"
    p.write_bytes("text,label\n".encode("utf-8-sig") + b"x" * 200_000 + b",a\n")
    rows = read_table(p)
    assert list(rows[0]) == ["text", "label"] and len(rows[0]["text"]) == 200_000
