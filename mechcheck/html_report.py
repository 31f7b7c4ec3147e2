"""A readable report of a run: verdict heatmap, effects over checkpoints, onsets.

:func:`render` writes one of two formats, chosen by the file extension:

* ``.html``: one self-contained file for offline viewing.  Figures are embedded as
  base64 PNG ``data:`` URIs and the CSS is inline.  The file has no JavaScript and
  no external URLs.
* ``.md``: Markdown.  Figures are written as PNG files into a ``<stem>_files/``
  folder next to the report and linked with relative paths, so the folder must be
  kept with the report.

The same input gives the same bytes: nothing depends on the time or the machine,
and PNG metadata is stripped.  Figures are drawn on matplotlib's Agg canvas
directly, so rendering needs no display and does not change pyplot's backend.

Example:
    >>> from mechcheck.report import read_report
    >>> render(read_report("results.json"), "report.html")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mechcheck.errors import MechcheckError
from mechcheck.results import ClaimResult

__all__ = ["VERDICT_COLOURS", "onsets", "render"]

VERDICT_COLOURS: dict[str, str] = {
    "pass": "#1a9850", "fail": "#d73027", "error": "#7b3294", "skip": "#bdbdbd",
}
MISSING_COLOUR = "#ffffff"
NO_CHECKPOINT = "-"
DPI = 100
HTML_SUFFIXES = (".html", ".htm")
RAW_HEADER = ("file", "id", "checkpoint", "verdict", "effect", "CI", "threshold",
              "p_adjusted", "n")
CSS = """body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; }
.v-pass { background: #d9f0d3; } .v-fail { background: #f8d0cc; }
.v-error { background: #e7d4e8; } .v-skip { background: #eeeeee; }"""

ClaimKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Section:
    """One part of the report, independent of the output format."""

    title: str
    text: str = ""
    image: tuple[str, bytes] | None = None  # (file name, PNG bytes)
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


# -- grouping ----------------------------------------------------------------------
def _checkpoint(result: ClaimResult) -> str:
    """The result's checkpoint, ``-`` for none (as in :func:`mechcheck.report.matrix`)."""
    return NO_CHECKPOINT if result.checkpoint is None else result.checkpoint


def _by_claim(results: Sequence[ClaimResult]) -> dict[ClaimKey, dict[str, ClaimResult]]:
    """Results by claim, then by checkpoint; the first result of a pair wins."""
    table: dict[ClaimKey, dict[str, ClaimResult]] = {}
    for result in results:
        table.setdefault((result.file, result.id), {}).setdefault(_checkpoint(result), result)
    return table


def _checkpoints(results: Sequence[ClaimResult]) -> list[str]:
    """Checkpoints in the order they first appear (``-`` for none)."""
    return list(dict.fromkeys(_checkpoint(r) for r in results))


def onsets(results: Sequence[ClaimResult]) -> dict[ClaimKey, tuple[str | None, str | None]]:
    """When each claim starts and stops holding over checkpoints.

    Checkpoints are taken in the order they first appear in ``results`` (a result
    without a checkpoint counts as checkpoint ``-``).

    Args:
        results: claim results, e.g. from :func:`mechcheck.report.read_report`.

    Returns:
        For each ``(file, id)``, in order of first appearance, ``(onset, lost)``:
        ``onset`` is the first checkpoint at which the claim passes, ``lost`` the
        first later checkpoint at which it fails.  An ``error`` or ``skip`` is not a
        loss: nothing was measured there.  Either is ``None`` when there is none.
    """
    order = {c: i for i, c in enumerate(_checkpoints(results))}
    found: dict[ClaimKey, tuple[str | None, str | None]] = {}
    for key, cells in _by_claim(results).items():
        onset = lost = None
        for checkpoint in sorted(cells, key=order.__getitem__):
            verdict = cells[checkpoint].verdict
            if onset is None and verdict == "pass":
                onset = checkpoint
            elif onset is not None and verdict == "fail":
                lost = checkpoint
                break
        found[key] = (onset, lost)
    return found


# -- figures -----------------------------------------------------------------------
def _figure(width: float, height: float) -> Any:
    """A matplotlib figure on the Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    """The figure as PNG bytes, without metadata that could vary between runs."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight",
                   metadata={"Software": None})
    return buffer.getvalue()


def _label(key: ClaimKey) -> str:
    """A claim's name for a figure, with ``$`` kept from starting mathtext."""
    return _plain_text(f"{Path(key[0]).name}::{key[1]}")


def _plain_text(text: str) -> str:
    """Text that matplotlib draws as written, never as mathtext."""
    return text.replace("$", r"\$")


def _sparse_ticks(axis: Any, labels: Sequence[str], *, vertical: bool = False) -> None:
    """Tick labels (already :func:`_plain_text`) on an axis, thinned to about 40."""
    step = max(1, math.ceil(len(labels) / 40))
    positions = list(range(0, len(labels), step))
    shown = [labels[i] for i in positions]
    if vertical:
        axis.set_yticks(positions, shown)
    else:
        axis.set_xticks(positions, shown, rotation=60, ha="right")


def _heatmap(results: Sequence[ClaimResult]) -> bytes:
    """Claims x checkpoints, one coloured cell per verdict."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from mechcheck.report import matrix

    table = matrix(list(results))
    names = list(VERDICT_COLOURS)
    codes = [[names.index(v) if v in names else len(names) for v in row]
             for row in table.itertuples(index=False)]
    cell = max(0.1, min(0.5, 16 / max(table.shape)))
    figure = _figure(1 + cell * table.shape[1], 0.8 + cell * table.shape[0])
    axes = figure.add_subplot()
    colours = ListedColormap([*VERDICT_COLOURS.values(), MISSING_COLOUR])
    axes.imshow(codes, cmap=colours, vmin=-0.5, vmax=len(names) + 0.5, aspect="auto")
    _sparse_ticks(axes, [_plain_text(str(c)) for c in table.columns])
    _sparse_ticks(axes, [_label(k) for k in table.index], vertical=True)
    axes.set_xlabel("checkpoint")
    axes.legend(handles=[Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items()],
                loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return _png(figure)


def _error_bars(cells: Sequence[ClaimResult]) -> tuple[list[float], list[float]]:
    """Distances from each effect down to ci_low and up to ci_high (0 when unbounded)."""
    def gap(low: float | None, high: float | None) -> float:
        if low is None or high is None or not math.isfinite(high - low):
            return 0.0
        return max(0.0, high - low)

    below = [gap(r.ci_low, r.effect) for r in cells]
    above = [gap(r.effect, r.ci_high) for r in cells]
    return below, above


def _effect_panel(axes: Any, key: ClaimKey, cells: dict[str, ClaimResult],
                  checkpoints: Sequence[str]) -> None:
    """One claim's effect with its interval at each checkpoint, and its threshold."""
    ordered = [cells[c] for c in checkpoints if c in cells]
    measured = [r for r in ordered if r.effect is not None and math.isfinite(r.effect)]
    xs = [checkpoints.index(_checkpoint(r)) for r in measured]
    below, above = _error_bars(measured)
    axes.errorbar(xs, [r.effect for r in measured], yerr=[below, above], fmt="none",
                  ecolor="#555555", capsize=3, zorder=1)
    axes.scatter(xs, [r.effect for r in measured], zorder=2, s=18,
                 c=[VERDICT_COLOURS.get(r.verdict, "#000000") for r in measured])
    threshold = next((r.threshold for r in ordered if r.threshold is not None), None)
    if threshold is not None and math.isfinite(threshold):
        axes.axhline(threshold, color="#d73027", linestyle="--", linewidth=1)
        if ordered[0].kind == "negligible":
            axes.axhline(-threshold, color="#d73027", linestyle="--", linewidth=1)
    if not measured:
        axes.text(0.5, 0.5, "no effect measured", ha="center", va="center",
                  transform=axes.transAxes, color="#777777")
    axes.set_title(_plain_text(f"{key[1]}\n{Path(key[0]).name}"), fontsize=8)
    axes.set_xlim(-0.5, len(checkpoints) - 0.5)
    _sparse_ticks(axes, [_plain_text(c) for c in checkpoints])
    axes.tick_params(labelsize=7)


def _effects(results: Sequence[ClaimResult]) -> bytes:
    """A grid of small plots, one per claim, of the effect over checkpoints."""
    claims = _by_claim(results)
    checkpoints = _checkpoints(results)
    columns = min(3, len(claims))
    rows = math.ceil(len(claims) / columns)
    width = max(3.2, min(8.0, 0.25 * len(checkpoints)))
    figure = _figure(width * columns, 2.6 * rows)
    for i, (key, cells) in enumerate(claims.items()):
        _effect_panel(figure.add_subplot(rows, columns, i + 1), key, cells, checkpoints)
    figure.tight_layout()
    return _png(figure)


# -- sections ----------------------------------------------------------------------
def _num(value: float | int | None) -> str:
    """A number to four significant digits; ``-`` when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _raw_row(r: ClaimResult) -> tuple[str, ...]:
    """One row of the results table, in the order of ``RAW_HEADER``."""
    ci = "-" if r.ci_low is None and r.ci_high is None else \
        f"[{_num(r.ci_low)}, {_num(r.ci_high)}]"
    return (r.file, r.id, _checkpoint(r), r.verdict, _num(r.effect), ci,
            _num(r.threshold), _num(r.p_adjusted), _num(r.n))


def _summary(results: Sequence[ClaimResult]) -> str:
    """One sentence: how many results, claims and checkpoints, and each verdict's count."""
    counts = {v: sum(r.verdict == v for r in results) for v in dict.fromkeys(
        [*VERDICT_COLOURS, *(r.verdict for r in results)])}
    parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    return (f"{len(results)} result(s) of {len(_by_claim(results))} claim(s) over "
            f"{len(_checkpoints(results))} checkpoint(s)" + (f": {parts}." if parts else "."))


def _baseline_section(results: Sequence[ClaimResult], baseline: Sequence[ClaimResult],
                      max_drift: float | None) -> _Section:
    """Regressions and drift first, then the other changes from the baseline."""
    from mechcheck.baseline import compare

    order = {"regression": 0, "drift": 1, "missing": 2, "fixed": 3, "new": 4}
    changes = sorted(compare(baseline, results, max_drift=max_drift),
                     key=lambda c: order.get(c.kind, 5))
    bad = sum(c.kind in ("regression", "drift") for c in changes)
    rows = tuple((c.kind, c.file, c.id, c.checkpoint or NO_CHECKPOINT,
                  f"{c.old_verdict or '-'} -> {c.new_verdict or '-'}",
                  f"{_num(c.old_effect)} -> {_num(c.new_effect)}") for c in changes)
    return _Section(title="Changes from the baseline",
                    text=f"{bad} regression(s) or drift, {len(changes) - bad} other "
                         "change(s).",
                    header=("change", "file", "id", "checkpoint", "verdict", "effect"),
                    rows=rows)


def _sections(results: Sequence[ClaimResult], baseline: Sequence[ClaimResult] | None,
              max_drift: float | None) -> list[_Section]:
    """Every part of the report, in order."""
    sections = [_Section(title="Summary", text=_summary(results))]
    if results:
        sections += [
            _Section(title="Verdicts", text="Claims x checkpoints.",
                     image=("verdicts.png", _heatmap(results))),
            _Section(title="Effects", text="Effect with its interval at each checkpoint; "
                     "the dashed line is the threshold.",
                     image=("effects.png", _effects(results))),
            _Section(title="Onsets", text="The first checkpoint at which each claim "
                     "holds, and the first later one at which it fails.",
                     header=("file", "id", "onset", "lost at"),
                     rows=tuple((f, i, a or "-", b or "-")
                                for (f, i), (a, b) in onsets(results).items())),
        ]
    if baseline is not None:
        sections.append(_baseline_section(results, baseline, max_drift))
    sections.append(_Section(title="Results", header=RAW_HEADER,
                             rows=tuple(_raw_row(r) for r in results)))
    return sections


# -- output formats ----------------------------------------------------------------
def _html_table(section: _Section) -> list[str]:
    """A section's table as HTML lines; verdict cells are coloured by CSS class."""
    verdict = section.header.index("verdict") if "verdict" in section.header else -1
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>"
                                         for h in section.header) + "</tr>"]
    for row in section.rows:
        cells = [f'<td class="v-{html.escape(cell)}">' if i == verdict else "<td>"
                 for i, cell in enumerate(row)]
        lines.append("<tr>" + "".join(f"{c}{html.escape(v)}</td>"
                                      for c, v in zip(cells, row, strict=True)) + "</tr>")
    return lines + ["</table>"]


