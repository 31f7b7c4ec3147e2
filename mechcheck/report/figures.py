"""The figures of the HTML and Markdown reports, as PNG bytes.

Drawn on matplotlib's Agg canvas directly (no pyplot, no display), without metadata
that could vary between runs, so the same results give the same bytes.  Colours come
from the verdict as the report shows it (``xfail`` and ``xpass`` included).
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mechcheck.report.results import ClaimResult

__all__ = ["CHANGE_COLOURS", "GRID_COLOURMAPS", "PROFILE_COLOURS", "VERDICT_COLOURS",
           "ComponentGrid", "component_grid", "component_heatmap", "component_label", "each_groups",
           "effects_grid", "forest", "grid_figure", "heatmap", "is_grid", "profile_figure",
           "shown_verdict", "text_cell", "text_heatmap"]

# The verdict as the report shows it: an expected failure is `xfail`; a claim expected
# to fail that passed is `xpass` (strict: it fails the run).
VERDICT_COLOURS: dict[str, str] = {
    "pass": "#1a9850", "fail": "#d73027", "error": "#7b3294", "skip": "#bdbdbd",
    "xfail": "#92c5de", "xpass": "#e66101",
}
# A change from the baseline, by kind: bad red/amber, good green, neutral grey/blue.
CHANGE_COLOURS: dict[str, str] = {
    "regression": "#d73027", "drift": "#f1a340", "fixed": "#1a9850", "missing": "#969696",
    "new": "#4393c3",
}
# A profile's curves, by key: the value with an interval blue, the task teal, the
# controls grey, chance dark grey (dashed); other keys take OTHER_COLOURS in turn.
PROFILE_COLOURS: dict[str, str] = {
    "selectivity": "#2166ac", "shift": "#2166ac", "task": "#35978f", "control": "#969696",
    "random_shift": "#969696", "chance": "#555555",
}
OTHER_COLOURS = ("#8c510a", "#c51b7d", "#01665e", "#762a83")
PROFILE_X = ("layer", "scale")  # the x axis: the first key every point gives as a number
BOUNDS = ("ci_low", "ci_high")  # the interval of the first of MAIN_KEYS present
MAIN_KEYS = ("selectivity", "shift", "score", "direct_effect")
DASHED = ("chance",)
Y_LABELS = {"selectivity": "held-out score", "shift": "metric shift", "score": "lens score",
            "direct_effect": "direct effect"}
MISSING_COLOUR = "#ffffff"
NO_CHECKPOINT = "-"
DPI = 100

ClaimKey = tuple[str, str]


def shown_verdict(result: ClaimResult) -> str:
    """``xfail`` for a claim that failed as expected, ``xpass`` for one expected to fail
    that passed, else the verdict."""
    if result.xfail and result.verdict == "fail":
        return "xfail"
    if result.xfail and result.verdict == "pass":
        return "xpass"
    return result.verdict


def _checkpoint(result: ClaimResult) -> str:
    return NO_CHECKPOINT if result.checkpoint is None else result.checkpoint


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


def plain_text(text: str) -> str:
    """Text that matplotlib draws as written, never as mathtext."""
    return text.replace("$", r"\$")


def label(key: ClaimKey) -> str:
    """A claim's name for a figure, with ``$`` kept from starting mathtext."""
    return plain_text(f"{Path(key[0]).name}::{key[1]}")


def _sparse_ticks(axis: Any, labels: Sequence[str], *, vertical: bool = False) -> None:
    """Tick labels (already :func:`plain_text`) on an axis, thinned to about 40."""
    step = max(1, math.ceil(len(labels) / 40))
    positions = list(range(0, len(labels), step))
    shown = [labels[i] for i in positions]
    if vertical:
        axis.set_yticks(positions, shown)
    else:
        axis.set_xticks(positions, shown, rotation=60, ha="right")


def _legend(axes: Any, used: Collection[str]) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items() if v in used]
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                frameon=False)


