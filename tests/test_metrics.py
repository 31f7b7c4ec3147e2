"""Metrics against independent computations (numpy / torch.nn.functional)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from mechcheck.metrics import BUILTIN_METRICS, MetricInputs

METRICS = {m.name: m for m in BUILTIN_METRICS}


def _inputs(clean: torch.Tensor) -> MetricInputs:
    return MetricInputs(answers=torch.tensor([0, 2, 1]), wrongs=torch.tensor([1, 0, 2]),
                        clean_logits=clean)


def test_metrics_match_independent_formulas() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, generator=gen)
    clean = torch.randn(3, 5, generator=gen)
    inputs = _inputs(clean)
    x = logits.numpy().astype(np.float64)
    p = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    rows = np.arange(3)
    np.testing.assert_allclose(METRICS["logit_diff"](logits, inputs),
                               x[rows, [0, 2, 1]] - x[rows, [1, 0, 2]], atol=1e-6)
    np.testing.assert_allclose(METRICS["logprob"](logits, inputs), np.log(p[rows, [0, 2, 1]]),
                               atol=1e-6)
    np.testing.assert_allclose(METRICS["prob"](logits, inputs), p[rows, [0, 2, 1]], atol=1e-6)
    np.testing.assert_array_equal(METRICS["accuracy"](logits, inputs),
                                  (x.argmax(-1) == [0, 2, 1]).astype(float))
    want_kl = F.kl_div(F.log_softmax(logits, -1), F.log_softmax(clean, -1), log_target=True,
                       reduction="none").sum(-1)
    torch.testing.assert_close(METRICS["kl"](logits, inputs), want_kl, atol=1e-6, rtol=0)


def test_kl_of_the_clean_run_is_zero_and_lower_is_better() -> None:
    clean = torch.randn(3, 5)
    assert METRICS["kl"](clean, _inputs(clean)).abs().max() < 1e-6
    assert not METRICS["kl"].higher_is_better
    assert all(m.higher_is_better for m in BUILTIN_METRICS if m.name != "kl")
