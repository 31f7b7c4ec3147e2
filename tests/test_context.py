"""The claim kinds' window: a metric's values are checked before any rule sees them."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from mechcheck.api import evaluate_path
from mechcheck.hookspecs import hookimpl
from mechcheck.metrics import Metric
from mechcheck.session import Session
from tests.conftest import word_rows


def _nan_on_even_rows(logits: torch.Tensor, inputs: Any) -> torch.Tensor:
    values = logits.log_softmax(-1).gather(-1, inputs.answers.view(-1, 1)).squeeze(-1)
    values[::2] = float("nan")
    return values


def _raises(logits: torch.Tensor, inputs: Any) -> torch.Tensor:
    raise ArithmeticError("the metric is broken")


def _wrong_shape(logits: torch.Tensor, inputs: Any) -> torch.Tensor:
    return logits[:, :2]


PLUGIN = SimpleNamespace(mechcheck_metrics=hookimpl(lambda: [
    Metric(name="half_nan", fn=_nan_on_even_rows), Metric(name="raises", fn=_raises),
    Metric(name="wide", fn=_wrong_shape)]))


@pytest.mark.parametrize(("metric", "expected"), [
    ("half_nan", "metric half_nan gave nan (not a finite number) for 4 of 8 prompts "
     "(rows 0, 2, 4, 6)"),
    ("raises", "metric raises raised ArithmeticError: the metric is broken (raised in "),
    ("wide", "metric wide returned values of shape (8, 2) for 8 prompts"),
])
def test_a_bad_metric_is_a_located_error_and_the_control_passes(
        metric: str, expected: str, tmp_path: Path, tiny_folder: Any) -> None:
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(8)))
    path = tmp_path / "test_m.yaml"
    path.write_text(f"""\
model: {tiny_folder("gpt2")}
data: d.jsonl
claims:
  - id: bad
    kind: necessary
    components: ["head 0.0"]
    ablation: zero
    metric: {metric}
    min_drop: 0.1
  - id: control
    kind: necessary
    components: ["head 0.0"]
    ablation: zero
    metric: logprob
    min_drop: -100
""")
    bad, control = evaluate_path(path, Session(device="cpu", plugins=[PLUGIN]))
    assert bad.verdict == "error" and control.verdict == "pass"
    assert expected in bad.message
    assert "key 'metric'" in bad.message and bad.line == 8
    assert "internal error" not in bad.message


def test_a_derived_value_is_computed_once_per_model_and_data_and_a_failure_is_not_kept(
        tiny_loaded: Any) -> None:
    from tests.conftest import claim_context

    ctx = claim_context(tiny_loaded("gpt2"), word_rows(4))
    other = claim_context(tiny_loaded("gpt2"), word_rows(4))  # another runner
    calls: list[int] = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    def fails() -> int:
        calls.append(1)
        raise ArithmeticError("no")

    assert ctx.derived(("k", 1), compute) == 1
    assert ctx.derived(("k", 1), compute) == 1 and len(calls) == 1
    assert ctx.derived(("k", 2), compute) == 2
    assert other.derived(("k", 1), compute) == 3  # not shared across data/runners
    for _ in range(2):
        with pytest.raises(ArithmeticError):
            ctx.derived("bad", fails)
    assert len(calls) == 5
