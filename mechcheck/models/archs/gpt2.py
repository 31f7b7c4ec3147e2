"""GPT-2 as transformers builds it (``GPT2LMHeadModel``)."""

from __future__ import annotations

from mechcheck.models.adapter import ArchMap

GPT2 = ArchMap(
    name="gpt2",
    model_types=("gpt2",),
    blocks="transformer.h",
    attn="attn",
    attn_norm="ln_1",
    attn_out_proj="attn.c_proj",
    mlp="mlp",
    mlp_out_proj="mlp.c_proj",
    resid_mid="ln_2",
    embed="transformer.wte",
    pos_embed="transformer.wpe",
    ln_final="transformer.ln_f",
    unembed="lm_head",
    n_layers="n_layer",
    n_heads="n_head",
    d_model="n_embd",
    d_mlp="n_inner",
    qkv="attn.c_attn",
    qkv_layout="qkv",
)
