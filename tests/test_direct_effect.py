"""``kind: direct_effect`` (mechcheck.kinds.direct): direct logit attribution.

Checked on tiny gpt2, neox and llama (grouped-query) models with perturbed biases and
norms against a reference written here in plain torch: the HF model run with forward
hooks that only read (each block's attention and MLP output, the output projections'
inputs, the final norm's input), the final norm applied by hand from its weight and
epsilon, and a head's (or neuron's) output taken as the projection module applied to
its slice alone minus the projection applied to zeros (no weight layout assumed).

* The decomposition (embeddings, each attention layer or its heads plus the output
  projection's bias, each MLP, the final norm's bias and the unembedding's bias) sums
  to the model's own logit difference at the read position.
* Each component's direct effect equals the reference at a position other than last.
* On zoo:planted-prevtoken head 0.0 writes the whole logit difference and every other
  component exactly nothing; on zoo:induction-2l the previous-token head 0.2 has almost
  no direct effect but a large total effect (it acts through the induction heads).
* Bad input gives located errors.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import assert_located_errors, claim_context, word_rows
from tests.conftest import parsed as parsed_params

ROOT = Path(__file__).resolve().parents[1]
ZOO = ROOT / "claims" / "zoo"

# Where each architecture keeps its parts (the HF names, written out here).
PARTS = {
    "gpt2": dict(blocks="transformer.h", attn="attn", mlp="mlp", o="attn.c_proj",
                 down="mlp.c_proj", norm="transformer.ln_f", unembed="lm_head"),
    "neox": dict(blocks="gpt_neox.layers", attn="attention", mlp="mlp", o="attention.dense",
                 down="mlp.dense_4h_to_h", norm="gpt_neox.final_layer_norm",
                 unembed="lm_head"),
    "llama": dict(blocks="model.layers", attn="self_attn", mlp="mlp", o="self_attn.o_proj",
                  down="mlp.down_proj", norm="model.norm", unembed="lm_head"),
}


# -- the reference ---------------------------------------------------------------------------
def hand_ids(tokenizer: Any, prompt: str) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [tokenizer.bos_token_id, *(vocab[w] for w in prompt.split())]


_COPIES: dict[int, Any] = {}


def hand_run(model: Any, arch: str, ids: list[int]) -> dict[str, Any]:
    """One forward pass, reading (never changing) the activations the reference needs;
    on a copy of the model (transformers leaves hooks of its own behind after a pass
    with output_hidden_states, and the shared models must stay without any)."""
    if id(model) not in _COPIES:
        _COPIES[id(model)] = (model, copy.deepcopy(model))
    model = _COPIES[id(model)][1]
    names = PARTS[arch]
    blocks = model.get_submodule(names["blocks"])
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def keep(name: str, pre: bool) -> Callable[..., None]:
        def hook(module: Any, args: Any, output: Any = None) -> None:
            value = args[0] if pre else (output[0] if isinstance(output, tuple) else output)
            seen[name] = value[0].detach().double().clone()
        return hook

    try:
        for i, block in enumerate(blocks):
            handles.append(block.get_submodule(names["attn"]).register_forward_hook(
                keep(f"attn{i}", False)))
            handles.append(block.get_submodule(names["mlp"]).register_forward_hook(
                keep(f"mlp{i}", False)))
            handles.append(block.get_submodule(names["o"]).register_forward_pre_hook(
                keep(f"z{i}", True)))
            handles.append(block.get_submodule(names["down"]).register_forward_pre_hook(
                keep(f"h{i}", True)))
        handles.append(model.get_submodule(names["norm"]).register_forward_pre_hook(
            keep("final", True)))
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    seen["embeddings"] = out.hidden_states[0][0].double()
    seen["logits"] = out.logits[0].double()
    return seen


def slice_output(module: Any, full_input: torch.Tensor, cols: slice) -> torch.Tensor:
    """The projection's output for its input's columns ``cols`` alone, without bias."""
    part = torch.zeros_like(full_input)
    part[..., cols] = full_input[..., cols]
    weight = module.weight
    with torch.no_grad():
        return (module(part.to(weight.dtype)) - module(torch.zeros_like(part).to(
            weight.dtype))).double()


def hand_norm_linear(model: Any, arch: str, c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The final norm's linear part applied to ``c`` with its divisor taken at ``x``."""
    norm = model.get_submodule(PARTS[arch]["norm"])
    weight = norm.weight.detach().double()
    if arch == "llama":  # RMSNorm
        rms = torch.sqrt((x * x).mean() + norm.variance_epsilon)
        return c / rms * weight
    std = torch.sqrt(x.var(unbiased=False) + norm.eps)
    return (c - c.mean()) / std * weight


