"""Per-prompt values: the numbers behind each claim's decision, one row per prompt.

``--mechcheck-report-prompts PATH`` (and ``mechcheck check --report-prompts``) write
them in long form: one row per claim x prompt, with the claim's ``file``, ``id`` and
``checkpoint``, the prompt's ``row`` in its data, the kind's values (``clean``,
``patched``, ``difference`` ...) and the data's extra columns.  CSV always; parquet
when pyarrow is installed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mechcheck.errors import MechcheckError
from mechcheck.report.results import ClaimResult

__all__ = ["PROMPT_KEYS", "check_prompts_path", "prompt_frame", "write_prompt_values"]

PROMPT_KEYS = ("file", "id", "checkpoint", "row")
SUFFIXES = (".csv", ".parquet")


def check_prompts_path(path: str | os.PathLike, *, key: str) -> Path:
    """``path`` if mechcheck can write per-prompt values in its format, else an error."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise MechcheckError(f"{key} {path}: unknown format '{path.suffix}'", key=key,
                             hint="name the file *.csv (or *.parquet, with pyarrow "
                             "installed)")
    if suffix == ".parquet" and importlib.util.find_spec("pyarrow") is None:
        raise MechcheckError(f"{key} {path}: writing parquet needs pyarrow, which is not "
                             "installed", key=key,
                             hint="pip install pyarrow, or name the file *.csv")
    return path


def prompt_frame(results: Sequence[ClaimResult]) -> Any:
    """A DataFrame with one row per claim x prompt, for the results that kept their
    per-prompt values; columns: ``PROMPT_KEYS``, then the value and data columns in the
    order they first appear."""
    import pandas as pd

    parts = []
    for result in results:
        values = result.per_prompt
        if not values:
            continue
        lengths = {len(v) for v in values.values()}
        if len(lengths) != 1:
            raise ValueError(f"{result.file}::{result.id}: per-prompt columns of unequal "
                             f"lengths {sorted(lengths)}")
        (count,) = lengths
        rows = values.get("row", list(range(count)))
        head = {"file": [result.file] * count, "id": [result.id] * count,
                "checkpoint": [result.checkpoint] * count, "row": rows}
        parts.append(pd.DataFrame({**head, **{k: v for k, v in values.items()
                                              if k != "row"}}))
    if not parts:
        return pd.DataFrame(columns=list(PROMPT_KEYS))
    return pd.concat(parts, ignore_index=True, sort=False)


def write_prompt_values(results: Sequence[ClaimResult], path: str | os.PathLike, *,
                        key: str = "--mechcheck-report-prompts",
                        complete: bool = True) -> Path:
    """Write the per-prompt values of ``results`` to ``path`` (.csv or .parquet),
    atomically; an incomplete run's go to ``name.partial.csv`` (or ``.parquet``) beside
    it, as its CSV report does.

    Returns:
        The path written.
    """
    from mechcheck.report.io import partial_path, write_atomic

    path = check_prompts_path(path, key=key)
    if not complete:
        path = partial_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MechcheckError(f"cannot create the folder {path.parent}: {exc}", key=key,
                             hint="give a path in a folder you can write to") from exc
    frame = prompt_frame(results)
    if path.suffix.lower() == ".parquet":
        write_atomic(path, lambda tmp: frame.to_parquet(tmp, index=False))
    else:
        write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    return path
