"""The claim that the model does the task at all: ``performs``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mechcheck.errors import ClaimSpecError
from mechcheck.kinds.base import METRIC, Measurement, keys
from mechcheck.spec.schema import KeySpec, as_number

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["Performs"]


class Performs:
    """The model does the task: its metric on the clean prompts exceeds ``min_value``.

    No intervention: the claim that the behaviour is there at all, which every claim
    about how the model does it presupposes (the clean logit difference of IOI, the
    probability difference of greater-than).
    """

    name = "performs"
    description = "the metric on the clean prompts exceeds min_value (the model does the task)"
    keys = keys(METRIC, KeySpec(name="min_value", required=True, parse=as_number,
                                expected="a number, e.g. 2.0 for a logit difference"))

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.record_needs("clean", ())  # the model and data must load

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        metric = ctx.metric()
        if not metric.higher_is_better:
            raise ClaimSpecError(
                f"performs needs a metric where higher is better; {metric.name} is lower "
                "when the model does better", key="metric",
                hint="use logit_diff, logprob, prob, accuracy or greater_than_pd")
        values = ctx.metric_values("clean")
        threshold = claim.params["min_value"]
        decision = ctx.decide_greater(values, threshold)
        return Measurement(decision=decision, intervention="none (clean run)",
                           metric=metric.name, components=(),
                           expected=f"clean {metric.name} > {threshold:.4g}")
