"""Claims about attention patterns: ``attends``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mechcheck.kinds.base import COMPONENTS, Measurement, keys
from mechcheck.spec.schema import KeySpec, RegisteredName, as_number, as_str

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["PATTERNS", "Attends"]

PATTERNS = ("previous_token", "induction", "duplicate_token", "first_token")


def _as_score(value: Any) -> float:
    number = as_number(value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"got {value!r}; attention scores lie in [0, 1)")
    return number


class Attends:
    """A head's attention pattern scores above ``min_score`` on the clean prompts."""

    name = "attends"
    description = "a head's attention score on the clean prompts exceeds min_score"
    keys = keys(COMPONENTS,
                KeySpec(name="pattern", parse=RegisteredName("scores", PATTERNS),
                        expected=f"one of {', '.join(PATTERNS)} (or from:/to: names)"),
                KeySpec(name="from", parse=as_str, expected="a position name from the data"),
                KeySpec(name="to", parse=as_str, expected="a position name from the data"),
                KeySpec(name="min_score", required=True, parse=_as_score,
                        expected="a number between 0 and 1, e.g. 0.5"))

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.pattern_needs()

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        scores, label = ctx.attention_scores()
        threshold = claim.params["min_score"]
        decision = ctx.decide_greater(scores, threshold)
        return Measurement(decision=decision, intervention="none (clean run)", metric=None,
                           components=ctx.component_names(),
                           expected=f"{label} > {threshold:.4g}")
