"""The built-in claim kinds: necessary, sufficient, negligible, attends and performs.

A claim kind declares the keys it accepts (for the loader) and turns one validated
claim into a :class:`Measurement`: per-prompt values reduced by its decision rule to a
:class:`~mechcheck.stats.Decision`.  Kinds reach models, data and the registries only
through the :class:`~mechcheck.engine.context.Context` they are given, so a plugin kind is
written the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mechcheck.spec.schema import (
    KeySpec,
    RegisteredName,
    as_components,
    as_number,
    as_number_or_percent,
    as_positions,
    as_str,
)

if TYPE_CHECKING:
    from mechcheck.engine.context import Context
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec
    from mechcheck.stats import Decision

__all__ = ["BUILTIN_KINDS", "ClaimKind", "Measurement"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Measurement:
    """What a claim kind measured: the decision and how to describe it."""

    decision: Decision
    intervention: str
    metric: str | None
    components: tuple[str, ...]
    expected: str  # e.g. "logprob drop > 3.0"


class ClaimKind(Protocol):
    """What a claim kind provides (built-in or plugin)."""

    name: str
    keys: Mapping[str, KeySpec]
    description: str

    def needs(self, claim: ClaimSpec, ctx: Context) -> Needs: ...

    def measure(self, claim: ClaimSpec, ctx: Context) -> Measurement: ...


def _as_min_drop(value: Any) -> float | str:
    return as_number_or_percent(value)


def _as_score(value: Any) -> float:
    number = as_number(value)
    if not 0.0 <= number < 1.0:
        raise ValueError(f"got {value!r}; attention scores lie in [0, 1)")
    return number


def _as_margin(value: Any) -> float:
    number = as_number(value)
    if number <= 0:
        raise ValueError(f"got {value!r}, which is not positive")
    return number


COMPONENTS = KeySpec(name="components", required=True, parse=as_components,
                     expected='a list of quoted addresses, e.g. '
                              '["head 9.9", "blocks.10.attn.head.*"]')
METRIC = KeySpec(name="metric", required=True, parse=as_str,
                 expected="a metric: logit_diff, logprob, prob, accuracy, kl or "
                 "greater_than_pd (or a plugin's)")
AT = KeySpec(name="at", parse=as_positions,
             expected="last, a token index, a position name from the data, or a list of them")
ABLATION = KeySpec(name="ablation", required=True, parse=as_str,
                   expected="an intervention: zero, mean, mean_corrupt or resample (or noise, "
                   "or a plugin's)")
MEAN_BY = KeySpec(name="mean_by", parse=as_str,
                  expected="a data column such as template: mean ablation then takes the "
                  "mean over the rows sharing the row's value")


def _keys(*specs: KeySpec) -> dict[str, KeySpec]:
    return {spec.name: spec for spec in specs}


class Necessary:
    """Ablating the components lowers the metric by more than ``min_drop``."""

    name = "necessary"
    description = "ablating the components lowers the metric by more than min_drop"
    keys = _keys(COMPONENTS, METRIC, AT, ABLATION, MEAN_BY,
                 KeySpec(name="min_drop", required=True, parse=_as_min_drop,
                         expected="a number, e.g. 1.5, or a percentage of the clean "
                         "metric's mean such as '40%'"))

    def needs(self, claim: ClaimSpec, ctx: Context) -> Needs:
        return ctx.intervention_needs(claim, claim.params["ablation"], base="clean")

    def measure(self, claim: ClaimSpec, ctx: Context) -> Measurement:
        from mechcheck.rules import decide_greater

        clean, ablated, label = ctx.metric_pair(claim, claim.params["ablation"], base="clean")
        metric = ctx.metric(claim)
        sign = 1.0 if metric.higher_is_better else -1.0
        drop = sign * (clean - ablated)
        threshold = ctx.percent_of_clean(claim, "min_drop", claim.params["min_drop"], clean)
        decision = decide_greater(ctx.session.registry, claim, drop, threshold, ctx.n_resamples)
        word = "drop" if metric.higher_is_better else "rise"
        return Measurement(decision=decision, intervention=label, metric=metric.name,
                           components=ctx.component_names(claim),
                           expected=f"{metric.name} {word} > {threshold:.4g}")


class Negligible:
    """Ablating the components changes the metric by less than ``margin`` (TOST)."""

    name = "negligible"
    description = "ablating the components changes the metric by less than margin (TOST)"
    keys = _keys(COMPONENTS, METRIC, AT, ABLATION, MEAN_BY,
                 KeySpec(name="margin", required=True, parse=_as_margin,
                         expected="a positive number: the largest change that counts as none"))

    def needs(self, claim: ClaimSpec, ctx: Context) -> Needs:
        return ctx.intervention_needs(claim, claim.params["ablation"], base="clean")

    def measure(self, claim: ClaimSpec, ctx: Context) -> Measurement:
        from mechcheck.stats import test_inside

        ctx.require_test(claim, ("robust", "t"), "negligible claims take test: robust (the "
                         "default: two one-sided tests, each by the t-test and its bootstrap "
                         "twin) or test: t (two one-sided t-tests, TOST)")
        clean, ablated, label = ctx.metric_pair(claim, claim.params["ablation"], base="clean")
        metric = ctx.metric(claim)
        sign = 1.0 if metric.higher_is_better else -1.0
        margin = claim.params["margin"]
        decision = test_inside(sign * (clean - ablated), margin, alpha=claim.alpha,
                               seed=claim.seed, test="t" if claim.test == "t" else "robust",
                               n_resamples=ctx.n_resamples)
        return Measurement(decision=decision, intervention=label, metric=metric.name,
                           components=ctx.component_names(claim),
                           expected=f"|{metric.name} change| < {margin:.4g}")


class Sufficient:
    """Patching the components' clean activations into the corrupt run recovers R."""

    name = "sufficient"
    description = ("patching clean activations of the components into the corrupt run "
                   "recovers more than min_recovery of the clean-corrupt gap")
    keys = _keys(COMPONENTS, METRIC, AT,
                 KeySpec(name="min_recovery", required=True, parse=as_number,
                         expected="a fraction of the clean-corrupt gap, e.g. 0.8"),
                 KeySpec(name="patch", parse=as_str, default="denoise",
                         expected="an intervention whose base run is corrupt (denoise)"))

    def needs(self, claim: ClaimSpec, ctx: Context) -> Needs:
        return ctx.intervention_needs(claim, claim.params["patch"], base="corrupt")

    def measure(self, claim: ClaimSpec, ctx: Context) -> Measurement:
        from mechcheck.stats import test_ratio

        ctx.require_test(claim, ("robust", "t", "bootstrap"), "sufficient claims take test: "
                         "robust (the default: Fieller's t-test of the recovery ratio and its "
                         "bootstrap twin), test: t (Fieller's t-test alone) or test: bootstrap "
                         "(a paired bootstrap of the ratio)")
        corrupt, patched, label = ctx.metric_pair(claim, claim.params["patch"], base="corrupt")
        clean = ctx.metric_values(claim, "clean")
        threshold = claim.params["min_recovery"]
        method = {"robust": "robust", "t": "fieller", "bootstrap": "bootstrap"}[claim.test]
        decision = ctx.stats_call(claim, "min_recovery", test_ratio, patched - corrupt,
                                  clean - corrupt, threshold, alpha=claim.alpha,
                                  seed=claim.seed, n_resamples=ctx.n_resamples, method=method)
        metric = ctx.metric(claim)
        return Measurement(decision=decision, intervention=label, metric=metric.name,
                           components=ctx.component_names(claim),
                           expected=f"{metric.name} recovery > {threshold:.4g}")


