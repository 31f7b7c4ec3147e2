"""Per-prompt attention-pattern scores for ``attends`` claims.

Each function takes one head's pattern for a batch of equal-length prompts,
``pattern[b, query, key]``, and the prompts' token ids ``tokens[b, pos]``, and returns
one score per prompt.  Positions with nothing to score (no repeated token, say) are
left out of that prompt's mean; a prompt with no scorable position gets NaN.
"""

from __future__ import annotations

import torch

__all__ = ["SCORES", "duplicate_token", "first_token", "induction", "previous_token"]


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