def heatmap(results: Sequence[ClaimResult]) -> bytes:
    """Claims (rows, in claim order) x checkpoints, one coloured cell per verdict."""
    from dataclasses import replace

    from matplotlib.colors import ListedColormap

    from mechcheck.report.io import matrix

    table = matrix([replace(r, verdict=shown_verdict(r)) for r in results])
    names = list(VERDICT_COLOURS)
    codes = [[names.index(v) if v in names else len(names) for v in row]
             for row in table.itertuples(index=False)]
    cell = max(0.1, min(0.5, 16 / max(table.shape)))
    figure = _figure(1 + cell * table.shape[1], 0.8 + cell * table.shape[0])
    axes = figure.add_subplot()
    colours = ListedColormap([*VERDICT_COLOURS.values(), MISSING_COLOUR])
    axes.imshow(codes, cmap=colours, vmin=-0.5, vmax=len(names) + 0.5, aspect="auto")
    _sparse_ticks(axes, [plain_text(str(c)) for c in table.columns])
    _sparse_ticks(axes, [label(k) for k in table.index], vertical=True)
    axes.set_xlabel("checkpoint")
    _legend(axes, {shown_verdict(r) for r in results})
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


def _thresholds(result: ClaimResult) -> list[float]:
    """Where the claim's threshold lines go: ``±margin`` for negligible claims."""
    t = result.threshold
    if t is None or not math.isfinite(t):
        return []
    return [-t, t] if result.kind == "negligible" else [t]


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
                 c=[VERDICT_COLOURS.get(shown_verdict(r), "#000000") for r in measured])
    for line in _thresholds(ordered[0]) if ordered else []:
        axes.axhline(line, color="#555555", linestyle="--", linewidth=1)
    if not measured:
        axes.text(0.5, 0.5, "no effect measured", ha="center", va="center",
                  transform=axes.transAxes, color="#777777")
    axes.set_title(plain_text(f"{key[1]}\n{Path(key[0]).name}"), fontsize=8)
    axes.set_xlim(-0.5, len(checkpoints) - 0.5)
    _sparse_ticks(axes, [plain_text(c) for c in checkpoints])
    axes.tick_params(labelsize=7)


def effects_grid(claims: dict[ClaimKey, dict[str, ClaimResult]],
                 checkpoints: Sequence[str]) -> bytes:
    """A grid of small plots, one per claim, of the effect over checkpoints."""
    columns = min(3, len(claims))
    rows = math.ceil(len(claims) / columns)
    width = max(3.2, min(8.0, 0.25 * len(checkpoints)))
    figure = _figure(width * columns, 2.6 * rows)
    for i, (key, cells) in enumerate(claims.items()):
        _effect_panel(figure.add_subplot(rows, columns, i + 1), key, cells, checkpoints)
    figure.tight_layout()
    return _png(figure)


def _limits(result: ClaimResult) -> tuple[float, float]:
    """An x range holding the effect, its finite bounds and the threshold lines."""
    points = [v for v in (result.effect, result.ci_low, result.ci_high)
              if v is not None and math.isfinite(v)] + _thresholds(result)
    low, high = (min(points), max(points)) if points else (0.0, 1.0)
    pad = 0.15 * (high - low) or 0.5 * abs(high) or 0.5
    return low - pad, high + pad


def _forest_row(axes: Any, result: ClaimResult) -> None:
    """One claim: its interval (an arrow where a bound is infinite), its effect coloured
    by the verdict, and its threshold as dashed lines, on the claim's own scale."""
    low, high = _limits(result)
    axes.set_xlim(low, high)
    axes.set_ylim(-1, 1)
    for line in _thresholds(result):
        axes.axvline(line, color="#555555", linestyle="--", linewidth=1)
    effect = result.effect
    colour = VERDICT_COLOURS.get(shown_verdict(result), "#000000")
    if effect is None or not math.isfinite(effect):
        axes.text(0.5, 0, f"no effect measured ({shown_verdict(result)})", ha="center",
                  va="center", transform=axes.get_yaxis_transform(), color="#777777",
                  fontsize=8)
    else:
        left = result.ci_low if result.ci_low is not None and math.isfinite(result.ci_low) \
            else low
        right = result.ci_high if result.ci_high is not None and \
            math.isfinite(result.ci_high) else high
        axes.plot([left, right], [0, 0], color="#555555", linewidth=1.5, zorder=1)
        for bound, end, marker in ((result.ci_low, low, "<"), (result.ci_high, high, ">")):
            if bound is not None and not math.isfinite(bound):
                axes.plot([end], [0], marker=marker, color="#555555", markersize=5)
        axes.scatter([effect], [0], s=40, color=colour, zorder=2)
    axes.set_yticks([0], [label((result.file, result.id))])
    axes.tick_params(axis="y", length=0, labelsize=8)
    axes.tick_params(axis="x", labelsize=7)
    for side in ("top", "right", "left"):
        axes.spines[side].set_visible(False)


