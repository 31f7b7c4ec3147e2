"""The claim kind ``suppresses``: ablating the components *raises* the metric.

Negative name movers in IOI (Wang et al. 2022) are the best-known case: heads that
attend to the indirect object and write *against* it, so that knocking them out raises
the logit difference.  The kind is written only against mechcheck's public engine
primitives (:class:`mechcheck.engine.context.ClaimContext`): one patched run with the
claim's ablation at its positions, the metric of that run and of the clean run, and
the claim's decision rule.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mechcheck
from mechcheck.kinds import Measurement
from mechcheck.spec.schema import KeySpec, as_components, as_number, as_positions, as_str

if TYPE_CHECKING:
    from mechcheck.engine import Needs
    from mechcheck.engine.context import ClaimContext
    from mechcheck.kinds import ClaimKind
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["Suppresses", "mechcheck_claim_kinds"]


def _positive(value: Any) -> float:
    number = as_number(value)
    if number <= 0:
        raise ValueError(f"got {value!r}; a rise is a positive number")
    return number


class Suppresses:
    """Ablating the components raises the metric by more than ``min_rise``."""

    name = "suppresses"
    description = "ablating the components raises the metric by more than min_rise"
    keys = {
        spec.name: spec for spec in (
            KeySpec(name="components", required=True, parse=as_components,
                    expected='a list of quoted addresses, e.g. ["head 10.7"]'),
            KeySpec(name="metric", required=True, parse=as_str,
                    expected="a metric where higher is better, e.g. logit_diff"),
            KeySpec(name="ablation", required=True, parse=as_str,
                    expected="an intervention on the clean run: zero, mean, mean_corrupt, "
                    "resample"),
            KeySpec(name="mean_by", parse=as_str,
                    expected="a data column such as template (for mean ablations)"),
            KeySpec(name="at", parse=as_positions,
                    expected="last, a token index or a position name, or a list of them"),
            KeySpec(name="min_rise", required=True, parse=_positive,
                    expected="a positive number, e.g. 0.1"),
        )
    }

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.ablation_needs(claim.params["ablation"], base="clean")

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        ablation = ctx.intervention(claim.params["ablation"], base="clean", key="ablation")
        ablation = ablation.with_mean_by(claim.params.get("mean_by"))
        at = claim.params.get("at")
        ablated_run = ctx.run("clean", {a: ablation for a in ctx.components()}, at=at)
        clean = ctx.metric_values("clean")
        ablated = ctx.metric_values(ablated_run, keep="patched")
        metric = ctx.metric()
        sign = 1.0 if metric.higher_is_better else -1.0
        threshold = claim.params["min_rise"]
        decision = ctx.decide_greater(sign * (ablated - clean), threshold)
        where = f" at {', '.join(map(str, at))}" if at else ""
        return Measurement(decision=decision, intervention=ablation.description + where,
                           metric=metric.name, components=ctx.component_names(),
                           expected=f"{metric.name} rise > {threshold:.4g}")


@mechcheck.hookimpl
def mechcheck_claim_kinds() -> list[ClaimKind]:
    return [Suppresses()]
