"""A plugin metric that returns infinity for some prompts."""


import mechcheck
from mechcheck.metrics import Metric


def _values(logits, inputs):
    out = logits[:, 0].clone()
    out[::2] = float("inf")
    return out


@mechcheck.hookimpl
def mechcheck_metrics():
    return [Metric(name="inf_metric", fn=_values, description="infinity on every other prompt")]
