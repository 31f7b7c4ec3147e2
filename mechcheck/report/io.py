"""Results as a pandas DataFrame, a JSON or CSV report, and a terminal table."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechcheck.errors import MechcheckError
from mechcheck.report.results import CSV_FIELDS, REPORT_FIELDS, ClaimResult, format_p

__all__ = ["TABLE_CHOICES", "ReportFile", "check_report_path", "check_writable",
           "load_report", "matrix", "partial_path", "read_report", "require_complete",
           "results_frame", "summary_table", "write_atomic", "write_report"]

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
    rows = list(dict.fromkeys(zip(frame["file"], frame["id"])))
    table = frame.pivot_table(index=["file", "id"], columns="checkpoint", values=values,
                              aggfunc="first", sort=False)
    # pivot_table groups the ids of a later file by their first appearance anywhere:
    # put the rows back in claim order
    return table.reindex(index=pd.MultiIndex.from_tuples(rows, names=["file", "id"]),
                         columns=order)


def check_writable(path: str | os.PathLike, *, key: str = "--mechcheck-report") -> Path:
    """``path`` if a file can be written there: its folder exists (or is created now)
    and is writable, and the path is not a folder."""
    path = Path(path)
    _make_folder(path, key)
    if path.is_dir():
        raise MechcheckError(f"the report path {path} is a folder", key=key,
                             hint="give a file name, e.g. results.json")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise MechcheckError(f"cannot write the report {path}: permission denied", key=key,
                             hint="give a path in a folder you can write to")
    return path


def _make_folder(path: Path, key: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MechcheckError(f"cannot create the report's folder {path.parent}: {exc}",
                             key=key, hint="give a path in a folder you can write to") from exc


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file in ``path``'s folder, then rename it onto
    ``path``: a reader never sees a half-written file, and a failed write leaves the old
    one in place.  The file gets the old file's permissions, else the umask's."""
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _mode_for(path: Path) -> int:
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def partial_path(path: str | os.PathLike) -> Path:
    """Where an incomplete run's CSV report goes: ``name.partial.csv`` beside ``path``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def write_report(results: Sequence[ClaimResult], path: str | os.PathLike,
                 *, meta: dict[str, Any] | None = None, complete: bool = True,
                 incomplete_reason: str | None = None) -> Path:
    """Write ``.json`` (an object whose ``results`` is a list) or ``.csv``, atomically;
    missing parent folders are created.

    Args:
        results: the results, in report order.
        path: the report file.
        meta: extra top-level keys of a JSON report (``regressions``).
        complete: False for a run that stopped early (interrupted, ``-x``, a crash).
            A JSON report then says ``"complete": false`` (and why, in
            ``incomplete_reason``); a CSV report, which has no room for that, goes to
            :func:`partial_path` and leaves ``path`` as it was.
        incomplete_reason: why the run is incomplete.

    Returns:
        The path written.
    """
    path = check_report_path(path)
    _make_folder(path, "--mechcheck-report")
    if path.suffix.lower() == ".json":
        head: dict[str, Any] = {"mechcheck_report": 1, "complete": complete}
        if not complete:
            head["incomplete_reason"] = incomplete_reason or "the run stopped early"
        body = {**head, **(meta or {}), "results": [r.record() for r in results]}
        text = json.dumps(body, indent=2, allow_nan=False) + "\n"
        write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
        return path
    if not complete:
        path = partial_path(path)
    frame = results_frame(results)
    for column in CSV_FIELDS:
        if column not in frame.columns:
            frame[column] = None
    frame["components"] = frame["components"].map(lambda c: " ".join(c or []))
    for column in ("n", "seed", "line"):
        frame[column] = frame[column].astype("Int64")  # missing stays empty, not 40.0
    frame = frame[list(CSV_FIELDS)]
    write_atomic(path, lambda tmp: frame.to_csv(tmp, index=False))
    return path


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportFile:
    """A JSON report as read back: its results and whether the run was complete."""

    path: str
    results: list[ClaimResult]
    complete: bool
    incomplete_reason: str | None = None


def load_report(path: str | os.PathLike) -> ReportFile:
    """Read a JSON report, checking that it is one.

    A report written before the ``complete`` flag existed counts as complete.

    Raises:
        MechcheckError: the file is missing, not JSON, or not a mechcheck report.
    """
    shown = os.fspath(path)
    hint = "give a .json report written by --mechcheck-report or mechcheck check --report"
    if Path(path).suffix.lower() == ".csv":
        raise MechcheckError(f"cannot read the report {shown}: a CSV report cannot be read "
                             "back", hint="give the .json report (write one with "
                             "--mechcheck-report results.json)")
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise MechcheckError(f"cannot read the report {shown}: "
                             f"{exc.strerror or type(exc).__name__}", hint=hint) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MechcheckError(f"cannot read the report {shown}: it is not JSON ({exc})",
                             hint=hint) from None
    if not isinstance(body, dict) or body.get("mechcheck_report") != 1:
        raise MechcheckError(f"cannot read the report {shown}: it is not a mechcheck report "
                             "(no \"mechcheck_report\": 1 at the top)", hint=hint)
    records = body.get("results")
    if not isinstance(records, list):
        raise MechcheckError(f"cannot read the report {shown}: its \"results\" is not a "
                             "list", hint=hint)
    results = [_result(r, i, shown, hint) for i, r in enumerate(records)]
    complete = body.get("complete", True) is not False
    reason = body.get("incomplete_reason")
    return ReportFile(path=shown, results=results, complete=complete,
                      incomplete_reason=None if complete else str(reason or "unknown"))


def _result(record: Any, i: int, shown: str, hint: str) -> ClaimResult:
    where = f"cannot read the report {shown}: results[{i}]"
    if not isinstance(record, dict):
        raise MechcheckError(f"{where} is not an object", hint=hint)
    for key in ("file", "id", "verdict"):
        if not isinstance(record.get(key), str):
            raise MechcheckError(f"{where} has no text {key!r}", hint=hint)
    try:
        return ClaimResult.from_record({"model": None, **record})
    except (TypeError, ValueError) as exc:
        raise MechcheckError(f"{where} is not a claim result: {exc}", hint=hint) from None


def read_report(path: str | os.PathLike, *, allow_incomplete: bool = False,
                allow_option: str = "--allow-incomplete") -> list[ClaimResult]:
    """Read a JSON report back into results.

    Args:
        path: the report.
        allow_incomplete: accept the report of a run that stopped early.
        allow_option: the option to name in the error about an incomplete report.

    Raises:
        MechcheckError: the report cannot be read, or is incomplete and not allowed.
    """
    return require_complete(load_report(path), allow_incomplete=allow_incomplete,
                            allow_option=allow_option)


def require_complete(report: ReportFile, *, allow_incomplete: bool = False,
                     allow_option: str = "--allow-incomplete") -> list[ClaimResult]:
    """The report's results; an error for an incomplete one unless allowed."""
    if not report.complete and not allow_incomplete:
        raise MechcheckError(
            f"the report {report.path} is incomplete: {report.incomplete_reason} "
            f"(\"complete\": false; it has {len(report.results)} result(s))",
            hint=f"rerun to completion for a complete report, or pass {allow_option} to "
            "use the claims it has")
    return report.results


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