def hand_direct_effects(loaded: Any, arch: str, rows: list[dict[str, Any]],
                        position: str | None) -> dict[str, np.ndarray]:
    """Per component name, the direct effect per row at the row's ``position`` (None:
    last), onto u_answer - u_wrong; plus ``real``, the model's own logit difference."""
    model, tok = loaded.model, loaded.tokenizer
    names = PARTS[arch]
    unembed = model.get_submodule(names["unembed"]).weight.detach().double()
    n_layers, n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
    d_head = model.config.hidden_size // n_heads
    out: dict[str, list[float]] = {}
    vocab = tok.get_vocab()
    for row in rows:
        ids = hand_ids(tok, row["prompt"])
        p = len(ids) - 1 if position is None else row["positions"][position]
        seen = hand_run(model, arch, ids)
        direction = unembed[vocab[row["answer"]]] - unembed[vocab[row["wrong"]]]
        x = seen["final"][p]

        def effect(c: torch.Tensor, x: torch.Tensor = x,
                   direction: torch.Tensor = direction) -> float:
            return float(hand_norm_linear(model, arch, c, x) @ direction)

        terms = {"embeddings": effect(seen["embeddings"][p])}
        blocks = model.get_submodule(names["blocks"])
        for i in range(n_layers):
            terms[f"blocks.{i}.attn"] = effect(seen[f"attn{i}"][p])
            terms[f"blocks.{i}.mlp"] = effect(seen[f"mlp{i}"][p])
            o = blocks[i].get_submodule(names["o"])
            for h in range(n_heads):
                head = slice_output(o, seen[f"z{i}"][p], slice(h * d_head, (h + 1) * d_head))
                terms[f"blocks.{i}.attn.head.{h}"] = effect(head)
            down = blocks[i].get_submodule(names["down"])
            for n in (0, 5):
                terms[f"blocks.{i}.mlp.neuron.{n}"] = effect(
                    slice_output(down, seen[f"h{i}"][p], slice(n, n + 1)))
        logits = seen["logits"][p]
        terms["real"] = float(logits[vocab[row["answer"]]] - logits[vocab[row["wrong"]]])
        for name, value in terms.items():
            out.setdefault(name, []).append(value)
    return {k: np.asarray(v) for k, v in out.items()}


def parsed(**raw: Any) -> dict[str, Any]:
    from mechcheck.kinds.direct import DirectEffect

    return parsed_params(DirectEffect, **raw)


# -- the decomposition sums to the logit difference ------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
@pytest.mark.parametrize("heads", [False, True])
def test_decomposition_sums_to_the_logit_difference(
        arch: str, heads: bool, tiny_loaded: Callable[..., Any]) -> None:
    from mechcheck.kinds.direct import decomposition

    loaded = tiny_loaded(arch)
    if arch == "llama":
        assert loaded.adapter.n_kv_heads < loaded.adapter.dims.n_heads  # grouped-query
    rows = word_rows(6, seed=1)
    ctx = claim_context(loaded, rows, kind="direct_effect", **parsed(components=["attn 0"]))
    for at, position in ((None, None), (["S"], "S")):
        terms = decomposition(ctx, heads=heads, at=at)
        reference = hand_direct_effects(loaded, arch, rows, position)
        n_layers = loaded.adapter.dims.n_layers
        expected = {"embeddings", "ln_final bias", "unembed bias",
                    *(f"blocks.{i}.mlp" for i in range(n_layers))}
        if heads:
            expected |= {f"blocks.{i}.attn.head.{h}" for i in range(n_layers)
                         for h in range(loaded.adapter.dims.n_heads)}
            expected |= {f"blocks.{i}.attn bias" for i in range(n_layers)}
        else:
            expected |= {f"blocks.{i}.attn" for i in range(n_layers)}
        assert set(terms) == expected
        total = np.sum(list(terms.values()), axis=0)
        np.testing.assert_allclose(total, reference["real"], atol=1e-4, rtol=0)
        # the biases are perturbed, so they are real terms (the identity needs them);
        # llama's RMSNorm and o_proj have none
        if arch != "llama":
            assert np.abs(terms["ln_final bias"]).max() > 1e-3
            if heads:
                assert np.abs(terms["blocks.0.attn bias"]).max() > 1e-3


