"""Per-prompt metrics on the next-token distribution at the last position.

A metric is a pure function of the last-position logits ``[n, vocab]`` and the rows'
answer/wrong tokens; it returns one value per prompt.  ``higher_is_better`` tells the
claim kinds which way a "drop" goes: for ``kl`` (divergence from the clean
distribution) lower is better, so its drop is its rise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["BUILTIN_METRICS", "Metric", "MetricInputs"]


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricInputs:
    """What a metric may read besides the logits.

    Attributes:
        answers: answer token id per prompt, ``[n]``.
        wrongs: contrast token id per prompt, or None when the data has none.
        clean_logits: the clean run's last-position logits ``[n, vocab]`` (for ``kl``).
        columns: the data's extra columns (e.g. a task's ``yy``), one value per row.
        tokenizer: the model's tokenizer, for metrics over sets of tokens.
    """

    answers: torch.Tensor
    wrongs: torch.Tensor | None
    clean_logits: torch.Tensor
    columns: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    tokenizer: Any = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """A named per-prompt metric.

    Attributes:
        name: the name claim files use (``metric: logit_diff``).
        fn: ``(logits [n, vocab], inputs) -> values [n]``.
        higher_is_better: False for metrics such as ``kl`` where lower is better.
        needs_wrong: the data must have a ``wrong`` column.
        description: one line for docs and error messages.
    """

    name: str
    fn: Callable[[torch.Tensor, MetricInputs], torch.Tensor]
    higher_is_better: bool = True
    needs_wrong: bool = False
    description: str = ""

    def __call__(self, logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
        return self.fn(logits.float(), inputs)


def _pick(values: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    return values.gather(-1, ids.to(values.device).view(-1, 1)).squeeze(-1)


def _logit_diff(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    assert inputs.wrongs is not None
    return _pick(logits, inputs.answers) - _pick(logits, inputs.wrongs)


def _logprob(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    return _pick(torch.log_softmax(logits, dim=-1), inputs.answers)


def _prob(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    return _pick(torch.softmax(logits, dim=-1), inputs.answers)


def _accuracy(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    return (logits.argmax(dim=-1) == inputs.answers.to(logits.device)).float()


def _kl(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    clean = torch.log_softmax(inputs.clean_logits.float().to(logits.device), dim=-1)
    other = torch.log_softmax(logits, dim=-1)
    return (clean.exp() * (clean - other)).sum(dim=-1).clamp_min(0.0)


BUILTIN_METRICS = (
    Metric(name="logit_diff", fn=_logit_diff, needs_wrong=True,
           description="logit of the answer minus logit of the wrong token"),
    Metric(name="logprob", fn=_logprob, description="log-probability of the answer"),
    Metric(name="prob", fn=_prob, description="probability of the answer"),
    Metric(name="accuracy", fn=_accuracy,
           description="1 where the answer is the top token, else 0"),
    Metric(name="kl", fn=_kl, higher_is_better=False,
           description="KL divergence from the clean next-token distribution"),
)
"""The task-free metrics; a task brings its own (``greater_than_pd`` comes with the
greater-than task, :data:`mechcheck.tasks.builtin.BUILTIN_TASK_METRICS`), and both are
registered through the ``mechcheck_metrics`` hook by :mod:`mechcheck.builtin`."""
