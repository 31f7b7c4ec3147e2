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
from mechcheck.metrics import MetricInputs
from mechcheck.models.tiny import word_tokenizer
from mechcheck.plugins import Registry
from mechcheck.tasks.greater_than import (
    DIGIT_YY,
    GREATER_THAN,
    GREATER_THAN_PD,
    digit_probability_difference,
    digit_token_ids,
    greater_than_rows,
    probability_difference,
    year_format,
    year_token_ids,
)
from mechcheck.testing.models import save_tiny

TEMPLATE_WORDS = ("The", "lasted", "from", "the", "year", "to")
NOUNS = ("war", "siege", "reign", "voyage")
YEARS = tuple(f"{y:02d}" for y in range(100))
PD = GREATER_THAN_PD


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


# --- the digits format: tokenizers that split numbers into single digits (SmolLM2) ---

def _digit_bpe(*, merge: tuple[str, str] | None = None) -> PreTrainedTokenizerFast:
    """A byte-level BPE like SmolLM2's: the words merge letter by letter, digits never
    merge, so " 1739" is "Ġ" + "1" + "7" + "3" + "9"; ``merge`` adds one digit merge."""
    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    merges: list[tuple[str, str]] = []
    for word in ["The"] + [f"Ġ{w}" for w in (*TEMPLATE_WORDS[1:], *NOUNS)]:
        for k in range(1, len(word)):
            if word[:k + 1] not in vocab:
                merges.append((word[:k], word[k]))
                vocab[word[:k + 1]] = len(vocab)
    if merge is not None:
        merges.append(merge)
        vocab["".join(merge)] = len(vocab)
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend)


def test_digit_tokenizers_get_the_digits_format() -> None:
    tok = _digit_bpe()
    assert tok.tokenize(" 1739") == ["Ġ", "1", "7", "3", "9"]
    assert year_format(tok) == "digits"
    assert digit_token_ids(tok).tolist() == tok.convert_tokens_to_ids(list("0123456789"))
    assert digit_token_ids(tok) is digit_token_ids(tok)
    # Tokenizers with two-digit tokens keep their formats.
    assert year_format(_word_level()) == "spaced" and year_format(_bpe(), [17]) == "joined"


def test_digit_rows_start_in_a_year_ending_in_9() -> None:
    tok = _digit_bpe()
    rows = greater_than_rows(tok, n=2 * 9, seed=0)
    assert Counter(r["yy"] for r in rows) == Counter({yy: 2 for yy in DIGIT_YY})
    assert DIGIT_YY == (9, 19, 29, 39, 49, 59, 69, 79, 89)
    ds = tokenize_rows(rows, tok)
    for i, row in enumerate(rows):
        xx, tens = row["prompt"].split()[-1], row["yy"] // 10
        assert row["prompt"].endswith(f"year {xx}{row['yy']:02d} to the year {xx}")
        assert row["corrupt"] == row["prompt"].replace(f" {xx}{row['yy']:02d} ", f" {xx}01 ")
        assert (row["answer"], row["wrong"]) == (str(tens + 1), str(tens))
        tokens = tok.convert_ids_to_tokens(list(ds.prompts[i]))
        pos = ds.positions[i]
        assert tokens[pos["YY"]] == str(tens) and tokens[pos["YY+1"]] == "9"
        assert pos["END"] == len(tokens) - 1 and tokens[-3:] == ["Ġ", xx[0], xx[1]]
        assert tokens[pos["YY+1"] + 1:pos["END"] - 2] == ["Ġto", "Ġthe", "Ġyear"]
        assert ds.corrupts is not None and len(ds.corrupts[i]) == len(ds.prompts[i])
    assert rows == greater_than_rows(tok, n=2 * 9, seed=0)


