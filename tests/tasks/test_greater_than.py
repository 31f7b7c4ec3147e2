"""The greater-than task on word-level and byte-level BPE tokenizers, and its metric."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mechcheck.api import evaluate_path
from mechcheck.data import tokenize_rows
from mechcheck.errors import DataError
from mechcheck.metrics import BUILTIN_METRICS, MetricInputs
from mechcheck.models.tiny import save_tiny, word_tokenizer
from mechcheck.plugins import Registry
from mechcheck.tasks.greater_than import (
    GREATER_THAN,
    greater_than_rows,
    probability_difference,
    year_format,
    year_token_ids,
)

TEMPLATE_WORDS = ("The", "lasted", "from", "the", "year", "to")
NOUNS = ("war", "siege", "reign", "voyage")
YEARS = tuple(f"{y:02d}" for y in range(100))
PD = {m.name: m for m in BUILTIN_METRICS}["greater_than_pd"]


def _word_level(years: Sequence[str] = YEARS) -> PreTrainedTokenizerFast:
    return word_tokenizer([*TEMPLATE_WORDS, *NOUNS, *years], bos_token="<bos>")


def _bpe(centuries: Sequence[int] = (17,),
         extra: Sequence[tuple[str, str]] = ()) -> PreTrainedTokenizerFast:
    """A byte-level BPE whose merges make " 17" and every "YY" one token: the century
    pairs merge first, then all two-digit pairs, then "Ġ" + century, then the words
    letter by letter; ``extra`` merges come last."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges: list[tuple[str, str]] = []

    def add(a: str, b: str) -> None:
        if a + b not in vocab:
            merges.append((a, b))
            vocab[a + b] = len(vocab)

    pairs = [f"{xx:02d}" for xx in centuries] + list(YEARS)
    for digits in pairs:
        add(digits[0], digits[1])
    for xx in centuries:
        add("Ġ", f"{xx:02d}")
    for word in ["The"] + [f"Ġ{w}" for w in (*TEMPLATE_WORDS[1:], *NOUNS)]:
        for k in range(1, len(word)):
            add(word[:k], word[k])
    for a, b in extra:
        add(a, b)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_the_task_is_registered() -> None:
    assert Registry.from_plugins().tasks["greater_than"] is GREATER_THAN


def test_word_level_rows_write_years_as_two_words() -> None:
    tok = _word_level()
    assert year_format(tok) == "spaced"
    rows = greater_than_rows(tok, n=3, seed=0)
    row = rows[0]
    xx, yy = row["prompt"].split()[-1], f"{row['yy']:02d}"
    assert row["prompt"].endswith(f"year {xx} {yy} to the year {xx}")
    assert row["corrupt"] == row["prompt"].replace(f" {xx} {yy} ", f" {xx} 01 ")
    assert int(row["answer"]) == row["yy"] + 1 and int(row["wrong"]) == row["yy"] - 1
    ds = tokenize_rows(rows, tok)
    for i, prompt in enumerate(ds.prompts):
        pos = ds.positions[i]
        assert pos["END"] == len(prompt) - 1
        assert tok.convert_ids_to_tokens(prompt[pos["YY"]]) == f"{rows[i]['yy']:02d}"
    assert ds.columns["yy"] == tuple(r["yy"] for r in rows)


def test_bpe_rows_split_years_into_century_and_ending() -> None:
    tok = _bpe()
    assert year_format(tok, [17]) == "joined"
    rows = greater_than_rows(tok, n=4, seed=1, centuries=[17])
    assert rows[0]["prompt"].endswith(f"year 17{rows[0]['yy']:02d} to the year 17")
    ds = tokenize_rows(rows, tok)
    tokens = tok.convert_ids_to_tokens(list(ds.prompts[0]))
    assert tokens[-6:] == ["Ġ17", f"{rows[0]['yy']:02d}", "Ġto", "Ġthe", "Ġyear", "Ġ17"]
    assert ds.positions[0] == {"YY": len(tokens) - 5, "END": len(tokens) - 1}
    assert ds.corrupts is not None and len(ds.corrupts[0]) == len(ds.prompts[0])


def test_yy_is_balanced_over_02_to_98_and_seeded() -> None:
    tok = _word_level()
    rows = greater_than_rows(tok, n=2 * 97, seed=3)
    assert Counter(r["yy"] for r in rows) == Counter({y: 2 for y in range(2, 99)})
    assert rows == greater_than_rows(tok, n=2 * 97, seed=3)
    assert rows != greater_than_rows(tok, n=2 * 97, seed=4)


def test_task_spec_takes_centuries() -> None:
    rows = GREATER_THAN.rows(_word_level(), {"name": "greater_than", "n": 20, "seed": 0,
                                             "centuries": [13]})
    assert {r["prompt"].split()[-1] for r in rows} == {"13"}


