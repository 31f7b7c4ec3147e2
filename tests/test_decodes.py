"""``kind: decodes`` (mechcheck.kinds.lens), the logit lens, checked against the HF model
run by hand on tiny gpt2, neox and llama models with perturbed biases and norms: token
ids from the vocabulary, residual vectors from ``output_hidden_states``, the final norm
written out as a formula (LayerNorm / RMSNorm with the module's weight, bias and eps)
and the unembedding as a matrix product; then the identity at the last layer, the
planted model whose answer is known by construction, and the located errors.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import assert_located_errors, claim_context, word_rows
from tests.conftest import parsed as parsed_params

ROOT = Path(__file__).resolve().parents[1]


# -- the reference: the HF model by hand ----------------------------------------------------------
def hand_ids(tokenizer: Any, prompt: str) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [tokenizer.bos_token_id, *(vocab[w] for w in prompt.split())]


def final_norm(model: Any) -> Any:
    for path in ("transformer.ln_f", "gpt_neox.final_layer_norm", "model.norm"):
        module: Any = model
        try:
            for part in path.split("."):
                module = getattr(module, part)
        except AttributeError:
            continue
        return module
    raise AssertionError("no final norm found")


def hand_norm(module: Any, x: torch.Tensor) -> torch.Tensor:
    """The final norm written out: LayerNorm (with bias) or RMSNorm, in float64."""
    weight = module.weight.detach().double()
    eps = getattr(module, "eps", None) or module.variance_epsilon
    if isinstance(module, torch.nn.LayerNorm):
        centred = x - x.mean(-1, keepdim=True)
        var = centred.pow(2).mean(-1, keepdim=True)
        return centred / torch.sqrt(var + eps) * weight + module.bias.detach().double()
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def hand_lens(model: Any, ids: list[int], site: str, layer: int, pos: int) -> torch.Tensor:
    """The logit lens at ``blocks.{layer}.{site}`` (resid_pre / resid_post) and ``pos``:
    hidden_states[layer] is the input of block ``layer``, hidden_states[layer + 1] its
    output (before the last block: the last entry has the final norm applied)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    index = layer if site == "resid_pre" else layer + 1
    assert index < len(out.hidden_states) - 1
    h = out.hidden_states[index][0, pos].double()
    unembed = model.get_output_embeddings()
    logits = hand_norm(final_norm(model), h) @ unembed.weight.detach().double().T
    if getattr(unembed, "bias", None) is not None:
        logits = logits + unembed.bias.detach().double()
    return logits


def hand_scores(logits: torch.Tensor, answer: int, wrong: int) -> dict[str, float]:
    logprobs = torch.log_softmax(logits, -1)
    rank = int(sum(float(v) >= float(logits[answer]) for v in logits))
    return {"logprob": float(logprobs[answer]), "logit_diff": float(logits[answer] -
            logits[wrong]), "rank": float(rank), "accuracy": float(rank == 1)}


def parsed(**raw: Any) -> dict[str, Any]:
    from mechcheck.kinds.lens import Decodes

    return parsed_params(Decodes, **raw)


@pytest.fixture(scope="module")
def models(tiny_loaded: Callable[..., Any]) -> Callable[[str], tuple[Any, Any]]:
    """``models(arch)``: the fixture model (perturbed biases and norms) and a copy for
    the reference passes (output_hidden_states must not touch the shared model)."""
    cache: dict[str, tuple[Any, Any]] = {}

    def get(arch: str) -> tuple[Any, Any]:
        if arch not in cache:
            loaded = tiny_loaded(arch)
            norm = final_norm(loaded.model)
            assert float((norm.weight.detach() - 1).abs().max()) > 1e-3  # perturbed
            if isinstance(norm, torch.nn.LayerNorm):
                assert float(norm.bias.detach().abs().min()) > 0
            cache[arch] = (loaded, copy.deepcopy(loaded.model))
        return cache[arch]

    return get


# -- (1) the lens's scores equal the hand-written lens ---------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
@pytest.mark.parametrize(("site", "at"), [("resid_post", "S"), ("resid_pre", 3),
                                          ("resid_post", "last")])