def _to_html(title: str, sections: Sequence[_Section]) -> str:
    """One self-contained HTML page: inline CSS, images as data URIs, no scripts."""
    lines = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style>", "</head>",
             "<body>", f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        lines.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            lines.append(f"<p>{html.escape(section.text)}</p>")
        if section.image is not None:
            data = base64.b64encode(section.image[1]).decode("ascii")
            lines.append(f'<img src="data:image/png;base64,{data}" '
                         f'alt="{html.escape(section.title)}">')
        if section.header:
            lines += _html_table(section)
    return "\n".join(lines + ["</body>", "</html>"]) + "\n"


def _md(text: str) -> str:
    """Text for a Markdown table cell or paragraph: HTML-escaped, pipes escaped."""
    return html.escape(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(title: str, sections: Sequence[_Section], folder: Path,
                 link: str) -> str:
    """Markdown text; images are written into ``folder`` and linked as ``link/name``."""
    lines = [f"# {_md(title)}", ""]
    for section in sections:
        lines += [f"## {_md(section.title)}", ""]
        if section.text:
            lines += [_md(section.text), ""]
        if section.image is not None:
            name, data = section.image
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(data)
            lines += [f"![{_md(section.title)}]({link}/{name})", ""]
        if section.header:
            lines.append("| " + " | ".join(_md(h) for h in section.header) + " |")
            lines.append("|" + "---|" * len(section.header))
            lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in section.rows]
            lines.append("")
    return "\n".join(lines)