# -- each component against the reference ------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "neox", "llama"])
def test_direct_effects_match_the_reference(arch: str, tiny_loaded: Callable[..., Any]) -> None:
    from mechcheck.kinds.direct import direct_effects

    loaded = tiny_loaded(arch)
    rows = word_rows(5, seed=2)
    ctx = claim_context(loaded, rows, kind="direct_effect", **parsed(components=["attn 0"]))
    names = ["embed", "blocks.0.attn", "blocks.1.mlp", "blocks.0.attn.head.*",
             "blocks.1.attn.head.3", "blocks.0.mlp.neuron.5", "blocks.1.mlp.neuron.0"]
    if arch == "gpt2":
        names.append("pos_embed")
    reference = hand_direct_effects(loaded, arch, rows, "S")
    found = direct_effects(ctx, names, at=["S"])
    for name, values in found.items():
        if name in ("embed", "pos_embed"):
            continue
        scale = float(np.abs(reference[name]).max())  # a neuron's can be ~1e-5 (llama)
        assert scale > 1e-7, name  # not trivially zero
        np.testing.assert_allclose(values, reference[name], atol=1e-4 * scale, rtol=0,
                                   err_msg=name)
    embeddings = found["embed"] + found.get("pos_embed", 0.0)
    np.testing.assert_allclose(embeddings, reference["embeddings"], atol=1e-5, rtol=0)
    # read at the last position the numbers differ: the position matters
    last = direct_effects(ctx, ["blocks.0.attn"])["blocks.0.attn"]
    assert np.abs(last - found["blocks.0.attn"]).max() > 1e-3


def test_answer_target_is_the_answer_logit(tiny_loaded: Callable[..., Any]) -> None:
    from mechcheck.kinds.direct import decomposition

    loaded = tiny_loaded("gpt2")
    rows = word_rows(4, seed=3)
    ctx = claim_context(loaded, rows, kind="direct_effect", **parsed(components=["attn 0"]))
    terms = decomposition(ctx, target="answer")
    vocab = loaded.tokenizer.get_vocab()
    real = [float(hand_run(loaded.model, "gpt2", hand_ids(loaded.tokenizer, r["prompt"]))
                  ["logits"][-1, vocab[r["answer"]]]) for r in rows]
    np.testing.assert_allclose(np.sum(list(terms.values()), axis=0), real, atol=1e-4)


def test_the_kind_decides_the_sum_of_its_components(tiny_loaded: Callable[..., Any]) -> None:
    from mechcheck.kinds.direct import DirectEffect

    loaded = tiny_loaded("neox")
    rows = word_rows(8, seed=4)
    reference = hand_direct_effects(loaded, "neox", rows, None)
    both = reference["blocks.0.attn.head.1"] + reference["blocks.1.mlp"]
    params = parsed(components=["head 0.1", "mlp 1"], min_effect=float(both.mean()) - 10,
                    curve=["blocks.*.attn.head.*"])
    ctx = claim_context(loaded, rows, kind="direct_effect", **params)
    m = DirectEffect().measure(ctx.claim, ctx)
    assert m.decision.effect == pytest.approx(both.mean(), abs=1e-5)
    assert m.decision.p_value <= 0.05
    assert [p["site"] for p in m.profile][:2] == ["blocks.0.attn.head.0",
                                                  "blocks.0.attn.head.1"]
    assert len(m.profile) == 8
    for point in m.profile:
        assert point["direct_effect"] == pytest.approx(reference[point["site"]].mean(),
                                                       abs=1e-5)
        assert point["ci_low"] <= point["direct_effect"] <= point["ci_high"]
    # a threshold above the effect fails
    params["min_effect"] = float(both.mean()) + 10
    ctx = claim_context(loaded, rows, kind="direct_effect", **params)
    assert DirectEffect().measure(ctx.claim, ctx).decision.p_value > 0.05


