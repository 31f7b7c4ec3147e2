"""Data files: reading, tokenizing, and errors that name the row and the fix."""

from __future__ import annotations

import json
import re
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


# ---------------------------------------------------------------------------
# Data files: every missing cell and malformed line is named by file, row, line, column


def _jsonl(tmp_path: Path, *lines: str, name: str = "d.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"prompt": "the cat", "answer": "dog"})


@pytest.mark.parametrize("bad, column, state", [
    ({"answer": "dog"}, "prompt", "missing"),
    ({"prompt": None, "answer": "dog"}, "prompt", "null"),
    ({"prompt": "", "answer": "dog"}, "prompt", "empty"),
    ({"prompt": "   ", "answer": "dog"}, "prompt", "empty"),
    ({"prompt": "the cat"}, "answer", "missing"),
    ({"prompt": "the cat", "answer": None}, "answer", "null"),
    ({"prompt": "the cat", "answer": ""}, "answer", "empty"),
])
def test_missing_null_or_empty_prompt_or_answer_in_jsonl(tmp_path: Path, bad: dict,
                                                         column: str, state: str) -> None:
    # A blank line: the row (counted from 0) and the line differ by two.
    path = _jsonl(tmp_path, GOOD, "", GOOD, json.dumps(bad), GOOD)
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert info.value.message == f"d.jsonl row 2 (line 4): the {column} is {state}"
    assert info.value.key == "data"
    assert info.value.hint == f"give the row its {column}, or delete the row"


@pytest.mark.parametrize("cells, column", [
    ('"the cat",', "answer"), (',dog', "prompt"), ('"  ",dog', "prompt"),
])
def test_empty_csv_cells_of_prompt_or_answer(tmp_path: Path, cells: str, column: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"prompt,answer\nthe cat,dog\n{cells}\n")
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert info.value.message == f"d.csv row 1 (line 3): the {column} is empty"


@pytest.mark.parametrize("row, message", [
    ("the cat,dog,extra", r"row 1 \(line 3\): 3 cells, but the header has 2 columns "
                          r"\(1 more than the header's columns\)"),
    ("the cat", r"row 1 \(line 3\): 1 cell, but the header has 2 columns "
                r"\(no cell for column 'answer'\)"),
    ('"the cat, and",dog,', r"row 1 \(line 3\): 3 cells"),
])
def test_ragged_csv_rows_are_errors(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(f"prompt,answer\nthe cat,dog\n{row}\nthe dog,cat\n")
    with pytest.raises(DataError, match=message) as info:
        load_rows(path)
    assert info.value.message.startswith("d.csv row 1 (line 3): ")
    assert "quote a cell that holds a comma" in (info.value.hint or "")


def test_csv_lines_count_quoted_line_breaks_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('prompt,answer\n"the cat\nand the dog",dog\n\nthe cat,\n')
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert info.value.message == "d.csv row 1 (line 5): the answer is empty"
    path.write_text('prompt,answer\n"the cat\nand the dog",dog\n\nthe cat, dog\n')
    assert load_rows(path) == [{"prompt": "the cat\nand the dog", "answer": "dog"},
                               {"prompt": "the cat", "answer": " dog"}]


@pytest.mark.parametrize("text, message", [
    ("prompt,prompt,answer\na,b,c\n", r"the header names column 'prompt' more than once"),
    ("prompt,answer\n", r"d\.csv has no rows"),
    ("", r"d\.csv is empty"),
    ("\n\n", r"d\.csv is empty"),
    ('prompt,answer\n"the cat,dog\n', r"d\.csv line 2: not valid CSV \(unexpected end"),
    ('prompt,answer\n"the" cat,dog\n', r"d\.csv line 2: not valid CSV \(',' expected"),
])
def test_malformed_csv_files(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "d.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_rows(path)
    assert info.value.key == "data" and info.value.hint


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "the cat", "answer": "do', r"row 1 \(line 2\): not valid JSON at column 33: "
                                            r"Unterminated string starting$"),
    ('["the cat", "dog"]', r"row 1 \(line 2\): a JSON list, not an object"),
    ('"the cat"', r"row 1 \(line 2\): a JSON string, not an object"),
    ("3", r"row 1 \(line 2\): a JSON number, not an object"),
    ("null", r"row 1 \(line 2\): a JSON null, not an object"),
    ('{"prompt": "a", "answer": "b", "answer": "c"}',
     r"row 1 \(line 2\): the key 'answer' appears twice"),
    ("[" * 100_000, r"row 1 \(line 2\): the JSON is nested too deeply"),
])
def test_malformed_jsonl_lines_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = _jsonl(tmp_path, GOOD, line, GOOD)
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert info.value.message.startswith("d.jsonl row 1 (line 2): ")
    assert re.search(message, info.value.message)
    expected = "give each column once" if "twice" in message else "must be one JSON object"
    assert expected in (info.value.hint or "")