def forest(results: Sequence[ClaimResult]) -> bytes:
    """One row per claim, each on its own scale: effect, interval and threshold."""
    figure = _figure(7.0, 0.25 + 0.6 * len(results))
    rows = figure.subplots(len(results), 1, squeeze=False)[:, 0]
    for axes, result in zip(rows, results):
        _forest_row(axes, result)
    _legend(rows[0], {shown_verdict(r) for r in results})
    figure.subplots_adjust(hspace=1.2)
    return _png(figure)


def _number(point: dict[str, Any], key: str) -> float:
    """``point[key]`` as a float; NaN when missing or not a number."""
    value = point.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def _profile_x(points: Sequence[dict[str, Any]]) -> tuple[str, list[float], list[str]]:
    """The x key, each point's x and, when x is the point's index, its tick labels.

    x is ``layer`` or ``scale`` when every point gives it as a number and no two
    points share it (two sites of one layer fall back to the index), else the index,
    labelled by ``site``.
    """
    for key in PROFILE_X:
        xs = [_number(p, key) for p in points]
        if all(math.isfinite(x) for x in xs) and len(set(xs)) == len(xs):
            return key, xs, []
    names = [plain_text(str(p.get("site", i))) for i, p in enumerate(points)]
    return "site" if any("site" in p for p in points) else "point", \
        [float(i) for i in range(len(points))], names


def _profile_keys(points: Sequence[dict[str, Any]], x_key: str) -> tuple[str | None,
                                                                            list[str]]:
    """The key of the value with an interval (``None`` without bounds) and the keys of
    the other numeric values, in order of first appearance."""
    keys = [k for k in dict.fromkeys(k for p in points for k in p)
            if k not in (x_key, *PROFILE_X, *BOUNDS)
            and any(math.isfinite(_number(p, k)) for p in points)]
    has_bounds = any(b in p for p in points for b in BOUNDS)
    main = next((k for k in MAIN_KEYS if k in keys), None) if has_bounds else None
    return main, [k for k in keys if k != main]


def _profile_band(axes: Any, points: Sequence[dict[str, Any]], xs: Sequence[float],
                  main: str, colour: str) -> None:
    """The main value's interval as a shaded band; an unbounded side (infinite, or
    ``None`` as JSON writes it) reaches the edge of the plot."""
    low_edge, high_edge = axes.get_ylim()
    lows, highs, shown = [], [], []
    for point in points:
        low, high = _number(point, BOUNDS[0]), _number(point, BOUNDS[1])
        shown.append(math.isfinite(_number(point, main)))
        lows.append(low_edge if not math.isfinite(low) else low)
        highs.append(high_edge if not math.isfinite(high) else high)
    axes.fill_between(xs, lows, highs, where=shown, color=colour, alpha=0.18, linewidth=0,
                      zorder=1, label=f"{main} interval")
    axes.set_ylim(low_edge, high_edge)


def _profile_limits(points: Sequence[dict[str, Any]], keys: Sequence[str]) -> tuple[
        float, float]:
    """A y range holding zero, every value and every finite bound."""
    values = [0.0] + [v for p in points for k in (*keys, *BOUNDS)
                      if math.isfinite(v := _number(p, k))]
    low, high = min(values), max(values)
    pad = 0.08 * (high - low) or 0.5
    return low - pad, high + pad


