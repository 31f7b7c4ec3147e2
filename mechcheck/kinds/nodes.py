"""Claims about components (nodes): necessary, negligible and sufficient."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mechcheck.kinds.base import (
    ABLATION,
    AT,
    COMPONENTS,
    MEAN_BY,
    METRIC,
    RATIO_METHODS,
    Measurement,
    as_min_drop,
    as_positive,
    keys,
)
from mechcheck.spec.schema import KeySpec, as_choice, as_number, as_str, int_at_least

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["Necessary", "Negligible", "Sufficient"]


class Necessary:
    """Ablating the components lowers the metric by more than ``min_drop``."""

    name = "necessary"
    description = "ablating the components lowers the metric by more than min_drop"
    keys = keys(COMPONENTS, METRIC, AT, ABLATION, MEAN_BY,
                KeySpec(name="min_drop", required=True, parse=as_min_drop,
                        expected="a number, e.g. 1.5, or a percentage of the clean "
                        "metric's mean such as '40%'"),
                KeySpec(name="screen", parse=as_choice("attribution"), default=None,
                        expected="attribution: under each: true, estimate every "
                        "component's drop by attribution patching and measure only the "
                        "screen_top largest exactly"),
                KeySpec(name="screen_top", parse=int_at_least(1, "confirm at least one "
                        "component exactly"), default=10,
                        expected="a whole number >= 1: how many components of the sweep "
                        "attribution patching passes on to exact patching"),
                KeySpec(name="ig_steps", parse=int_at_least(0, "0 is plain attribution "
                        "patching, more steps integrate the gradients"), default=0,
                        expected="a whole number >= 0: integrated-gradient steps of the "
                        "screen's estimate (EAP-IG); 0 for one gradient"))

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.ablation_needs(claim.params["ablation"], base="clean")

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        if claim.params.get("screen") is not None and claim.each_of is None:
            from mechcheck.errors import ClaimSpecError

            raise ClaimSpecError("screen: attribution screens the components of a sweep, "
                                 "and this claim is not one", key="screen",
                                 hint="add each: true (one claim per component), or drop "
                                 "screen")
        clean, ablated, label = ctx.metric_pair(claim.params["ablation"], base="clean")
        metric = ctx.metric()
        sign = 1.0 if metric.higher_is_better else -1.0
        drop = sign * (clean - ablated)
        threshold = ctx.percent_of_clean("min_drop", claim.params["min_drop"], clean)
        decision = ctx.decide_greater(drop, threshold)
        word = "drop" if metric.higher_is_better else "rise"
        return Measurement(decision=decision, intervention=label, metric=metric.name,
                           components=ctx.component_names(),
                           expected=f"{metric.name} {word} > {threshold:.4g}")


class Negligible:
    """Ablating the components changes the metric by less than ``margin`` (TOST)."""

    name = "negligible"
    description = "ablating the components changes the metric by less than margin (TOST)"
    keys = keys(COMPONENTS, METRIC, AT, ABLATION, MEAN_BY,
                KeySpec(name="margin", required=True, parse=as_positive,
                        expected="a positive number: the largest change that counts as none"))

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.ablation_needs(claim.params["ablation"], base="clean")

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        from mechcheck.stats import test_inside

        ctx.require_test(("robust", "t"), "negligible claims take test: robust (the "
                         "default: two one-sided tests, each by the t-test and its bootstrap "
                         "twin) or test: t (two one-sided t-tests, TOST)")
        clean, ablated, label = ctx.metric_pair(claim.params["ablation"], base="clean")
        metric = ctx.metric()
        sign = 1.0 if metric.higher_is_better else -1.0
        margin = claim.params["margin"]
        decision = test_inside(sign * (clean - ablated), margin, alpha=claim.alpha,
                               seed=claim.seed, test="t" if claim.test == "t" else "robust",
                               n_resamples=ctx.n_resamples)
        return Measurement(decision=decision, intervention=label, metric=metric.name,
                           components=ctx.component_names(),
                           expected=f"|{metric.name} change| < {margin:.4g}")


class Sufficient:
    """Patching the components' clean activations into the corrupt run recovers R."""

    name = "sufficient"
    description = ("patching clean activations of the components into the corrupt run "
                   "recovers more than min_recovery of the clean-corrupt gap")
    keys = keys(COMPONENTS, METRIC, AT,
                KeySpec(name="min_recovery", required=True, parse=as_number,
                        expected="a fraction of the clean-corrupt gap, e.g. 0.8"),
                KeySpec(name="patch", parse=as_str, default="denoise",
                        expected="an intervention whose base run is corrupt (denoise)"))

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.ablation_needs(claim.params["patch"], base="corrupt")

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        from mechcheck.stats import test_ratio

        ctx.require_test(("robust", "t", "bootstrap"), "sufficient claims take test: "
                         "robust (the default: Fieller's t-test of the recovery ratio and its "
                         "bootstrap twin), test: t (Fieller's t-test alone) or test: bootstrap "
                         "(a paired bootstrap of the ratio)")
        corrupt, patched, label = ctx.metric_pair(claim.params["patch"], base="corrupt")
        clean = ctx.metric_values("clean")
        threshold = claim.params["min_recovery"]
        method = RATIO_METHODS[claim.test]
        decision = ctx.stats_call("min_recovery", test_ratio, patched - corrupt,
                                  clean - corrupt, threshold, alpha=claim.alpha,
                                  seed=claim.seed, n_resamples=ctx.n_resamples, method=method)
        metric = ctx.metric()
        return Measurement(decision=decision, intervention=label, metric=metric.name,
                           components=ctx.component_names(),
                           expected=f"{metric.name} recovery > {threshold:.4g}")
