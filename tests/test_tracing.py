"""``kind: traced`` (mechcheck.kinds.tracing): causal tracing, Meng et al. 2022.

Checked against a second implementation written here: the HF model run by hand with
plain torch forward hooks (noise added to the input embedding's output at the subject's
positions, a module's output replaced by its clean value at a position), the noise drawn
by the documented recipe, on tiny gpt2, neox and llama models with perturbed biases and
norms; identities that hold exactly; the planted previous-token model, whose answer is
known by construction; seeds; and located errors.
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

ARCHS = ["gpt2", "neox", "llama"]
SHARP = 4.0


# -- the reference: the HF model with hand-written hooks ----------------------------------
def blocks(model: Any) -> Any:
    if hasattr(model, "transformer"):
        return model.transformer.h
    if hasattr(model, "gpt_neox"):
        return model.gpt_neox.layers
    return model.model.layers


def module_of(model: Any, site: str, layer: int) -> Any:
    block = blocks(model)[layer]
    if site == "resid_post":
        return block
    if site == "mlp":
        return block.mlp
    for name in ("attn", "attention", "self_attn"):
        if hasattr(block, name):
            return getattr(block, name)
    raise AssertionError(site)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def hand_noise(seed: int, row: int, draw: int, n: int, width: int, std: float) -> torch.Tensor:
    """The documented recipe, written out again."""
    state = np.random.SeedSequence([seed, row, draw]).generate_state(1)[0]
    gen = torch.Generator()
    gen.manual_seed(int(state))
    return torch.randn((n, width), generator=gen) * std


def reference_prob(model: Any, ids: list[int], answer: int, *, noise: torch.Tensor | None,
                   span: list[int], restore: list[tuple[Any, list[int]]] = (),
                   clean: dict[Any, torch.Tensor] | None = None) -> float:
    """p(answer) at the last position with ``noise`` added to the embedding output at
    ``span`` and each module of ``restore`` given its ``clean`` output at its positions."""
    handles = []

    def add_noise(module: Any, args: Any, output: torch.Tensor) -> torch.Tensor:
        output = output.clone()
        output[0, span] += noise.to(output.dtype)
        return output

    def restorer(module: Any, positions: list[int]) -> Callable[..., Any]:
        def hook(mod: Any, args: Any, output: Any) -> Any:
            hidden = _first(output).clone()
            hidden[0, positions] = clean[module][positions].to(hidden.dtype)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    try:
        if noise is not None:
            handles.append(model.get_input_embeddings().register_forward_hook(add_noise))
        for module, positions in restore:
            handles.append(module.register_forward_hook(restorer(module, positions)))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
    finally:
        for handle in handles:
            handle.remove()
    return float(torch.softmax(logits.double(), dim=-1)[answer])


def clean_outputs(model: Any, ids: list[int], modules: list[Any]) -> dict[Any, torch.Tensor]:
    store: dict[Any, torch.Tensor] = {}
    handles = [m.register_forward_hook(
        lambda mod, args, out, m=m: store.__setitem__(m, _first(out)[0].detach().clone()))
        for m in modules]
    try:
        with torch.no_grad():
            model(input_ids=torch.tensor([ids]))
    finally:
        for handle in handles:
            handle.remove()
    return store


def hand_ids(tokenizer: Any, prompt: str) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [tokenizer.bos_token_id, *(vocab[w] for w in prompt.split())]


def subject_rows(n: int, seed: int = 0) -> list[dict]:
    """Word rows (prompts of 6 and 8 words after <bos>) whose subject is words 1-2."""
    rows = word_rows(n, seed=seed, corrupt=False)
    for row in rows:
        row["positions"] = {"SUBJ_FIRST": 1, "SUBJ_LAST": 2, **row["positions"]}
    return rows


def parsed(**raw: Any) -> dict[str, Any]:
    from mechcheck.kinds.tracing import Traced

    return parsed_params(Traced, **raw)


def traced(loaded: Any, rows: list[dict], seed: int = 0, **raw: Any) -> tuple[Any, Any]:
    """The kind's measurement and per-prompt columns for a claim with keys ``raw``."""
    import dataclasses

    from mechcheck.kinds.tracing import Traced

    raw.setdefault("min_effect", 0.0)
    ctx = claim_context(loaded, rows, kind="traced", **parsed(**raw))
    ctx.claim = dataclasses.replace(ctx.claim, seed=seed)
    measured = Traced().measure(ctx.claim, ctx)
    return measured, ctx.per_prompt()