def render(results: Sequence[ClaimResult], path: str | os.PathLike[str], *,
           baseline: Sequence[ClaimResult] | None = None,
           title: str = "mechcheck report", max_drift: float | None = None) -> Path:
    """Write a report of ``results`` as ``.html`` or ``.md``.

    Args:
        results: claim results, in report order (as :func:`mechcheck.report.read_report`
            returns them): claims keep that order, checkpoints the order they first
            appear in.
        path: the report file; its extension (``.html``/``.htm`` or ``.md``) picks the
            format.  A Markdown report's figures go to ``<stem>_files/`` beside it.
        baseline: results of an earlier run; adds the regressions, drift and other
            changes found by :func:`mechcheck.baseline.compare`.
        title: the page title.
        max_drift: with ``baseline``, also list as drift a claim that passed there and
            whose effect moved by more than this (as ``mechcheck compare --max-drift``).

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Raises:
        MechcheckError: the extension is neither HTML nor Markdown.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (*HTML_SUFFIXES, ".md"):
        raise MechcheckError(f"unknown report format '{path.suffix}'", key="-o",
                             hint="name the report *.html or *.md")
    sections = _sections(list(results), None if baseline is None else list(baseline),
                         max_drift)
    if suffix in HTML_SUFFIXES:
        text = _to_html(title, sections)
    else:
        folder = path.with_name(f"{path.stem}_files")
        text = _to_markdown(title, sections, folder, quote(folder.name))
    path.write_text(text, encoding="utf-8")
    return path
