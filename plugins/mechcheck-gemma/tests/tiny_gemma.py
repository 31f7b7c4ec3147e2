"""Tiny random Gemma models built from configs (no hub), for the conformance kit."""

from __future__ import annotations

from typing import Any

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GemmaConfig,
    GemmaForCausalLM,
)

# head_dim 16 with d_model 32 and 4 query heads: head_dim != d_model / n_heads, as in
# Gemma 3 270M (640 wide, 4 heads of 256); 2 key/value heads (grouped-query attention).
SIZES: dict[str, Any] = dict(vocab_size=48, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, head_dim=16, max_position_embeddings=64,
                             attention_bias=True, attention_dropout=0.0, pad_token_id=0,
                             bos_token_id=1, eos_token_id=1)

CLASSES: dict[str, tuple[Any, Any, dict[str, Any]]] = {
    "gemma": (GemmaConfig, GemmaForCausalLM, {}),
    # Gemma 2 keeps its default soft-capping of attention and final logits.
    "gemma2": (Gemma2Config, Gemma2ForCausalLM, {"sliding_window": 4}),
    # Gemma 3: a sliding window shorter than the prompts, one full-attention layer of three.
    "gemma3_text": (Gemma3TextConfig, Gemma3ForCausalLM, {"sliding_window": 4,
                     "layer_types": ["sliding_attention", "sliding_attention",
                                     "full_attention"]}),
}


def tiny_gemma(model_type: str, *, seed: int = 0) -> Any:
    """A random-init tiny causal LM of one Gemma generation (norms and biases at init)."""
    config_class, model_class, extra = CLASSES[model_type]
    torch.manual_seed(seed)
    return model_class(config_class(**SIZES, **extra)).eval()
