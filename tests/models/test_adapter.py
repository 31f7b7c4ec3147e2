"""The adapters map every address onto the right module of each architecture."""

from __future__ import annotations

from typing import Any

import pytest

from mechcheck.addresses import Address
from mechcheck.errors import AddressError, ModelLoadError
from mechcheck.models.adapter import Site, adapter_for
from mechcheck.models.archs import BUILTIN_ARCHS

EXPECTED = {
    "gpt2": {"head": Site("transformer.h.1.attn.c_proj", "pre"),
             "mlp": Site("transformer.h.1.mlp", "post"),
             "resid_mid": Site("transformer.h.1.ln_2", "pre"),
             "neuron": Site("transformer.h.1.mlp.c_proj", "pre")},
    "neox": {"head": Site("gpt_neox.layers.1.attention.dense", "pre"),
             "attn": Site("gpt_neox.layers.1.attention", "post"),
             "neuron": Site("gpt_neox.layers.1.mlp.dense_4h_to_h", "pre")},
    "llama": {"head": Site("model.layers.1.self_attn.o_proj", "pre"),
              "resid_pre": Site("model.layers.1", "pre"),
              "resid_post": Site("model.layers.1", "post"),
              "neuron": Site("model.layers.1.mlp.down_proj", "pre")},
}


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_sites(arch: str, tiny_loaded: Any) -> None:
    adapter = tiny_loaded(arch).adapter
    for site, want in EXPECTED[arch].items():
        index = 2 if site in ("head", "neuron") else None
        assert adapter.site(Address(site, 1, index)) == want
    assert adapter.columns(Address("head", 1, 2)) == slice(2 * adapter.d_head, 3 * adapter.d_head)


def test_gqa_heads_are_query_heads(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("llama")
    config = loaded.model.config
    assert config.num_key_value_heads < config.num_attention_heads
    assert loaded.adapter.dims.n_heads == config.num_attention_heads
    assert len(loaded.adapter.resolve(["blocks.0.attn.head.*"])) == config.num_attention_heads


def test_parallel_residual_has_no_resid_mid(tiny_loaded: Any) -> None:
    with pytest.raises(AddressError, match="parallel residual"):
        tiny_loaded("neox").adapter.resolve(["blocks.0.resid_mid"])
    with pytest.raises(AddressError, match="no positional embeddings|pos_embed"):
        tiny_loaded("llama").adapter.resolve(["pos_embed"])


def test_unknown_architecture_names_the_hook_to_use(tiny_loaded: Any) -> None:
    model = type("M", (), {"config": type("C", (), {"model_type": "mamba"})()})()
    with pytest.raises(ModelLoadError, match="mamba") as info:
        adapter_for(model, BUILTIN_ARCHS)
    assert "mechcheck_model_adapters" in info.value.hint
