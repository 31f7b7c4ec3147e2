"""A plugin metric that returns NaN for some prompts."""


import mechcheck
from mechcheck.metrics import Metric


def _values(logits, inputs):
    out = logits[:, 0].clone()
    out[::2] = float("nan")
    return out


@mechcheck.hookimpl
def mechcheck_metrics():
    return [Metric(name="nan_metric", fn=_values, description="NaN on every other prompt")]
