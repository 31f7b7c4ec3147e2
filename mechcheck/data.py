"""Prompt datasets: read a JSONL/CSV file, tokenize it, check every row.

One row is one prompt.  Columns: ``prompt`` (required), ``answer`` (required, one
token), ``wrong`` (optional, one token), ``corrupt`` (optional, as many tokens as
``prompt``) and ``positions`` (optional, a mapping from names such as ``S2`` to token
indices).  Rows are grouped by token count so that batches need no padding: every
group runs as one batch and results equal those of running each prompt alone.

Files are read with Python's ``json`` and ``csv`` modules, line by line, so that every
problem (a missing cell, a ragged row, a broken line) names the file, the row (from 0),
its line and the column.  Tokenizing checks each row against the model: one-token
answers that the vocabulary knows, prompts not mostly of unknown tokens, and no prompt
longer than the model's context.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mechcheck.errors import DataError

__all__ = ["MAX_UNKNOWN_SHARE", "Dataset", "load_rows", "tokenize_rows"]


@dataclass(frozen=True, eq=False, kw_only=True)
class Dataset:
    """A tokenized dataset, ready for the engine.

    Attributes:
        source: the file it came from (or a name for in-memory rows).
        prompts: token ids of each clean prompt.
        corrupts: token ids of each corrupt prompt, or None when the data has none.
        answers: the answer token id per row.
        wrongs: the contrast token id per row, or None when the data has none.
        positions: per row, named token positions (non-negative indices).
        groups: row indices sharing one token count, each group one batch.
        columns: any other columns of the rows (e.g. ``template``), one value per row.
    """

    source: str
    prompts: tuple[tuple[int, ...], ...]
    corrupts: tuple[tuple[int, ...], ...] | None
    answers: np.ndarray
    wrongs: np.ndarray | None
    positions: tuple[Mapping[str, int], ...]
    groups: tuple[np.ndarray, ...]
    columns: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def max_len(self) -> int:
        return max(len(p) for p in self.prompts)

    def row_label(self, i: int) -> str:
        return f"{self.source} row {i}"


def load_rows(path: str | os.PathLike, *, n: int | None = None) -> list[dict[str, Any]]:
    """Read a JSONL or CSV prompt file into a list of row dicts.

    Every row used (the first ``n``, or all) must have a non-empty ``prompt`` and
    ``answer``; empty or null cells of other columns count as missing.

    Raises:
        DataError: the file is missing, unreadable or malformed (broken JSON, a line
            that is not an object, a CSV row with more or fewer cells than the
            header), or a row lacks its prompt or answer.  The message names the file,
            the row (from 0) and its line, and the column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"no data file at {path}", key="data",
                        hint="data: takes a .jsonl or .csv file, relative to the claim file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise DataError(f"{path.name}: unknown data format '{suffix}'", key="data",
                        hint="use a .jsonl file (one JSON object per line) or a .csv file")
    text = _read_text(path)
    records, columns = _csv_records(text, path.name) if suffix == ".csv" else (
        _jsonl_records(text, path.name))
    if not records:
        raise DataError(f"{path.name} has no rows", key="data", hint="add prompts to the file")
    missing = [c for c in _REQUIRED if c not in columns]
    if missing:
        raise DataError(f"{path.name} has no column {', '.join(map(repr, missing))}", key="data",
                        hint="each row needs a prompt and its one-token answer")
    used = records if n is None else records[:n]
    for i, (line, row) in enumerate(used):
        _check_cells(row, f"{path.name} row {i} (line {line})", from_file=True)
    return [{k: v for k, v in row.items() if not _is_blank(v)} for _, row in used]


_REQUIRED = ("prompt", "answer")
_TEXT_COLUMNS = ("prompt", "answer", "wrong", "corrupt")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path.name} is not UTF-8 text (byte {exc.start})", key="data",
                        hint="save the data file as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path.name} cannot be read: {exc.strerror or exc}", key="data",
                        hint="check that the data file is readable") from None


class _Repeated(ValueError):
    """A JSON object names a key twice."""


def _no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Repeated(key)
        out[key] = value
    return out


