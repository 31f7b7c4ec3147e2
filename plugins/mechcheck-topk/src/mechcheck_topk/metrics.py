"""Rank metrics: where the answer token stands among the next-token logits."""

from __future__ import annotations

import torch

from mechcheck.metrics import Metric, MetricInputs

__all__ = ["answer_rank", "top_k"]


def answer_rank(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    """The answer's rank, 1 for the most likely token: 1 + the number of tokens whose
    logit is strictly higher (a tie counts in the answer's favour)."""
    answers = inputs.answers.to(logits.device).view(-1, 1)
    answer_logit = logits.gather(-1, answers)
    return 1.0 + (logits > answer_logit).sum(dim=-1).float()


def top_k(k: int) -> Metric:
    """The metric ``top_<k>``: 1.0 where the answer's rank is at most ``k``, else 0.0."""
    if k < 1:
        raise ValueError(f"k={k}, but must be 1 or more")

    def fn(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
        return (answer_rank(logits, inputs) <= k).float()

    return Metric(name=f"top_{k}", fn=fn,
                  description=f"1 where the answer is among the {k} most likely tokens")
