"""The zoo registry (names, checkpoints, resolve, errors) and the ``induction-2l`` model:
its shipped weights load, its evaluation rows are well formed, and (slow) its recipe
rebuilds a model with an induction head on which the claims of
claims/zoo/test_induction.yaml pass."""

from __future__ import annotations

import json
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mechcheck import zoo
from mechcheck.errors import ModelLoadError
from mechcheck.zoo import induction

ROOT = Path(__file__).resolve().parents[2]
ROWS = ROOT / "claims" / "zoo" / "induction.jsonl"
WEIGHTS = zoo.WEIGHTS / induction.NAME
CHECKPOINTS = [f"step{s}" for s in induction.checkpoint_steps()]


def induction_scores(folder: Path, rows: list[dict], layer: int, *, after: int = 1) -> list[float]:
    """Per head of ``layer``: mean attention from each repeated token to the token ``after``
    positions after its earlier occurrence (1: the textbook induction score)."""
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    total, count = torch.zeros(model.config.n_head), 0
    for row in rows:
        words = row["prompt"].split()
        ids = torch.tensor([tokenizer(row["prompt"]).input_ids])
        with torch.no_grad():
            pattern = model(input_ids=ids, output_attentions=True).attentions[layer][0]
        first = {w: i for i, w in reversed(list(enumerate(words)))}
        for i, word in enumerate(words):
            if first[word] < i:  # token positions are word index + 1 (BOS)
                total += pattern[:, i + 1, first[word] + 1 + after]
                count += 1
    return (total / count).tolist()


def test_registered() -> None:
    assert induction.NAME in zoo.names()
    assert zoo.names() == sorted(zoo.names())


def test_checkpoints_in_training_order() -> None:
    assert zoo.checkpoints(induction.NAME) == CHECKPOINTS
    assert CHECKPOINTS[0] == "step0" and len(CHECKPOINTS) >= 8
    steps = [int(c.removeprefix("step")) for c in CHECKPOINTS]
    assert steps == sorted(steps)


def test_resolve_final_and_checkpoint() -> None:
    assert zoo.resolve(induction.NAME) == WEIGHTS / CHECKPOINTS[-1]
    assert zoo.resolve(f"{induction.NAME}@step0") == WEIGHTS / "step0"
    for name in CHECKPOINTS:
        size = (WEIGHTS / name / "model.safetensors").stat().st_size
        assert size < 500_000, (name, size)


def test_unknown_name_suggests_and_says_how_to_build() -> None:
    with pytest.raises(ModelLoadError) as info:
        zoo.resolve("induction-2")
    text = str(info.value)
    assert "induction-2l" in text and "mechcheck zoo build" in text
    with pytest.raises(ModelLoadError):
        zoo.checkpoints("no-such-model")
    with pytest.raises(ModelLoadError):
        zoo.build("no-such-model")


def test_unknown_checkpoint_lists_the_checkpoints() -> None:
    with pytest.raises(ModelLoadError) as info:
        zoo.resolve(f"{induction.NAME}@step7")
    text = str(info.value)
    assert "step7" in text and "step0" in text and CHECKPOINTS[-1] in text


def test_unbuilt_model_says_to_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(zoo, "WEIGHTS", tmp_path)
    with pytest.raises(ModelLoadError) as info:
        zoo.resolve(induction.NAME)
    assert f"mechcheck zoo build {induction.NAME}" in str(info.value)


@pytest.mark.parametrize("spec", [induction.NAME, f"{induction.NAME}@step0"])
def test_shipped_model_loads(spec: str) -> None:
    folder = zoo.resolve(spec)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert model.config.n_layer == 2 and model.config.model_type == "gpt2"
    assert tokenizer.get_vocab() == induction.make_tokenizer().get_vocab()
    ids = tokenizer("apple river stone apple", return_tensors="pt").input_ids
    assert ids.shape == (1, 5) and ids[0, 0].item() == tokenizer.bos_token_id
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_recipe_record() -> None:
    record = json.loads((WEIGHTS / "recipe.json").read_text())
    assert record["name"] == induction.NAME
    assert record["checkpoints"] == CHECKPOINTS
    assert record["recipe"]["steps"] == induction.RECIPE.steps
    assert record["final"]["loss_repeated"] < 1.0 < record["history"][0]["loss_repeated"]