# -- the zoo: answers known by construction -------------------------------------------------
@pytest.fixture(scope="module")
def zoo_results() -> dict[str, Any]:
    from mechcheck.api import evaluate_path

    return {r.id: r for r in evaluate_path(ZOO / "test_direct_effect.yaml")}


def test_planted_head_writes_the_whole_answer() -> None:
    from mechcheck.kinds.direct import decomposition, direct_effects
    from mechcheck.models.archs import BUILTIN_ARCHS
    from mechcheck.models.loading import load_model

    loaded = load_model("zoo:planted-prevtoken", archs=BUILTIN_ARCHS, device="cpu")
    rows = [json.loads(line) for line in (ZOO / "planted.jsonl").read_text().splitlines()][:20]
    ctx = claim_context(loaded, rows, kind="direct_effect", **parsed(components=["head 0.0"]))
    terms = decomposition(ctx, heads=True)
    vocab = loaded.tokenizer.get_vocab()
    real = np.asarray([float(hand_run(loaded.model, "gpt2", hand_ids(
        loaded.tokenizer, r["prompt"]))["logits"][-1, [vocab[r["answer"]], vocab[r["wrong"]]]]
        @ torch.tensor([1.0, -1.0], dtype=torch.float64)) for r in rows])
    assert real.min() > 9.0  # the planted logit difference, 9.915
    np.testing.assert_allclose(terms.pop("blocks.0.attn.head.0"), real, atol=1e-4)
    for name, values in terms.items():
        assert np.abs(values).max() < 1e-6, name  # every other component writes nothing
    heads = direct_effects(ctx, ["blocks.*.attn.head.*", "mlp 0", "mlp 1"])
    assert np.abs(heads["blocks.0.attn.head.0"] - real).max() < 1e-4
    assert all(np.abs(v).max() < 1e-6 for k, v in heads.items() if k != "blocks.0.attn.head.0")


def test_zoo_claims(zoo_results: dict[str, Any]) -> None:
    verdicts = {k: (r.verdict, r.xfail) for k, r in zoo_results.items()}
    for claim_id, result in zoo_results.items():
        if result.xfail:
            assert result.verdict == "fail", (claim_id, result.message)
        else:
            assert result.verdict == "pass", (claim_id, result.message)
    assert "prev_token_head_acts_through_later_heads" in verdicts
    planted = zoo_results["planted_head_0_0_writes_the_answer"]
    assert planted.effect == pytest.approx(9.915, abs=1e-3)
    indirect = zoo_results["prev_token_head_acts_through_later_heads"]
    criteria = {c["name"]: c for c in indirect.criteria}
    # head 0.2: a direct effect near zero, a total effect of about 6 logits
    assert abs(criteria["max_effect"]["effect"]) < 0.1
    assert criteria["max_share"]["effect"] > 0.9  # the indirect share
    assert "mean total effect 6." in criteria["max_share"]["detail"]
    induction = zoo_results["induction_heads_write_the_answer_directly"]
    assert {c["name"] for c in induction.criteria} == {"min_effect", "min_share"}


