"""Data files: reading, tokenizing, and errors that name the row and the fix."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mechcheck.data import load_rows, tokenize_rows
from mechcheck.errors import DataError
from tests.conftest import word_rows


def _tok(tiny_loaded: Any) -> Any:
    return tiny_loaded("gpt2").tokenizer


def test_jsonl_and_csv_read_the_same_rows(tmp_path: Path, tiny_loaded: Any) -> None:
    rows = word_rows(5)
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    flat = [{**r, "positions": json.dumps(r["positions"])} for r in rows]
    import pandas as pd

    pd.DataFrame(flat).to_csv(tmp_path / "d.csv", index=False)
    a = tokenize_rows(load_rows(tmp_path / "d.jsonl"), _tok(tiny_loaded))
    b = tokenize_rows(load_rows(tmp_path / "d.csv"), _tok(tiny_loaded))
    assert a.prompts == b.prompts and a.corrupts == b.corrupts
    assert a.positions == b.positions
    assert len(load_rows(tmp_path / "d.jsonl", n=2)) == 2


@pytest.mark.parametrize("change, message", [
    ({"answer": "Mary John"}, r"row 1: answer 'Mary John' is 2 tokens"),
    ({"wrong": "the a"}, r"row 1: wrong 'the a' is 2 tokens"),
    ({"corrupt": "the a"}, r"row 1: the corrupt prompt has 3 tokens but the prompt has"),
    ({"positions": {"S2": 40}}, r"row 1: position 'S2' = 40 is outside"),
    ({"positions": {"S2": "x"}}, r"row 1: position 'S2' is 'x', not an integer"),
])
def test_bad_rows_name_the_row(change: dict, message: str, tiny_loaded: Any) -> None:
    rows = word_rows(3, lengths=(6,))
    rows[1].update(change)
    with pytest.raises(DataError, match=message) as info:
        tokenize_rows(rows, _tok(tiny_loaded), source="d.jsonl")
    assert info.value.hint


def test_missing_columns_and_files(tmp_path: Path) -> None:
    (tmp_path / "d.jsonl").write_text(json.dumps({"prompt": "a b"}))
    with pytest.raises(DataError, match="no column 'answer'"):
        load_rows(tmp_path / "d.jsonl")
    with pytest.raises(DataError, match="no data file"):
        load_rows(tmp_path / "missing.jsonl")
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(DataError, match="unknown data format"):
        load_rows(tmp_path / "d.txt")


def test_rows_are_grouped_by_token_count(tiny_loaded: Any) -> None:
    ds = tokenize_rows(word_rows(10, lengths=(4, 6)), _tok(tiny_loaded))
    assert sorted(i for g in ds.groups for i in g.tolist()) == list(range(10))
    for group in ds.groups:
        assert len({len(ds.prompts[i]) for i in group}) == 1
