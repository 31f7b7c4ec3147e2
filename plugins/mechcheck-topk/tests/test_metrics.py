"""top_k and answer_rank on hand-made logits."""

from __future__ import annotations

import pytest
import torch
from mechcheck_topk import mechcheck_metrics
from mechcheck_topk.metrics import answer_rank, top_k

from mechcheck.metrics import MetricInputs

LOGITS = torch.tensor([[0.0, 3.0, 2.0, 1.0],    # answer 1: rank 1
                       [0.0, 3.0, 2.0, 1.0],    # answer 0: rank 4
                       [5.0, 5.0, 1.0, 0.0]])   # answer 1: tied with token 0, rank 1


def _inputs(answers: list[int]) -> MetricInputs:
    return MetricInputs(answers=torch.tensor(answers), wrongs=None, clean_logits=LOGITS)


def test_answer_rank_counts_the_tokens_above_the_answer() -> None:
    assert answer_rank(LOGITS, _inputs([1, 0, 1])).tolist() == [1.0, 4.0, 1.0]


@pytest.mark.parametrize(("k", "expected"), [(1, [1.0, 0.0, 1.0]), (3, [1.0, 0.0, 1.0]),
                                             (4, [1.0, 1.0, 1.0])])
def test_top_k_is_rank_at_most_k(k: int, expected: list[float]) -> None:
    metric = top_k(k)
    assert metric.name == f"top_{k}" and metric.higher_is_better
    assert metric(LOGITS, _inputs([1, 0, 1])).tolist() == expected


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k=0, but must be 1 or more"):
        top_k(0)


def test_the_hook_registers_top_1_5_10_and_answer_rank_lower_is_better() -> None:
    metrics = {m.name: m for m in mechcheck_metrics()}
    assert list(metrics) == ["top_1", "top_5", "top_10", "answer_rank"]
    assert metrics["answer_rank"].higher_is_better is False