# -- located errors ---------------------------------------------------------------------------
ERRORS = """\
model: {model}
data: rows.jsonl
claims:
  - id: fine
    kind: direct_effect
    components: ["head 0.0"]
    max_effect: 100
  - id: unknown_head
    kind: direct_effect
    components: ["head 0.9"]
    min_effect: 0
  - id: resid
    kind: direct_effect
    components: ["resid_post 1"]
    min_effect: 0
  - id: query
    kind: direct_effect
    components: ["blocks.0.attn.head.0.q"]
    min_effect: 0
  - id: bad_relative
    kind: direct_effect
    components: ["head 0.0"]
    relative_to: direct
    min_effect: 0
  - id: share_alone
    kind: direct_effect
    components: ["head 0.0"]
    max_share: 0.5
  - id: total_without_share
    kind: direct_effect
    components: ["head 0.0"]
    relative_to: total
    min_effect: 0
  - id: nothing_claimed
    kind: direct_effect
    components: ["head 0.0"]
  - id: both_bounds
    kind: direct_effect
    components: ["head 0.0"]
    min_effect: 0
    max_effect: 1
  - id: two_positions
    kind: direct_effect
    components: ["head 0.0"]
    at: [S, END]
    min_effect: 0
  - id: bad_curve
    kind: direct_effect
    components: ["head 0.0"]
    min_effect: -100
    curve: ["resid_pre 0"]
  - id: bad_ablation
    kind: direct_effect
    components: ["head 0.0"]
    relative_to: total
    ablation: denoise
    min_share: 0.5
"""

NO_WRONG = """\
model: {model}
data: nowrong.jsonl
claims:
  - id: no_wrong
    kind: direct_effect
    components: ["head 0.0"]
    target: logit_diff
    min_effect: 0
  - id: answer_is_fine
    kind: direct_effect
    components: ["head 0.0"]
    max_effect: 100
"""


def test_located_errors(tmp_path: Path, tiny_folder: Callable[..., Path]) -> None:
    from mechcheck.api import evaluate_path

    rows = word_rows(6, seed=5)
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for row in rows:
        del row["wrong"]
    (tmp_path / "nowrong.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    path = tmp_path / "test_errors.yaml"
    path.write_text(ERRORS.format(model=tiny_folder("gpt2")))
    other = tmp_path / "test_nowrong.yaml"
    other.write_text(NO_WRONG.format(model=tiny_folder("gpt2")))
    results = {r.id: r for r in [*evaluate_path(path), *evaluate_path(other)]}
    assert results["fine"].verdict == "pass", results["fine"].message
    assert results["answer_is_fine"].verdict == "pass", results["answer_is_fine"].message
    assert results["answer_is_fine"].metric == "answer"
    expected = {
        "unknown_head": ("components", "blocks.0.attn.head.9 does not exist"),
        "resid": ("components", "blocks.1.resid_post is not something a component writes"),
        "query": ("components", "has no direct effect"),
        "bad_relative": ("relative_to", "direct"),
        "share_alone": ("max_share", "needs relative_to: total"),
        "total_without_share": ("relative_to", "needs one of min_share and max_share"),
        "nothing_claimed": ("min_effect", "needs min_effect, max_effect or"),
        "both_bounds": ("max_effect", "give min_effect or max_effect, not both"),
        "two_positions": ("at", "names 2 positions in row 0"),
        "bad_curve": ("curve", "blocks.0.resid_pre is not something"),
        "bad_ablation": ("ablation", "denoise"),
        "no_wrong": ("target", "target: logit_diff needs a 'wrong' column"),
    }
    assert_located_errors(results, expected)


def test_gemma_style_heads_are_refused() -> None:
    """An architecture that norms the attention output after the projection has no
    per-head share of it: a located error, not a wrong number."""
    import dataclasses

    from mechcheck.errors import ClaimSpecError
    from mechcheck.kinds.direct import component_output
    from mechcheck.models.adapter import ModelAdapter
    from mechcheck.models.archs.gpt2 import GPT2
    from mechcheck.zoo import planted

    adapter = ModelAdapter(dataclasses.replace(GPT2, attn_out="ln_2", mlp_out="ln_2"),
                           planted.make_model())
    with pytest.raises(ClaimSpecError) as info:
        component_output(adapter, "head 0.0", torch.zeros(3, 64))
    assert info.value.key == "components"
    assert "use the whole layer, blocks.0.attn" in str(info.value)
    with pytest.raises(ClaimSpecError):
        component_output(adapter, "neuron 0.1", torch.zeros(3, 1))