@pytest.mark.parametrize("tok, centuries, message", [
    (_word_level(YEARS[:50]), None, r"every two-digit number.*50 are not.*\(50, 51"),
    (_word_level(), [17, 99], None),
    (_bpe(), None, r"each century.*' 11', ' 12'"),
    (_bpe(extra=[("Ġ17", "32")]), [17], None),  # one merged year is left out
])
def test_missing_tokens_are_named(tok: PreTrainedTokenizerFast, centuries: list[int] | None,
                                  message: str | None) -> None:
    kwargs = {"centuries": centuries} if centuries else {}
    if message is None:
        assert len(greater_than_rows(tok, n=2, seed=0, **kwargs)) == 2
        return
    with pytest.raises(ValueError, match=message):
        greater_than_rows(tok, n=2, seed=0, **kwargs)


def test_missing_template_words_are_named() -> None:
    tok = word_tokenizer(["The", "from", "the", "year", "to", "war", *YEARS])
    with pytest.raises(ValueError, match="one known token each: lasted"):
        greater_than_rows(tok, n=1, seed=0)


@settings(max_examples=25, deadline=None)
@given(row=GREATER_THAN.strategy(_bpe(), centuries=[17]))  # type: ignore[misc]
def test_strategy_rows_tokenize(row: dict) -> None:
    tok = _bpe()
    ds = tokenize_rows([row], tok)
    assert 2 <= row["yy"] <= 98
    assert tok.convert_ids_to_tokens(ds.prompts[0][ds.positions[0]["YY"]]) == (
        f"{row['yy']:02d}")


def _made_up(tok: PreTrainedTokenizerFast) -> tuple[torch.Tensor, list[int]]:
    """Row 0 (YY = 40): '41' has logit ln 4, '40' ln 2, every other token 0.
    Row 1 (YY = 98): '99' has logit ln 3, '98' ln 5, every other token 0."""
    ids = tok.convert_tokens_to_ids
    logits = torch.zeros(2, len(tok))
    logits[0, ids("41")], logits[0, ids("40")] = math.log(4), math.log(2)
    logits[1, ids("99")], logits[1, ids("98")] = math.log(3), math.log(5)
    return logits, [40, 98]


def test_probability_difference_by_hand() -> None:
    tok = _word_level()
    logits, yy = _made_up(tok)
    v = len(tok)
    # Row 0: greater = '41' (4) + 42..99 (58 x 1); not greater = 00..39 (40 x 1) + '40' (2).
    # Row 1: greater = '99' (3); not greater = 00..97 (98 x 1) + '98' (5).
    want = [(4 + 58 - 40 - 2) / (4 + 2 + v - 2), (3 - 98 - 5) / (3 + 5 + v - 2)]
    inputs = MetricInputs(answers=torch.tensor([0, 0]), wrongs=None, clean_logits=logits,
                          columns={"yy": tuple(yy)}, tokenizer=tok)
    torch.testing.assert_close(PD(logits, inputs), torch.tensor(want), atol=1e-6, rtol=0)
    assert PD.higher_is_better
    # y = YY counts as not greater: leaving it out (ACDC) would give a different value.
    acdc = (4 + 58 - 40) / (4 + 2 + v - 2)
    assert abs(float(PD(logits, inputs)[0]) - acdc) > 0.01
    got = probability_difference(logits, torch.tensor(yy), year_token_ids(tok))
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=0)


def test_year_ids_are_cached_per_tokenizer() -> None:
    tok = _word_level()
    assert year_token_ids(tok) is year_token_ids(tok)
    assert year_token_ids(tok).tolist() == tok.convert_tokens_to_ids(list(YEARS))


def test_metric_errors_say_what_is_missing() -> None:
    tok = _word_level()
    logits, _ = _made_up(tok)
    bare = MetricInputs(answers=torch.tensor([0, 0]), wrongs=None, clean_logits=logits,
                        tokenizer=tok)
    with pytest.raises(DataError, match="needs a 'yy' column"):
        PD(logits, bare)
    short = MetricInputs(answers=torch.tensor([0, 0]), wrongs=None, clean_logits=logits,
                         columns={"yy": (40, 98)}, tokenizer=_word_level(YEARS[1:]))
    with pytest.raises(DataError, match="every two-digit number"):
        PD(logits, short)


CLAIMS = """\
model: ./model
task: {name: greater_than, n: 30, seed: 0}
metric: greater_than_pd
claims:
  - id: mlp_1
    kind: necessary
    components: ["mlp 1"]
    ablation: mean
    at: END
    min_drop: 0.5
  - id: end_to_yy
    kind: attends
    components: ["head 1.0"]
    from: END
    to: YY
    min_score: 0.5
"""


def test_claims_use_the_task_and_the_metric(tmp_path: Path) -> None:
    words = [*TEMPLATE_WORDS, *NOUNS, *YEARS]
    save_tiny("gpt2", tmp_path / "model", seed=0, words=words)
    (tmp_path / "test_gt.yaml").write_text(CLAIMS)
    results = evaluate_path(tmp_path / "test_gt.yaml")
    assert [(r.id, r.n) for r in results] == [("mlp_1", 30), ("end_to_yy", 30)]
    assert all(r.verdict == "fail" and math.isfinite(r.effect) for r in results), results


def test_years_that_do_not_split_are_left_out() -> None:
    rows = greater_than_rows(_bpe(extra=[("Ġ17", "32")]), n=200, seed=0, centuries=[17])
    assert len(rows) == 200
    assert all(r["yy"] != 32 for r in rows)
