"""A readable report of a run: claims, verdicts, effects, onsets, changes, messages.

:func:`render` writes one of two formats, chosen by the file extension:

* ``.html``: one self-contained file for offline viewing.  Figures are embedded as
  base64 PNG ``data:`` URIs and the CSS is inline.  The file has no JavaScript and
  no external URLs.
* ``.md``: Markdown.  Figures are written as PNG files into a ``<stem>_files/``
  folder next to the report and linked with relative paths, so the folder must be
  kept with the report.

A run over checkpoints gets a verdict heatmap (claims x checkpoints), each claim's
effect over the checkpoints and the onsets; a run without checkpoints gets a plot of
each claim's effect, interval and threshold instead.  Both list every claim with its
expected inequality, and the message of every claim that did not pass.  A claim that
failed as expected shows as ``xfail``, one expected to fail that passed as ``xpass``.
Claims with a ``profile`` (a probe's curve over sites, a steering claim's shift over
scales) get a plot and a table of its points each, under "Curves"; a profile over
layers x positions (causal tracing's cells, :func:`~mechcheck.report.figures.is_grid`)
gets a heatmap per site and a table with one column per position.

The same input gives the same bytes: nothing depends on the time or the machine,
and PNG metadata is stripped.

Example:
    >>> from mechcheck.report.io import read_report
    >>> render(read_report("results.json"), "report.html")  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mechcheck.errors import MechcheckError
from mechcheck.report.figures import (
    CHANGE_COLOURS,
    NO_CHECKPOINT,
    VERDICT_COLOURS,
    component_heatmap,
    each_groups,
    effects_grid,
    forest,
    grid_cells,
    grid_figure,
    heatmap,
    is_grid,
    profile_figure,
    shown_verdict,
    text_heatmap,
)
from mechcheck.report.results import ClaimResult, format_p

__all__ = ["CHANGE_COLOURS", "VERDICT_COLOURS", "check_output", "onsets", "render"]

HTML_SUFFIXES = (".html", ".htm")
RAW_HEADER = ("file", "id", "checkpoint", "verdict", "effect", "CI", "threshold",
              "p_adjusted", "n")
CLAIM_HEADER = ("file", "id", "line", "kind", "expected", "components")
FLAT_HEADER = ("file", "id", "line", "kind", "expected", "verdict", "effect", "CI",
               "threshold", "p_adjusted", "n")
CHANGE_ORDER = {"regression": 0, "drift": 1, "missing": 2, "fixed": 3, "new": 4}


def _css() -> str:
    light = {"pass": "#d9f0d3", "fail": "#f8d0cc", "error": "#e7d4e8", "skip": "#eeeeee",
             "xfail": "#d6e9f5", "xpass": "#fbd3b5"}
    change = {"regression": "#f8d0cc", "drift": "#fde3bd", "fixed": "#d9f0d3",
              "missing": "#eeeeee", "new": "#d6e9f5"}
    rules = [f".v-{k} {{ background: {v}; }}" for k, v in light.items()]
    rules += [f".c-{k} {{ background: {v}; border-left: 4px solid {CHANGE_COLOURS[k]}; }}"
              for k, v in change.items()]
    return "\n".join([
        "body { font-family: sans-serif; margin: 2em; color: #222; max-width: 90em; }",
        "table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }",
        "th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; "
        "vertical-align: top; }",
        "th { background: #f3f3f3; }", "img { max-width: 100%; }",
        ".warn { background: #fde3bd; border-left: 4px solid #f1a340; padding: 0.5em 1em; }",
        "details { margin: 0.4em 0; } summary { cursor: pointer; }",
        "pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }", *rules])


ClaimKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Section:
    """One part of the report, independent of the output format."""

    title: str
    text: str = ""
    image: tuple[str, bytes] | None = None  # (file name, PNG bytes)
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()
    blocks: tuple[tuple[str, str], ...] = ()  # (title, preformatted text)
    warning: str = ""
    level: int = 2  # the heading's level: 3 for a part of the section before it


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


# -- sections ----------------------------------------------------------------------
def _num(value: float | int | None) -> str:
    """A number to four significant digits; ``-`` when missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _p(value: float | None) -> str:
    return "-" if value is None else format_p(value).replace("n/a", "-")


