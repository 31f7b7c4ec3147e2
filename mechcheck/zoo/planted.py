"""Recipe of the zoo model ``planted-prevtoken``: a GPT-2 whose circuit is set by hand.

Every weight is written, none trained, so the circuit is known exactly: head 0.0 attends
from each position to the one before it and copies that token to the output, so the
model predicts "the token two positions back" (after ``... A B`` it says ``A``).  Every
other component writes exactly zero to the residual stream, so ablating it changes
nothing, bit for bit.

The residual stream (``D_MODEL`` = 128) is split into three blocks of one-hot
coordinates, so no part of the circuit can disturb another:

==========  ==========  ===========================================================
block       dims        holds
==========  ==========  ===========================================================
token       0-47        ``EMBED_SCALE`` at the current token's id (``wte``)
position    48-79       ``EMBED_SCALE`` at the position's index (``wpe``)
copy        80-127      ``COPY_SCALE`` at the id of the token head 0.0 attended to
==========  ==========  ===========================================================

- ``blocks.0.ln_1``: every input is two entries equal to ``EMBED_SCALE`` and zeros, so
  its mean and variance are the same constants at every position; its weight and bias
  are set so that its output is exactly the 0/1 indicator of the token and the position.
- head 0.0, QK: the query of position ``i`` is ``QK_SCALE`` at key coordinate ``i - 1``,
  the key of position ``j`` is 1 at coordinate ``j``: the score is ``QK_SCALE /
  sqrt(64)`` = 40 for ``j = i - 1`` and 0 elsewhere, so the previous token gets all but
  ~e^-40 of the attention (position 0, having no predecessor, attends to itself).
- head 0.0, OV: the value is the one-hot token id; ``c_proj`` writes ``COPY_SCALE`` at
  the copy coordinate of that id.
- ``ln_f`` is the identity LayerNorm (weight 1, bias 0) and the unembedding (untied from
  the embedding) reads only the copy block: ``logit[t] = UNEMBED_SCALE * (x_copy[t] -
  mean) / std``.  The copied token's logit exceeds every other by about 9.9.
- head 0.1, both heads of layer 1 and both MLPs have all weights and biases 0: their
  outputs are exactly 0.  Head 0.0 ablated, the copy block is empty, every logit is
  equal, and the logit difference between any two tokens is exactly 0.

:func:`planted_rows` makes prompts on which the model is right (period-2 word patterns).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from mechcheck.models.tiny import word_tokenizer

__all__ = [
    "BOS",
    "NAME",
    "WORDS",
    "build",
    "make_model",
    "make_tokenizer",
    "planted_row",
    "planted_rows",
    "write_rows",
]

NAME = "planted-prevtoken"
BOS = "<bos>"
WORDS: tuple[str, ...] = (
    "red", "blue", "green", "gold", "gray", "pink", "black", "white",
    "cat", "dog", "fox", "owl", "bee", "ant", "cow", "pig",
    "sun", "moon", "star", "rain", "snow", "wind", "fire", "ice",
    "cup", "pen", "box", "key", "hat", "map", "bell", "drum",
    "run", "sit", "jump", "swim", "sing", "read", "cook", "walk",
)  # fmt: skip

D_MODEL = 128
N_HEADS = 2
D_HEAD = D_MODEL // N_HEADS
N_POSITIONS = 32
D_MLP = 16
TOKEN_DIMS = 0  # first coordinate of each residual block
POSITION_DIMS = 48
COPY_DIMS = 80
EMBED_SCALE = 8.0
COPY_SCALE = 8.0
QK_SCALE = 40.0 * math.sqrt(D_HEAD)  # an attention score of 40 on the previous token
UNEMBED_SCALE = 1.5
LN_EPS = 1e-5


def make_tokenizer() -> PreTrainedTokenizerBase:
    """The word-level tokenizer: ``<unk>`` = 0, ``<bos>`` = 1, then :data:`WORDS`."""
    return word_tokenizer(WORDS, bos_token=BOS)


def _config(vocab_size: int, bos_id: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size, n_positions=N_POSITIONS, n_embd=D_MODEL, n_layer=2,
        n_head=N_HEADS, n_inner=D_MLP, activation_function="gelu_new",
        layer_norm_epsilon=LN_EPS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=False, bos_token_id=bos_id, eos_token_id=bos_id,
    )


def _indicator_layernorm(ln: torch.nn.LayerNorm) -> None:
    """Set ``ln`` so that an input of two entries ``EMBED_SCALE`` (rest 0) comes out as
    their 0/1 indicator: ``w * (x - mu) / sigma + b`` with ``w = sigma / s``, ``b = mu / s``."""
    s = EMBED_SCALE
    mu = 2 * s / D_MODEL
    sigma = math.sqrt(2 * s * s / D_MODEL - mu * mu + LN_EPS)
    ln.weight.fill_(sigma / s)
    ln.bias.fill_(mu / s)


def _set_previous_token_head(model: GPT2LMHeadModel, vocab_size: int) -> None:
    """Head 0.0: QK looks one position back, OV copies the token into the copy block."""
    attn: Any = model.transformer.h[0].attn
    w = attn.c_attn.weight  # Conv1D [d_model, 3 * d_model]: q | k | v, heads in order
    q, k, v = 0, D_MODEL, 2 * D_MODEL  # head 0 is the first D_HEAD columns of each
    for i in range(1, N_POSITIONS):
        w[POSITION_DIMS + i, q + i - 1] = QK_SCALE
    for j in range(N_POSITIONS):
        w[POSITION_DIMS + j, k + j] = 1.0
    for t in range(vocab_size):
        w[TOKEN_DIMS + t, v + t] = 1.0
        attn.c_proj.weight[t, COPY_DIMS + t] = COPY_SCALE


@torch.no_grad()
def make_model() -> GPT2LMHeadModel:
    """The planted model, every parameter written explicitly (no randomness)."""
    tokenizer = make_tokenizer()
    vocab_size = len(tokenizer)
    if vocab_size > min(POSITION_DIMS - TOKEN_DIMS, D_MODEL - COPY_DIMS, D_HEAD):
        raise ValueError(f"{vocab_size} tokens do not fit the one-hot token blocks")
    config = _config(vocab_size, tokenizer.bos_token_id)
    config._attn_implementation = "eager"
    with torch.random.fork_rng():  # the random init is overwritten; spare the caller's RNG
        model = GPT2LMHeadModel(config).eval()
    for param in model.parameters():
        param.zero_()
    for module in model.modules():
        if isinstance(module, torch.nn.LayerNorm):
            module.weight.fill_(1.0)
    for t in range(vocab_size):
        model.transformer.wte.weight[t, TOKEN_DIMS + t] = EMBED_SCALE
        model.lm_head.weight[t, COPY_DIMS + t] = UNEMBED_SCALE
    for i in range(N_POSITIONS):
        model.transformer.wpe.weight[i, POSITION_DIMS + i] = EMBED_SCALE
    _indicator_layernorm(model.transformer.h[0].ln_1)
    _set_previous_token_head(model, vocab_size)
    return model


def build(out_dir: str | Path) -> Path:
    """Write the model (safetensors) and its tokenizer to ``out_dir``; return it.

    Deterministic: two builds give identical weights.  Takes well under a second.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = make_model()
    model.save_pretrained(out)
    make_tokenizer().save_pretrained(out)
    return out