def _jsonl_records(text: str, name: str) -> tuple[list[tuple[int, dict[str, Any]]], set[str]]:
    """``(line, row)`` of each non-blank line, and every key any row has."""
    records: list[tuple[int, dict[str, Any]]] = []
    hint = 'each line of a .jsonl file must be one JSON object, e.g. {"prompt": "...", ' \
           '"answer": "..."}'
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} row {len(records)} (line {number})"
        try:
            row = json.loads(line, object_pairs_hook=_no_repeats)
        except _Repeated as exc:
            raise DataError(f"{where}: the key {exc.args[0]!r} appears twice", key="data",
                            hint="give each column once per row") from None
        except json.JSONDecodeError as exc:
            problem = exc.msg.removesuffix(" at")  # "Unterminated string starting at"
            raise DataError(f"{where}: not valid JSON at column {exc.colno}: {problem}",
                            key="data", hint=hint) from None
        except RecursionError:
            raise DataError(f"{where}: the JSON is nested too deeply", key="data",
                            hint=hint) from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: a JSON {_json_kind(row)}, not an object", key="data",
                            hint=hint)
        records.append((number, row))
    return records, {key for _, row in records for key in row}


def _json_kind(value: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _csv_records(text: str, name: str) -> tuple[list[tuple[int, dict[str, Any]]], set[str]]:
    """``(line, row)`` of each data row after the header, and the header's columns."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records: list[tuple[int, dict[str, Any]]] = []
    start = 1
    try:
        for cells in reader:
            line, start = start, reader.line_num + 1
            if not cells:
                continue
            if header is None:
                header = _header(cells, name)
                continue
            records.append((line, _csv_row(cells, header, f"{name} row {len(records)} "
                                                          f"(line {line})")))
    except csv.Error as exc:
        raise DataError(f"{name} line {start}: not valid CSV ({exc})", key="data",
                        hint="quote cells that hold commas, quotes or line breaks") from None
    if header is None:
        raise DataError(f"{name} is empty", key="data",
                        hint="start with a header line such as prompt,answer")
    return records, set(header)


def _header(cells: list[str], name: str) -> list[str]:
    repeated = sorted({c for c in cells if cells.count(c) > 1})
    if repeated:
        raise DataError(f"{name}: the header names column {', '.join(map(repr, repeated))} "
                        "more than once", key="data", hint="give each column one name")
    return cells


def _csv_row(cells: list[str], header: list[str], where: str) -> dict[str, Any]:
    if len(cells) != len(header):
        more = len(cells) > len(header)
        detail = (f"{len(cells) - len(header)} more than the header's columns" if more else
                  f"no cell for column {', '.join(map(repr, header[len(cells):]))}")
        raise DataError(
            f"{where}: {len(cells)} cell{'' if len(cells) == 1 else 's'}, but the header "
            f"has {len(header)} columns "
            f"({detail})", key="data",
            hint="give every row one cell per header column; quote a cell that holds a "
            'comma ("a, b") and double the quotes inside it')
    return dict(zip(header, cells))


def _check_cells(row: Mapping[str, Any], where: str, *, from_file: bool) -> None:
    """The prompt and answer are given, and every text column holds text.

    In a file an empty cell is missing too (and so is a prompt of only spaces); rows
    made in memory may have an empty prompt (the tokenizer's BOS token alone).
    """
    for column in _TEXT_COLUMNS:
        value = row.get(column)
        blank = value is None or _is_nan(value) or (from_file and value == "")
        if blank or (from_file and column == "prompt" and not str(value).strip()):
            if column in _REQUIRED:
                state = ("missing" if column not in row else "null" if value is None
                         else "not a number (NaN)" if _is_nan(value) else "empty")
                raise DataError(f"{where}: the {column} is {state}", key="data",
                                hint=f"give the row its {column}, or delete the row")
        elif isinstance(value, bool) or not isinstance(value, (str, int)):
            example = f', e.g. "{value}"' if isinstance(value, (bool, float)) else ""
            raise DataError(f"{where}: the {column} is {value!r}, not text", key="data",
                            hint=f"write one {column} per row, as a JSON string{example}")


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _is_blank(value: Any) -> bool:
    return value is None or _is_nan(value) or value == ""


# A prompt with more than this share of its (non-special) tokens unknown to the
# tokenizer was almost surely written for another model's vocabulary.
MAX_UNKNOWN_SHARE = 0.5


@dataclass(frozen=True, slots=True)
class _Vocabulary:
    """What a tokenizer says about unknown words: its unknown token (None when it has
    none, or when that token doubles as BOS/EOS/padding, as GPT-2's does) and its other
    special tokens."""

    unk_id: int | None
    unk_token: str | None
    special: frozenset[int]

    @classmethod
    def of(cls, tokenizer: Any) -> _Vocabulary:
        unk = getattr(tokenizer, "unk_token_id", None)
        control = {getattr(tokenizer, f"{name}_token_id", None)
                   for name in ("bos", "eos", "pad", "sep", "cls")}
        if not isinstance(unk, int) or unk in control:
            unk = None
        special = frozenset(getattr(tokenizer, "all_special_ids", ()) or ()) - {unk}
        return cls(unk, getattr(tokenizer, "unk_token", None) if unk is not None else None,
                   special)

    def check_prompt(self, ids: Sequence[int], where: str, label: str) -> None:
        """Raise unless at most MAX_UNKNOWN_SHARE of the prompt's tokens are unknown."""
        if self.unk_id is None:
            return
        content = [i for i in ids if i not in self.special]
        unknown = sum(1 for i in content if i == self.unk_id)
        if content and unknown / len(content) > MAX_UNKNOWN_SHARE:
            raise DataError(
                f"{where}: {label} is mostly unknown to this model's tokenizer: {unknown} "
                f"of its {len(content)} tokens are the unknown token {self.unk_token!r}",
                key="data", hint="the prompts do not fit this model's vocabulary: check "
                "that model: names the model the data were written for, or write the "
                "prompts in words it knows")


def _single_token(tokenizer: Any, text: Any, where: str, column: str,
                  vocab: _Vocabulary) -> int:
    ids = tokenizer(str(text), add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise DataError(
            f"{where}: {column} {str(text)!r} is {len(ids)} tokens under this model's "
            f"tokenizer {pieces}, not one", key="data",
            hint=f"choose {'an' if column == 'answer' else 'a'} {column} that is a single "
            "token (with GPT-2's tokenizer, include the leading space, e.g. ' Mary')",
        )
    if vocab.unk_id is not None and ids[0] == vocab.unk_id:
        raise DataError(
            f"{where}: {column} {str(text)!r} is not in this model's vocabulary: the "
            f"tokenizer maps it to its unknown token {vocab.unk_token!r}", key="data",
            hint=f"choose {'an' if column == 'answer' else 'a'} {column} that the model's "
            "tokenizer knows, and check that model: names the model the data were "
            "written for")
    return int(ids[0])


def _check_length(ids: Sequence[int], max_length: int | None, where: str,
                  label: str) -> None:
    if max_length is not None and len(ids) > max_length:
        raise DataError(
            f"{where}: {label} is {len(ids)} tokens long, more than the model's "
            f"context of {max_length} tokens", key="data",
            hint="shorten the prompt (or delete the row), or use a model with a longer "
            "context")


def _positions(row: Mapping[str, Any], length: int, where: str) -> dict[str, int]:
    raw = row.get("positions", {})
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raw = None
    if not isinstance(raw, Mapping):
        raise DataError(f"{where}: positions must map names to token indices",
                        key="data", hint='write e.g. {"S2": 9, "END": 14}')
    out = {}
    for name, index in raw.items():
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
            raise DataError(f"{where}: position {name!r} is {index!r}, not an integer",
                            key="data", hint='write e.g. {"S2": 9, "END": 14}')
        resolved = int(index) + length if index < 0 else int(index)
        if not 0 <= resolved < length:
            raise DataError(
                f"{where}: position {name!r} = {index} is outside the prompt's "
                f"{length} tokens", key="data",
                hint=f"token indices run from 0 to {length - 1} (negative ones count from the end)",
            )
        out[str(name)] = resolved
    return out


def tokenize_rows(rows: Sequence[Mapping[str, Any]], tokenizer: Any, *,
                  source: str = "<rows>", max_length: int | None = None) -> Dataset:
    """Tokenize and check rows; every problem names its row and how to fix it.

    Args:
        rows: row mappings with the columns of a data file (see the module docstring).
        tokenizer: the model's tokenizer.
        source: names the rows in messages (``"<source> row <i>"``, from 0).
        max_length: the model's context (e.g. ``n_positions``); a prompt or corrupt
            prompt with more tokens is an error.  None: no limit.

    Raises:
        DataError: a row lacks its prompt or answer, a cell is not text, an answer or
            ``wrong`` token is not one token or is the tokenizer's unknown token, a
            prompt is mostly unknown tokens, empty or longer than ``max_length``, or the
            corrupt prompts or positions do not fit.
        ValueError: ``max_length`` is not a positive integer.
    """
    if max_length is not None and (isinstance(max_length, bool) or max_length < 1):
        raise ValueError(f"max_length must be a positive integer or None, got {max_length!r}")
    vocab = _Vocabulary.of(tokenizer)
    has_corrupt = any(isinstance(r, Mapping) and r.get("corrupt") is not None for r in rows)
    has_wrong = any(isinstance(r, Mapping) and r.get("wrong") is not None for r in rows)
    prompts, corrupts, answers, wrongs, positions = [], [], [], [], []
    for i, row in enumerate(rows):
        where = f"{source} row {i}"
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: a {type(row).__name__}, not a mapping of columns",
                            key="data", hint="give each row as a mapping, e.g. "
                            '{"prompt": "...", "answer": "..."}')
        _check_cells(row, where, from_file=False)
        ids = _prompt_ids(tokenizer, row["prompt"], where, "the prompt", max_length, vocab)
        prompts.append(ids)
        answers.append(_single_token(tokenizer, row["answer"], where, "answer", vocab))
        if has_wrong:
            if row.get("wrong") is None:
                raise DataError(f"{where}: no 'wrong' token while other rows have one",
                                key="data", hint="give every row a wrong token, or none")
            wrongs.append(_single_token(tokenizer, row["wrong"], where, "wrong", vocab))
        if has_corrupt:
            corrupts.append(_corrupt(tokenizer, row, ids, where, max_length, vocab))
        positions.append(_positions(row, len(ids), where))
    return Dataset(
        source=source,
        prompts=tuple(prompts),
        corrupts=tuple(corrupts) if has_corrupt else None,
        answers=np.asarray(answers, dtype=np.int64),
        wrongs=np.asarray(wrongs, dtype=np.int64) if has_wrong else None,
        positions=tuple(positions),
        groups=_groups(prompts),
        columns={name: tuple(row.get(name) for row in rows)
                 for name in sorted({k for row in rows for k in row} - _STANDARD)},
    )


_STANDARD = frozenset({"prompt", "answer", "wrong", "corrupt", "positions"})


def _prompt_ids(tokenizer: Any, text: Any, where: str, label: str, max_length: int | None,
                vocab: _Vocabulary) -> tuple[int, ...]:
    """The prompt's token ids (special tokens included), checked."""
    ids = tuple(int(i) for i in tokenizer(str(text))["input_ids"])
    if not ids:
        raise DataError(f"{where}: {label} is no tokens at all under this model's tokenizer",
                        key="data", hint="write a prompt of at least one word")
    _check_length(ids, max_length, where, label)
    vocab.check_prompt(ids, where, label)
    return ids


def _corrupt(tokenizer: Any, row: Mapping[str, Any], ids: tuple[int, ...], where: str,
             max_length: int | None, vocab: _Vocabulary) -> tuple[int, ...]:
    if row.get("corrupt") is None:
        raise DataError(f"{where}: no 'corrupt' prompt while other rows have one",
                        key="data", hint="give every row a corrupt prompt, or none")
    corrupt = _prompt_ids(tokenizer, row["corrupt"], where, "the corrupt prompt", max_length,
                          vocab)
    if len(corrupt) != len(ids):
        raise DataError(
            f"{where}: the corrupt prompt has {len(corrupt)} tokens but the prompt has "
            f"{len(ids)}", key="data",
            hint="a corrupt prompt must have the same number of tokens as its prompt, so "
            "that activations line up position by position (swap single-token words)",
        )
    return corrupt


def _groups(prompts: Sequence[tuple[int, ...]]) -> tuple[np.ndarray, ...]:
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_length.setdefault(len(ids), []).append(i)
    return tuple(np.asarray(idx, dtype=np.int64) for _, idx in sorted(by_length.items()))