def _profile_lines(axes: Any, points: Sequence[dict[str, Any]], xs: Sequence[float],
                   main: str | None, others: Sequence[str]) -> None:
    """The main value (thick, with its band) and the other values (``chance`` dashed),
    each in its :data:`PROFILE_COLOURS` colour; NaN leaves a gap."""
    spare = iter(OTHER_COLOURS * (1 + len(others)))
    for key in [*([main] if main else []), *others]:
        colour = PROFILE_COLOURS.get(key) or next(spare)
        if key == main:
            _profile_band(axes, points, xs, key, colour)
        dashed = key in DASHED
        axes.plot(xs, [_number(p, key) for p in points], color=colour, zorder=2,
                  linestyle="--" if dashed else "-", marker="" if dashed else "o",
                  markersize=4, linewidth=2.0 if key == main else 1.3,
                  label=plain_text(key))


def profile_figure(result: ClaimResult) -> bytes:
    """A claim's ``profile`` (points measured beside its decision) as a line plot.

    x is the points' ``layer`` or ``scale`` (else their index, labelled by ``site``).
    The value named by ``ci_low``/``ci_high`` (``selectivity`` or ``shift``) is drawn
    with its interval as a band, ``chance`` dashed, every other number as a line, and
    zero as a thin grey line.  The title is the claim id (and checkpoint) and its
    verdict as the report shows it.
    """
    x_key, xs, names = _profile_x(result.profile)
    order = sorted(range(len(xs)), key=xs.__getitem__)
    points, xs = [result.profile[i] for i in order], [xs[i] for i in order]
    main, others = _profile_keys(points, x_key)
    figure = _figure(6.4, 3.4)
    axes = figure.add_subplot()
    axes.axhline(0.0, color="#bbbbbb", linewidth=0.8, zorder=0)
    axes.set_ylim(*_profile_limits(points, [*others, *([main] if main else [])]))
    _profile_lines(axes, points, xs, main, others)
    if names:
        _sparse_ticks(axes, names)
    elif x_key == "layer":
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel(x_key)
    axes.set_ylabel(Y_LABELS.get(main or "", "value"))
    where = f" [{result.checkpoint}]" if result.checkpoint else ""
    axes.set_title(plain_text(f"{result.id}{where}: {shown_verdict(result)}"), fontsize=10)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=8)
    return _png(figure)


# A 2-D profile (causal tracing's layers x positions per site), one colour map per site as
# in Meng et al.'s figures: the residual stream purple, MLPs green, attention red.
GRID_KEYS = ("layer", "position", "effect")
GRID_COLOURMAPS: dict[str, str] = {"resid": "Purples", "mlp": "Greens", "attn": "Reds"}
GRID_TITLES = {"resid": "residual stream (resid_post)", "mlp": "MLP", "attn": "attention"}


def is_grid(points: Sequence[dict[str, Any]]) -> bool:
    """Whether a profile is a 2-D grid: every point gives a numeric ``layer``, a
    ``position`` and an ``effect`` (causal tracing's cells; a ``site`` key splits it
    into panels).  Such profiles are drawn by :func:`grid_figure`, others by
    :func:`profile_figure`."""
    return bool(points) and all(
        all(k in p for k in GRID_KEYS) and math.isfinite(_number(p, "layer"))
        for p in points)


def grid_cells(points: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], list[int]]:
    """A grid profile's sites, positions (each in order of first appearance) and layers
    (sorted)."""
    sites = list(dict.fromkeys(str(p.get("site", "")) for p in points))
    positions = list(dict.fromkeys(str(p["position"]) for p in points))
    layers = sorted({int(_number(p, "layer")) for p in points})
    return sites, positions, layers