@pytest.fixture(scope="module")
def models(tiny_loaded: Callable[..., Any]) -> Callable[[str], tuple[Any, Any]]:
    """``models(arch)``: the fixture model (perturbed biases and norms, checked here) with
    its weight matrices scaled by SHARP, and a copy for the hand-hooked reference passes.
    At transformers' init a tiny model barely reacts to noise (p moves by 1e-5); sharper
    weights make the effects large enough to tell sites apart."""
    import dataclasses

    from mechcheck.models.adapter import ModelAdapter

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
                model = copy.deepcopy(loaded.model)
                for param in model.parameters():
                    if param.ndim == 2:
                        param.mul_(SHARP)
            sharp = dataclasses.replace(loaded, model=model,
                                        adapter=ModelAdapter(loaded.adapter.arch, model))
            cache[arch] = (sharp, copy.deepcopy(model))
        return cache[arch]

    return get


def _std(model: Any, sigmas: float = 3.0) -> float:
    return sigmas * float(model.get_input_embeddings().weight.detach().std())


# -- (1) against the reference --------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("site", "layer", "at"), [("mlp", 0, "subject_last"),
                                                   ("attn", 1, "last"),
                                                   ("resid_post", 0, "subject_first")])
def test_indirect_effect_equals_hand_hooked_runs(arch: str, site: str, layer: int, at: str,
                                                 models: Callable[[str], tuple[Any, Any]]
                                                 ) -> None:
    loaded, reference = models(arch)
    rows = subject_rows(5, seed=1)
    samples, seed = 2, 7
    measured, columns = traced(loaded, rows, seed=seed, components=[f"blocks.{layer}.{site}"],
                               at=at, samples=samples)
    tok = loaded.tokenizer
    width = reference.get_input_embeddings().weight.shape[1]
    std = _std(reference)
    module = module_of(reference, site, layer)
    corrupt, patched, clean = [], [], []
    for row, r in enumerate(rows):
        ids = hand_ids(tok, r["prompt"])
        answer = tok.get_vocab()[r["answer"]]
        position = {"subject_last": 2, "subject_first": 1, "last": len(ids) - 1}[at]
        outputs = clean_outputs(reference, ids, [module])
        c, p = [], []
        for draw in range(samples):
            noise = hand_noise(seed, row, draw, 2, width, std)
            c.append(reference_prob(reference, ids, answer, noise=noise, span=[1, 2]))
            p.append(reference_prob(reference, ids, answer, noise=noise, span=[1, 2],
                                    restore=[(module, [position])], clean=outputs))
        corrupt.append(np.mean(c))
        patched.append(np.mean(p))
        clean.append(reference_prob(reference, ids, answer, noise=None, span=[]))
    np.testing.assert_allclose(columns["clean"], clean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(columns["corrupt"], corrupt, rtol=0, atol=1e-6)
    np.testing.assert_allclose(columns["patched"], patched, rtol=0, atol=1e-6)
    ie = np.asarray(patched) - np.asarray(corrupt)
    np.testing.assert_allclose(columns["difference"], ie, rtol=0, atol=1e-6)
    assert measured.decision.effect == pytest.approx(ie.mean(), abs=1e-6)
    assert np.abs(np.asarray(clean) - np.asarray(corrupt)).max() > 1e-4  # the noise bites
    if not (site == "attn" and at == "last"):
        assert np.abs(ie).max() > 1e-6  # and restoring matters


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_a_window_of_mlps_and_the_sweep_equal_the_reference(
        arch: str, models: Callable[[str], tuple[Any, Any]]) -> None:
    from mechcheck.kinds.tracing import window_layers

    assert window_layers(10, 10, 48) == list(range(5, 15))  # the paper's 10 layers
    assert window_layers(2, 10, 48) == list(range(0, 7))   # clipped at the ends
    assert window_layers(46, 10, 48) == list(range(41, 48))
    assert window_layers(3, 1, 48) == [3] and window_layers(3, 3, 48) == [2, 3, 4]
    loaded, reference = models(arch)
    rows = subject_rows(4, seed=2)
    measured, _ = traced(loaded, rows, layers="*", site=["mlp", "resid"], window=3,
                         at=["subject_last", "last"], samples=2, min_effect=-1.0)
    tok = loaded.tokenizer
    width = reference.get_input_embeddings().weight.shape[1]
    std = _std(reference)
    cells = {(p["site"], p["layer"], p["position"]): p["effect"] for p in measured.profile}
    assert len(cells) == 2 * 2 * 2
    for (site, layer, at), effect in cells.items():
        if site == "mlp":  # window 3 around layer L: L-1..L+1 of the two layers
            modules = [module_of(reference, "mlp", la) for la in window_layers(layer, 3, 2)]
        else:
            modules = [module_of(reference, "resid_post", layer)]
        ies = []
        for row, r in enumerate(rows):
            ids = hand_ids(tok, r["prompt"])
            answer = tok.get_vocab()[r["answer"]]
            position = 2 if at == "subject_last" else len(ids) - 1
            outputs = clean_outputs(reference, ids, modules)
            for draw in range(2):
                noise = hand_noise(0, row, draw, 2, width, std)
                base = reference_prob(reference, ids, answer, noise=noise, span=[1, 2])
                restored = reference_prob(reference, ids, answer, noise=noise, span=[1, 2],
                                          restore=[(m, [position]) for m in modules],
                                          clean=outputs)
                ies.append(restored - base)
        assert effect == pytest.approx(np.mean(ies), abs=1e-6), (site, layer, at)


# -- (2) identities ---------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_restoring_the_subjects_input_restores_everything_and_later_inputs_nothing(
        arch: str, models: Callable[[str], tuple[Any, Any]]) -> None:
    loaded, _ = models(arch)
    rows = subject_rows(4, seed=3)
    both = ["subject_first", "subject_last"]
    for components in (["embed"], ["blocks.0.resid_pre"]):
        measured, columns = traced(loaded, rows, components=components, at=both, samples=2)
        np.testing.assert_allclose(columns["patched"], columns["clean"], rtol=0, atol=1e-6)
        assert measured.decision.effect == pytest.approx(
            np.mean(np.asarray(columns["clean"]) - columns["corrupt"]), abs=1e-6)
    # the residual stream at the last token before layer 0 never saw the noise
    _, columns = traced(loaded, rows, components=["blocks.0.resid_pre"], at="last", samples=2)
    np.testing.assert_allclose(columns["patched"], columns["corrupt"], rtol=0, atol=1e-7)
    # restoring half the span restores less than all of it
    _, half = traced(loaded, rows, components=["embed"], at="subject_last", samples=2)
    assert np.abs(np.asarray(half["patched"]) - half["clean"]).max() > 1e-5


