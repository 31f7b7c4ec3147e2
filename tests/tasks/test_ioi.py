"""Tests for the IOI task (:mod:`mechcheck.tasks.ioi`) under word-level and byte-level
BPE tokenizers, with and without a BOS token."""

from __future__ import annotations

import functools
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from mechcheck.data import tokenize_rows
from mechcheck.models.tiny import word_tokenizer
from mechcheck.tasks.builtin import BUILTIN_TASKS
from mechcheck.tasks.ioi import (
    IOI,
    NAMES,
    OBJECTS,
    PLACES,
    TEMPLATES,
    ioi_pools,
    ioi_rows,
    ioi_strategy,
    ioi_vocabulary,
)

EOT = "<|endoftext|>"
UNSEEN = NAMES[-6:]  # left out of the BPE corpus, so they split into several tokens


def _bpe_corpus(seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names = [n for n in NAMES if n not in UNSEEN]
    lines = []
    for template in TEMPLATES:
        for _ in range(20):
            a, b = rng.sample(names, 2)
            lines.append(template.format(N1=a, N2=b, S2=a, PLACE=rng.choice(PLACES),
                                         OBJECT=rng.choice(OBJECTS)) + " " + b + ".")
    return lines + [" ".join(names), " ".join(PLACES), " ".join(OBJECTS)] * 5


def bpe_tokenizer(*, bos: bool = False) -> PreTrainedTokenizerFast:
    """A GPT-2-style byte-level BPE trained here (GPT-2's files cannot be downloaded):
    names after a space are one token (" Mary"), punctuation splits off words."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_bpe_corpus(), trainer)
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{EOT} $A", special_tokens=[(EOT, backend.token_to_id(EOT))])
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT,
                                   unk_token=EOT)


_MAKERS = {
    "word": lambda: word_tokenizer(ioi_vocabulary()),
    "word-bos": lambda: word_tokenizer(ioi_vocabulary(), bos_token="<bos>"),
    "bpe": lambda: bpe_tokenizer(),
    "bpe-bos": lambda: bpe_tokenizer(bos=True),
}


@functools.cache
def tokenizer(kind: str) -> Any:
    """One shared tokenizer of each kind: word or bpe, with or without a BOS token."""
    return _MAKERS[kind]()


@pytest.fixture(params=sorted(_MAKERS))
def tok(request: pytest.FixtureRequest) -> Any:
    return tokenizer(request.param)


def _ids(tok: Any, text: str) -> list[int]:
    return tok(text)["input_ids"]


def _word(tok: Any, token_id: int) -> str:
    return tok.decode([token_id]).strip()


def check_row(tok: Any, row: dict[str, Any]) -> None:
    """Every property a row must have, whatever the tokenizer."""
    ids, pos = _ids(tok, row["prompt"]), row["positions"]
    io, s = row["answer"].strip(), row["wrong"].strip()
    assert row["answer"] == " " + io and row["wrong"] == " " + s and io != s
    assert not row["prompt"].endswith(" ")
    assert [_word(tok, ids[pos[k]]) for k in ("IO", "S1", "S2")] == [io, s, s]
    assert pos["S1+1"] == pos["S1"] + 1 and pos["END"] == len(ids) - 1
    assert _word(tok, ids[pos["END"]]) == row["prompt"].split()[-1]
    io_first = row["template"].startswith("abba-")
    assert (pos["IO"] < pos["S1"]) == io_first and pos["S1"] < pos["S2"]
    assert row["order"] == ("abba" if pos["IO"] < pos["S1"] else "baba")
    for answer in (row["answer"], row["wrong"]):
        assert len(tok(answer, add_special_tokens=False)["input_ids"]) == 1
    corrupt = _ids(tok, row["corrupt"])
    assert len(corrupt) == len(ids)
    changed = [i for i, (a, b) in enumerate(zip(ids, corrupt, strict=True)) if a != b]
    assert changed == sorted([pos["IO"], pos["S1"], pos["S2"]])
    new = {_word(tok, corrupt[i]) for i in changed}
    assert len(new) == 3 and not new & {io, s} and new <= set(NAMES)


def test_rows_have_right_positions_and_corrupts(tok: Any) -> None:
    rows = ioi_rows(tok, n=60, seed=3)
    for row in rows:
        check_row(tok, row)
    forms = {r["template"].split("-")[0] for r in rows}
    assert forms == {"abba", "baba"}
    assert len({r["template"] for r in rows}) > 10


def test_positions_count_the_bos_token() -> None:
    plain, bos = tokenizer("word"), tokenizer("word-bos")
    row_plain, row_bos = ioi_rows(plain, n=1, seed=5)[0], ioi_rows(bos, n=1, seed=5)[0]
    assert row_plain["prompt"] == row_bos["prompt"]
    assert {k: v + 1 for k, v in row_plain["positions"].items()} == row_bos["positions"]


def test_word_level_writes_punctuation_as_words() -> None:
    row = ioi_rows(tokenizer("word"), n=1, seed=0, templates=[0])[0]
    assert " , " in row["prompt"]
    row = ioi_rows(tokenizer("bpe"), n=1, seed=0, templates=[0])[0]
    assert ", " in row["prompt"] and " , " not in row["prompt"]


def test_word_level_prompts_have_no_unknown_tokens() -> None:
    tok = tokenizer("word-bos")
    for row in ioi_rows(tok, n=100, seed=1):
        for text in (row["prompt"], row["corrupt"]):
            assert tok.unk_token_id not in _ids(tok, text)


def test_bpe_keeps_only_single_token_names() -> None:
    pools = ioi_pools(tokenizer("bpe"))
    assert not set(pools.names) & set(UNSEEN)
    assert len(pools.names) == len(NAMES) - len(UNSEEN)
    assert len(pools.templates) == len(TEMPLATES) and not pools.spaced


def test_deterministic_per_seed(tok: Any) -> None:
    assert ioi_rows(tok, n=20, seed=7) == ioi_rows(tok, n=20, seed=7)
    assert ioi_rows(tok, n=20, seed=7) != ioi_rows(tok, n=20, seed=8)


@pytest.mark.parametrize("order", ["abba", "baba"])
def test_order_and_templates(order: str) -> None:
    rows = ioi_rows(tokenizer("word"), n=30, seed=0, order=order, templates=[2, 5])
    assert {r["template"] for r in rows} == {f"{order}-2", f"{order}-5"}


def test_too_few_single_token_names_is_a_clear_error() -> None:
    words = [w for w in ioi_vocabulary() if w not in NAMES[5:]]
    with pytest.raises(ValueError, match=r"at least 8 names .* has 5 \(Mary, John"):
        ioi_rows(word_tokenizer(words), n=5, seed=0)


def test_unknown_template_words_drop_templates() -> None:
    words = [w for w in ioi_vocabulary() if w != "Yesterday"]
    pools = ioi_pools(word_tokenizer(words))
    assert 9 not in {i for i, _ in pools.templates} and len(pools.templates) == 14
    with pytest.raises(ValueError, match="does not know"):
        ioi_pools(word_tokenizer(words), templates=[9])


@pytest.mark.parametrize("kwargs", [{"order": "cab"}, {"templates": [99]}, {"templates": []}])
def test_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        ioi_rows(tokenizer("word"), n=1, seed=0, **kwargs)


def test_registered_task_rows_tokenize() -> None:
    assert IOI in BUILTIN_TASKS
    tok = tokenizer("word-bos")
    rows = IOI.rows(tok, {"name": "ioi", "n": 12, "seed": 2, "order": "baba"})
    dataset = tokenize_rows(rows, tok, source="task ioi")
    assert len(dataset) == 12 and dataset.corrupts is not None
    assert set(dataset.columns["template"]) <= {f"baba-{i}" for i in range(len(TEMPLATES))}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=ioi_strategy(tokenizer("bpe-bos")))
def test_strategy_rows_are_valid_bpe(row: dict[str, Any]) -> None:
    check_row(tokenizer("bpe-bos"), row)


@settings(max_examples=60, deadline=None)
@given(row=ioi_strategy(tokenizer("word"), order="abba"))
def test_strategy_rows_are_valid_word_level(row: dict[str, Any]) -> None:
    assert row["template"].startswith("abba-")
    check_row(tokenizer("word"), row)


