"""The reference forward (tests/reference_forward.py) against transformers' own forward,
and the reference path patching against identities that follow from its definition."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch

from mechcheck.testing.models import build_tiny
from tests.reference_forward import (
    manual_forward,
    reference_direct_logits,
    reference_path_patch,
)

ARCHS3 = ("gpt2", "llama", "neox")
BASE = [1, 5, 7, 9, 3, 22, 30, 11]
SOURCE = [1, 5, 17, 9, 3, 22, 30, 11]  # one token changed, same length


def close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=tol)


_MODELS: dict[tuple, Any] = {}
# At transformers' init (std 0.02) attention is almost uniform and a head's effect on the
# logits is ~1e-5 (a path's ~1e-8): below any useful tolerance.  Scaling every weight
# matrix by 8 gives effects of 1e-3..1e-1, so the identities below are not vacuous.
SHARP = 8.0


def tiny(arch: str, n_layers: int = 2, scale: float = SHARP) -> Any:
    key = (arch, n_layers, scale)
    if key not in _MODELS:
        model, _ = build_tiny(arch, seed=1, n_layers=n_layers, n_heads=4, perturb=True)
        with torch.no_grad():
            for param in model.parameters():
                if param.ndim == 2:  # embeddings and projections, not norms or biases
                    param.mul_(scale)
        _MODELS[key] = model.eval()
    return _MODELS[key]


def hf_logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def _block(model: Any, layer: int) -> Any:
    name = type(model).__name__
    if name.startswith("GPT2"):
        return model.transformer.h[layer]
    if name.startswith("GPTNeoX"):
        return model.gpt_neox.layers[layer]
    return model.model.layers[layer]


def _out_proj(model: Any, layer: int) -> torch.nn.Module:
    block = _block(model, layer)
    name = type(model).__name__
    if name.startswith("GPT2"):
        return block.attn.c_proj
    if name.startswith("GPTNeoX"):
        return block.attention.dense
    return block.self_attn.o_proj


def _hooked(model: Any, ids: list[int], module: torch.nn.Module, hook: Callable,
            pre: bool) -> torch.Tensor:
    handle = (module.register_forward_pre_hook(hook) if pre
              else module.register_forward_hook(hook))
    try:
        return hf_logits(model, ids)
    finally:
        handle.remove()


# --------------------------------------------------------------------------- forward

@pytest.mark.parametrize("scale", [1.0, SHARP])
@pytest.mark.parametrize("n_layers", [2, 3])
@pytest.mark.parametrize("arch", ARCHS3)
def test_manual_forward_equals_transformers(arch: str, n_layers: int, scale: float) -> None:
    model = tiny(arch, n_layers, scale)
    for ids in (BASE, SOURCE, BASE[:3]):
        close(manual_forward(model, ids).logits, hf_logits(model, ids))


def test_manual_forward_equals_transformers_for_sequential_neox() -> None:
    model = copy.deepcopy(tiny("neox"))
    model.config.use_parallel_residual = False
    for block in model.gpt_neox.layers:
        block.use_parallel_residual = False
    reference = hf_logits(model, BASE)
    close(manual_forward(model, BASE).logits, reference)
    assert (reference - hf_logits(tiny("neox"), BASE)).abs().max() > 1e-3  # it mattered


@pytest.mark.parametrize("arch", ARCHS3)
def test_head_z_overrides(arch: str) -> None:
    model = tiny(arch)
    trace = manual_forward(model, BASE)
    same = manual_forward(model, BASE, head_z=dict(trace.head_z), mlp_out=dict(trace.mlp_out))
    close(same.logits, trace.logits, 0)

    layer, head = 0, 2
    d_head = trace.head_z[layer, head].shape[-1]
    zero = torch.zeros_like(trace.head_z[layer, head])
    got = manual_forward(model, BASE, head_z={(layer, head): zero})
    assert torch.equal(got.head_out[layer, head], torch.zeros_like(got.head_out[layer, head]))

    def zero_columns(module: Any, args: tuple) -> tuple:
        x = args[0].clone()
        x[..., head * d_head:(head + 1) * d_head] = 0
        return (x, *args[1:])

    reference = _hooked(model, BASE, _out_proj(model, layer), zero_columns, pre=True)
    close(got.logits, reference)
    assert (reference - trace.logits).abs().max() > 1e-2  # the head mattered


@pytest.mark.parametrize("arch", ARCHS3)
def test_head_out_sums_to_the_attention_output(arch: str) -> None:
    model = tiny(arch)
    trace = manual_forward(model, BASE)
    layer = 1
    seen: dict[str, torch.Tensor] = {}

    def keep(module: Any, args: tuple, output: torch.Tensor) -> None:
        seen["out"] = output.detach()[0]

    _hooked(model, BASE, _out_proj(model, layer), keep, pre=False)
    bias = getattr(_out_proj(model, layer), "bias", None)
    total = torch.stack([trace.head_out[layer, h] for h in range(4)]).sum(0)
    if bias is not None:
        total = total + bias
    close(total, seen["out"])
    close(trace.attn_out[layer], seen["out"])


def _qkv_reference(model: Any, ids: list[int], layer: int, head: int) -> dict[str, torch.Tensor]:
    """q, k, v of one head read from the projection outputs, split as transformers does."""
    block, cfg, name = _block(model, layer), model.config, type(model).__name__
    seen: dict[str, torch.Tensor] = {}

    def keep(which: str) -> Callable:
        def hook(module: Any, args: tuple, output: torch.Tensor) -> None:
            seen[which] = output.detach()[0]
        return hook

    modules = ({"qkv": block.attn.c_attn} if name.startswith("GPT2") else
               {"qkv": block.attention.query_key_value} if name.startswith("GPTNeoX") else
               {w: getattr(block.self_attn, f"{w}_proj") for w in "qkv"})
    handles = [m.register_forward_hook(keep(w)) for w, m in modules.items()]
    try:
        hf_logits(model, ids)
    finally:
        for h in handles:
            h.remove()
    n = len(ids)
    if name.startswith("GPT2"):
        parts = seen["qkv"].split(cfg.n_embd, dim=-1)
        return {w: t.view(n, cfg.n_head, -1)[:, head] for w, t in zip("qkv", parts)}
    if name.startswith("GPTNeoX"):
        per = cfg.hidden_size // cfg.num_attention_heads
        return dict(zip("qkv", seen["qkv"].view(n, -1, 3 * per)[:, head].chunk(3, -1)))
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    return {"q": seen["q"].view(n, -1, cfg.head_dim)[:, head],
            "k": seen["k"].view(n, -1, cfg.head_dim)[:, head // group],
            "v": seen["v"].view(n, -1, cfg.head_dim)[:, head // group]}


@pytest.mark.parametrize("arch", ARCHS3)
def test_trace_q_k_v_are_the_projection_outputs(arch: str) -> None:
    model = tiny(arch)
    trace = manual_forward(model, BASE)
    for layer, head in ((0, 1), (1, 3)):
        ref = _qkv_reference(model, BASE, layer, head)
        for which in "qkv":
            close(getattr(trace, which)[layer, head], ref[which])


def _zero_projection(model: Any, layer: int, head: int, which: str) -> Any:
    """A copy of ``model`` whose weights and biases writing head ``head``'s ``which`` are 0."""
    edited = copy.deepcopy(model)
    block, cfg, name = _block(edited, layer), edited.config, type(edited).__name__
    with torch.no_grad():
        if name.startswith("GPT2"):
            per = cfg.n_embd // cfg.n_head
            start = "qkv".index(which) * cfg.n_embd + head * per
            block.attn.c_attn.weight[:, start:start + per] = 0  # Conv1D [in, out]
            block.attn.c_attn.bias[start:start + per] = 0
        elif name.startswith("GPTNeoX"):
            per = cfg.hidden_size // cfg.num_attention_heads
            start = head * 3 * per + "qkv".index(which) * per
            block.attention.query_key_value.weight[start:start + per] = 0
            block.attention.query_key_value.bias[start:start + per] = 0
        else:
            group = cfg.num_attention_heads // cfg.num_key_value_heads
            index = head if which == "q" else head // group
            proj = getattr(block.self_attn, f"{which}_proj")
            proj.weight[index * cfg.head_dim:(index + 1) * cfg.head_dim] = 0
            proj.bias[index * cfg.head_dim:(index + 1) * cfg.head_dim] = 0
    return edited


