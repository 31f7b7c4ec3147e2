"""The Gemma maps pass mechcheck's conformance kit on tiny random models of each
generation; without the post-norm fields the kit rejects the Gemma 2/3 layout."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from mechcheck_gemma import GEMMA, GEMMA2
from tiny_gemma import tiny_gemma

import mechcheck
from mechcheck.addresses import Address
from mechcheck.models.adapter import Site, adapter_for
from mechcheck.plugins import Registry
from mechcheck.testing import check_arch_map

MAPS = {"gemma": GEMMA, "gemma2": GEMMA2, "gemma3_text": GEMMA2}


@pytest.mark.parametrize("model_type", sorted(MAPS))
def test_maps_conform(model_type: str) -> None:
    check_arch_map(MAPS[model_type], lambda: tiny_gemma(model_type), seed=1)


def test_post_norm_layout_needs_attn_out() -> None:
    llama_like = dataclasses.replace(GEMMA2, attn_out=None, mlp_out=None)
    with pytest.raises(AssertionError, match=r"blocks\.0\.resid_mid differs from "
                       r"blocks\.0\.resid_pre \+ attn by .*\n  fix: check attn_out"):
        check_arch_map(llama_like, lambda: tiny_gemma("gemma3_text"))


def test_gemma1_layout_is_not_gemma2s() -> None:
    with pytest.raises(AssertionError, match="does not resolve|differs from"):
        check_arch_map(dataclasses.replace(GEMMA2, model_types=("gemma",)),
                       lambda: tiny_gemma("gemma"))


def test_the_plugin_is_registered_through_its_entry_point() -> None:
    registry = Registry.from_plugins()
    assert registry.archs[:2] == (GEMMA, GEMMA2)
    model = tiny_gemma("gemma3_text")
    adapter = adapter_for(model, registry.archs)
    assert adapter.arch is GEMMA2
    assert adapter.d_head == 16 and adapter.dims.d_model == 32
    assert adapter.site(Address("attn", 2)) == Site("model.layers.2.post_attention_layernorm",
                                                    "post")
    assert adapter.site(Address("resid_mid", 0)) == Site(
        "model.layers.0.pre_feedforward_layernorm", "pre")


def test_embed_is_after_the_sqrt_d_model_scaling() -> None:
    model = tiny_gemma("gemma3_text")
    adapter = adapter_for(model, (GEMMA2,))
    from mechcheck.engine.hooks import hooked

    ids = torch.tensor([[1, 5, 6, 7]])
    site = adapter.site(Address("embed"))
    with hooked(adapter, record=[site]) as store, torch.inference_mode():
        model(input_ids=ids)
    table = model.model.embed_tokens.weight[ids]
    torch.testing.assert_close(store[site], table * 32**0.5)


def test_hookimpl_is_mechchecks() -> None:
    from mechcheck_gemma import mechcheck_model_adapters

    assert mechcheck_model_adapters() == [GEMMA, GEMMA2]
    assert hasattr(mechcheck_model_adapters, "mechcheck_impl")
    assert mechcheck.hookimpl is not None