# -- (3) the planted previous-token model -------------------------------------------------------
def test_on_the_planted_model_only_head_0_0_at_the_last_token_carries_the_subject() -> None:
    """zoo:planted-prevtoken answers with the token before the last, PREV, copied by head
    0.0 at the last position; every other component writes 0.  Noising PREV's embedding
    can only act through that copy, so restoring attention 0 (or the residual stream) at
    the last position gives IE = TE exactly, and every other cell gives 0 exactly."""
    from mechcheck.api import evaluate_path

    path = Path(__file__).resolve().parents[1] / "claims" / "zoo" / "test_tracing.yaml"
    results = {r.id: r for r in evaluate_path(path)}
    for result in results.values():
        assert result.verdict == "pass", result.message
    sweep = results["heatmap_prevtoken"]
    cells = {(p["site"], p["layer"], p["position"]): p["effect"] for p in sweep.profile}
    assert len(cells) == 3 * 2 * 2
    total = cells[("resid", 1, "last")]  # the last residual stream: the clean logits
    assert total > 0.3  # the noise does damage: p(answer) falls from 0.998
    for point in sweep.profile:
        carries = point["position"] == "last" and point["site"] in ("attn", "resid") and (
            point["site"] == "resid" or point["layer"] == 0)
        assert point["effect"] == pytest.approx(total if carries else 0.0, abs=2e-4), point


