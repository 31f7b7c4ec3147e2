"""Results as a pandas DataFrame, a JSON or CSV report, and a terminal table."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mechcheck.errors import MechcheckError
from mechcheck.results import REPORT_FIELDS, ClaimResult

__all__ = ["check_report_path", "matrix", "read_report", "results_frame", "summary_table",
           "write_report"]

REPORT_SUFFIXES = (".json", ".csv")


def check_report_path(path: str | os.PathLike) -> Path:
    """``path`` as a Path if it names a report format mechcheck writes, else an error."""
    path = Path(path)
    if path.suffix.lower() not in REPORT_SUFFIXES:
        raise MechcheckError(f"unknown report format '{path.suffix}'",
                             key="--mechcheck-report", hint="name the report *.json or *.csv")
    return path


def results_frame(results: Iterable[ClaimResult]) -> Any:
    """A pandas DataFrame with one row per result, report columns first."""
    import pandas as pd

    records = [r.record() for r in results]
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=list(REPORT_FIELDS))
    return frame


def matrix(results: Iterable[ClaimResult] | Any, values: str = "verdict") -> Any:
    """Claims x checkpoints: one row per (file, id), one column per checkpoint, in the
    order checkpoints first appear; cells hold ``values`` (``verdict``, ``effect`` ...).

    Accepts results or a DataFrame from :func:`results_frame`.
    """
    import pandas as pd

    frame = results if isinstance(results, pd.DataFrame) else results_frame(results)
    frame = frame.assign(checkpoint=frame["checkpoint"].fillna("-"))
    order = list(dict.fromkeys(frame["checkpoint"]))
    table = frame.pivot_table(index=["file", "id"], columns="checkpoint", values=values,
                              aggfunc="first", sort=False)
    return table.reindex(columns=order)


def write_report(results: Sequence[ClaimResult], path: str | os.PathLike,
                 *, meta: dict[str, Any] | None = None) -> Path:
    """Write ``.json`` (an object whose ``results`` is a list) or ``.csv``; missing parent
    folders are created."""
    path = check_report_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MechcheckError(f"cannot create the report's folder {path.parent}: {exc}",
                             key="--mechcheck-report",
                             hint="give a path in a folder you can write to") from exc
    if path.suffix.lower() == ".json":
        body = {"mechcheck_report": 1, **(meta or {}), "results": [r.record() for r in results]}
        path.write_text(json.dumps(body, indent=2, allow_nan=False) + "\n")
    else:
        frame = results_frame(results)
        frame["components"] = frame["components"].map(lambda c: " ".join(c or []))
        for column in ("n", "seed"):
            frame[column] = frame[column].astype("Int64")  # missing stays empty, not 40.0
        frame[list(REPORT_FIELDS)].to_csv(path, index=False)
    return path


def read_report(path: str | os.PathLike) -> list[ClaimResult]:
    """Read a JSON report back into results."""
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
        return [ClaimResult.from_record(r) for r in body["results"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MechcheckError(f"cannot read the report {path}: {type(exc).__name__}: {exc}",
                             hint="give a .json report written by --mechcheck-report") from None


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def summary_table(results: Sequence[ClaimResult]) -> list[str]:
    """A compact fixed-width table: claim, verdict, effect [CI], threshold, p_adj, n."""
    header = ("claim", "verdict", "effect", "CI", "threshold", "p_adj", "n")
    rows = [header]
    for r in results:
        ci = f"[{_cell(r.ci_low)}, {_cell(r.ci_high)}]" if r.ci_low is not None else "-"
        verdict = r.verdict if not r.reason else f"{r.verdict} ({r.reason})"
        name = f"{Path(r.file).name}::{r.id}"
        if r.checkpoint:
            name += f"[{r.checkpoint}]"
        rows.append((name, verdict, _cell(r.effect), ci, _cell(r.threshold),
                     _cell(r.p_adjusted), _cell(r.n)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
