"""GPT-NeoX (Pythia) as transformers builds it (``GPTNeoXForCausalLM``).

With ``use_parallel_residual`` (Pythia's setting) attention and MLP read the same
residual stream, so there is no ``resid_mid``; the map drops it for such configs.
"""

from __future__ import annotations

from mechcheck.models.adapter import ArchMap

NEOX = ArchMap(
    name="gpt_neox",
    model_types=("gpt_neox",),
    blocks="gpt_neox.layers",
    attn="attention",
    attn_norm="input_layernorm",
    attn_out_proj="attention.dense",
    mlp="mlp",
    mlp_out_proj="mlp.dense_4h_to_h",
    resid_mid="post_attention_layernorm",
    resid_mid_unless="use_parallel_residual",
    embed="gpt_neox.embed_in",
    pos_embed=None,
    ln_final="gpt_neox.final_layer_norm",
    unembed="lm_head|embed_out",
    n_layers="num_hidden_layers",
    n_heads="num_attention_heads",
    d_model="hidden_size",
    d_mlp="intermediate_size",
    qkv="attention.query_key_value",
    qkv_layout="per_head",
)
