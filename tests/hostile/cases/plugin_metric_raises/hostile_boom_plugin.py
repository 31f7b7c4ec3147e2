"""A plugin metric with a bug: it divides by zero."""

import mechcheck
from mechcheck.metrics import Metric


def _boom(logits, inputs):
    return logits[:, 0] / 0 if False else 1 // 0


@mechcheck.hookimpl
def mechcheck_metrics():
    return [Metric(name="boom", fn=_boom, description="raises ZeroDivisionError")]