@pytest.mark.parametrize("arch", ARCHS3)
@pytest.mark.parametrize("which", ["q", "k", "v"])
def test_q_k_v_overrides(arch: str, which: str) -> None:
    model = tiny(arch)
    trace = manual_forward(model, BASE)
    layer, head = 0, 3
    own = getattr(trace, which)[layer, head]
    same_kw: dict[str, Any] = {which: {(layer, head): own}}
    same = manual_forward(model, BASE, **same_kw)
    close(same.logits, trace.logits, 0)
    zero = torch.zeros_like(getattr(trace, which)[layer, head])
    zero_kw: dict[str, Any] = {which: {(layer, head): zero}}
    got = manual_forward(model, BASE, **zero_kw)
    reference = hf_logits(_zero_projection(model, layer, head, which), BASE)
    close(got.logits, reference)
    assert (reference - trace.logits).abs().max() > 1e-2
    if arch == "llama" and which != "q":  # GQA: the whole kv group (heads 2, 3) sees it
        assert torch.equal(getattr(got, which)[layer, 2], zero)


@pytest.mark.parametrize("arch", ARCHS3)
def test_mlp_out_override(arch: str) -> None:
    model = tiny(arch)
    trace = manual_forward(model, BASE)
    got = manual_forward(model, BASE, mlp_out={0: torch.zeros_like(trace.mlp_out[0])})
    mlp = _block(model, 0).mlp
    reference = _hooked(model, BASE, mlp, lambda m, a, out: torch.zeros_like(out), pre=False)
    close(got.logits, reference)
    assert (reference - trace.logits).abs().max() > 1e-2