def _ci(r: ClaimResult) -> str:
    if r.ci_low is None and r.ci_high is None:
        return "-"
    return f"[{_num(r.ci_low)}, {_num(r.ci_high)}]"


def _raw_row(r: ClaimResult) -> tuple[str, ...]:
    """One row of the results table, in the order of ``RAW_HEADER``."""
    return (r.file, r.id, _checkpoint(r), shown_verdict(r), _num(r.effect), _ci(r),
            _num(r.threshold), _p(r.p_adjusted), _num(r.n))


def _flat_row(r: ClaimResult) -> tuple[str, ...]:
    """One row of the claims table of a run without checkpoints (``FLAT_HEADER``)."""
    return (r.file, r.id, _num(r.line), r.kind or "-", r.expected or "-", shown_verdict(r),
            _num(r.effect), _ci(r), _num(r.threshold), _p(r.p_adjusted), _num(r.n))


def _summary(results: Sequence[ClaimResult]) -> str:
    """One sentence: how many results, claims and checkpoints, and each verdict's count."""
    shown = [shown_verdict(r) for r in results]
    counts = {v: shown.count(v) for v in dict.fromkeys([*VERDICT_COLOURS, *shown])}
    parts = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    if not any(r.checkpoint is not None for r in results):
        head = f"{len(results)} result(s) of {len(_by_claim(results))} claim(s), without " \
            "checkpoints"
    else:
        head = (f"{len(results)} result(s) of {len(_by_claim(results))} claim(s) over "
                f"{len(_checkpoints(results))} checkpoint(s)")
    return head + (f": {parts}." if parts else ".")


def _baseline_section(results: Sequence[ClaimResult], baseline: Sequence[ClaimResult],
                      max_drift: float | None) -> _Section:
    """Regressions and drift first, then the other changes from the baseline."""
    from mechcheck.report.baseline import compare

    changes = sorted(compare(baseline, results, max_drift=max_drift),
                     key=lambda c: CHANGE_ORDER.get(c.kind, 5))
    bad = sum(c.kind in ("regression", "drift") for c in changes)
    rows = tuple((c.kind, c.file, c.id, c.checkpoint or NO_CHECKPOINT,
                  f"{c.old_verdict or '-'} -> {c.new_verdict or '-'}",
                  f"{_num(c.old_effect)} -> {_num(c.new_effect)}") for c in changes)
    return _Section(title="Changes from the baseline",
                    text=f"{bad} regression(s) or drift, {len(changes) - bad} other "
                         "change(s).",
                    header=("change", "file", "id", "checkpoint", "verdicts", "effect"),
                    rows=rows)


def _messages(results: Sequence[ClaimResult]) -> _Section:
    """The failure or error text of every claim that did not pass."""
    blocks = []
    for r in results:
        if r.verdict == "pass" and shown_verdict(r) == "pass":
            continue
        where = f"{r.file}::{r.id}" + (f" [{r.checkpoint}]" if r.checkpoint else "")
        text = r.message or "(no message)"
        if r.xfail:
            text = f"expected to fail (xfail): {r.xfail}\n\n{text}"
        blocks.append((f"{where}: {shown_verdict(r)}", text))
    return _Section(title="Messages", text="" if blocks else "Every claim passed.",
                    blocks=tuple(blocks))


