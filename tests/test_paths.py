"""mechcheck.engine.paths.path_patch against the hand-written reference path patching
of tests/reference_forward.py (explicit per-layer, per-head forward; no hooks, no code
shared with the engine), row by row, for gpt2, llama (rotary, grouped-query attention)
and neox (parallel residual, partial rotary)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch

from mechcheck.engine.paths import path_patch
from mechcheck.models.adapter import ModelAdapter
from tests.conftest import claim_context, word_rows
from tests.reference_forward import manual_forward, reference_path_patch

ARCHS3 = ("gpt2", "llama", "neox")
TOL = 1e-4
# At transformers' init (std 0.02) attention is nearly uniform and a path's effect on the
# logits is ~1e-8, far below TOL: a wrong path patching would pass.  The checks below run
# on a copy of the fixture model with every weight matrix scaled by SHARP (effects
# 1e-3..1e-1); test_stock_fixture_models_agree runs a few on the fixture models as loaded.
SHARP = 8.0
N_ROWS = 4

# (senders as path_patch takes them, as the reference takes them), receivers likewise
CASES: dict[str, tuple[list[str], list[Any], Any, Any]] = {
    "head->q": (["head 0.1"], [(0, 1)], ["blocks.1.attn.head.2.q"], [(1, 2, "q")]),
    "head->k": (["head 0.1"], [(0, 1)], ["blocks.1.attn.head.2.k"], [(1, 2, "k")]),
    "head->v": (["head 0.3"], [(0, 3)], ["blocks.1.attn.head.0.v"], [(1, 0, "v")]),
    "head->logits": (["head 1.2"], [(1, 2)], "logits", "logits"),
    "layer0 heads->logits": (["head 0.0", "head 0.2"], [(0, 0), (0, 2)], "logits", "logits"),
    "mlp->k": (["mlp 0"], [("mlp", 0)], ["blocks.1.attn.head.1.k"], [(1, 1, "k")]),
    # mlp 1, not 0: neox's parallel MLP 0 reads only the embeddings, which differ at
    # position 2, so its direct effect on the last position is exactly 0
    "mlp->logits": (["mlp 1"], [("mlp", 1)], "logits", "logits"),
    "head+mlp->q,v": (["head 0.1", "mlp 0"], [(0, 1), ("mlp", 0)],
                      ["blocks.1.attn.head.2.q", "blocks.1.attn.head.0.v"],
                      [(1, 2, "q"), (1, 0, "v")]),
}
FULL_SWEEP = ("head->k", "mlp->k", "head->logits", "head+mlp->q,v")


def _sharpened(loaded: Any) -> Any:
    model = copy.deepcopy(loaded.model)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:  # embeddings and projections, not norms or biases
                param.mul_(SHARP)
    return dataclasses.replace(loaded, model=model,
                               adapter=ModelAdapter(loaded.adapter.arch, model))


@pytest.fixture(scope="module")
def sharp_loaded(tiny_loaded: Callable[..., Any]) -> Callable[[str], Any]:
    cache: dict[str, Any] = {}

    def get(arch: str) -> Any:
        if arch not in cache:
            cache[arch] = _sharpened(tiny_loaded(arch))
        return cache[arch]

    return get


def _pairs(ctx: Any, direction: str) -> list[tuple[list[int], list[int]]]:
    """(base, source) token ids per row, as the dataset tokenized them."""
    prompts, corrupts = ctx.dataset.prompts, ctx.dataset.corrupts
    pairs = [(list(prompts[r]), list(corrupts[r])) for r in range(len(prompts))]
    return pairs if direction == "noise" else [(s, b) for b, s in pairs]


def _check(loaded: Any, ctx: Any, case: str, direction: str, freeze: str,
           at: Any = None, ref_at: Any = None) -> float:
    """Compare path_patch with the reference row by row; return the largest effect."""
    senders, ref_senders, receivers, ref_receivers = CASES[case]
    res = path_patch(ctx, senders=senders, receivers=receivers, direction=direction,
                     freeze=freeze, at=at)
    effect = 0.0
    for row, (base_ids, source_ids) in enumerate(_pairs(ctx, direction)):
        base = manual_forward(loaded.model, base_ids).logits[-1]
        torch.testing.assert_close(res.base.logits[row], base, rtol=0, atol=TOL)
        ref = reference_path_patch(loaded.model, base_ids, source_ids, ref_senders,
                                   ref_receivers, freeze, at=ref_at)
        got = res.patched.logits[row]
        error = float((got - ref).abs().max())
        assert error < TOL, (case, direction, freeze, at, row, error)
        effect = max(effect, float((ref - base).abs().max()))
    return effect


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("arch", ARCHS3)
def test_path_patch_equals_the_reference(arch: str, case: str,
                                         sharp_loaded: Callable[[str], Any]) -> None:
    loaded = sharp_loaded(arch)
    ctx = claim_context(loaded, word_rows(N_ROWS))
    # every case both ways and with both freezes; all four pairings for a few (the runs
    # cost ~0.5 s each on two busy cores)
    combos = [("noise", "heads"), ("denoise", "heads_and_mlps")]
    if case in FULL_SWEEP:
        combos += [("noise", "heads_and_mlps"), ("denoise", "heads")]
    for direction, freeze in combos:
        effect = _check(loaded, ctx, case, direction, freeze)
        assert effect > 1e-3, (case, direction, freeze, effect)  # not vacuous


@pytest.mark.parametrize("case", ["head->q", "head+mlp->q,v"])
@pytest.mark.parametrize("arch", ARCHS3)
def test_at_last_equals_at_minus_one_equals_the_reference(
        arch: str, case: str, sharp_loaded: Callable[[str], Any]) -> None:
    loaded = sharp_loaded(arch)
    ctx = claim_context(loaded, word_rows(N_ROWS))  # rows of 7 and 9 tokens: padded
    senders, _, receivers, _ = CASES[case]
    for direction, freeze in (("noise", "heads"), ("denoise", "heads_and_mlps")):
        last = path_patch(ctx, senders=senders, receivers=receivers, direction=direction,
                          freeze=freeze, at=["last"])
        minus_one = path_patch(ctx, senders=senders, receivers=receivers,
                               direction=direction, freeze=freeze, at=[-1])
        torch.testing.assert_close(last.patched.logits, minus_one.patched.logits,
                                   rtol=0, atol=1e-6)
        _check(loaded, ctx, case, direction, freeze, at=[-1], ref_at=[-1])
        everywhere = path_patch(ctx, senders=senders, receivers=receivers,
                                direction=direction, freeze=freeze)
        gap = (everywhere.patched.logits - last.patched.logits).abs().max()
        if any(r[-1] in "kv" for r in receivers):
            # keys and values are read at every position, and the prompts differ at
            # position 2: patching the last position alone is not patching them all
            assert gap > 1e-4, (case, direction, freeze)
        else:
            # the logits, and the last layer's query (layer 1 of 2), read the last
            # position only, and a head's direct path stays in its position
            assert gap < 1e-6, (case, direction, freeze, float(gap))


@pytest.mark.parametrize("arch", ARCHS3)
def test_stock_fixture_models_agree(arch: str, tiny_loaded: Callable[..., Any]) -> None:
    # the fixture models as loaded, the model the claims run: only agreement, since the
    # effects here are ~1e-8 (see SHARP)
    loaded = tiny_loaded(arch)
    ctx = claim_context(loaded, word_rows(N_ROWS))
    for case in ("head->k", "head->logits", "head+mlp->q,v"):
        _check(loaded, ctx, case, "noise", "heads")
        _check(loaded, ctx, case, "denoise", "heads_and_mlps")


def _with_final_norm_eps(loaded: Any, eps: float) -> Any:
    """A copy of ``loaded`` whose final norm has epsilon ``eps``: with a huge epsilon
    its scale barely depends on its input, i.e. the scale is frozen."""
    model = copy.deepcopy(loaded.model)
    norm = model.get_submodule(loaded.adapter.arch.ln_final)
    for name in ("eps", "variance_epsilon"):
        if hasattr(norm, name):
            setattr(norm, name, eps)
    return dataclasses.replace(loaded, model=model,
                               adapter=ModelAdapter(loaded.adapter.arch, model))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_direct_paths_add_up_when_the_final_norm_scale_is_frozen(
        arch: str, sharp_loaded: Callable[[str], Any]) -> None:
    """Up to the final norm a head's direct path to the logits is linear: with the norm's
    scale frozen, the direct paths of several heads add up; with it recomputed, not."""
    heads = ["head 0.1", "head 1.2", "head 1.3"]

    def nonadditivity(loaded: Any) -> tuple[float, float]:
        ctx = claim_context(loaded, word_rows(N_ROWS))
        base = ctx.shared("clean").logits
        alone = sum(path_patch(ctx, [h], "logits").patched.logits - base for h in heads)
        together = path_patch(ctx, heads, "logits").patched.logits - base
        return float((together - alone).abs().max()), float(together.abs().max())

    gap, size = nonadditivity(_with_final_norm_eps(sharp_loaded(arch), 1e6))
    assert size > 1e-4 and gap < 1e-3 * size, (gap, size)
    gap, size = nonadditivity(sharp_loaded(arch))  # the real norm: not linear
    assert gap > 5e-3 * size, (gap, size)


@pytest.mark.parametrize(("receivers", "passes"), [(["blocks.1.attn.head.2.k"], 2),
                                                   ("logits", 1)])
def test_path_patching_costs_two_forward_passes_at_most(
        receivers: Any, passes: int, tiny_loaded: Callable[..., Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from mechcheck.engine.runner import Runner

    ctx = claim_context(tiny_loaded("gpt2"), word_rows(6), batch_size=64)
    ctx.recorded("clean", ["blocks.*.attn.head.*", "blocks.*.mlp"])
    ctx.recorded("corrupt", ["head 0.1"])
    calls = []
    forward = Runner._forward
    monkeypatch.setattr(Runner, "_forward",
                        lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    path_patch(ctx, ["head 0.1"], receivers)
    assert len(calls) == passes * len(ctx._runner().batches)
