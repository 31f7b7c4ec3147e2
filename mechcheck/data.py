"""Prompt datasets: read a JSONL/CSV file, tokenize it, check every row.

One row is one prompt.  Columns: ``prompt`` (required), ``answer`` (required, one
token), ``wrong`` (optional, one token), ``corrupt`` (optional, as many tokens as
``prompt``) and ``positions`` (optional, a mapping from names such as ``S2`` to token
indices).  Rows are grouped by token count so that batches need no padding: every
group runs as one batch and results equal those of running each prompt alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mechcheck.errors import DataError

__all__ = ["Dataset", "load_rows", "tokenize_rows"]


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


def _row_line(path: Path, i: int) -> int:
    """1-based line of row ``i`` in the file (header counts for CSV)."""
    return i + 2 if path.suffix.lower() == ".csv" else i + 1


def load_rows(path: str | os.PathLike, *, n: int | None = None) -> list[dict[str, Any]]:
    """Read a JSONL or CSV prompt file with pandas into a list of row dicts."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"no data file at {path}", key="data",
                        hint="data: takes a .jsonl or .csv file, relative to the claim file")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            frame = pd.read_json(path, lines=True, dtype=False)
        elif suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        else:
            raise DataError(f"{path.name}: unknown data format '{suffix}'", key="data",
                            hint="use a .jsonl file (one JSON object per line) or a .csv file")
    except ValueError as exc:
        raise DataError(f"{path} cannot be read: {exc}", key="data",
                        hint="each line of a .jsonl file must be one JSON object") from None
    if n is not None:
        frame = frame.head(n)
    missing = [c for c in ("prompt", "answer") if c not in frame.columns]
    if missing:
        raise DataError(f"{path.name} has no column {', '.join(map(repr, missing))}", key="data",
                        hint="each row needs a prompt and its one-token answer")
    if len(frame) == 0:
        raise DataError(f"{path.name} has no rows", key="data", hint="add prompts to the file")
    return [
        {k: v for k, v in row.items() if not _is_blank(v)}
        for row in frame.to_dict(orient="records")
    ]


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and np.isnan(value):
        return True
    return isinstance(value, str) and value == ""


def _single_token(tokenizer: Any, text: Any, where: str, column: str) -> int:
    ids = tokenizer(str(text), add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise DataError(
            f"{where}: {column} {str(text)!r} is {len(ids)} tokens under this model's "
            f"tokenizer {pieces}, not one", key="data",
            hint=f"choose {'an' if column == 'answer' else 'a'} {column} that is a single "
            "token (with GPT-2's tokenizer, include the leading space, e.g. ' Mary')",
        )
    return ids[0]


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
                  source: str = "<rows>") -> Dataset:
    """Tokenize and check rows; every problem names its row and how to fix it."""
    prompts, corrupts, answers, wrongs, positions = [], [], [], [], []
    has_corrupt = any("corrupt" in r for r in rows)
    has_wrong = any("wrong" in r for r in rows)
    for i, row in enumerate(rows):
        where = f"{source} row {i}"
        ids = tuple(tokenizer(str(row["prompt"]))["input_ids"])
        prompts.append(ids)
        answers.append(_single_token(tokenizer, row["answer"], where, "answer"))
        if has_wrong:
            if "wrong" not in row:
                raise DataError(f"{where}: no 'wrong' token while other rows have one",
                                key="data", hint="give every row a wrong token, or none")
            wrongs.append(_single_token(tokenizer, row["wrong"], where, "wrong"))
        if has_corrupt:
            corrupts.append(_corrupt(tokenizer, row, ids, where))
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


def _corrupt(tokenizer: Any, row: Mapping[str, Any], ids: tuple[int, ...],
             where: str) -> tuple[int, ...]:
    if "corrupt" not in row:
        raise DataError(f"{where}: no 'corrupt' prompt while other rows have one",
                        key="data", hint="give every row a corrupt prompt, or none")
    corrupt = tuple(tokenizer(str(row["corrupt"]))["input_ids"])
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