def _criteria_section(results: Sequence[ClaimResult]) -> _Section | None:
    """One row per criterion of the claims that state several (circuits)."""
    rows = []
    for r in results:
        for c in r.criteria:
            ci = f"[{_num(c.get('ci_low'))}, {_num(c.get('ci_high'))}]"
            rows.append((r.file, r.id, c["name"], "pass" if c.get("passed") else "fail",
                         _num(c.get("effect")), ci, _num(c.get("threshold")),
                         _p(c.get("p_value")), c.get("detail") or "-"))
    if not rows:
        return None
    return _Section(title="Criteria", text="The conditions of claims that state several "
                    "(a circuit's faithfulness, completeness, minimality), each decided "
                    "on its own (raw p-values); the claim holds when every one does.",
                    header=("file", "id", "criterion", "verdict", "effect", "CI",
                            "threshold", "p", "decided by"), rows=tuple(rows))


def _point_cell(value: object) -> str:
    """One value of a profile's point for a table cell: numbers as :func:`_num`."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return _num(value)
    return str(value)


def _profile_table(points: Sequence[dict[str, Any]]) -> tuple[tuple[str, ...],
                                                              tuple[tuple[str, ...], ...]]:
    """A profile's keys, in order of first appearance, ``ci_low``/``ci_high`` as one
    ``CI`` column, and one row per point."""
    keys = list(dict.fromkeys(k for p in points for k in p))
    header = tuple("CI" if k in ("ci_low", "ci_high") else k
                   for k in keys if k != "ci_high" or "ci_low" not in keys)
    rows = tuple(tuple(f"[{_point_cell(p.get('ci_low'))}, {_point_cell(p.get('ci_high'))}]"
                       if h == "CI" else _point_cell(p.get(h)) for h in header)
                 for p in points)
    return header, rows


def _curves_sections(results: Sequence[ClaimResult]) -> list[_Section]:
    """A plot and a table of each claim's ``profile``; none when no claim has one."""
    profiled = [r for r in results if r.profile]
    if not profiled:
        return []
    sections = [_Section(title="Curves", text="Points measured beside a claim's decision, "
                         "described but not decided: a probe's held-out scores at each "
                         "site (its selectivity, task minus control, with the interval "
                         "shaded; dashed: chance), or a steering claim's metric shift at "
                         "each scale (interval shaded; grey: random directions and zero).")]
    for i, r in enumerate(profiled):
        grid = is_grid(r.profile)
        header, rows = _grid_table(r.profile) if grid else _profile_table(r.profile)
        where = f" [{r.checkpoint}]" if r.checkpoint else ""
        sections.append(_Section(title=f"{r.file}::{r.id}{where}", level=3,
                                 image=(f"curve{i + 1}.png",
                                        grid_figure(r) if grid else profile_figure(r)),
                                 header=header, rows=rows))
    return sections


def _each_sections(results: Sequence[ClaimResult]) -> list[_Section]:
    """A heatmap (and its text grid) of each ``each: true`` claim's results."""
    groups = each_groups(results)
    if not groups:
        return []
    sections = [_Section(title="Per-component claims", text="Each claim written with "
                         "each: true, one cell per component (layers down, heads, neurons "
                         "or sites across; or layers across): the effect's colour (red "
                         "positive, blue negative), framed in the verdict's colour, with "
                         "a dot where the claim passed.")]
    for i, ((file, parent, checkpoint), group) in enumerate(groups.items()):
        where = f" [{checkpoint}]" if checkpoint else ""
        sections.append(_Section(title=f"{file}::{parent}{where}", level=3,
                                 image=(f"components{i + 1}.png", component_heatmap(group)),
                                 blocks=(("as text", text_heatmap(group)),)))
    return sections


def _grid_table(points: Sequence[dict[str, Any]]) -> tuple[tuple[str, ...],
                                                           tuple[tuple[str, ...], ...]]:
    """A grid profile (causal tracing) as a table: one row per site and layer, one
    column per position, each cell ``effect [ci_low, ci_high]``."""
    sites, positions, layers = grid_cells(points)
    cells = {(str(p.get("site", "")), int(p["layer"]), str(p["position"])): p for p in points}
    rows = []
    for site in sites:
        for layer in layers:
            row = [site or "-", str(layer)]
            for position in positions:
                p = cells.get((site, layer, position))
                row.append("-" if p is None else
                           f"{_point_cell(p.get('effect'))} [{_point_cell(p.get('ci_low'))}, "
                           f"{_point_cell(p.get('ci_high'))}]")
            rows.append(tuple(row))
    return ("site", "layer", *positions), tuple(rows)


