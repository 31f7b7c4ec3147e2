"""Recipe of the zoo models ``planted-feature-read`` and ``planted-feature-unread``: two
GPT-2s whose weights are set by hand, both of which *encode* a feature that only one of
them *uses*.

The task: a prompt is a sequence of 4-12 words; the answer is ``yes`` if the
second-to-last word is in group A (:data:`GROUP_A`, the first 16 of :data:`WORDS`) and
``no`` if it is in group B (the last 16).  In both models, head 0.0 looks one position
back and writes the *group* of the word it sees into a two-coordinate feature block, so
at the last position ``blocks.0.resid_post`` holds the answer's label linearly
(``FA - FB`` is ``+FEATURE_SCALE`` for A, ``-FEATURE_SCALE`` for B), in both models bit
for bit.  Only the **read** model's layer 1 reads that block; the **unread** model's
layer 1 looks back at the word itself and works the group out from the token block.  A
probe finds the feature in both; erasing it (mean or zero at the last position) breaks
only the read model.

The residual stream (``D_MODEL`` = 128) is split into blocks of one-hot coordinates:

==========  ==========  ===========================================================
block       dims        holds
==========  ==========  ===========================================================
token       0-39        ``EMBED_SCALE`` at the current token's id (36 ids; ``wte``)
position    40-71       ``EMBED_SCALE`` at the position's index (``wpe``)
feature     72-73       ``FEATURE_SCALE`` at FA (72) or FB (73): the group of the
                        token head 0.0 attended to
none        74          ``FEATURE_SCALE`` when that token is in neither group
                        (``<bos>``, so at position 0 and 1)
answer      75-76       ``ANSWER_SCALE`` at yes (75) or no (76), written by head 1.0
(unused)    77-127      always 0
==========  ==========  ===========================================================

Both models:

- ``blocks.0.ln_1``: every input is two entries ``EMBED_SCALE`` (token, position), so
  its output is set to be exactly their 0/1 indicator (as in :mod:`~mechcheck.zoo.planted`).
- head 0.0, QK: the query of position ``i`` is ``QK_SCALE`` at key coordinate ``i - 1``
  and the key of position ``j`` is 1 at coordinate ``j``; a score of 40 on the previous
  position and 0 elsewhere (position 0 attends to itself).  OV: value 0 sums the group
  A token indicators, value 1 the group B ones, value 2 the others; ``c_proj`` writes
  them, times ``FEATURE_SCALE``, to FA, FB and none.
- ``blocks.1.ln_1``: every input is now three entries of the same value (token,
  position, and exactly one of FA / FB / none, because ``FEATURE_SCALE`` equals
  ``EMBED_SCALE``), so again its mean and variance are constants and its output is set
  to be exactly the indicator of all three.
- ``ln_f`` is the identity LayerNorm; the unembedding (untied) reads only the answer
  block: ``logit[yes] = UNEMBED_SCALE * (x[75] - mean) / std``, ``logit[no]`` the same
  at 76, every other logit 0.  At the last position the residual holds four entries
  (``3 * EMBED_SCALE`` and ``ANSWER_SCALE``), so ``logit(answer) - logit(wrong)`` is
  ``UNEMBED_SCALE * ANSWER_SCALE / std`` = 11.136 on every prompt.
- head 0.1, head 1.1 and both MLPs have all weights and biases 0: their outputs are 0.

The two models differ only in head 1.0:

- **read**: QK attends from each position to itself; OV reads the feature block there
  (value 0 = FA, value 1 = FB) and writes ``ANSWER_SCALE`` to yes / no.
- **unread**: QK attends from each position to the previous one, like head 0.0; OV
  reads the token block there (value 0 sums the group A indicators, value 1 group B) and
  writes ``ANSWER_SCALE`` to yes / no.  No weight reads the feature block; it reaches
  the output only through the mean and variance of ``blocks.1.ln_1`` and ``ln_f``.

On every prompt the two models give the same logits at every position (to float32
rounding).  :func:`feature_rows` makes the prompts; half of them (shuffled) have a group
A answer, so the mean of the feature block over the rows carries no label.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerBase

from mechcheck.models.tiny import word_tokenizer

__all__ = [
    "BOS",
    "GROUP_A",
    "GROUP_B",
    "NAMES",
    "NAME_READ",
    "NAME_UNREAD",
    "WORDS",
    "Variant",
    "build",
    "build_read",
    "build_unread",
    "feature_row",
    "feature_rows",
    "make_model",
    "make_tokenizer",
    "write_rows",
]

Variant = Literal["read", "unread"]
NAME_READ = "planted-feature-read"
NAME_UNREAD = "planted-feature-unread"
NAMES: dict[Variant, str] = {"read": NAME_READ, "unread": NAME_UNREAD}
BOS = "<bos>"
YES, NO = "yes", "no"
GROUP_A: tuple[str, ...] = (
    "cat", "dog", "fox", "owl", "bee", "ant", "cow", "pig",
    "hen", "elk", "bat", "rat", "yak", "eel", "ape", "emu",
)  # fmt: skip
GROUP_B: tuple[str, ...] = (
    "cup", "pen", "box", "key", "hat", "map", "bell", "drum",
    "lamp", "sock", "fork", "coin", "ring", "kite", "rope", "vase",
)  # fmt: skip
WORDS: tuple[str, ...] = GROUP_A + GROUP_B
MIN_WORDS, MAX_WORDS = 4, 12

D_MODEL = 128
N_HEADS = 2
D_HEAD = D_MODEL // N_HEADS
N_POSITIONS = 32
D_MLP = 16
TOKEN_DIMS = 0  # first coordinate of each residual block
POSITION_DIMS = 40
FA, FB = 72, 73  # the feature block
NONE_DIM = 74
YES_DIM, NO_DIM = 75, 76  # the answer block
EMBED_SCALE = 8.0
FEATURE_SCALE = EMBED_SCALE  # equal, so blocks.1.ln_1 sees three equal entries everywhere
ANSWER_SCALE = 64.0
UNEMBED_SCALE = 1.0
QK_SCALE = 40.0 * math.sqrt(D_HEAD)  # an attention score of 40 on the attended position
LN_EPS = 1e-5


def make_tokenizer() -> PreTrainedTokenizerBase:
    """The word-level tokenizer: ``<unk>`` = 0, ``<bos>`` = 1, ``yes`` = 2, ``no`` = 3,
    then :data:`WORDS` (4-35)."""
    return word_tokenizer((YES, NO, *WORDS), bos_token=BOS)


def _config(vocab_size: int, bos_id: int) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size, n_positions=N_POSITIONS, n_embd=D_MODEL, n_layer=2,
        n_head=N_HEADS, n_inner=D_MLP, activation_function="gelu_new",
        layer_norm_epsilon=LN_EPS, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        tie_word_embeddings=False, bos_token_id=bos_id, eos_token_id=bos_id,
    )


def _indicator_layernorm(ln: torch.nn.LayerNorm, entries: int) -> None:
    """Set ``ln`` so that an input of ``entries`` entries ``EMBED_SCALE`` (rest 0) comes
    out as their 0/1 indicator: ``w * (x - mu) / sigma + b`` with ``w = sigma / s``,
    ``b = mu / s``."""
    s = EMBED_SCALE
    mu = entries * s / D_MODEL
    sigma = math.sqrt(entries * s * s / D_MODEL - mu * mu + LN_EPS)
    ln.weight.fill_(sigma / s)
    ln.bias.fill_(mu / s)


def _set_head_0(attn: Any, *, back: int, reads: Sequence[Sequence[int]],
                writes: Sequence[tuple[int, float]]) -> None:
    """Head 0 of ``attn``: attend ``back`` (0 or 1) positions back; value ``k`` is the sum
    of the residual coordinates ``reads[k]``; ``c_proj`` writes it to ``writes[k]`` =
    ``(coordinate, scale)``."""
    w = attn.c_attn.weight  # Conv1D [d_model, 3 * d_model]: q | k | v, heads in order
    q, k, v = 0, D_MODEL, 2 * D_MODEL  # head 0 is the first D_HEAD columns of each
    for i in range(back, N_POSITIONS):
        w[POSITION_DIMS + i, q + i - back] = QK_SCALE
    for j in range(N_POSITIONS):
        w[POSITION_DIMS + j, k + j] = 1.0
    for dim, (rows, (target, scale)) in enumerate(zip(reads, writes, strict=True)):
        for row in rows:
            w[row, v + dim] = 1.0
        attn.c_proj.weight[dim, target] = scale


def _token_groups(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int], list[int]]:
    """The token-block coordinates of group A, group B and every other token."""
    vocab = tokenizer.get_vocab()
    ids_a = [TOKEN_DIMS + vocab[w] for w in GROUP_A]
    ids_b = [TOKEN_DIMS + vocab[w] for w in GROUP_B]
    others = [TOKEN_DIMS + t for t in range(len(tokenizer)) if t not in {*ids_a, *ids_b}]
    return ids_a, ids_b, others


@torch.no_grad()
def make_model(variant: Variant) -> GPT2LMHeadModel:
    """The ``read`` or ``unread`` model, every parameter written explicitly (no randomness)."""
    if variant not in NAMES:
        raise ValueError(f"variant={variant!r}, but must be 'read' or 'unread'")
    tokenizer = make_tokenizer()
    vocab_size = len(tokenizer)
    if vocab_size > min(POSITION_DIMS - TOKEN_DIMS, D_HEAD):
        raise ValueError(f"{vocab_size} tokens do not fit the one-hot token block")
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
    for i in range(N_POSITIONS):
        model.transformer.wpe.weight[i, POSITION_DIMS + i] = EMBED_SCALE
    vocab = tokenizer.get_vocab()
    model.lm_head.weight[vocab[YES], YES_DIM] = UNEMBED_SCALE
    model.lm_head.weight[vocab[NO], NO_DIM] = UNEMBED_SCALE
    ids_a, ids_b, others = _token_groups(tokenizer)
    blocks: Any = model.transformer.h
    _indicator_layernorm(blocks[0].ln_1, entries=2)
    _set_head_0(blocks[0].attn, back=1, reads=[ids_a, ids_b, others],
                writes=[(FA, FEATURE_SCALE), (FB, FEATURE_SCALE), (NONE_DIM, FEATURE_SCALE)])
    _indicator_layernorm(blocks[1].ln_1, entries=3)
    answer = [(YES_DIM, ANSWER_SCALE), (NO_DIM, ANSWER_SCALE)]
    if variant == "read":
        _set_head_0(blocks[1].attn, back=0, reads=[[FA], [FB]], writes=answer)
    else:
        _set_head_0(blocks[1].attn, back=1, reads=[ids_a, ids_b], writes=answer)
    return model


def build(out_dir: str | Path, *, variant: Variant) -> Path:
    """Write the ``variant`` model (safetensors) and its tokenizer to ``out_dir``; return it.

    Deterministic: two builds give identical weights.  Takes well under a second.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    make_model(variant).save_pretrained(out)
    make_tokenizer().save_pretrained(out)
    return out