def test_lens_scores_equal_the_hand_written_lens(models: Callable[[str], tuple[Any, Any]],
                                                 arch: str, site: str, at: Any) -> None:
    from mechcheck.addresses import Address
    from mechcheck.kinds.lens import lens_scores

    loaded, reference = models(arch)
    rows = word_rows(6, seed=1)
    tok = loaded.tokenizer
    vocab = tok.get_vocab()
    layer = 0 if site == "resid_post" else 1  # both before the last block
    ctx = claim_context(loaded, rows, kind="decodes",
                        **parsed(components=[f"blocks.{layer}.{site}"], at=at, min_score=0))
    got = {s: lens_scores(ctx, Address(site, layer), s)
           for s in ("logprob", "logit_diff", "rank", "accuracy")}
    for i, row in enumerate(rows):
        ids = hand_ids(tok, row["prompt"])
        pos = {"S": 2, "last": len(ids) - 1}.get(at, at)
        expected = hand_scores(hand_lens(reference, ids, site, layer, pos),
                               vocab[row["answer"]], vocab[row["wrong"]])
        for score, values in got.items():
            assert values[i] == pytest.approx(expected[score], abs=1e-4), (score, i)
    # the position matters: another position gives other scores
    other = claim_context(loaded, rows, kind="decodes",
                          **parsed(components=[f"blocks.{layer}.{site}"], at=1, min_score=0))
    assert np.abs(lens_scores(other, Address(site, layer), "logprob")
                  - got["logprob"]).max() > 1e-3


# -- (2) at the last block the lens is the model's own output ------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_lens_at_the_last_layer_equals_the_models_logits(
        models: Callable[[str], tuple[Any, Any]], arch: str) -> None:
    from mechcheck.addresses import Address
    from mechcheck.kinds.lens import lens_logits

    loaded, reference = models(arch)
    rows = word_rows(5, seed=2)
    last = loaded.adapter.dims.n_layers - 1
    ctx = claim_context(loaded, rows, kind="decodes",
                        **parsed(layers=[last, last], min_score=0))
    got = lens_logits(ctx, Address("resid_post", last), np.arange(len(rows)))
    for i, row in enumerate(rows):
        ids = hand_ids(loaded.tokenizer, row["prompt"])
        with torch.no_grad():
            expected = reference(input_ids=torch.tensor([ids])).logits[0, -1].double()
        assert torch.allclose(got[i].double(), expected, atol=1e-4)
    # and one layer earlier it is not (the last block does something)
    earlier = lens_logits(ctx, Address("resid_pre", last), np.arange(len(rows)))
    assert (earlier - got).abs().max() > 1e-2


# -- (3) the planted model: head 0.0 writes the answer in layer 0 ----------------------------------
PLANTED = """\
model: zoo:planted-prevtoken
data: planted.jsonl
n: 40
metric: logit_diff
claims:
  - id: curve
    kind: decodes
    components: ["blocks.0.resid_pre", "blocks.0.resid_mid", "blocks.1.resid_post"]
    min_score: 5.0
  - id: rank_at_end
    kind: decodes
    layers: "*"
    max_rank: 1
    min_fraction: 0.9
  - id: not_at_prev
    kind: decodes
    components: ["blocks.1.resid_post"]
    at: PREV
    metric: accuracy
    max_score: 0.2
  - id: not_before_head
    kind: decodes
    components: ["blocks.0.resid_pre"]
    metric: logprob
    max_score: -3.0
"""


