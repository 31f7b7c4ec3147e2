"""Claims about SAE features: ``activates``.

"Feature F is active on the positions a column marks": over the positions of the
clean prompts (``at:``, default every position), feature F counts as active where its
activation exceeds ``threshold`` (default 0), and a position counts as marked where
the data's ``marks`` column says so.  Precision is the share of active positions that
are marked, recall the share of marked positions where the feature is active; each
claimed bound (``min_precision``, ``min_recall``) is decided by an exact one-sided
binomial test with Clopper-Pearson bounds over positions
(:func:`mechcheck.stats.test_proportion`, as probes decide accuracy), and both must
hold.  Positions of one prompt are counted as independent trials: the interval is
that of the positions, not of prompts (see docs/sae.md).

A row's ``marks`` value is a position name (from the row's ``positions``), ``last``,
a token index, or a list of them; or a list of per-token flags (0/1 or true/false,
exactly one per token, ``<bos>`` included).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from mechcheck.errors import ClaimSpecError, DataError
from mechcheck.kinds.base import AT, COMPONENTS, Criterion, Measurement, all_of, keys
from mechcheck.spec.schema import KeySpec, as_number, as_str

if TYPE_CHECKING:
    from mechcheck.addresses import Address
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision

__all__ = ["Activates", "feature_marks"]


def _as_rate(value: Any) -> float:
    number = as_number(value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"got {value!r}; a precision or recall bound lies strictly "
                         "between 0 and 1")
    return number


class Activates:
    """An SAE feature is active where a data column marks, with the claimed precision
    and recall."""

    name = "activates"
    description = ("an SAE feature is active (> threshold) on the positions a data column "
                   "marks: precision and recall above their bounds")
    keys = keys(
        COMPONENTS,
        KeySpec(name="marks", required=True, parse=as_str,
                expected="a data column: per row a position name, last, a token index or "
                "a list of them, or one 0/1 flag per token"),
        KeySpec(name="min_precision", parse=_as_rate,
                expected="a number between 0 and 1: the share of active positions that "
                "are marked"),
        KeySpec(name="min_recall", parse=_as_rate,
                expected="a number between 0 and 1: the share of marked positions where "
                "the feature is active"),
        KeySpec(name="threshold", parse=as_number, default=0.0,
                expected="a number: the feature is active where its activation exceeds "
                "it (default 0)"),
        AT,
    )

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.record_needs("clean", [feature_of(ctx)])

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        params = claim.params
        if params.get("min_precision") is None and params.get("min_recall") is None:
            raise ClaimSpecError("activates needs min_precision, min_recall or both",
                                 key="kind", hint="add min_precision: 0.8 (active -> "
                                 "marked) and/or min_recall: 0.8 (marked -> active)")
        feature = feature_of(ctx)
        acts = ctx.activations("clean", feature)
        marks = feature_marks(ctx, params["marks"])
        at = params.get("at")
        threshold = float(params["threshold"])
        active, marked, labels, values = [], [], [], []
        names = _position_names(ctx)
        for row in range(len(ctx.dataset)):
            row_values = acts[row][:, 0].double().cpu().numpy()
            for pos in ctx.positions_of(row, at):
                active.append(row_values[pos] > threshold)
                marked.append(pos in marks[row])
                labels.append(names[row].get(pos, ("last",) if pos == len(row_values) - 1
                                             else ("other",)))
                values.append(row_values[pos])
        active_a, marked_a = np.asarray(active), np.asarray(marked)
        if not marked_a.any():
            raise DataError(f"marks: column {params['marks']!r} marks none of the positions "
                            "counted", key="marks", hint="mark at least one position per "
                            "row (the positions at: counts)")
        criteria = []
        for key, given, hits, what in (
                ("min_precision", active_a, marked_a, "marked | active"),
                ("min_recall", marked_a, active_a, "active | marked")):
            bound = params.get(key)
            if bound is None:
                continue
            decision = _rate(ctx, hits[given].astype(np.float64), bound, key)
            shown = "precision" if key == "min_precision" else "recall"
            criteria.append(Criterion(name=key, decision=decision,
                                      expected=f"{shown} P({what}) > {bound:.4g}",
                                      detail=f"{int(given.sum())} positions "
                                      f"{'active' if key == 'min_precision' else 'marked'}"))
        decisive = all_of(criteria)
        profile = _profile(labels, values, active, marked)
        return Measurement(decision=decisive.decision, intervention="none (clean run)",
                           metric=None, components=(str(feature),),
                           expected=" and ".join(c.expected for c in criteria),
                           criteria=tuple(criteria) if len(criteria) > 1 else (),
                           profile=profile)


def feature_of(ctx: ClaimContext) -> Address:
    """The claim's one SAE feature (``components``)."""
    addresses = ctx.components()
    if len(addresses) != 1 or addresses[0].site != "feature":
        raise ClaimSpecError(f"components names {len(addresses)} component(s) "
                             f"({', '.join(str(a) for a in addresses[:3])}); activates "
                             "takes one SAE feature", key="components",
                             hint='write one feature, e.g. ["blocks.6.resid_post.sae.res6.17"]')
    return addresses[0]


