"""Compare a run with a saved one: regressions and drift.

A claim x checkpoint that passed in the baseline and fails now is a regression.  With
``max_drift``, a claim whose effect moved by more than that from the baseline fails
too, even if it still passes its own rule.  Results are matched on
``(file, id, checkpoint)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import cast

from mechcheck.report.results import ClaimResult

__all__ = ["Change", "apply_baseline", "compare", "format_changes", "index"]

Key = tuple[str, str, "str | None"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """How one claim x checkpoint differs from the baseline.

    ``kind`` is ``regression`` (passed, now fails or errors), ``drift`` (effect moved by
    more than the allowed drift), ``fixed`` (failed, now passes), ``new`` (not in the
    baseline) or ``missing`` (in the baseline, not in this run).
    """

    file: str
    id: str
    checkpoint: str | None
    kind: str
    old_verdict: str | None
    new_verdict: str | None
    old_effect: float | None
    new_effect: float | None

    @property
    def drift(self) -> float | None:
        if self.old_effect is None or self.new_effect is None:
            return None
        return self.new_effect - self.old_effect

    def describe(self) -> str:
        where = f"{self.file}::{self.id}" + (f"[{self.checkpoint}]" if self.checkpoint else "")
        if self.kind == "drift":
            return (f"{where}: effect drifted {self.old_effect:.4g} -> {self.new_effect:.4g} "
                    f"({self.drift:+.4g})")
        return f"{where}: {self.kind} ({self.old_verdict} -> {self.new_verdict})"


def key_of(result: ClaimResult) -> Key:
    return (result.file, result.id, result.checkpoint)


def index(results: Iterable[ClaimResult]) -> dict[Key, ClaimResult]:
    """Results by ``(file, id, checkpoint)``."""
    return {key_of(r): r for r in results}


def _drifted(old: ClaimResult, new: ClaimResult, max_drift: float | None) -> bool:
    """A claim that passed before moved by more than ``max_drift``."""
    if max_drift is None or old.verdict != "pass" or old.effect is None or new.effect is None:
        return False
    if not (math.isfinite(old.effect) and math.isfinite(new.effect)):
        return False
    return abs(new.effect - old.effect) > max_drift


def _change(old: ClaimResult | None, new: ClaimResult | None,
            max_drift: float | None) -> Change | None:
    some = new or old
    assert some is not None
    kind = None
    if old is None:
        kind = "new"
    elif new is None:
        kind = "missing"
    elif new.reason == "drift" or (new.verdict == "pass" and _drifted(old, new, max_drift)):
        kind = "drift"
    elif old.verdict == "pass" and new.verdict in ("fail", "error"):
        kind = "regression"
    elif old.verdict != "pass" and new.verdict == "pass":
        kind = "fixed"
    if kind is None:
        return None
    return Change(file=some.file, id=some.id, checkpoint=some.checkpoint, kind=kind,
                  old_verdict=old.verdict if old else None,
                  new_verdict=new.verdict if new else None,
                  old_effect=old.effect if old else None,
                  new_effect=new.effect if new else None)


def compare(old: Sequence[ClaimResult], new: Sequence[ClaimResult], *,
            max_drift: float | None = None) -> list[Change]:
    """Every difference between two runs that matters, in the new run's order."""
    before, after = index(old), index(new)
    keys = list(after) + [k for k in before if k not in after]
    changes = (_change(before.get(k), after.get(k), max_drift) for k in keys)
    return [c for c in changes if c is not None]


def apply_baseline(result: ClaimResult, baseline: dict[Key, ClaimResult],
                   max_drift: float | None) -> ClaimResult:
    """The result with its baseline recorded; a drifted passing claim now fails."""
    old = baseline.get(key_of(result))
    if old is None:
        return result
    result = replace(result, baseline_verdict=old.verdict, baseline_effect=old.effect)
    if result.verdict == "pass" and _drifted(old, result, max_drift):
        moved = cast(float, result.effect) - cast(float, old.effect)  # both finite here
        message = (f"{result.file}:{result.line} claim '{result.id}' failed: drift\n"
                   f"  baseline      effect {old.effect:.4g} ({old.verdict})\n"
                   f"  observed      effect {result.effect:.4g}, moved by "
                   f"{moved:+.4g} (allowed {max_drift:g})\n"
                   "  fix           if the change is intended, save this run's report as "
                   "the new baseline")
        return replace(result, verdict="fail", reason="drift", message=message)
    return result


def format_changes(changes: Sequence[Change]) -> list[str]:
    """One line per change, regressions first."""
    order = {"regression": 0, "drift": 1, "missing": 2, "fixed": 3, "new": 4}
    return [c.describe() for c in sorted(changes, key=lambda c: order[c.kind])]