PATTERNS = ("previous_token", "induction", "duplicate_token", "first_token")


class Attends:
    """A head's attention pattern scores above ``min_score`` on the clean prompts."""

    name = "attends"
    description = "a head's attention score on the clean prompts exceeds min_score"
    keys = _keys(COMPONENTS,
                 KeySpec(name="pattern", parse=RegisteredName("scores", PATTERNS),
                         expected=f"one of {', '.join(PATTERNS)} (or from:/to: names)"),
                 KeySpec(name="from", parse=as_str, expected="a position name from the data"),
                 KeySpec(name="to", parse=as_str, expected="a position name from the data"),
                 KeySpec(name="min_score", required=True, parse=_as_score,
                         expected="a number between 0 and 1, e.g. 0.5"))

    def needs(self, claim: ClaimSpec, ctx: Context) -> Needs:
        return ctx.pattern_needs(claim)

    def measure(self, claim: ClaimSpec, ctx: Context) -> Measurement:
        from mechcheck.rules import decide_greater

        scores, label = ctx.attention_scores(claim)
        threshold = claim.params["min_score"]
        decision = decide_greater(ctx.session.registry, claim, scores, threshold, ctx.n_resamples)
        return Measurement(decision=decision, intervention="none (clean run)", metric=None,
                           components=ctx.component_names(claim),
                           expected=f"{label} > {threshold:.4g}")


class Performs:
    """The model does the task: its metric on the clean prompts exceeds ``min_value``.

    No intervention: the claim that the behaviour is there at all, which every claim
    about how the model does it presupposes (the clean logit difference of IOI, the
    probability difference of greater-than).
    """

    name = "performs"
    description = "the metric on the clean prompts exceeds min_value (the model does the task)"
    keys = _keys(METRIC, KeySpec(name="min_value", required=True, parse=as_number,
                                 expected="a number, e.g. 2.0 for a logit difference"))

    def needs(self, claim: ClaimSpec, ctx: Context) -> Needs:
        from mechcheck.engine.runner import Needs

        ctx.runner(claim)  # the model and data must load for the clean run
        return Needs(runs={"clean"})

    def measure(self, claim: ClaimSpec, ctx: Context) -> Measurement:
        from mechcheck.errors import ClaimSpecError
        from mechcheck.rules import decide_greater

        metric = ctx.metric(claim)
        if not metric.higher_is_better:
            raise ClaimSpecError(
                f"performs needs a metric where higher is better; {metric.name} is lower "
                "when the model does better", key="metric",
                hint="use logit_diff, logprob, prob, accuracy or greater_than_pd")
        values = ctx.metric_values(claim, "clean")
        threshold = claim.params["min_value"]
        decision = decide_greater(ctx.session.registry, claim, values, threshold, ctx.n_resamples)
        return Measurement(decision=decision, intervention="none (clean run)",
                           metric=metric.name, components=(),
                           expected=f"clean {metric.name} > {threshold:.4g}")


BUILTIN_KINDS = (Necessary(), Sufficient(), Negligible(), Attends(), Performs())