@pytest.mark.parametrize("value", [True, 1.5, ["dog"], {"word": "dog"}])
def test_cells_that_are_not_text(tmp_path: Path, value: Any) -> None:
    path = _jsonl(tmp_path, GOOD, json.dumps({"prompt": "the cat", "answer": value}))
    with pytest.raises(DataError) as info:
        load_rows(path)
    assert info.value.message == f"d.jsonl row 1 (line 2): the answer is {value!r}, not text"
    assert "one answer per row, as a JSON string" in (info.value.hint or "")


def test_integer_cells_are_text_and_empty_optional_cells_are_missing(tmp_path: Path) -> None:
    path = _jsonl(tmp_path, json.dumps({"prompt": "year 17", "answer": 5, "wrong": None}),
                  json.dumps({"prompt": "year 18", "answer": "6", "wrong": ""}))
    assert load_rows(path) == [{"prompt": "year 17", "answer": 5},
                               {"prompt": "year 18", "answer": "6"}]


def test_only_the_rows_used_need_cells_but_the_whole_file_must_parse(tmp_path: Path) -> None:
    rows = [GOOD] * 3 + [json.dumps({"prompt": "the cat", "answer": None})]
    path = _jsonl(tmp_path, *rows)
    assert len(load_rows(path, n=3)) == 3
    with pytest.raises(DataError, match="row 3 .line 4.: the answer is null"):
        load_rows(path)
    path = _jsonl(tmp_path, *[GOOD] * 3, "{broken")
    with pytest.raises(DataError, match="line 4.: not valid JSON"):
        load_rows(path, n=2)


def test_unreadable_files(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "\xff\xfe", "answer": "a"}\n')
    with pytest.raises(DataError, match=r"d\.jsonl is not UTF-8 text") as info:
        load_rows(path)
    assert info.value.hint == "save the data file as UTF-8"
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(DataError, match="no data file"):
        load_rows(tmp_path / "folder.jsonl")
    with pytest.raises(DataError, match=r"d2\.jsonl has no rows"):
        load_rows(_jsonl(tmp_path, "", "  ", name="d2.jsonl"))