def _claims_section(results: Sequence[ClaimResult]) -> _Section:
    """One row per claim: where it is and what it expects."""
    first = [cells[next(iter(cells))] for cells in _by_claim(results).values()]
    return _Section(title="Claims", text="Each claim and the inequality it expects.",
                    header=CLAIM_HEADER,
                    rows=tuple((r.file, r.id, _num(r.line), r.kind or "-",
                                r.expected or "-", " ".join(r.components) or "-")
                               for r in first))


def _checkpoint_sections(results: Sequence[ClaimResult]) -> list[_Section]:
    claims = _by_claim(results)
    return [
        _Section(title="Verdicts", text="Claims x checkpoints, claims in file order.",
                 image=("verdicts.png", heatmap(results))),
        _Section(title="Effects", text="Effect with its interval at each checkpoint; "
                 "the dashed line is the threshold.",
                 image=("effects.png", effects_grid(claims, _checkpoints(results)))),
        _Section(title="Onsets", text="The first checkpoint at which each claim "
                 "holds, and the first later one at which it fails.",
                 header=("file", "id", "onset", "lost at"),
                 rows=tuple((f, i, a or "-", b or "-")
                            for (f, i), (a, b) in onsets(results).items())),
        _claims_section(results),
    ]


def _sections(results: Sequence[ClaimResult], baseline: Sequence[ClaimResult] | None,
              max_drift: float | None, incomplete: str | None) -> list[_Section]:
    """Every part of the report, in order."""
    warning = "" if incomplete is None else (
        f"Incomplete run ({incomplete}): only the claims measured before it stopped "
        "are shown.")
    sections = [_Section(title="Summary", text=_summary(results), warning=warning)]
    sweep = any(r.checkpoint is not None for r in results)
    if results and sweep:
        sections += _checkpoint_sections(results)
    elif results:
        sections += [
            _Section(title="Claims", text="Each claim, the inequality it expects and "
                     "its verdict.", header=FLAT_HEADER,
                     rows=tuple(_flat_row(r) for r in results)),
            _Section(title="Effects", text="Each claim's effect (dot, coloured by "
                     "verdict) and interval, on its own scale; dashed: the threshold.",
                     image=("effects.png", forest(results))),
        ]
    criteria = _criteria_section(results)
    if criteria is not None:
        sections.append(criteria)
    sections += _each_sections(results)
    sections += _curves_sections(results)
    if baseline is not None:
        sections.append(_baseline_section(results, baseline, max_drift))
    if sweep or not results:
        sections.append(_Section(title="Results", header=RAW_HEADER,
                                 rows=tuple(_raw_row(r) for r in results)))
    if results:
        sections.append(_messages(results))
    return sections


# -- output formats ----------------------------------------------------------------
def _cell_class(column: str, value: str) -> str:
    if column == "verdict" and value in VERDICT_COLOURS:
        return f' class="v-{value}"'
    if column == "change" and value in CHANGE_COLOURS:
        return f' class="c-{value}"'
    return ""


def _html_table(section: _Section) -> list[str]:
    """A section's table as HTML lines; verdicts and changes are coloured by CSS class."""
    lines = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>"
                                         for h in section.header) + "</tr>"]
    for row in section.rows:
        cells = (f"<td{_cell_class(h, v)}>{html.escape(v)}</td>"
                 for h, v in zip(section.header, row, strict=True))
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return lines + ["</table>"]