def grid_figure(result: ClaimResult) -> bytes:
    """A grid profile as heatmaps: one panel per site, layers across, positions down,
    each cell coloured by its ``effect`` (white at 0; a missing cell is blank) with a
    colour bar per panel; the title is the claim id (and checkpoint) and its verdict."""
    import numpy as np

    points = result.profile
    sites, positions, layers = grid_cells(points)
    figure = _figure(max(4.0, 1.5 + 0.22 * len(layers)), 0.9 + (0.55 + 0.32 * len(positions))
                     * len(sites))
    panels = figure.subplots(len(sites), 1, squeeze=False)[:, 0]
    for axes, site in zip(panels, sites):
        grid = np.full((len(positions), len(layers)), np.nan)
        for p in points:
            if str(p.get("site", "")) == site:
                grid[positions.index(str(p["position"])),
                     layers.index(int(_number(p, "layer")))] = _number(p, "effect")
        finite = grid[np.isfinite(grid)]
        top = float(max(finite.max(initial=0.0), 1e-9))
        low = float(min(finite.min(initial=0.0), 0.0))
        image = axes.imshow(grid, aspect="auto", cmap=GRID_COLOURMAPS.get(site, "Blues"),
                            vmin=low, vmax=top, interpolation="nearest")
        axes.set_yticks(range(len(positions)), [plain_text(x) for x in positions])
        step = max(1, math.ceil(len(layers) / 30))
        axes.set_xticks(range(0, len(layers), step), [str(la) for la in layers][::step])
        axes.tick_params(axis="x", labelsize=7)
        axes.tick_params(axis="y", labelsize=8)
        axes.set_title(plain_text(GRID_TITLES.get(site, site)), fontsize=9)
        bar = figure.colorbar(image, ax=axes, fraction=0.04, pad=0.01)
        bar.ax.tick_params(labelsize=7)
    panels[-1].set_xlabel("layer restored")
    where = f" [{result.checkpoint}]" if result.checkpoint else ""
    figure.suptitle(plain_text(f"{result.id}{where}: {shown_verdict(result)}"), fontsize=10)
    figure.tight_layout()
    return _png(figure)


# -- per-component claims (each: true) -------------------------------------------------
# A cell of the text grid: the effect's sign, its size in tenths of the grid's largest
# (0-9), and what the verdict was; a cell without a number says why.
CELL_MARKS = {"pass": "*", "fail": " ", "xfail": "x", "xpass": "!"}
CELL_NO_EFFECT = {"error": "E", "skip": "s"}
MISSING_CELL = "."
TEXT_WIDTH = 120  # the widest line text_heatmap writes (wider grids are split)
_GLOBAL_ROWS = {"embed": -2, "pos_embed": -1, "ln_final": 10**6, "unembed": 10**6 + 1}


