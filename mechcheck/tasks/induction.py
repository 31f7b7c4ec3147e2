"""The induction task: the next token is predictable only by copying from context.

A prompt is ``lead`` random words, a ``segment``, a ``gap``, then the first few words
of the segment again; every word of the first three parts is distinct, so the last word
occurred exactly once before and the answer is the word that followed it there.  The
corrupt prompt replaces the first occurrence of the segment with unused words (same
token count), so no earlier occurrence points to the answer.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from mechcheck.tasks import Task
from mechcheck.tasks.vocab import word_pool

__all__ = ["INDUCTION", "induction_row", "induction_rows"]


def induction_row(rng: random.Random, words: Sequence[str]) -> dict[str, Any]:
    """One row from a pool of single-token words (answers get a leading space)."""
    seg_len = rng.randint(4, 8)
    lead, gap = rng.randint(2, 8), rng.randint(2, 8)
    first = rng.sample(list(words), lead + seg_len + gap)
    segment = first[lead: lead + seg_len]
    shown = rng.randint(2, seg_len - 1)
    unused = [w for w in words if w not in set(first)]
    others = rng.sample(unused, seg_len + 1)
    corrupt = first[:lead] + others[:seg_len] + first[lead + seg_len:] + segment[:shown]
    return {
        "prompt": " ".join(first + segment[:shown]),
        "answer": " " + segment[shown],
        "wrong": " " + others[seg_len],
        "corrupt": " ".join(corrupt),
    }


def induction_rows(tokenizer: Any, *, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` induction rows over the tokenizer's single-token words."""
    words = word_pool(tokenizer)
    if len(words) < 40:
        raise ValueError(f"the induction task needs at least 40 single-token words, "
                         f"this tokenizer has {len(words)}")
    rng = random.Random(seed)
    return [induction_row(rng, words) for _ in range(n)]


def _strategy(tokenizer: Any) -> Any:
    from hypothesis import strategies as st

    words = word_pool(tokenizer)
    return st.randoms(use_true_random=False).map(lambda rng: induction_row(rng, words))


INDUCTION = Task(name="induction", generate=induction_rows, strategy=_strategy,
                 description="repeated segments: the answer is predictable only by "
                 "induction")