def _to_html(title: str, sections: Sequence[_Section]) -> str:
    """One self-contained HTML page: inline CSS, images as data URIs, no scripts."""
    lines = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{html.escape(title)}</title>", f"<style>{_css()}</style>", "</head>",
             "<body>", f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        lines.append(f"<h{section.level}>{html.escape(section.title)}</h{section.level}>")
        if section.warning:
            lines.append(f'<p class="warn">{html.escape(section.warning)}</p>')
        if section.text:
            lines.append(f"<p>{html.escape(section.text)}</p>")
        if section.image is not None:
            data = base64.b64encode(section.image[1]).decode("ascii")
            lines.append(f'<img src="data:image/png;base64,{data}" '
                         f'alt="{html.escape(section.title)}">')
        if section.header:
            lines += _html_table(section)
        for name, text in section.blocks:
            lines.append(f"<details><summary>{html.escape(name)}</summary>"
                         f"<pre>{html.escape(text)}</pre></details>")
    return "\n".join(lines + ["</body>", "</html>"]) + "\n"


def _md(text: str) -> str:
    """Text for a Markdown table cell or paragraph: HTML-escaped, pipes escaped."""
    return html.escape(text).replace("|", "\\|").replace("\n", " ")


def _to_markdown(title: str, sections: Sequence[_Section], folder: Path,
                 link: str) -> str:
    """Markdown text; images are written into ``folder`` and linked as ``link/name``."""
    lines = [f"# {_md(title)}", ""]
    for section in sections:
        lines += [f"{'#' * section.level} {_md(section.title)}", ""]
        if section.warning:
            lines += [f"> **{_md(section.warning)}**", ""]
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
        for name, text in section.blocks:
            fence = "~~~~" if "```" in text else "```"
            lines += [f"### {_md(name)}", "", f"{fence}text", html.escape(text), fence, ""]
    return "\n".join(lines)


def check_output(path: str | os.PathLike[str]) -> Path:
    """``path`` if it names a format :func:`render` writes, in a folder that can be
    written (created if missing).

    Raises:
        MechcheckError: another extension, or a folder that cannot be written.
    """
    from mechcheck.report.io import check_writable

    path = Path(path)
    if path.suffix.lower() not in (*HTML_SUFFIXES, ".md"):
        raise MechcheckError(f"unknown report format '{path.suffix}'", key="-o",
                             hint="name the report *.html or *.md")
    return check_writable(path, key="-o")


def render(results: Sequence[ClaimResult], path: str | os.PathLike[str], *,
           baseline: Sequence[ClaimResult] | None = None,
           title: str = "mechcheck report", max_drift: float | None = None,
           incomplete: str | None = None) -> Path:
    """Write a report of ``results`` as ``.html`` or ``.md``.

    Args:
        results: claim results, in report order (as :func:`mechcheck.report.read_report`
            returns them): claims keep that order, checkpoints the order they first
            appear in.
        path: the report file; its extension (``.html``/``.htm`` or ``.md``) picks the
            format.  A Markdown report's figures go to ``<stem>_files/`` beside it.
        baseline: results of an earlier run; adds the regressions, drift and other
            changes found by :func:`mechcheck.report.baseline.compare`.
        title: the page title.
        max_drift: with ``baseline``, also list as drift a claim that passed there and
            whose effect moved by more than this (as ``mechcheck compare --max-drift``).
        incomplete: why the run stopped early, for a report with ``"complete": false``;
            the page then says so at the top.

    Returns:
        ``path``, as a :class:`~pathlib.Path`.

    Raises:
        MechcheckError: the extension is neither HTML nor Markdown.
    """
    path = check_output(path)
    sections = _sections(list(results), None if baseline is None else list(baseline),
                         max_drift, incomplete)
    if path.suffix.lower() in HTML_SUFFIXES:
        text = _to_html(title, sections)
    else:
        folder = path.with_name(f"{path.stem}_files")
        text = _to_markdown(title, sections, folder, quote(folder.name))
    path.write_text(text, encoding="utf-8")
    return path
