"""Per-prompt attention-pattern scores for ``attends`` claims.

Each function takes one head's pattern for a batch of equal-length prompts,
``pattern[b, query, key]``, and the prompts' token ids ``tokens[b, pos]``, and returns
one score per prompt.  Positions with nothing to score (no repeated token, say) are
left out of that prompt's mean; a prompt with no scorable position gets NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from mechcheck.plugins import Registry

__all__ = ["BUILTIN_SCORES", "SCORES", "AttentionScore", "attention_score", "duplicate_token",
           "first_token", "induction", "previous_token"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AttentionScore:
    """A named attention-pattern score, for the ``pattern:`` key of ``attends`` claims.

    Attributes:
        name: the name claim files use (``pattern: induction``).
        fn: ``(pattern [b, query, key], tokens [b, pos]) -> scores [b]``, one score in
            [0, 1] per prompt (NaN for a prompt with nothing to score).
        description: one line for docs and error messages.
    """

    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    description: str = ""

    def __call__(self, pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.fn(pattern, tokens)


def _masked_mean(values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the last dim of ``values`` where ``keep``; NaN where nothing is kept."""
    total = (values * keep).sum(dim=-1)
    count = keep.sum(dim=-1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, torch.nan))


def previous_token(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over query positions i >= 1 of the attention from i to i - 1."""
    values = torch.diagonal(pattern, offset=-1, dim1=-2, dim2=-1)
    return _masked_mean(values, torch.ones_like(values))


def _earlier_same(tokens: torch.Tensor) -> torch.Tensor:
    """``[b, i, p]``: token p equals token i and p < i."""
    same = tokens.unsqueeze(-1) == tokens.unsqueeze(-2)
    length = tokens.shape[-1]
    earlier = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril(-1)
    return same & earlier


def duplicate_token(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Over positions whose token occurred earlier: attention summed over those
    earlier occurrences; mean over such positions."""
    earlier = _earlier_same(tokens).to(pattern.dtype)
    summed = (pattern * earlier).sum(dim=-1)
    return _masked_mean(summed, earlier.sum(dim=-1) > 0)


def induction(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Over query positions i whose token occurred earlier at some p = j - 1 < i: the
    attention summed over all such j (the tokens right after earlier copies); mean
    over those i."""
    earlier = _earlier_same(tokens)
    targets = torch.zeros_like(earlier)
    targets[..., 1:] = earlier[..., :-1]  # key j is a target when token j - 1 matches i
    targets = targets.to(pattern.dtype)
    summed = (pattern * targets).sum(dim=-1)
    return _masked_mean(summed, targets.sum(dim=-1) > 0)


def first_token(pattern: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean over query positions i >= 1 of the attention to position 0 (position 0
    can attend nowhere else, so it is left out)."""
    values = pattern[..., 1:, 0]
    return _masked_mean(values, torch.ones_like(values))


SCORES = {
    "previous_token": previous_token,
    "induction": induction,
    "duplicate_token": duplicate_token,
    "first_token": first_token,
}

BUILTIN_SCORES = tuple(
    AttentionScore(name=name, fn=fn, description=(fn.__doc__ or "").split("\n")[0])
    for name, fn in SCORES.items()
)


def attention_score(registry: Registry, name: str) -> AttentionScore:
    """The registered score ``name``, or a ClaimSpecError at key ``pattern`` listing them."""
    score: AttentionScore = registry.lookup("scores", name, key="pattern")
    return score
