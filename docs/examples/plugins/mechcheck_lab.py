# ruff: noqa: E402
# The plugin of docs/plugins.md: a metric, an intervention and a claim kind. The page
# quotes this module part by part; tests/test_docs.py checks that it does and runs the
# claims of test_lab.yaml with it.
# mechcheck_lab.py
import torch

import mechcheck
from mechcheck.metrics import Metric, MetricInputs


def _top5(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    """1.0 where the answer is among the five most likely tokens, else 0.0."""
    top = logits.topk(5, dim=-1).indices
    answers = inputs.answers.to(logits.device).view(-1, 1)
    return (top == answers).any(dim=-1).float()


@mechcheck.hookimpl
def mechcheck_metrics() -> list[Metric]:
    return [Metric(name="top5", fn=_top5,
                   description="1 where the answer is among the top five tokens")]


from mechcheck.interventions import Intervention


def _halve(current, source):
    return current * 0.5


@mechcheck.hookimpl
def mechcheck_interventions() -> list[Intervention]:
    return [Intervention(name="halve", base_run="clean", source=None, replace=_halve,
                         description="halve")]


from mechcheck.kinds import Measurement
from mechcheck.spec.schema import KeySpec, as_components, as_number, as_str


class Harmful:
    name = "harmful"
    description = "ablating the components raises the metric by more than min_rise"
    keys = {
        "components": KeySpec(name="components", required=True, parse=as_components,
                              expected='a list of quoted addresses, e.g. ["head 9.9"]'),
        "metric": KeySpec(name="metric", required=True, parse=as_str,
                          expected="a metric such as logprob"),
        "ablation": KeySpec(name="ablation", required=True, parse=as_str,
                            expected="zero, mean or resample"),
        "min_rise": KeySpec(name="min_rise", required=True, parse=as_number,
                            expected="a number, e.g. 0.5"),
    }

    def needs(self, claim, ctx):
        # what the shared clean/corrupt runs must record for this claim
        return ctx.ablation_needs(claim.params["ablation"], base="clean")

    def measure(self, claim, ctx):
        # ctx is bound to this claim: its components, metric, runs and decision rule
        clean, ablated, label = ctx.metric_pair(claim.params["ablation"], base="clean")
        metric = ctx.metric()
        sign = 1.0 if metric.higher_is_better else -1.0
        threshold = claim.params["min_rise"]
        decision = ctx.decide_greater(sign * (ablated - clean), threshold)
        return Measurement(decision=decision, intervention=label, metric=metric.name,
                           components=ctx.component_names(),
                           expected=f"{metric.name} rise > {threshold:.4g}")


@mechcheck.hookimpl
def mechcheck_claim_kinds():
    return [Harmful()]
