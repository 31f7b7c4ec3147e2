"""mechcheck architecture maps for the Gemma family, an example of an architecture plugin.

Two maps, registered through the ``mechcheck_model_adapters`` hook:

- :data:`GEMMA` (``model_type`` ``gemma``): Llama's layout; attention and MLP outputs go
  straight into the residual stream.
- :data:`GEMMA2` (``gemma2``, ``gemma3_text``): each sublayer is normalised before and
  after, and what it adds to the residual stream is the *post*-norm's output
  (``post_attention_layernorm`` after attention, ``post_feedforward_layernorm`` after the
  MLP).  ``blocks.L.attn`` and ``blocks.L.mlp`` are those outputs (the fields
  ``attn_out`` and ``mlp_out``), so that ``resid_mid = resid_pre + attn`` and
  ``resid_post = resid_mid + mlp`` hold as in every other architecture.
  ``blocks.L.resid_mid`` is the input of ``pre_feedforward_layernorm``.

In all three, ``embed`` is the output of ``embed_tokens``, which multiplies the token
embeddings by ``sqrt(d_model)`` inside the module: the site is *after* the scaling, the
vector that enters block 0.  Heads are query heads (grouped-query attention needs
nothing special: ``o_proj`` reads one ``head_dim`` slice per query head), and
``head_dim`` comes from ``config.head_dim`` (256 in Gemma 3 270M, whose ``d_model`` is 640
with 4 heads).  ``unembed`` is ``lm_head``'s output, before Gemma 2's final logit
soft-capping.  Gemma 3's multimodal ``gemma3`` models (``Gemma3ForConditionalGeneration``)
are not covered: their text stack sits under ``model.language_model`` and their sizes
under ``config.text_config``.
"""

from __future__ import annotations

import dataclasses

import mechcheck
from mechcheck.models.adapter import ArchMap

__all__ = ["GEMMA", "GEMMA2", "mechcheck_model_adapters"]

GEMMA = ArchMap(
    name="gemma",
    model_types=("gemma",),
    blocks="model.layers",
    attn="self_attn",                       # its output holds the attention pattern
    attn_out_proj="self_attn.o_proj",       # its input, per head_dim slice: attn.head.H
    mlp="mlp",
    mlp_out_proj="mlp.down_proj",           # its input, per column: mlp.neuron.N
    resid_mid="post_attention_layernorm",   # Gemma 1: the norm before the MLP
    embed="model.embed_tokens",             # its output is already scaled by sqrt(d_model)
    pos_embed=None,                         # rotary
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

GEMMA2 = dataclasses.replace(
    GEMMA,
    name="gemma2",
    model_types=("gemma2", "gemma3_text"),
    resid_mid="pre_feedforward_layernorm",  # its input: resid_pre + attn
    attn_out="post_attention_layernorm",    # what attention adds to the residual stream
    mlp_out="post_feedforward_layernorm",   # what the MLP adds to the residual stream
)


@mechcheck.hookimpl
def mechcheck_model_adapters() -> list[ArchMap]:
    """The Gemma maps (tried before the built-in ones)."""
    return [GEMMA, GEMMA2]