# --------------------------------------------------------------------------- path patching

@pytest.mark.parametrize("arch", ARCHS3)
def test_direct_logits_equal_path_patching_to_the_logits(arch: str) -> None:
    model = tiny(arch)
    base = manual_forward(model, BASE).logits[-1]
    for head in ((0, 1), (1, 2)):
        direct = reference_direct_logits(model, BASE, SOURCE, head)
        for freeze in ("heads", "heads_and_mlps"):
            patched = reference_path_patch(model, BASE, SOURCE, [head], "logits", freeze)
            close(patched, direct)
        assert (direct - base).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ARCHS3)
def test_all_heads_to_the_logits_is_every_head_patched_with_mlps_frozen(arch: str) -> None:
    model = tiny(arch, 3)
    base, source = manual_forward(model, BASE), manual_forward(model, SOURCE)
    expected = manual_forward(model, BASE, head_z=dict(source.head_z),
                              mlp_out=dict(base.mlp_out)).logits[-1]
    heads = list(source.head_z)
    for freeze in ("heads", "heads_and_mlps"):
        close(reference_path_patch(model, BASE, SOURCE, heads, "logits", freeze), expected)
    # the sum of the direct effects, through one final norm
    resid = base.resid_final + sum(source.head_out[h] - base.head_out[h] for h in heads)
    close(expected, reference_direct_logits_from(model, resid))


def reference_direct_logits_from(model: Any, resid: torch.Tensor) -> torch.Tensor:
    from tests.reference_forward import _spec, _unembed
    return _unembed(_spec(model), resid)[-1]


RECEIVERS = [[(1, 2, "q")], [(1, 0, "k")], [(1, 3, "v")], [(1, 1, "q"), (1, 1, "k")], "logits"]


@pytest.mark.parametrize("arch", ARCHS3)
@pytest.mark.parametrize("receivers", RECEIVERS, ids=str)
def test_a_sender_with_its_base_value_changes_nothing(arch: str, receivers: Any) -> None:
    model = tiny(arch)
    base = manual_forward(model, BASE).logits[-1]
    for senders in ([(0, 1)], [("mlp", 0)], [(0, 0), (0, 3), ("mlp", 0)]):
        for freeze in ("heads", "heads_and_mlps"):
            got = reference_path_patch(model, BASE, BASE, senders, receivers, freeze)
            close(got, base)