@dataclass(frozen=True, slots=True)
class ComponentGrid:
    """Per-component results laid out as a grid: ``rows`` (layers, as text), ``columns``
    (heads or neurons by index, or whole-layer sites such as ``mlp``) and the result in
    each cell, by (row, column).  A sweep over whole layers only (``id[<layer>]``, one
    site per layer) is one row with the layers across (``transposed``)."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: dict[tuple[str, str], Any]
    row_title: str = "layer"
    column_title: str = "head"
    transposed: bool = False


def component_label(result: Any) -> str | None:
    """What names the one component of a per-component result: the part of its id that
    ``each: true`` added (``blocks.9.attn.head.9`` of ``id[blocks.9.attn.head.9]``, ``7``
    of ``id[7]``), else its single component; None when it has several."""
    parent = getattr(result, "each_of", None)
    rid = str(getattr(result, "id", ""))
    if parent and rid.startswith(parent + "[") and rid.endswith("]"):
        return rid[len(parent) + 1:-1]
    components = tuple(getattr(result, "components", ()) or ())
    return str(components[0]) if len(components) == 1 else None


def _place(label: str) -> tuple[int, str, str] | None:
    """(layer for sorting, row, column) of a component label; None if it is no address."""
    from mechcheck.addresses import Address
    from mechcheck.errors import AddressError

    if label.isdigit():
        return int(label), label, "layer"
    try:
        address = Address.parse(label)
    except AddressError:
        return None
    if address.layer is None:
        return _GLOBAL_ROWS.get(address.site, 0), address.site, address.site
    row = str(address.layer)
    if address.site in ("feature",):
        return int(address.layer), row, f"{address.sae}.{address.index}"
    if address.index is not None:
        suffix = "" if address.site in ("head", "neuron") else f".{address.site}"
        return int(address.layer), row, f"{address.index}{suffix}"
    return int(address.layer), row, str(address.site if address.sae is None else
                                         f"{address.sae_site}.sae.{address.sae}.error")


def component_grid(results: Sequence[Any]) -> ComponentGrid:
    """The grid of ``results`` (ClaimResults, or records with ``id``, ``components``,
    ``effect`` and ``verdict``), each placed by :func:`component_label`; results that
    name no single component are left out."""
    placed = []
    for r in results:
        label = component_label(r)
        where = _place(label) if label is not None else None
        if where is not None:
            placed.append((where, r))
    order = {row: key for (key, row, _), _ in placed}
    rows = sorted(order, key=lambda row: (order[row], row))
    columns = list(dict.fromkeys(col for (_, _, col), _ in placed))
    numeric = sorted((c for c in columns if c.isdigit()), key=int)
    columns = numeric + [c for c in columns if not c.isdigit()]
    cells = {(row, col): r for (_, row, col), r in placed}
    sites = {col for (_, _, col), _ in placed}
    neurons = any(_is_neuron(r) for _, r in placed)
    if len(columns) == 1 and len(rows) > 1:  # one value per layer: layers across
        (col,) = columns
        label = "effect" if col == "layer" else col
        return ComponentGrid(rows=(label,), columns=tuple(rows),
                             cells={(label, row): r for (row, c), r in cells.items()},
                             row_title="", column_title="layer", transposed=True)
    title = "neuron" if neurons else ("head" if numeric else "site")
    return ComponentGrid(rows=tuple(rows), columns=tuple(columns), cells=cells,
                         column_title=title if len(sites) > 0 else "")


def _is_neuron(result: Any) -> bool:
    label = component_label(result) or ""
    return ".mlp.neuron." in label or label.lower().startswith("neuron")


def _verdict(result: Any) -> str:
    """:func:`shown_verdict` of a ClaimResult, or of any record with a ``verdict``."""
    verdict = str(getattr(result, "verdict", "error"))
    if getattr(result, "xfail", None) and verdict in ("pass", "fail"):
        return "xpass" if verdict == "pass" else "xfail"
    return verdict


def _effect(result: Any) -> float | None:
    value = getattr(result, "effect", None)
    return float(value) if value is not None and math.isfinite(value) else None


def _grid_scale(grid: ComponentGrid) -> float:
    sizes = [abs(e) for e in map(_effect, grid.cells.values()) if e is not None]
    return max(sizes, default=0.0)


def text_cell(result: Any, scale: float) -> str:
    """Three characters for one result: sign (``-`` or blank), the effect's size on a
    0-9 scale (9 = ``scale``), and its verdict mark (``*`` pass, blank fail, ``x``
    xfail, ``!`` xpass); `` E `` error, `` s `` skipped, `` ? `` no effect; `` . `` for
    None (not measured)."""
    if result is None:
        return f" {MISSING_CELL} "
    verdict = _verdict(result)
    if verdict in CELL_NO_EFFECT:
        return f" {CELL_NO_EFFECT[verdict]} "
    effect = _effect(result)
    if effect is None:
        return " ? "
    digit = 0 if scale <= 0 else min(9, int(abs(effect) / scale * 9 + 0.5))
    return f"{'-' if effect < 0 and digit else ' '}{digit}{CELL_MARKS.get(verdict, '?')}"


def text_heatmap(results: Sequence[Any], *, width: int = TEXT_WIDTH) -> str:
    """The results of a per-component sweep as a compact text grid: layers down, heads
    (neurons, sites) across, or, for a sweep over layers, one row with the layers
    across; each cell is :func:`text_cell`, and the last line explains the cells.
    A grid wider than ``width`` characters is split into blocks of columns."""
    grid = component_grid(results)
    if not grid.cells:
        return "(no per-component results)"
    scale = _grid_scale(grid)
    corner = f"{grid.row_title}\\{grid.column_title}" if grid.row_title else grid.column_title
    left = max([len(corner), *(len(r) for r in grid.rows)])
    cell_width = max([4, *(len(c) + 2 for c in grid.columns)])
    per_block = max(1, (width - left - 1) // cell_width)
    lines: list[str] = []
    for start in range(0, len(grid.columns), per_block):
        block = grid.columns[start:start + per_block]
        if lines:
            lines.append("")
        lines.append(corner.ljust(left) + " " + "".join(c.rjust(cell_width - 1) + " "
                                                        for c in block).rstrip())
        for row in grid.rows:
            cells = (text_cell(grid.cells.get((row, c)), scale).rjust(cell_width)
                     for c in block)
            lines.append((row.rjust(left) + " " + "".join(cells)).rstrip())
    passed = sum(_verdict(r) == "pass" for r in grid.cells.values())
    lines.append(f"{passed}/{len(grid.cells)} passed; digit: |effect| on 0-9, 9 = "
                 f"{scale:.4g}")
    lines.append("- negative; * pass; x xfail; ! xpass; E error; s skip; . not measured")
    return "\n".join(lines)


def component_heatmap(results: Sequence[Any], path: str | Path | None = None) -> bytes:
    """The results of a per-component sweep as a heatmap (PNG bytes, also written to
    ``path`` when given): layers down and heads (neurons, sites) across, or the layers
    across for a sweep over layers; each cell coloured by its effect (blue negative,
    red positive, white 0, a symmetric scale) and framed in its verdict's colour, with a
    dot in every cell that passed."""
    import numpy as np
    from matplotlib.patches import Rectangle

    grid = component_grid(results)
    values = np.full((max(1, len(grid.rows)), max(1, len(grid.columns))), np.nan)
    for (row, col), r in grid.cells.items():
        effect = _effect(r)
        if effect is not None:
            values[grid.rows.index(row), grid.columns.index(col)] = effect
    scale = max(_grid_scale(grid), 1e-9)
    figure = _figure(min(16.0, 2.0 + 0.35 * values.shape[1]),
                     min(16.0, 1.2 + 0.3 * values.shape[0]))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="RdBu_r", vmin=-scale, vmax=scale, aspect="auto",
                        interpolation="nearest")
    small = values.size <= 400
    for (row, col), r in sorted(grid.cells.items(), key=lambda c: (
            grid.rows.index(c[0][0]), grid.columns.index(c[0][1]))):
        y, x = grid.rows.index(row), grid.columns.index(col)
        verdict = _verdict(r)
        if small:
            axes.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, linewidth=1.5,
                                     edgecolor=VERDICT_COLOURS.get(verdict, MISSING_COLOUR)))
        if verdict == "pass":
            axes.plot([x], [y], marker="o", markersize=3 if small else 1.5, color="#222222")
        elif verdict in CELL_NO_EFFECT:
            axes.text(x, y, CELL_NO_EFFECT[verdict], ha="center", va="center", fontsize=7)
    _sparse_ticks(axes, [plain_text(c) for c in grid.columns])
    _sparse_ticks(axes, [plain_text(r) for r in grid.rows], vertical=True)
    axes.set_xlabel(grid.column_title)
    axes.set_ylabel(grid.row_title)
    figure.colorbar(image, ax=axes, fraction=0.04, pad=0.02).set_label("effect")
    first = min(grid.cells.values(), key=lambda r: str(getattr(r, "id", "")), default=None)
    if first is not None:
        name = getattr(first, "each_of", None) or getattr(first, "id", "")
        passed = sum(_verdict(r) == "pass" for r in grid.cells.values())
        axes.set_title(plain_text(f"{name}: {passed}/{len(grid.cells)} passed (dot)"),
                       fontsize=9)
    data = _png(figure)
    if path is not None:
        Path(path).write_bytes(data)
    return data


def each_groups(results: Sequence[ClaimResult]) -> dict[tuple[str, str, str | None],
                                                       list[ClaimResult]]:
    """The results that ``each: true`` made, by (file, parent id, checkpoint), in order
    of first appearance."""
    groups: dict[tuple[str, str, str | None], list[ClaimResult]] = {}
    for r in results:
        if r.each_of:
            groups.setdefault((r.file, r.each_of, r.checkpoint), []).append(r)
    return groups
