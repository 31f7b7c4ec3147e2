"""A word-level tokenizer built without the hub, for zoo models and tests.

The random-init tiny model builders that used to live here are test scaffolding and
moved to :mod:`mechcheck.testing.models`.

Example:
    >>> tok = word_tokenizer(["the", "cat"], bos_token="<bos>")
    >>> tok("the cat")["input_ids"]
    [1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["UNK_TOKEN", "word_tokenizer"]

UNK_TOKEN = "<unk>"


def word_tokenizer(
    words: Sequence[str], *, bos_token: str | None = None
) -> PreTrainedTokenizerFast:
    """A whitespace-split word-level tokenizer over ``words``.

    Ids are ``<unk>`` = 0, then ``bos_token`` (when given), then ``words`` in order
    (duplicates dropped). Text outside the vocabulary maps to ``<unk>``.

    Args:
        words: the vocabulary; each must be free of whitespace.
        bos_token: when given, prepended to every encoding by a post-processor, so that
            ``tokenizer("a b")`` gives ``[bos, a, b]``.

    Returns:
        A fast tokenizer that round-trips through ``save_pretrained`` and
        ``AutoTokenizer.from_pretrained``.

    Raises:
        ValueError: a word is empty or contains whitespace.
    """
    specials = [UNK_TOKEN] + ([bos_token] if bos_token is not None else [])
    vocab: dict[str, int] = {}
    for word in [*specials, *words]:
        if not word or any(ch.isspace() for ch in word):
            raise ValueError(f"vocabulary word {word!r} is empty or contains whitespace")
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(specials)
    if bos_token is not None:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos_token} $A",
            pair=f"{bos_token} $A $B:1",
            special_tokens=[(bos_token, vocab[bos_token])],
        )
    extra: dict[str, Any] = {"bos_token": bos_token} if bos_token is not None else {}
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token=UNK_TOKEN, **extra)