def test_planted_model_decodes_after_head_0_0_only(tmp_path: Path) -> None:
    """By construction (mechcheck/zoo/planted.py) the unembedding reads only the copy
    block, which head 0.0 fills: before it every logit is equal (logit difference 0,
    log-probability -log(vocab), the answer tied with every token), after it the copied
    token leads by the model's clean logit difference; at PREV the copy holds another
    word."""
    from mechcheck.api import evaluate_path
    from mechcheck.zoo.planted import make_tokenizer

    (tmp_path / "planted.jsonl").write_text((ROOT / "claims/zoo/planted.jsonl").read_text())
    path = tmp_path / "test_planted_lens.yaml"
    path.write_text(PLANTED)
    results = {r.id: r for r in evaluate_path(path)}
    curve = results["curve"]
    assert curve.verdict == "fail", curve.message  # resid_pre 0 holds nothing yet
    by_site = {c["name"]: c for c in curve.criteria}
    assert by_site["blocks.0.resid_pre"]["effect"] == pytest.approx(0.0, abs=1e-5)
    assert not by_site["blocks.0.resid_pre"]["passed"]
    assert by_site["blocks.0.resid_mid"]["passed"] and by_site["blocks.1.resid_post"]["passed"]
    assert by_site["blocks.1.resid_post"]["effect"] == pytest.approx(9.9148, abs=1e-3)
    assert [p["site"] for p in curve.profile] == ["blocks.0.resid_pre", "blocks.0.resid_mid",
                                                  "blocks.1.resid_post"]
    assert "blocks.0.resid_pre: does not hold" in curve.message
    assert results["rank_at_end"].verdict == "pass", results["rank_at_end"].message
    assert {c["name"] for c in results["rank_at_end"].criteria} == {
        "blocks.0.resid_post", "blocks.1.resid_post"}
    assert results["not_at_prev"].verdict == "pass", results["not_at_prev"].message
    vocab = len(make_tokenizer())
    before = results["not_before_head"]
    assert before.verdict == "pass", before.message
    assert before.effect == pytest.approx(-3.0 + math.log(vocab), abs=1e-4)


# -- (4) errors, located at the key at fault ------------------------------------------------------
ERRORS = """\
model: {model}
data: rows.jsonl
claims:
  - id: no_such_layer
    kind: decodes
    layers: [0, 7]
    min_score: 0
  - id: both
    kind: decodes
    layers: "*"
    components: ["blocks.0.resid_post"]
    min_score: 0
  - id: neither
    kind: decodes
    min_score: 0
  - id: bad_metric
    kind: decodes
    layers: "*"
    metric: kl
    min_score: 0
  - id: not_residual
    kind: decodes
    components: ["head 0.1"]
    min_score: 0
  - id: no_threshold
    kind: decodes
    layers: "*"
  - id: rank_with_min_score
    kind: decodes
    layers: "*"
    metric: rank
    min_score: 3
  - id: accuracy_out_of_range
    kind: decodes
    layers: "*"
    metric: accuracy
    min_score: 2
  - id: three_layers
    kind: decodes
    layers: [0, 1, 2]
    min_score: 0
  - id: missing_translator
    kind: decodes
    layers: "*"
    lens: tuned
    translator: nowhere.safetensors
    min_score: 0
  - id: tuned_without_file
    kind: decodes
    layers: "*"
    lens: tuned
    min_score: 0
  - id: at_all
    kind: decodes
    layers: "*"
    at: all
    min_score: 0
  - id: ok
    kind: decodes
    layers: "*"
    at: S
    max_rank: 40
"""


def test_decodes_errors_are_located(tmp_path: Path, tiny_folder: Callable[..., Path]) -> None:
    from mechcheck.api import evaluate_path

    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(6)))
    path = tmp_path / "test_lens_errors.yaml"
    path.write_text(ERRORS.format(model=tiny_folder("gpt2")))
    results = {r.id: r for r in evaluate_path(path)}
    expected = {
        "no_such_layer": ("layers", "layer 7 does not exist: this model's layers are 0 to 1"),
        "both": ("layers", "give components: or layers:, not both"),
        "neither": ("kind", "needs components: or layers:"),
        "bad_metric": ("metric", "got 'kl'"),
        "not_residual": ("components", "blocks.0.attn.head.1 is not a residual site"),
        "no_threshold": ("kind", "one of min_score, max_score and max_rank; got no threshold"),
        "rank_with_min_score": ("min_score", "metric: rank is claimed with max_rank"),
        "accuracy_out_of_range": ("min_score", "a share strictly between 0 and 1"),
        "three_layers": ("layers", "for another set of sites list them under components"),
        "missing_translator": ("translator", "translator: no file"),
        "tuned_without_file": ("translator", "lens: tuned needs translator:"),
        "at_all": ("at", "the lens scores one per prompt"),
    }
    assert_located_errors(results, expected)
    assert results["ok"].verdict == "pass", results["ok"].message
