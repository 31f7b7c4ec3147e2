"""Word pools that are single tokens under a given tokenizer."""

from __future__ import annotations

from typing import Any

from mechcheck.tasks import single_token_words

__all__ = ["word_pool"]

_WORD_START = ("Ġ", "▁")  # byte-level BPE (GPT-2, NeoX) and sentencepiece (Llama) markers


def word_pool(tokenizer: Any, *, min_len: int = 3, limit: int = 2000) -> list[str]:
    """Lowercase alphabetic words that are one token after a space, in vocab order.

    Works for word-level tokenizers (their vocabulary is the words) and for BPE or
    sentencepiece tokenizers (words marked as starting with a space).
    """
    special = set(getattr(tokenizer, "all_special_tokens", ()))
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    candidates = []
    for token, _ in items:
        if token in special:
            continue
        word = token[1:] if token[:1] in _WORD_START else token
        if word.isalpha() and word.islower() and len(word) >= min_len and word.isascii():
            candidates.append(word)
        if len(candidates) >= 4 * limit:
            break
    return single_token_words(tokenizer, candidates)[:limit]
