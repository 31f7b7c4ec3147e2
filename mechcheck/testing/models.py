"""Random-init tiny models for tests, benchmarks and plugin authors, built without the hub.

Every model comes with a word-level tokenizer over a small vocabulary, so a prompt such as
``"When Mary and John went"`` tokenizes to one token per word. Biases and norm parameters
are perturbed away from transformers' 0/1 initialisation (``perturb=True``), so that code
which forgets a bias or a norm weight gives visibly different numbers.

This is test scaffolding: nothing at run time imports it (the zoo's tokenizer is
:func:`mechcheck.models.tiny.word_tokenizer`).

Example:
    >>> model, tok = build_tiny("llama", seed=1)
    >>> folder = save_tiny("gpt2", tmp_path / "tiny-gpt2")  # any folder
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from mechcheck.models.tiny import word_tokenizer

__all__ = [
    "ARCHS", "BOS_TOKEN", "DEFAULT_WORDS", "build_tiny", "perturb_params", "save_tiny",
    "word_tokenizer",
]

ARCHS: tuple[str, ...] = ("gpt2", "neox", "llama", "qwen2", "mistral")

BOS_TOKEN = "<bos>"
PERTURB_STD = 0.1

DEFAULT_WORDS: tuple[str, ...] = (
    "the", "a", "and", "to", "of", "in", "is", "was", "then", "when",
    "went", "gave", "said", "had", "took", "saw", "store", "park", "school", "office",
    "drink", "book", "ball", "key", "ring", "cat", "dog", "house", "garden", "river",
    "red", "blue", "big", "small", "Mary", "John", "Alice", "Bob", "Tom", "Sarah",
)  # fmt: skip


def _gpt2_config(common: dict[str, Any], n_kv_heads: int | None) -> PretrainedConfig:
    _require_mha("gpt2", common["n_heads"], n_kv_heads)
    return GPT2Config(
        vocab_size=common["vocab_size"],
        n_positions=common["max_positions"],
        n_embd=common["d_model"],
        n_layer=common["n_layers"],
        n_head=common["n_heads"],
        n_inner=common["d_mlp"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=common["bos_id"],
        eos_token_id=common["bos_id"],
    )


def _neox_config(common: dict[str, Any], n_kv_heads: int | None) -> PretrainedConfig:
    _require_mha("neox", common["n_heads"], n_kv_heads)
    return GPTNeoXConfig(
        vocab_size=common["vocab_size"],
        hidden_size=common["d_model"],
        num_hidden_layers=common["n_layers"],
        num_attention_heads=common["n_heads"],
        intermediate_size=common["d_mlp"],
        max_position_embeddings=common["max_positions"],
        attention_dropout=0.0,
        hidden_dropout=0.0,
        use_parallel_residual=True,
        bos_token_id=common["bos_id"],
        eos_token_id=common["bos_id"],
    )


def _rope_config(arch: str, common: dict[str, Any], n_kv_heads: int) -> PretrainedConfig:
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[arch]
    extra: dict[str, Any] = {"attention_bias": True, "mlp_bias": True} if arch == "llama" else {}
    return cls(
        vocab_size=common["vocab_size"],
        hidden_size=common["d_model"],
        intermediate_size=common["d_mlp"],
        num_hidden_layers=common["n_layers"],
        num_attention_heads=common["n_heads"],
        num_key_value_heads=n_kv_heads,
        head_dim=common["d_model"] // common["n_heads"],
        max_position_embeddings=common["max_positions"],
        attention_dropout=0.0,
        tie_word_embeddings=False,
        bos_token_id=common["bos_id"],
        eos_token_id=common["bos_id"],
        pad_token_id=None,
        **extra,
    )


def _require_mha(arch: str, n_heads: int, n_kv_heads: int | None) -> None:
    if n_kv_heads is not None and n_kv_heads != n_heads:
        raise ValueError(f"{arch} has no grouped-query attention: n_kv_heads must equal n_heads")


_MODEL_CLASSES: dict[str, type[PreTrainedModel]] = {
    "gpt2": GPT2LMHeadModel,
    "neox": GPTNeoXForCausalLM,
    "llama": LlamaForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "mistral": MistralForCausalLM,
}


def _make_config(arch: str, common: dict[str, Any], n_kv_heads: int | None) -> PretrainedConfig:
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if common["d_model"] % common["n_heads"]:
        raise ValueError("d_model must be a multiple of n_heads")
    if arch == "gpt2":
        return _gpt2_config(common, n_kv_heads)
    if arch == "neox":
        return _neox_config(common, n_kv_heads)
    kv = n_kv_heads if n_kv_heads is not None else max(1, common["n_heads"] // 2)
    if common["n_heads"] % kv:
        raise ValueError("n_heads must be a multiple of n_kv_heads")
    return _rope_config(arch, common, kv)


def _is_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("RMSNorm")


@torch.no_grad()
def perturb_params(model: torch.nn.Module, *, seed: int, std: float = PERTURB_STD) -> None:
    """Move biases and norm parameters away from their 0/1 initialisation, in place.

    Every parameter named ``*bias`` and every LayerNorm or RMSNorm weight gets
    ``N(0, std)`` noise added: transformers initialises norm weights to 1, so they become
    ``1 + N(0, std)``, and Gemma's, which scale by ``1 + weight``, to 0, so they become
    ``N(0, std)``.

    Args:
        model: the model to change.
        seed: seeds a private generator, so the result does not depend on global RNG state.
        std: standard deviation of the noise.
    """
    gen = torch.Generator().manual_seed(seed)
    norm_weights = {
        id(mod.weight) for mod in model.modules() if _is_norm(mod) and mod.weight is not None
    }
    for name, param in model.named_parameters():
        noise = torch.randn(param.shape, generator=gen, dtype=param.dtype) * std
        if id(param) in norm_weights or name.endswith("bias"):
            param.add_(noise)


def build_tiny(
    arch: str,
    *,
    seed: int = 0,
    n_layers: int = 2,
    n_heads: int = 4,
    n_kv_heads: int | None = None,
    d_model: int = 32,
    d_mlp: int = 64,
    words: Sequence[str] | None = None,
    perturb: bool = True,
    max_positions: int = 64,
) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """Build a random-init tiny causal LM of architecture ``arch`` with its tokenizer.

    Args:
        arch: one of :data:`ARCHS`.
        seed: seeds ``torch.manual_seed`` before init and the perturbation.
        n_layers: number of transformer blocks.
        n_heads: number of query heads.
        n_kv_heads: key/value heads (llama, qwen2, mistral only); default ``n_heads // 2``.
        d_model: residual width; must be a multiple of ``n_heads``.
        d_mlp: MLP hidden width.
        words: the vocabulary (default :data:`DEFAULT_WORDS`).
        perturb: add noise to biases and norm parameters (see :func:`perturb_params`).
        max_positions: context length.

    Returns:
        ``(model, tokenizer)``; the model is in ``eval()`` mode with all dropout 0, and the
        tokenizer prepends ``<bos>``.

    Raises:
        ValueError: unknown ``arch`` or inconsistent sizes.
    """
    tokenizer = word_tokenizer(DEFAULT_WORDS if words is None else words, bos_token=BOS_TOKEN)
    common = {
        "vocab_size": len(tokenizer),
        "bos_id": tokenizer.bos_token_id,
        "n_layers": n_layers,
        "n_heads": n_heads,
        "d_model": d_model,
        "d_mlp": d_mlp,
        "max_positions": max_positions,
    }
    config = _make_config(arch, common, n_kv_heads)
    torch.manual_seed(seed)
    model = _MODEL_CLASSES[arch](config)
    if perturb:
        perturb_params(model, seed=seed)
    return model.eval(), tokenizer


def save_tiny(arch: str, folder: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Build a tiny model with :func:`build_tiny` and save it with its tokenizer.

    Args:
        arch: one of :data:`ARCHS`.
        folder: where to write ``config.json``, ``model.safetensors`` and the tokenizer.
        **kwargs: passed to :func:`build_tiny`.

    Returns:
        The folder, ready for ``AutoModelForCausalLM.from_pretrained``.
    """
    model, tokenizer = build_tiny(arch, **kwargs)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    if model.config.model_type in _FORCED_TOKENIZER_TYPES:
        _pin_tokenizer_backend(out)
    return out


# transformers 5 ignores ``tokenizer_class`` in tokenizer_config.json for these model types
# and rebuilds their hub tokenizer class (a byte-level BPE), which would mangle a word-level
# vocabulary. An ``auto_map`` entry sends AutoTokenizer down the path that honours
# ``tokenizer_class`` (remote code is skipped for these types unless trust_remote_code=True).
_FORCED_TOKENIZER_TYPES = frozenset({"qwen2"})


def _pin_tokenizer_backend(folder: Path) -> None:
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoTokenizer": [None, config["tokenizer_class"]]}
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