def test_a_byte_order_mark_is_not_part_of_the_header(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_bytes("prompt,answer\nthe cat,dog\n".encode("utf-8-sig"))
    assert load_rows(path) == [{"prompt": "the cat", "answer": "dog"}]


# ---------------------------------------------------------------------------
# Rows made in memory (tasks, Python) are checked the same way


@pytest.mark.parametrize("row, message", [
    ({"answer": "dog"}, "row 1: the prompt is missing"),
    ({"prompt": None, "answer": "dog"}, "row 1: the prompt is null"),
    ({"prompt": "the cat", "answer": None}, "row 1: the answer is null"),
    ({"prompt": "the cat", "answer": ["dog"]}, r"row 1: the answer is \['dog'\], not text"),
    ("the cat", "row 1: a str, not a mapping of columns"),
])
def test_bad_rows_in_memory(row: Any, message: str, tiny_loaded: Any) -> None:
    rows = [{"prompt": "the cat", "answer": "dog"}, row]
    with pytest.raises(DataError, match=message) as info:
        tokenize_rows(rows, _tok(tiny_loaded), source="task x")
    assert info.value.message.startswith("task x row 1: ") and info.value.hint


def test_a_null_wrong_in_one_row_is_a_missing_wrong(tiny_loaded: Any) -> None:
    rows = [{"prompt": "the cat", "answer": "dog", "wrong": "cat"},
            {"prompt": "the cat", "answer": "dog", "wrong": None}]
    with pytest.raises(DataError, match="row 1: no 'wrong' token while other rows have one"):
        tokenize_rows(rows, _tok(tiny_loaded))


# ---------------------------------------------------------------------------
# Unknown tokens: data written for another model's vocabulary


@pytest.mark.parametrize("column", ["answer", "wrong"])
def test_an_unknown_answer_or_wrong_token_is_an_error(column: str, tiny_loaded: Any) -> None:
    rows = word_rows(3, lengths=(6,))
    rows[2][column] = "zebra"  # not among the tiny model's words: <unk>
    with pytest.raises(DataError) as info:
        tokenize_rows(rows, _tok(tiny_loaded), source="d.jsonl")
    assert info.value.message == (f"d.jsonl row 2: {column} 'zebra' is not in this model's "
                                  "vocabulary: the tokenizer maps it to its unknown token "
                                  "'<unk>'")
    assert "model: names the model the data were written for" in (info.value.hint or "")


@pytest.mark.parametrize("column, label", [("prompt", "the prompt"),
                                           ("corrupt", "the corrupt prompt")])
def test_a_prompt_mostly_of_unknown_tokens_is_an_error(column: str, label: str,
                                                       tiny_loaded: Any) -> None:
    rows = word_rows(3, lengths=(4,))
    rows[1][column] = "zebra giraffe the okapi"  # 3 of 4 words unknown; <bos> not counted
    with pytest.raises(DataError) as info:
        tokenize_rows(rows, _tok(tiny_loaded), source="d.jsonl")
    assert info.value.message == (f"d.jsonl row 1: {label} is mostly unknown to this "
                                  "model's tokenizer: 3 of its 4 tokens are the unknown "
                                  "token '<unk>'")


def test_a_few_unknown_words_are_allowed(tiny_loaded: Any) -> None:
    rows = word_rows(3, lengths=(4,))
    rows[1]["prompt"] = "zebra giraffe the cat"  # half unknown: not "mostly"
    rows[1]["corrupt"] = "zebra giraffe the dog"
    dataset = tokenize_rows(rows, _tok(tiny_loaded))
    assert dataset.prompts[1].count(_tok(tiny_loaded).unk_token_id) == 2


class _EosIsUnk:
    """A word tokenizer whose unknown token is also its end-of-text token, as GPT-2's
    ``<|endoftext|>`` is: an unknown id there says nothing about the vocabulary."""

    unk_token = "<|endoftext|>"
    unk_token_id = bos_token_id = eos_token_id = 0
    all_special_ids = [0]
    words = ["<|endoftext|>", "the", "cat", "dog"]

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": [self.words.index(w) if w in self.words else 0
                              for w in text.split()]}

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.words[i] for i in ids]


def test_an_unknown_token_that_is_also_eos_is_not_checked() -> None:
    rows = [{"prompt": "<|endoftext|> the cat", "answer": "<|endoftext|>"},
            {"prompt": "zebra okapi", "answer": "dog"}]
    dataset = tokenize_rows(rows, _EosIsUnk())
    assert dataset.answers.tolist() == [0, 3]


# ---------------------------------------------------------------------------
# The model's context


def test_a_prompt_longer_than_the_context_is_an_error(tiny_loaded: Any) -> None:
    rows = word_rows(3, lengths=(6, 8), seed=4)
    longest = max(len(r["prompt"].split()) for r in rows) + 1  # <bos>
    row = next(i for i, r in enumerate(rows) if len(r["prompt"].split()) + 1 == longest)
    assert len(tokenize_rows(rows, _tok(tiny_loaded), max_length=longest)) == 3
    with pytest.raises(DataError) as info:
        tokenize_rows(rows, _tok(tiny_loaded), source="d.jsonl", max_length=longest - 1)
    assert info.value.message == (f"d.jsonl row {row}: the prompt is {longest} tokens long, "
                                  f"more than the model's context of {longest - 1} tokens")
    assert info.value.key == "data"
    assert info.value.hint == ("shorten the prompt (or delete the row), or use a model with "
                               "a longer context")


def test_a_corrupt_prompt_longer_than_the_context_is_an_error(tiny_loaded: Any) -> None:
    rows = [{"prompt": "the cat", "answer": "dog", "corrupt": "the cat and the dog"}]
    with pytest.raises(DataError, match="row 0: the corrupt prompt is 6 tokens long, more "
                                        "than the model's context of 4 tokens"):
        tokenize_rows(rows, _tok(tiny_loaded), max_length=4)


@pytest.mark.parametrize("limit", [0, -1, True])
def test_max_length_must_be_positive(limit: Any, tiny_loaded: Any) -> None:
    with pytest.raises(ValueError, match="max_length must be a positive integer"):
        tokenize_rows(word_rows(2), _tok(tiny_loaded), max_length=limit)


def test_an_empty_prompt_without_special_tokens_is_an_error() -> None:
    with pytest.raises(DataError, match="row 0: the prompt is no tokens at all"):
        tokenize_rows([{"prompt": "", "answer": "dog"}], _EosIsUnk())