TABLE_CHOICES = ("all", "failed", "none")


def summary_table(results: Sequence[ClaimResult], *, show: str = "all",
                  timing: bool = False) -> list[str]:
    """A compact fixed-width table: claim, verdict, effect [CI], threshold, p_adj, n.

    Args:
        results: the results, in report order.
        show: ``all`` rows, only the ``failed`` ones (the claims that make the run fail:
            failed, errors and strict XPASS, not expected failures), or ``none``.
        timing: add a column with each claim's measuring time in seconds.

    Returns:
        The lines, header first; no lines for ``none`` or when no row is left.
    """
    from mechcheck.outcomes import FAILING, outcome

    if show == "failed":
        results = [r for r in results if outcome(r.verdict, r.xfail) in FAILING]
    if show == "none" or not results:
        return []
    header: tuple[str, ...] = ("claim", "verdict", "effect", "CI", "threshold", "p_adj", "n")
    header += ("seconds",) if timing else ()
    rows = [header]
    for r in results:
        ci = f"[{_cell(r.ci_low)}, {_cell(r.ci_high)}]" if r.ci_low is not None else "-"
        verdict = r.verdict if not r.reason else f"{r.verdict} ({r.reason})"
        name = f"{Path(r.file).name}::{r.id}"
        if r.checkpoint:
            name += f"[{r.checkpoint}]"
        p_adj = "-" if r.p_adjusted is None or not math.isfinite(r.p_adjusted) else \
            format_p(r.p_adjusted, ".3g")
        row = (name, verdict, _cell(r.effect), ci, _cell(r.threshold), p_adj, _cell(r.n))
        rows.append(row + ((f"{r.duration_s:.2f}",) if timing else ()))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