def planted_row(rng: random.Random, words: Sequence[str] = WORDS) -> dict[str, object]:
    """One prompt of a period-2 pattern (``A B A B A`` -> ``B``).

    ``answer`` is the word two positions before the next one; ``wrong`` is the last word
    (what a model copying the current token would say); ``corrupt`` replaces the
    second-to-last word with a third word, which the model then predicts instead.
    ``positions`` has ``PREV`` (the answer's position) and ``END`` (the last), counting
    the ``<bos>`` the tokenizer prepends.
    """
    a, b, c = rng.sample(list(words), 3)
    length = rng.randint(4, 12)
    start = rng.randint(0, 1)
    seq = [(a, b)[(k + start) % 2] for k in range(length)]
    corrupt = seq[:-2] + [c, seq[-1]]
    return {
        "prompt": " ".join(seq),
        "answer": seq[-2],
        "wrong": seq[-1],
        "corrupt": " ".join(corrupt),
        "positions": {"PREV": length - 1, "END": length},
    }


def planted_rows(*, n: int, seed: int) -> list[dict[str, object]]:
    """``n`` rows of :func:`planted_row` over :data:`WORDS`, seeded."""
    rng = random.Random(seed)
    return [planted_row(rng) for _ in range(n)]


def write_rows(path: str | Path, *, n: int = 100, seed: int = 0) -> Path:
    """Write :func:`planted_rows` to a JSONL file (folders created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = planted_rows(n=n, seed=seed)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out
