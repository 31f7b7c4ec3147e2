"""What the representation kinds (``probe``, ``erasure``) share: the examples a probe
reads, built from one site's activations in the shared clean run.

An example is one (row, position) pair: ``at: last`` (the default) gives one per row,
``at: [PREV, END]`` two, ``at: all`` every position.  Its label comes from a data
column (one value per row, or a list with one value per token for ``at: all``) or is
``token`` / ``previous_token`` (the token at the position, or the one before it; a row's
first position has no previous token and is left out).  Its group (the unit folds never
split, and the unit of the decision rule) is its row, or its row's ``group_by`` value;
its type (what ``control: control_task`` keys its random labels on) is ``control_by``'s
value, or the token at the position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mechcheck.errors import ClaimSpecError, DataError
from mechcheck.spec.schema import KeySpec, as_choice, as_str, int_at_least

if TYPE_CHECKING:
    from mechcheck.addresses import Address
    from mechcheck.engine.context import ClaimContext

__all__ = ["LABEL_KEYS", "Examples", "examples", "probe_site"]

TOKEN_LABELS = ("token", "previous_token")


_as_folds = int_at_least(2, "cross-validation needs at least 2 folds")


LABEL_KEYS = (
    KeySpec(name="label", required=True, parse=as_str,
            expected="a data column holding each row's label (or a list, one per token, for "
            "at: all), or token / previous_token"),
    KeySpec(name="target", parse=as_choice("classes", "regression"), default="classes",
            expected="classes (the default) or regression (a numeric label)"),
    KeySpec(name="folds", parse=_as_folds, default=5,
            expected="the number of cross-validation folds, at least 2 (default 5)"),
    KeySpec(name="group_by", parse=as_str,
            expected="a data column (e.g. template): rows sharing its value stay in one fold"),
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Examples:
    """A probe's examples: features, labels, groups and types, one entry each."""

    x: np.ndarray  # [m, d] float64
    labels: np.ndarray
    groups: np.ndarray
    types: np.ndarray
    rows: np.ndarray
    positions: np.ndarray

    def row_fold(self, fold: np.ndarray) -> dict[int, int]:
        """Row -> fold, for a fold split of the examples (a row lies in one fold)."""
        return {int(r): int(f) for r, f in zip(self.rows, fold)}


def probe_site(ctx: ClaimContext) -> Address:
    """The claim's one site (``components``), which must not be an attention pattern."""
    addresses = ctx.components()
    if len(addresses) != 1 or addresses[0].site == "pattern":
        raise ClaimSpecError(f"components names {len(addresses)} sites; a probe reads one",
                             key="components", hint="write one address, e.g. "
                             '["blocks.6.resid_post"] or ["head 5.1"]')
    return addresses[0]


def at_of(ctx: ClaimContext) -> tuple[int | str, ...] | None:
    """The claim's ``at:`` as the engine takes it: None for ``all``, ``last`` by default."""
    at = ctx.params.get("at")
    if at is None:
        return ("last",)
    return None if tuple(at) == ("all",) else tuple(at)


def examples(ctx: ClaimContext, address: Address) -> Examples:
    """The examples of the claim's label at ``address`` in the shared clean run."""
    params = ctx.params
    label, at = params["label"], at_of(ctx)
    dataset = ctx.dataset
    column = _column(ctx, label)
    acts = ctx.activations("clean", address)
    xs, labels, groups, types, rows, positions = [], [], [], [], [], []
    group_col = _row_column(ctx, "group_by")
    type_col = _row_column(ctx, "control_by")
    for row in range(len(dataset)):
        tokens = dataset.prompts[row]
        for pos in ctx.positions_of(row, at):
            if label == "previous_token" and column is None and pos == 0:
                continue
            xs.append(acts[row][pos].double().cpu().numpy())
            labels.append(_label(ctx, column, label, row, pos, tokens, at))
            groups.append(f"row {row}" if group_col is None else str(group_col[row]))
            types.append(tokens[pos] if type_col is None else str(type_col[row]))
            rows.append(row)
            positions.append(pos)
    if not xs:
        raise DataError("no examples: the positions of at: leave nothing to probe",
                        key="at", hint="use at: last or at: all")
    values = np.asarray(labels, dtype=np.float64 if params["target"] == "regression" else object)
    return Examples(x=np.stack(xs), labels=values, groups=np.asarray(groups, dtype=object),
                    types=np.asarray(types, dtype=object), rows=np.asarray(rows),
                    positions=np.asarray(positions))


def _column(ctx: ClaimContext, label: str) -> tuple[Any, ...] | None:
    columns = ctx.dataset.columns
    if label in columns:
        return columns[label]
    if label in TOKEN_LABELS:
        return None
    known = ", ".join(sorted(columns)) or "none"
    raise DataError(f"label: the data has no column '{label}'", key="label",
                    hint=f"its columns: {known}; or use label: token / previous_token")


def _row_column(ctx: ClaimContext, key: str) -> tuple[Any, ...] | None:
    name = ctx.params.get(key)
    if name is None:
        return None
    columns = ctx.dataset.columns
    if name not in columns:
        known = ", ".join(sorted(columns)) or "none"
        raise DataError(f"{key}: the data has no column '{name}'", key=key,
                        hint=f"its columns: {known}")
    return columns[name]


def _label(ctx: ClaimContext, column: tuple[Any, ...] | None, label: str, row: int, pos: int,
           tokens: tuple[int, ...], at: tuple[int | str, ...] | None) -> Any:
    if column is None:
        return tokens[pos] if label == "token" else tokens[pos - 1]
    value = column[row]
    if isinstance(value, list):
        if len(value) != len(tokens):
            raise DataError(f"{ctx.dataset.row_label(row)}: column '{label}' lists "
                            f"{len(value)} labels for {len(tokens)} tokens", key="label",
                            hint="give one label per token (the <bos> included), or one "
                            "label for the row")
        value = value[pos]
    if value is None:
        raise DataError(f"{ctx.dataset.row_label(row)}: no '{label}' value", key="label",
                        hint="give every row a label")
    if ctx.params["target"] == "regression":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{ctx.dataset.row_label(row)}: '{label}' is {value!r}, not a "
                            "number", key="label", hint="target: regression needs numeric "
                            "labels; use target: classes for categories")
    return value