# -- (4) seeds ------------------------------------------------------------------------------------
def test_the_same_seed_gives_the_same_numbers_and_another_seed_other_noise(
        models: Callable[[str], tuple[Any, Any]]) -> None:
    loaded, _ = models("gpt2")
    rows = subject_rows(4)
    raw = {"components": ["blocks.0.mlp"], "at": "subject_last", "samples": 2}
    first = traced(loaded, rows, seed=3, **raw)[1]
    again = traced(loaded, rows, seed=3, **raw)[1]
    other = traced(loaded, rows, seed=4, **raw)[1]
    assert first == again
    assert np.abs(np.asarray(first["corrupt"]) - other["corrupt"]).min() > 1e-7
    more = traced(loaded, rows, seed=3, **{**raw, "samples": 3})[1]
    assert first["corrupt"] != more["corrupt"]  # a third draw moves the average


# -- (5) located errors ---------------------------------------------------------------
ERRORS = """\
model: {model}
data: rows.jsonl
claims:
  - id: no_subject
    kind: traced
    components: ["blocks.0.mlp"]
    min_effect: 0
  - id: unknown_site
    kind: traced
    layers: "*"
    site: embed
    subject: S
    min_effect: 0
  - id: window_zero
    kind: traced
    components: ["blocks.0.mlp"]
    subject: S
    window: 0
    min_effect: 0
  - id: bad_noise
    kind: traced
    components: ["blocks.0.mlp"]
    subject: S
    noise: 3 bananas
    min_effect: 0
  - id: head
    kind: traced
    components: ["head 0.0"]
    subject: S
    min_effect: 0
  - id: both
    kind: traced
    components: ["blocks.0.mlp"]
    layers: "*"
    subject: S
    min_effect: 0
  - id: no_rule
    kind: traced
    components: ["blocks.0.mlp"]
    subject: S
  - id: too_deep
    kind: traced
    layers: [0, 7]
    subject: S
    min_effect: 0
  - id: peak_alone
    kind: traced
    components: ["blocks.0.mlp"]
    subject: S
    peak: [0, 1]
  - id: fine
    kind: traced
    components: ["blocks.0.mlp"]
    subject: S
    samples: 1
    min_effect: -1
"""


def test_bad_claims_give_located_errors(tmp_path: Path,
                                        tiny_folder: Callable[..., Path]) -> None:
    from mechcheck.api import evaluate_path

    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(4)))
    path = tmp_path / "test_errors.yaml"
    path.write_text(ERRORS.format(model=tiny_folder("gpt2")))
    expected = {
        "no_subject": ("subject", "defines no position named 'SUBJ_FIRST'"),
        "window_zero": ("window", "a window of at least 1 layer"),
        "bad_noise": ("noise", "'3 bananas'"),
        "unknown_site": ("site", "'embed'"),
        "head": ("components", "blocks.0.attn.head.0 cannot be restored"),
        "both": ("layers", "either components: (restored together) or layers:"),
        "no_rule": ("min_effect", "needs min_effect: or min_share:"),
        "too_deep": ("layers", "the model has 2 layers (0-1), not 2"),
        "peak_alone": ("peak", "peak: applies to a sweep"),
    }
    results = {r.id: r for r in evaluate_path(path)}
    assert results["fine"].verdict == "pass", results["fine"].message
    assert_located_errors(results, expected)


def test_noise_and_keys_parse() -> None:
    from mechcheck.kinds.tracing import parse_noise

    assert parse_noise("3σ") == ("sigma", 3.0) == parse_noise("3sigma")
    assert parse_noise(" 2.5 sigma") == ("sigma", 2.5)
    assert parse_noise(0.1) == ("abs", 0.1)
    for bad in ("3", "σ", "-1σ", 0, -0.5, "3 bananas", True):
        with pytest.raises(ValueError):
            parse_noise(bad)
