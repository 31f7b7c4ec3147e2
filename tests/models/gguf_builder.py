"""A tiny Llama GGUF file written from scratch (no package, no network), for the tests of
:mod:`mechcheck.models.gguf`.

The tokenizer is byte-level BPE (``tokenizer.ggml.model = gpt2``) over GPT-2's 256
byte symbols plus a few merges; the weights are random with norms and embeddings away
from their initial values, and some tensors are stored Q8_0 so that reading the file
dequantizes, as with real GGUF files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

LAYERS, D, HEADS, KV_HEADS, FF = 2, 64, 4, 2, 96
MERGES = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "Ġ w", "o r", "e r"]


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each of the 256 bytes, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + \
        list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def tokens() -> list[str]:
    """The vocabulary: three special tokens, the byte symbols, then the merges."""
    return ["<unk>", "<s>", "</s>", *_byte_symbols(), *(m.replace(" ", "") for m in MERGES)]


def write_tiny_gguf(path: Path, *, seed: int = 0) -> Path:
    """Write the tiny model to ``path`` and return it."""
    import gguf

    rng = np.random.default_rng(seed)
    vocab = tokens()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(LAYERS)
    writer.add_context_length(128)
    writer.add_embedding_length(D)
    writer.add_feed_forward_length(FF)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(D // HEADS)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(vocab)
    writer.add_token_types([3, 3, 3] + [1] * (len(vocab) - 3))
    writer.add_token_merges(MERGES)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)

    def f32(name: str, *shape: int, scale: float = 0.2, offset: float = 0.0) -> None:
        writer.add_tensor(name, (offset + scale * rng.standard_normal(shape)).astype(np.float32))

    def q8(name: str, *shape: int) -> None:
        data = (0.2 * rng.standard_normal(shape)).astype(np.float32)
        packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, packed, raw_shape=packed.shape,
                          raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    head = D // HEADS
    f32("token_embd.weight", len(vocab), D, scale=0.5)
    for i in range(LAYERS):
        f32(f"blk.{i}.attn_norm.weight", D, scale=0.3, offset=1.0)
        q8(f"blk.{i}.attn_q.weight", D, D)
        q8(f"blk.{i}.attn_k.weight", KV_HEADS * head, D)
        f32(f"blk.{i}.attn_v.weight", KV_HEADS * head, D)
        q8(f"blk.{i}.attn_output.weight", D, D)
        f32(f"blk.{i}.ffn_norm.weight", D, scale=0.3, offset=1.0)
        q8(f"blk.{i}.ffn_gate.weight", FF, D)
        q8(f"blk.{i}.ffn_up.weight", FF, D)
        f32(f"blk.{i}.ffn_down.weight", D, FF)
    f32("output_norm.weight", D, scale=0.3, offset=1.0)
    f32("output.weight", len(vocab), D, scale=0.3)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
