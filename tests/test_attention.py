"""Attention scores on hand-made patterns whose scores are known."""

from __future__ import annotations

import math

import torch

from mechcheck.engine.attention import duplicate_token, first_token, induction, previous_token


def _uniform(length: int) -> torch.Tensor:
    pattern = torch.tril(torch.ones(length, length))
    return (pattern / pattern.sum(-1, keepdim=True)).unsqueeze(0)


def test_previous_token_head_scores_one() -> None:
    pattern = torch.zeros(1, 4, 4)
    pattern[0, 0, 0] = 1
    for i in range(1, 4):
        pattern[0, i, i - 1] = 1
    tokens = torch.tensor([[5, 6, 7, 8]])
    assert previous_token(pattern, tokens).item() == 1.0
    assert math.isclose(first_token(pattern, tokens).item(), 1 / 3, rel_tol=1e-6)  # query 1 only


def test_induction_and_duplicate_scores_on_a_repeated_sequence() -> None:
    tokens = torch.tensor([[1, 2, 3, 1, 2, 3]])
    induction_pattern = torch.zeros(1, 6, 6)
    duplicate_pattern = torch.zeros(1, 6, 6)
    for i in range(6):
        induction_pattern[0, i, i] = 1.0
        duplicate_pattern[0, i, i] = 1.0
    for i in (3, 4, 5):  # token at i occurred at i - 3; induction target is i - 2
        induction_pattern[0, i] = 0
        induction_pattern[0, i, i - 2] = 1.0
        duplicate_pattern[0, i] = 0
        duplicate_pattern[0, i, i - 3] = 1.0
    assert induction(induction_pattern, tokens).item() == 1.0
    assert induction(duplicate_pattern, tokens).item() == 0.0
    assert duplicate_token(duplicate_pattern, tokens).item() == 1.0
    assert duplicate_token(induction_pattern, tokens).item() == 0.0


def test_uniform_attention_scores_and_unscorable_prompts() -> None:
    tokens = torch.tensor([[1, 2, 1]])
    pattern = _uniform(3)
    # position 2 repeats token 1 (seen at 0): induction target is key 1, weight 1/3
    assert math.isclose(induction(pattern, tokens).item(), 1 / 3, rel_tol=1e-6)
    assert math.isclose(duplicate_token(pattern, tokens).item(), 1 / 3, rel_tol=1e-6)
    assert math.isnan(induction(_uniform(3), torch.tensor([[1, 2, 3]])).item())