@pytest.mark.parametrize("arch", ARCHS3)
def test_a_receiver_not_after_its_sender_is_unaffected(arch: str) -> None:
    model = tiny(arch, 3)
    base = manual_forward(model, BASE).logits[-1]
    for receiver in ((0, 2, "q"), (1, 0, "k"), (1, 1, "v")):
        for freeze in ("heads", "heads_and_mlps"):
            got = reference_path_patch(model, BASE, SOURCE, [(1, 3)], [receiver], freeze)
            close(got, base)
    # an MLP writes after its own layer's attention reads
    got = reference_path_patch(model, BASE, SOURCE, [("mlp", 1)], [(1, 2, "q")])
    close(got, base)


@pytest.mark.parametrize("arch", ARCHS3)
def test_a_later_receiver_is_affected(arch: str) -> None:
    model = tiny(arch)
    base = manual_forward(model, BASE).logits[-1]
    for senders in ([(0, 1)], [("mlp", 0)]):
        for receiver in ((1, 2, "q"), (1, 0, "k"), (1, 3, "v")):
            got = reference_path_patch(model, BASE, SOURCE, senders, [receiver])
            if arch == "neox" and senders[0][0] == "mlp" and receiver[2] == "q":
                # parallel residual: MLP 0 reads only the embeddings, which differ at
                # position 2, not at the last, the only query the last layer's logits read
                close(got, base, 0)
            else:
                assert (got - base).abs().max() > 1e-4, (senders, receiver)


@pytest.mark.parametrize("arch", ARCHS3)
def test_heads_and_mlps_receiver_input_is_the_norm_of_base_plus_the_sender_delta(
        arch: str) -> None:
    # with MLP 0 frozen, layer 1 reads resid_pre[1] + (source - base) head output of (0, h)
    from tests.reference_forward import _affine, _norm, _spec
    model = tiny(arch)
    spec = _spec(model)
    base, source = manual_forward(model, BASE), manual_forward(model, SOURCE)
    sender, (layer, head) = (0, 1), (1, 2)
    resid = base.resid_pre[layer] + source.head_out[sender] - base.head_out[sender]
    q = _affine(_norm(spec, resid, spec.layers[layer].norm1), *spec.layers[layer].wq[head])
    expected = manual_forward(model, BASE, q={(layer, head): q}).logits[-1]
    got = reference_path_patch(model, BASE, SOURCE, [sender], [(layer, head, "q")],
                               "heads_and_mlps")
    close(got, expected)
    loose = reference_path_patch(model, BASE, SOURCE, [sender], [(layer, head, "q")], "heads")
    if arch != "neox":  # parallel residual: MLP 0 never reads head (0, 1), so freezing is moot
        assert (loose - got).abs().max() > 1e-4
    else:
        close(loose, got)


@pytest.mark.parametrize("arch", ARCHS3)
def test_positions(arch: str) -> None:
    model = tiny(arch)
    base = manual_forward(model, BASE).logits[-1]
    senders, receivers = [(0, 1), ("mlp", 0)], [(1, 2, "q"), (1, 0, "v")]
    every = reference_path_patch(model, BASE, SOURCE, senders, receivers)
    close(reference_path_patch(model, BASE, SOURCE, senders, receivers,
                               at=list(range(len(BASE)))), every, 0)
    close(reference_path_patch(model, BASE, SOURCE, senders, receivers, at=[]), base)
    last = reference_path_patch(model, BASE, SOURCE, senders, receivers, at=[-1])
    close(reference_path_patch(model, BASE, SOURCE, senders, receivers,
                               at=[len(BASE) - 1]), last, 0)
    # the prompts differ at position 2 only: patching positions before it changes nothing
    close(reference_path_patch(model, BASE, SOURCE, senders, receivers, at=[0, 1]), base)
    close(reference_path_patch(model, BASE, SOURCE, senders, "logits", at=[0, 1]), base)
