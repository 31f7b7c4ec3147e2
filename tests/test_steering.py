"""``kind: steers`` (mechcheck.kinds.steering) and the engine primitive it reads contrast
sets with, ``ClaimContext.text_activations`` (``Runner.record_texts``), checked on tiny
models with perturbed biases and norms against the HF model run by hand: token ids
made from the vocabulary, activations from ``output_hidden_states``, and steering by a
forward hook written here that adds ``scale * vector`` to a block's output.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import assert_located_errors, claim_context, parsed, word_rows

SITE = "blocks.0.resid_post"
SHARP = 4.0


# -- the reference: the HF model by hand --------------------------------------------------------
def hand_ids(tokenizer: Any, prompt: str) -> list[int]:
    """<bos> and one id per word, from the vocabulary (not the tokenizer's __call__)."""
    vocab = tokenizer.get_vocab()
    return [tokenizer.bos_token_id, *(vocab[w] for w in prompt.split())]


def hf_hidden(model: Any, ids: list[int], layer: int) -> torch.Tensor:
    """blocks.{layer}.resid_post ``[pos, d]`` from output_hidden_states (entry layer + 1;
    only for blocks before the last, whose entry has the final norm applied)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    assert layer + 1 < len(out.hidden_states) - 1
    return out.hidden_states[layer + 1][0].double()


def blocks(model: Any) -> Any:
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


def steered_logprob(model: Any, ids: list[int], answer: int, layer: int,
                    delta: torch.Tensor | None, at: str) -> float:
    """log p(answer) at the last position with ``delta`` added to block ``layer``'s
    output at the last position (``at="last"``) or at every position (``"all"``)."""
    def hook(module: Any, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        hidden = hidden.clone()
        if at == "last":
            hidden[:, -1] += delta
        else:
            hidden += delta
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = blocks(model)[layer].register_forward_hook(hook) if delta is not None else None
    try:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    finally:
        if handle is not None:
            handle.remove()
    return float(torch.log_softmax(logits.double(), dim=-1)[answer])



def steers_ctx(loaded: Any, rows: list[dict], base_dir: Path | None = None, **raw: Any) -> Any:
    from mechcheck.kinds.steering import Steers

    raw.setdefault("components", [SITE])
    raw.setdefault("metric", "logprob")
    raw.setdefault("min_shift", 0.0)
    ctx = claim_context(loaded, rows, kind="steers", **parsed(Steers, **raw))
    if base_dir is not None:
        ctx.claim = dataclasses.replace(ctx.claim, base_dir=str(base_dir))
    return ctx


@pytest.fixture(scope="module")
def models(tiny_loaded: Callable[..., Any]) -> Callable[[str], tuple[Any, Any]]:
    """``models(arch)``: the fixture model (perturbed biases and norms) and a copy of it
    for the reference passes (transformers 5 installs, and keeps, its own hooks for
    output_hidden_states, which the shared model must not get)."""
    cache: dict[str, tuple[Any, Any]] = {}

    def get(arch: str) -> tuple[Any, Any]:
        if arch not in cache:
            loaded = tiny_loaded(arch)
            with torch.no_grad():
                biases = [p for n, p in loaded.model.named_parameters() if n.endswith("bias")]
                norms = [m.weight for m in loaded.model.modules()
                         if "Norm" in type(m).__name__]
                assert not biases or all(float(b.abs().min()) > 0 for b in biases)
                assert norms and all(float((w - 1).abs().max()) > 1e-3 for w in norms)
            cache[arch] = (loaded, copy.deepcopy(loaded.model))
        return cache[arch]

    return get


@pytest.fixture(scope="module")
def sharp(models: Callable[[str], tuple[Any, Any]]) -> tuple[Any, Any]:
    """The gpt2 fixture model with its weight matrices scaled by SHARP (biases and norms
    as perturbed), and a copy for the reference: at transformers' init attention is
    nearly uniform, so steering the last position or every position gives last-token
    logits within 3e-3 of each other; here they differ by ~0.1."""
    from mechcheck.models.adapter import ModelAdapter

    loaded, _ = models("gpt2")
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(SHARP)
    sharpened = dataclasses.replace(loaded, model=model,
                                    adapter=ModelAdapter(loaded.adapter.arch, model))
    return sharpened, copy.deepcopy(model)


# -- ClaimContext.text_activations -----------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_text_activations_equal_the_models_hidden_states(
        arch: str, models: Callable[[str], tuple[Any, Any]]) -> None:
    from mechcheck.errors import DataError

    loaded, reference = models(arch)
    ctx = steers_ctx(loaded, word_rows(2), vector="v.npy")
    texts = ["the cat went to the park", "Mary", "a big red dog", "John saw Mary",
             "the dog", "when Alice and Bob went to the river then"]  # lengths interleaved
    acts = ctx.text_activations(texts, SITE, key="contrast")
    assert len(acts) == len(texts)
    for text, act in zip(texts, acts):
        want = hf_hidden(reference, hand_ids(loaded.tokenizer, text), 0)
        assert act.shape == want.shape
        torch.testing.assert_close(act.double(), want, rtol=0, atol=1e-5)
    assert float((acts[1][-1] - acts[4][-1]).abs().max()) > 1e-2  # texts differ, as they must
    for bad, text in (([], "contrast: no prompts"), (["a cat", "  "], "prompt 1 is empty")):
        with pytest.raises(DataError) as info:
            ctx.text_activations(bad, SITE, key="contrast")
        assert info.value.key == "contrast" and text in info.value.message


# -- where the vector comes from -------------------------------------------------------------------
def contrast_rows(n: int) -> list[dict]:
    rows = word_rows(n, seed=4)
    for i, row in enumerate(rows):
        row["happy"] = " ".join(["the", "cat", "saw", "Mary"][: 2 + i % 3])
        row["sad"] = " ".join(["a", "small", "dog", "went", "to", "school"][: 3 + i % 4])
    return rows


def _mean_last(reference: Any, tokenizer: Any, prompts: list[str]) -> torch.Tensor:
    return torch.stack([hf_hidden(reference, hand_ids(tokenizer, p), 0)[-1]
                        for p in prompts]).mean(0)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_contrast_vector_is_the_mean_difference_of_last_token_states(
        arch: str, models: Callable[[str], tuple[Any, Any]], tmp_path: Path) -> None:
    from mechcheck.kinds.steering import steering_vector

    loaded, reference = models(arch)
    tok = loaded.tokenizer
    rows = contrast_rows(5)
    ctx = steers_ctx(loaded, rows, contrast={"positive": "happy", "negative": "sad"})
    vector, origin = steering_vector(ctx, ctx.components()[0])
    want = (_mean_last(reference, tok, [r["happy"] for r in rows])
            - _mean_last(reference, tok, [r["sad"] for r in rows]))
    assert vector.dtype == torch.float64 and float(want.norm()) > 0.02
    torch.testing.assert_close(vector, want, rtol=0, atol=1e-5)
    assert origin == "contrast happy - sad"
    # the data's own prompts and corrupt prompts
    ctx = steers_ctx(loaded, rows, contrast={"positive": "prompt", "negative": "corrupt"})
    vector, _ = steering_vector(ctx, ctx.components()[0])
    want = (_mean_last(reference, tok, [r["prompt"] for r in rows])
            - _mean_last(reference, tok, [r["corrupt"] for r in rows]))
    torch.testing.assert_close(vector, want, rtol=0, atol=1e-5)
    # files of prompts, relative to the claim file: .txt lines and .jsonl records
    (tmp_path / "pos.txt").write_text("the cat\n\nJohn saw Mary\n")
    (tmp_path / "neg.jsonl").write_text('{"prompt": "a dog"}\n{"prompt": "the red ball"}\n')
    ctx = steers_ctx(loaded, rows, base_dir=tmp_path,
                     contrast={"positive": "pos.txt", "negative": "neg.jsonl"})
    vector, _ = steering_vector(ctx, ctx.components()[0])
    want = (_mean_last(reference, tok, ["the cat", "John saw Mary"])
            - _mean_last(reference, tok, ["a dog", "the red ball"]))
    torch.testing.assert_close(vector, want, rtol=0, atol=1e-5)


def test_vector_files_npy_and_safetensors(models: Callable[[str], tuple[Any, Any]],
                                          tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from mechcheck.errors import DataError
    from mechcheck.kinds.steering import steering_vector

    loaded, _ = models("gpt2")
    width = loaded.model.config.n_embd
    gen = torch.Generator().manual_seed(0)
    v64 = torch.randn(width, generator=gen, dtype=torch.float64)
    np.save(tmp_path / "v.npy", v64.numpy())
    v32 = torch.randn(width, generator=gen)
    save_file({"steer": v32}, str(tmp_path / "one.safetensors"))
    save_file({"a": v32, "b": 2 * v32}, str(tmp_path / "two.safetensors"))
    rows = word_rows(2)

    def vector_of(**raw: Any) -> torch.Tensor:
        ctx = steers_ctx(loaded, rows, base_dir=tmp_path, **raw)
        return steering_vector(ctx, ctx.components()[0])[0]

    assert torch.equal(vector_of(vector="v.npy"), v64)
    assert torch.equal(vector_of(vector="one.safetensors"), v32.double())
    assert torch.equal(vector_of(vector="two.safetensors", vector_key="b"), 2 * v32.double())
    with pytest.raises(DataError) as info:
        vector_of(vector="two.safetensors")
    assert info.value.key == "vector_key" and "holds 2 tensors (a, b)" in info.value.message


# -- steering against a hand-written hook ---------------------------------------------------
@pytest.mark.parametrize(("at", "layer"), [("last", 0), ("all", 0), ("all", 1)])
def test_steered_metric_equals_a_hand_written_hook(
        at: str, layer: int, sharp: tuple[Any, Any], tmp_path: Path) -> None:
    from mechcheck.kinds.steering import Steers

    loaded, reference = sharp
    rows = word_rows(6, seed=2)  # prompts of 7 and 9 tokens
    vector = torch.randn(loaded.model.config.n_embd, generator=torch.Generator().manual_seed(1))
    vector = vector / vector.norm()
    np.save(tmp_path / "v.npy", vector.numpy())
    scale = 1.5
    raw: dict[str, Any] = {"components": [f"blocks.{layer}.resid_post"], "vector": "v.npy",
                           "scale": scale, "control": "none"}
    if at == "last":
        raw["at"] = "last"
    ctx = steers_ctx(loaded, rows, base_dir=tmp_path, **raw)
    measured = Steers().measure(ctx.claim, ctx)
    columns = ctx.per_prompt()
    tok = loaded.tokenizer
    answers = [tok.get_vocab()[r["answer"]] for r in rows]
    ids = [hand_ids(tok, r["prompt"]) for r in rows]
    clean = np.asarray([steered_logprob(reference, i, a, layer, None, at)
                        for i, a in zip(ids, answers)])
    steered = np.asarray([steered_logprob(reference, i, a, layer, scale * vector, at)
                          for i, a in zip(ids, answers)])
    np.testing.assert_allclose(columns["clean"], clean, rtol=0, atol=1e-4)
    np.testing.assert_allclose(columns["patched"], steered, rtol=0, atol=1e-4)
    assert np.abs(steered - clean).min() > 1e-2  # the steering changes every prompt
    (shift,) = measured.criteria
    assert shift.name == "min_shift"
    assert shift.decision.effect == pytest.approx((steered - clean).mean(), abs=1e-4)
    assert measured.profile == ()  # one scale: no dose-response
    if at == "last":  # not the same as steering every position
        everywhere = np.asarray([steered_logprob(reference, i, a, layer, scale * vector, "all")
                                 for i, a in zip(ids, answers)])
        assert np.abs(everywhere - steered).max() > 1e-2
    # direction: decrease claims the negative shift
    ctx = steers_ctx(loaded, rows, base_dir=tmp_path, direction="decrease", **raw)
    (shift,) = Steers().measure(ctx.claim, ctx).criteria
    assert shift.decision.effect == pytest.approx(-(steered - clean).mean(), abs=1e-4)


STEERS = """\
model: {model}
data: rows.jsonl
metric: logprob
claims:
  - id: dose
    kind: steers
    components: ["{site}"]
    vector: v.npy
    scale: [1, 2, 4]
    min_shift: -100
    n_random: 1
  - id: wrong_width
    kind: steers
    components: ["{site}"]
    vector: wide.npy
    min_shift: 0
  - id: missing_file
    kind: steers
    components: ["{site}"]
    vector: nowhere.npy
    min_shift: 0
  - id: both
    kind: steers
    components: ["{site}"]
    vector: v.npy
    contrast: {{positive: happy, negative: sad}}
    min_shift: 0
  - id: neither
    kind: steers
    components: ["{site}"]
    min_shift: 0
  - id: no_such_set
    kind: steers
    components: ["{site}"]
    contrast: {{positive: happy, negative: glad}}
    min_shift: 0
"""


def test_steers_claim_file_profile_and_located_errors(
        tmp_path: Path, tiny_folder: Callable[..., Path],
        models: Callable[[str], tuple[Any, Any]]) -> None:
    from mechcheck.api import evaluate_path

    loaded, reference = models("gpt2")  # the same weights as tiny_folder("gpt2")
    rows = contrast_rows(6)
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    width = loaded.model.config.n_embd
    vector = torch.randn(width, generator=torch.Generator().manual_seed(5))
    vector = 0.25 * vector / vector.norm()  # scales 1-4: from a small to a large push
    np.save(tmp_path / "v.npy", vector.numpy())
    np.save(tmp_path / "wide.npy", np.ones(width + 1))
    path = tmp_path / "test_steers.yaml"
    path.write_text(STEERS.format(model=tiny_folder("gpt2"), site=SITE))
    results = {r.id: r for r in evaluate_path(path)}

    dose = results["dose"]
    assert dose.verdict in ("pass", "fail"), dose.message
    tok = loaded.tokenizer
    answers = [tok.get_vocab()[r["answer"]] for r in rows]
    ids = [hand_ids(tok, r["prompt"]) for r in rows]
    clean = np.asarray([steered_logprob(reference, i, a, 0, None, "all")
                        for i, a in zip(ids, answers)])
    scales = np.asarray([1.0, 2.0, 4.0])
    shifts = np.asarray([[steered_logprob(reference, i, a, 0, s * vector, "all") - c
                          for i, a, c in zip(ids, answers, clean)] for s in scales])
    assert [p["scale"] for p in dose.profile] == [1.0, 2.0, 4.0]  # one point per scale
    for point, shift in zip(dose.profile, shifts):
        assert point["shift"] == pytest.approx(shift.mean(), abs=1e-4)
        assert point["ci_low"] <= point["shift"] <= point["ci_high"]
        assert "random_shift" in point
    criteria = {c["name"]: c for c in dose.criteria}
    assert set(criteria) == {"min_shift", "control", "scale"}
    assert criteria["min_shift"]["effect"] == pytest.approx(shifts[-1].mean(), abs=1e-4)
    slopes = [np.polyfit(scales, shifts[:, i], 1)[0] for i in range(len(rows))]
    assert criteria["scale"]["effect"] == pytest.approx(np.mean(slopes), abs=1e-4)
    assert np.abs(shifts[-1] - shifts[0]).max() > 1e-2  # the dose matters

    expected = {
        "wrong_width": ("vector", f"has shape ({width + 1},), but {SITE} is {width} wide"),
        "missing_file": ("vector", "vector: no file"),
        "both": ("vector", "exactly one of vector: and contrast:"),
        "neither": ("kind", "exactly one of vector: and contrast:"),
        "no_such_set": ("contrast", "negative 'glad' is neither a data column nor a file"),
    }
    assert_located_errors(results, expected)
