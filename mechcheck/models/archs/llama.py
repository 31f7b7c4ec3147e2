"""Llama-family decoders (Llama, Mistral, Qwen2, ...) as transformers builds them.

Grouped-query attention needs nothing special: ``o_proj`` reads one slice per query
head, so ``blocks.L.attn.head.H`` is query head H whatever the number of KV heads.
"""

from __future__ import annotations

from mechcheck.models.adapter import ArchMap

LLAMA = ArchMap(
    name="llama",
    model_types=("llama", "mistral", "qwen2"),
    blocks="model.layers",
    attn="self_attn",
    attn_norm="input_layernorm",
    attn_out_proj="self_attn.o_proj",
    mlp="mlp",
    mlp_out_proj="mlp.down_proj",
    resid_mid="post_attention_layernorm",
    embed="model.embed_tokens",
    pos_embed=None,
    ln_final="model.norm",
    unembed="lm_head",
    n_layers="num_hidden_layers",
    n_heads="num_attention_heads",
    d_model="hidden_size",
    d_mlp="intermediate_size",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    n_kv_heads="num_key_value_heads",
)