def _rate(ctx: ClaimContext, hits: np.ndarray, bound: float, key: str) -> Decision:
    """The binomial decision on 0/1 ``hits``; with fewer than 2 trials a failing
    decision (nothing to estimate from) rather than an error."""
    from mechcheck.stats import Decision, test_proportion

    if len(hits) < 2:
        k = float(hits.sum())
        return Decision(effect=k / len(hits) if len(hits) else 0.0, ci_low=0.0, ci_high=1.0,
                        confidence_level=1 - 2 * ctx.claim.alpha, n=len(hits), p_value=1.0,
                        threshold=bound, alternative="greater", method="binomial",
                        seed=ctx.claim.seed, alpha=ctx.claim.alpha)
    return ctx.stats_call(key, test_proportion, hits, bound, alpha=ctx.claim.alpha,
                          seed=ctx.claim.seed)


def feature_marks(ctx: ClaimContext, column: str) -> list[set[int]]:
    """Per row, the token indices the data column ``column`` marks.

    Raises:
        DataError: no such column, or a value that names no position of its row.
    """
    dataset = ctx.dataset
    if column not in dataset.columns:
        known = ", ".join(sorted(dataset.columns)) or "none"
        raise DataError(f"marks: the data has no column {column!r}", key="marks",
                        hint=f"its columns: {known}")
    out = []
    for row, value in enumerate(dataset.columns[column]):
        length = len(dataset.prompts[row])
        items = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) == length and all(
                isinstance(v, bool) or v in (0, 1) for v in value):
            out.append({i for i, v in enumerate(value) if v})
            continue
        if any(isinstance(v, bool) or not isinstance(v, (int, str)) for v in items):
            raise DataError(f"marks: {dataset.row_label(row)} gives {value!r}", key="marks",
                            hint=f"give position names, last or token indices, or one 0/1 "
                            f"flag per token ({length} tokens, <bos> included)")
        out.append({_mark(ctx, row, length, item) for item in items})
    return out


def _mark(ctx: ClaimContext, row: int, length: int, item: int | str) -> int:
    """The token index of one ``marks`` entry: a name, ``last`` or an index."""
    from mechcheck.engine.runner import unknown_position

    dataset = ctx.dataset
    if item == "last":
        return length - 1
    if isinstance(item, str):
        named = dataset.positions[row] or {}
        if item not in named:
            raise unknown_position(dataset, row, item, key="marks")
        return int(named[item])
    index = item + length if item < 0 else item
    if not 0 <= index < length:
        raise DataError(f"marks: position {item} is outside {dataset.row_label(row)}'s "
                        f"{length} tokens", key="marks",
                        hint=f"use an index from {-length} to {length - 1}")
    return index


def _position_names(ctx: ClaimContext) -> list[dict[int, tuple[str, ...]]]:
    """Per row, token index -> the position names the row gives it."""
    out = []
    for row in range(len(ctx.dataset)):
        named: dict[int, list[str]] = {}
        for name, index in sorted((ctx.dataset.positions[row] or {}).items()):
            if isinstance(index, int):
                named.setdefault(index, []).append(name)
        out.append({i: tuple(n) for i, n in named.items()})
    return out


def _profile(labels: list[tuple[str, ...]], values: list[float], active: list[bool],
             marked: list[bool]) -> tuple[dict[str, Any], ...]:
    """Per position name (``last``, ``other`` for unnamed positions), in order of first
    appearance: the share of those positions where the feature is active and where
    the column marks, and the feature's mean activation there as a share of its
    largest activation on any counted position (so all three lie in [0, 1])."""
    top = max(max(values), 1e-30)
    groups: dict[str, list[int]] = {}
    for i, names in enumerate(labels):
        for name in names:
            groups.setdefault(name, []).append(i)
    order = sorted(groups, key=lambda n: (n == "other", n == "last", min(groups[n])))
    points = []
    for name in order:
        idx = groups[name]
        points.append({"site": name,
                       "activation": float(np.mean([values[i] for i in idx]) / top),
                       "active": float(np.mean([active[i] for i in idx])),
                       "marked": float(np.mean([marked[i] for i in idx]))})
    return tuple(points)