def build_read(out_dir: str | Path) -> Path:
    """The recipe of ``planted-feature-read``: :func:`build` with ``variant="read"``."""
    return build(out_dir, variant="read")


def build_unread(out_dir: str | Path) -> Path:
    """The recipe of ``planted-feature-unread``: :func:`build` with ``variant="unread"``."""
    return build(out_dir, variant="unread")


def feature_row(rng: random.Random, group: Literal["A", "B"]) -> dict[str, object]:
    """One prompt of 4-12 words (consecutive words distinct) whose second-to-last word is
    in ``group``.

    ``answer`` is ``yes`` for group A and ``no`` for B, ``wrong`` the other; ``corrupt``
    replaces the second-to-last word by a word of the other group (so its answer is
    ``wrong``).  ``positions`` has ``PREV`` (the second-to-last word) and ``END`` (the
    last), counting the ``<bos>`` the tokenizer prepends.  The extra columns are
    ``group_prev`` (``group``), ``group_last`` (the last word's group) and ``prev_word``.
    """
    length = rng.randint(MIN_WORDS, MAX_WORDS)
    own, other = (GROUP_A, GROUP_B) if group == "A" else (GROUP_B, GROUP_A)
    seq: list[str] = []
    for k in range(length):
        pool = own if k == length - 2 else WORDS
        seq.append(rng.choice([w for w in pool if not seq or w != seq[-1]]))
    swap = rng.choice([w for w in other if w not in (seq[-3], seq[-1])])
    answer, wrong = (YES, NO) if group == "A" else (NO, YES)
    return {
        "prompt": " ".join(seq),
        "answer": answer,
        "wrong": wrong,
        "corrupt": " ".join([*seq[:-2], swap, seq[-1]]),
        "positions": {"PREV": length - 1, "END": length},
        "group_prev": group,
        "group_last": "A" if seq[-1] in GROUP_A else "B",
        "prev_word": seq[-2],
    }


def feature_rows(*, n: int, seed: int) -> list[dict[str, object]]:
    """``n`` rows of :func:`feature_row`, seeded: half with a group A answer (one more
    if ``n`` is odd), in shuffled order."""
    rng = random.Random(seed)
    pair: list[Literal["A", "B"]] = ["A", "B"]
    groups = pair * (n // 2) + pair[:1] * (n % 2)
    rng.shuffle(groups)
    return [feature_row(rng, g) for g in groups]


def write_rows(path: str | Path, *, n: int = 200, seed: int = 0) -> Path:
    """Write :func:`feature_rows` to a JSONL file (folders created)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = feature_rows(n=n, seed=seed)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out