def test_shipped_rows_are_valid() -> None:
    rows = [json.loads(line) for line in ROWS.read_text().splitlines()]
    assert len(rows) == 200
    plain = [{k: v for k, v in r.items() if k != "positions"} for r in rows]
    assert plain == induction.induction_rows(induction.WORDS, n=200, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(zoo.resolve(induction.NAME))
    for row in rows:
        assert set(row) == {"prompt", "answer", "wrong", "corrupt", "positions"}
        ids = tokenizer(row["prompt"]).input_ids
        end, nxt = row["positions"]["END"], row["positions"]["NEXT"]
        assert end == len(ids) - 1 and ids[nxt - 1] == ids[end]
        assert tokenizer.convert_ids_to_tokens(ids[nxt]) == row["answer"]
        assert row["positions"]["NEXT2"] == nxt + 1
        for key in ("answer", "wrong"):
            assert len(tokenizer(row[key], add_special_tokens=False).input_ids) == 1
        prompt, corrupt = tokenizer(row["prompt"]).input_ids, tokenizer(row["corrupt"]).input_ids
        assert len(prompt) == len(corrupt) <= induction.RECIPE.n_positions
        assert tokenizer.unk_token_id not in prompt + corrupt
        assert row["answer"] != row["wrong"]


def test_rows_are_predictable_only_by_induction() -> None:
    for row in induction.induction_rows(n=100, seed=5):
        words, corrupt = row["prompt"].split(), row["corrupt"].split()
        last = words[-1]
        assert words.count(last) == 2  # once in the segment, once at the end
        assert words[words.index(last) + 1] == row["answer"]
        assert corrupt.count(last) == 1 and row["answer"] not in corrupt
        assert row["wrong"] not in words and row["wrong"] not in corrupt
        differ = [i for i, (a, b) in enumerate(zip(words, corrupt, strict=True)) if a != b]
        assert words.index(last) in differ and words.index(row["answer"]) in differ


def test_rows_from_a_tokenizer_and_deterministic() -> None:
    tokenizer = induction.make_tokenizer()
    assert induction.induction_rows(tokenizer, n=5, seed=3) == induction.induction_rows(n=5, seed=3)
    assert induction.induction_rows(n=5, seed=3) != induction.induction_rows(n=5, seed=4)
    with pytest.raises(ValueError, match="at least"):
        induction.induction_rows(["a", "b"], n=1, seed=0)


def test_training_batch_marks_repeats() -> None:

    ids, mask = induction.training_batch(random.Random(0), induction.RECIPE, 8)
    assert ids.shape == (8, induction.RECIPE.n_positions) and (ids[:, 0] == 1).all()
    assert mask.shape == (8, induction.RECIPE.n_positions - 1) and mask.any()
    assert ids[:, 1:].min() >= 2


def test_shipped_final_model_has_textbook_induction_heads() -> None:
    """Every layer-1 head attends to the token right after the earlier occurrence (the
    answer), none to the one after that; at step0 no head does either."""
    rows = induction.induction_rows(n=40, seed=123)
    final, start = zoo.resolve(induction.NAME), zoo.resolve(f"{induction.NAME}@step0")
    assert min(induction_scores(final, rows, layer=1, after=1)) > 0.7
    assert max(induction_scores(final, rows, layer=1, after=2)) < 0.1
    assert max(induction_scores(start, rows, layer=1, after=1)) < 0.2


def _period_two_repeats(recipe: induction.Recipe) -> int:
    """Predictable words that continue an "A B A B" pattern, over 300 training sequences."""
    rng, count = random.Random(0), 0
    for _ in range(300):
        seq, flags = induction._repeating_sequence(rng, recipe, len(induction.WORDS))
        count += sum(1 for i, predictable in enumerate(flags)
                     if predictable and i >= 3 and seq[i - 1:i + 1] == seq[i - 3:i - 1])
    return count


def test_recipe_has_period_two_repeats() -> None:
    """Shifted induction circuits cannot predict repeats of period 2, so the training data
    has them; with ``min_period=3`` they are (up to chance) absent."""
    shipped = _period_two_repeats(induction.RECIPE)
    assert shipped > 100
    assert _period_two_repeats(replace(induction.RECIPE, min_period=3)) < shipped / 20


@pytest.mark.slow
def test_recipe_rebuilds_the_circuit(tmp_path: Path) -> None:
    start = time.perf_counter()
    folder = zoo.build(induction.NAME, tmp_path / "rebuilt")
    elapsed = time.perf_counter() - start
    final = folder / CHECKPOINTS[-1]
    scores = induction_scores(final, induction.induction_rows(n=40, seed=123), 1, after=1)
    assert min(scores) > 0.5, (scores, elapsed)
    record = json.loads((folder / "recipe.json").read_text())
    assert record["final"]["loss_repeated"] < 1.0 < record["history"][0]["loss_repeated"]
    _claims_pass_on(final, tmp_path)


def _claims_pass_on(model: Path, tmp_path: Path) -> None:
    """claims/zoo/test_induction.yaml, pointed at ``model``: every claim passes, except
    the expected failures, which fail."""
    from mechcheck.api import evaluate_path

    text = (ROOT / "claims" / "zoo" / "test_induction.yaml").read_text()
    claims = tmp_path / "test_induction.yaml"
    claims.write_text(text.replace("model: zoo:induction-2l", f"model: {model}")
                      .replace("data: induction.jsonl", f"data: {ROWS}"))
    results = evaluate_path(claims)
    assert {r.verdict for r in results if not r.xfail} == {"pass"}, results
    assert {r.verdict for r in results if r.xfail} == {"fail"}