@settings(max_examples=15, deadline=None)
@given(row=GREATER_THAN.strategy(_digit_bpe(), centuries=[13, 17]))  # type: ignore[misc]
def test_digit_strategy_rows_tokenize(row: dict) -> None:
    tok = _digit_bpe()
    ds = tokenize_rows([row], tok)
    assert row["yy"] in DIGIT_YY and row["prompt"].split()[-1] in {"13", "17"}
    assert tok.convert_ids_to_tokens(ds.prompts[0][ds.positions[0]["YY"]]) == (
        str(row["yy"] // 10))


def test_a_digit_tokenizer_that_merges_some_numbers_is_refused() -> None:
    with pytest.raises(ValueError, match=r"every two-digit number"):
        greater_than_rows(_digit_bpe(merge=("3", "2")), n=2, seed=0)


def _digit_pd_by_hand(probs: Sequence[float], yy: int) -> float:
    """The digit metric written out: each tens digit counts where all its end years lie."""
    total = 0.0
    for d, p in enumerate(probs):
        years = range(10 * d, 10 * d + 10)
        if all(y > yy for y in years):
            total += p
        elif all(y <= yy for y in years):
            total -= p
    return total


def _digit_logits(tok: PreTrainedTokenizerFast,
                  digit_logits: Sequence[Sequence[float]]) -> torch.Tensor:
    logits = torch.zeros(len(digit_logits), len(tok))
    for i, row in enumerate(digit_logits):
        logits[i, digit_token_ids(tok)] = torch.tensor(row)
    return logits


@pytest.mark.parametrize("yy", [9, 49, 89, 0, 40, 45, 98, 99, 1])
def test_digit_pd_matches_a_plain_implementation(yy: int) -> None:
    tok = _digit_bpe()
    gen = torch.Generator().manual_seed(yy)
    digit = torch.randn(3, 10, generator=gen) * 3
    logits = _digit_logits(tok, digit.tolist())
    probs = torch.softmax(logits, dim=-1)[:, digit_token_ids(tok)]
    want = [_digit_pd_by_hand(p.tolist(), yy) for p in probs]
    inputs = MetricInputs(answers=torch.tensor([0, 0, 0]), wrongs=None, clean_logits=logits,
                          columns={"yy": (yy, yy, yy)}, tokenizer=tok)
    torch.testing.assert_close(PD(logits, inputs), torch.tensor(want), atol=1e-6, rtol=0)


def test_digit_pd_known_values_and_the_equal_tens_digit() -> None:
    tok = _digit_bpe()
    v = len(tok)
    # All digits have logit 0 except: row 0 '4' ln 5 (YY = 39: '4' greater, 0..3 not);
    # rows 1 and 2 '3' ln 7 with YY = 39 and YY = 35.
    logits = torch.zeros(3, v)
    ids = digit_token_ids(tok)
    logits[0, ids[4]] = math.log(5)
    logits[1, ids[3]] = logits[2, ids[3]] = math.log(7)
    z0, z12 = 5 + (v - 1), 7 + (v - 1)
    want = [(5 + 5 - 4) / z0,            # greater: 4 (5) + 5..9; not: 0..3
            (6 - 3 - 7) / z12,           # YY = 39: the tens digit 3 is wholly not greater
            (6 - 3) / z12]               # YY = 35: 30..39 lie on both sides: left out
    inputs = MetricInputs(answers=torch.tensor([0, 0, 0]), wrongs=None, clean_logits=logits,
                          columns={"yy": (39, 39, 35)}, tokenizer=tok)
    got = PD(logits, inputs)
    torch.testing.assert_close(got, torch.tensor(want), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        digit_probability_difference(logits, torch.tensor([39, 39, 35]), ids), got)
    # The equal digit's mass moves the value only when the start ends in 9.
    assert float(got[1]) < float(got[2])


def test_digit_pd_is_hannas_pd_for_starts_ending_in_9() -> None:
    """For YY = T9, the digit value equals Hanna et al.'s PD over whole two-digit endings
    p(d, e) = p(d) q(e | d), whatever the units distribution q is."""
    gen = torch.Generator().manual_seed(1)
    p_tens = torch.softmax(torch.randn(10, generator=gen), dim=0)
    q_units = torch.softmax(torch.randn(10, 10, generator=gen), dim=1)
    joint = (p_tens.unsqueeze(1) * q_units).reshape(100)
    for yy in DIGIT_YY:
        hanna = float(joint[yy + 1:].sum() - joint[:yy + 1].sum())
        assert _digit_pd_by_hand(p_tens.tolist(), yy) == pytest.approx(hanna, abs=1e-6)


def test_digit_metric_needs_digits_or_two_digit_tokens() -> None:
    tok = _word_level(YEARS[1:])   # neither every two-digit number nor the digits
    logits = torch.zeros(1, len(tok))
    inputs = MetricInputs(answers=torch.tensor([0]), wrongs=None, clean_logits=logits,
                          columns={"yy": (39,)}, tokenizer=tok)
    with pytest.raises(DataError, match="every two-digit number") as info:
        PD(logits, inputs)
    assert "single digits" in (info.value.hint or "")


DIGIT_CLAIMS = """\
model: ./model
task: {name: greater_than, n: 18, seed: 0}
metric: greater_than_pd
claims:
  - id: mlp_1
    kind: necessary
    components: ["mlp 1"]
    ablation: mean
    at: END
    min_drop: 0.5
  - id: end_to_tens_digit
    kind: attends
    components: ["head 1.0"]
    from: END
    to: YY
    min_score: 0.5
"""


def test_claims_run_on_a_model_with_a_digit_tokenizer(tmp_path: Path) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _digit_bpe()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    (tmp_path / "test_gt.yaml").write_text(DIGIT_CLAIMS)
    results = evaluate_path(tmp_path / "test_gt.yaml")
    assert [(r.id, r.n) for r in results] == [("mlp_1", 18), ("end_to_tens_digit", 18)]
    assert all(r.verdict == "fail" and math.isfinite(r.effect) for r in results), results


def test_smollm2s_tokenizer_gets_the_digits_format() -> None:
    """The real tokenizer, from the zoo's SmolLM2-135M (no model is loaded)."""
    from transformers import AutoTokenizer

    from mechcheck.zoo import resolve

    tok = AutoTokenizer.from_pretrained(resolve("smollm2-135m"))
    assert year_format(tok) == "digits"
    rows = greater_than_rows(tok, n=27, seed=0)
    ds = tokenize_rows(rows, tok)
    assert {len(p) for p in ds.prompts} == {17}      # every prompt batches together
    for i, row in enumerate(rows):
        tokens = tok.convert_ids_to_tokens(list(ds.prompts[i]))
        assert tokens[ds.positions[i]["YY"]] == str(row["yy"] // 10)
        assert tokens[-3:] == ["Ġ", *row["prompt"][-2:]]
