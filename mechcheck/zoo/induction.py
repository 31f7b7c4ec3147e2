"""Recipe of the zoo model ``induction-2l``: a 2-layer GPT-2 that learns in-context copying.

The model is trained from scratch on CPU, deterministically, on sequences of random words
in which segments repeat at random offsets and with random periods (the shortest period
is 2, as in "A B A B"): the only way to beat the unigram loss on a repeat is to find the
earlier occurrence of the current word and copy the word that followed it. Checkpoints
``step{N}`` are saved before, during and after the phase change (steps 200-400) in which
the loss on the repeated words drops abruptly (from about 2.0 to 0.6 nats).

What it learns (measured on ``claims/zoo/induction.jsonl``, see
``docs/zoo/induction-2l.md``): layer 0 holds previous-token heads and the four layer-1
heads are induction heads, attending from the current word to the position right after
its earlier occurrence and copying the word found there.

Why the shortest period matters: when every repeat is at least three words from its
source (as in an earlier version of this recipe), circuits shifted along the source
solve the task as well as the textbook one, and the trained models used them: their
layer-1 heads attended two (or, with denser repeats, three) positions past the earlier
occurrence, reading the answer that a layer-0 head had moved there. A circuit shifted by
two or more cannot predict period-2 repeats, whose source is too close; with them in the
data, every seed tried (six) learned textbook induction heads.

:func:`induction_rows` makes evaluation prompts for claims about the model.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel, PreTrainedTokenizerBase

from mechcheck.models.tiny import word_tokenizer
from mechcheck.zoo import _recipes

__all__ = [
    "BOS", "NAME", "RECIPE", "WORDS", "Recipe", "build", "checkpoint_steps", "induction_rows",
    "make_model", "make_tokenizer", "training_batch", "write_rows",
]  # fmt: skip

NAME = "induction-2l"
BOS = "<bos>"
WORDS: tuple[str, ...] = (
    "apple", "river", "stone", "cloud", "green", "table", "music", "horse",
    "paper", "light", "glass", "tiger", "bread", "chair", "ocean", "pencil",
    "garden", "silver", "window", "forest", "candle", "rocket", "butter", "mirror",
    "planet", "basket", "button", "camera", "dragon", "engine", "finger", "hammer",
    "island", "jacket", "kettle", "ladder", "magnet", "needle", "orange", "pepper",
    "rabbit", "saddle", "ticket", "violin", "wallet", "yellow", "anchor", "bridge",
    "carpet", "desert", "feather", "guitar", "helmet", "jungle", "lemon", "marble",
    "night", "olive", "pillow", "quartz", "robot", "summer", "tunnel", "wagon",
)  # fmt: skip


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the trained weights (recorded in ``recipe.json``).

    Attributes:
        seed: seeds model init (``torch.manual_seed``) and, offset by 1 and 2, the training
            and evaluation data generators.
        n_layers: transformer blocks.
        n_heads: attention heads per block.
        d_model: residual width.
        d_mlp: MLP hidden width.
        n_positions: context length; training sequences fill it (BOS + ``n_positions - 1``).
        batch_size: sequences per step.
        copy_start: probability that a word outside a copy starts a copy.
        copy_continue: probability that a copy goes on for one more word.
        min_period: the shortest distance between a copied word and its source. With 2,
            repeats such as "A B A B" occur and textbook induction heads form; with 3,
            the model learned a shifted circuit instead (see the module docstring).
        tie_embeddings: share token embedding and unembedding (tied, no circuit had formed
            after 1500 steps in three seeds).
        lr: AdamW learning rate (after linear warm-up).
        betas: AdamW betas.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        steps: optimiser steps in all.
        checkpoints: steps at which a checkpoint folder ``step{N}`` is saved (plus ``steps``).
        log_every: evaluate the held-out losses every this many steps.
        eval_size: held-out sequences for the recorded losses.
        threads: ``torch.set_num_threads`` during training; one thread is about as fast
            for a model this small and several times faster when the cores are shared.
    """

    seed: int = 2024
    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_mlp: int = 128
    n_positions: int = 32
    batch_size: int = 64
    copy_start: float = 0.2
    copy_continue: float = 0.9
    min_period: int = 2
    tie_embeddings: bool = False
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    warmup_steps: int = 50
    steps: int = 1500
    checkpoints: tuple[int, ...] = (0, 100, 200, 250, 300, 350, 400, 500, 1000)
    log_every: int = 50
    eval_size: int = 256
    threads: int = 1


RECIPE = Recipe()


def make_tokenizer() -> PreTrainedTokenizerBase:
    """The word-level tokenizer of the model: ``<unk>``, ``<bos>``, then :data:`WORDS`."""
    return word_tokenizer(WORDS, bos_token=BOS)


def make_model(recipe: Recipe = RECIPE) -> GPT2LMHeadModel:
    """The randomly initialised model (seeded by ``recipe.seed``), all dropout 0."""
    return _recipes.gpt2_model(recipe, make_tokenizer(), tie_embeddings=recipe.tie_embeddings)


def _repeating_sequence(rng: random.Random, recipe: Recipe, n_words: int) -> tuple[list, list]:
    """Word indices (``n_positions - 1`` of them) and a flag per index: induction-predictable.

    A left-to-right process: outside a copy, the next word starts a copy with probability
    ``copy_start`` (it repeats the word at a uniformly random earlier position at least
    ``min_period`` back), else it is a uniformly random word. Inside a copy,
    with probability ``copy_continue`` the next word is the one that followed the copied
    word (flagged predictable), else the copy ends. Copies thus start at random offsets
    and repeat with random periods, so position alone says nothing about where a repeat is.
    """
    seq: list[int] = []
    flags: list[bool] = []
    src: int | None = None
    while len(seq) < recipe.n_positions - 1:
        if src is not None and rng.random() < recipe.copy_continue:
            src += 1
            seq.append(seq[src])
            flags.append(True)
            continue
        src = None
        if len(seq) >= recipe.min_period and rng.random() < recipe.copy_start:
            src = rng.randrange(len(seq) - recipe.min_period + 1)
            seq.append(seq[src])
        else:
            seq.append(rng.randrange(n_words))
        flags.append(False)
    return seq, flags


def training_batch(
    rng: random.Random, recipe: Recipe, batch_size: int, *, first_id: int = 2, bos_id: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of training sequences.

    Each sequence is BOS followed by random words in which segments repeat at random
    offsets and with random periods (see ``_repeating_sequence``).

    Args:
        rng: the data generator (advanced in place).
        recipe: sizes and segment parameters.
        batch_size: number of sequences.
        first_id: token id of the first word (words are ``first_id..first_id+len(WORDS)-1``).
        bos_id: token id of BOS.

    Returns:
        ``(ids, mask)``: ids ``[batch, n_positions]`` starting with BOS, and a bool mask
        ``[batch, n_positions - 1]`` marking the targets ``ids[:, 1:]`` that an induction
        head can predict (second and later words of a repeated copy).
    """
    rows, masks = [], []
    for _ in range(batch_size):
        seq, flags = _repeating_sequence(rng, recipe, len(WORDS))
        rows.append([bos_id] + [first_id + w for w in seq])
        masks.append(flags)
    return torch.tensor(rows), torch.tensor(masks)


def _token_losses(model: GPT2LMHeadModel, ids: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=ids).logits[:, :-1].transpose(1, 2)
    return F.cross_entropy(logits, ids[:, 1:], reduction="none")


@torch.no_grad()
def _evaluate(model: GPT2LMHeadModel, batch: tuple[torch.Tensor, torch.Tensor]) -> dict:
    ids, mask = batch
    losses = _token_losses(model, ids)
    parts = {"loss": losses, "loss_repeated": losses[mask], "loss_other": losses[~mask]}
    return {key: round(value.mean().item(), 4) for key, value in parts.items()}


def checkpoint_steps(recipe: Recipe = RECIPE) -> list[int]:
    """Steps with a checkpoint folder, in training order; the last one is ``recipe.steps``."""
    return _recipes.checkpoint_steps(recipe.steps, recipe.checkpoints)


def _optimizer(model: GPT2LMHeadModel, recipe: Recipe) -> tuple[Any, Any]:
    opt = torch.optim.AdamW(
        model.parameters(), lr=recipe.lr, betas=recipe.betas, weight_decay=recipe.weight_decay
    )
    warmup = max(1, recipe.warmup_steps)
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))


def _train(recipe: Recipe, out_dir: Path) -> list[dict]:
    tokenizer, model = make_tokenizer(), make_model(recipe)
    data_rng = random.Random(recipe.seed + 1)
    eval_batch = training_batch(random.Random(recipe.seed + 2), recipe, recipe.eval_size)
    opt, sched = _optimizer(model, recipe)
    saves, history = set(checkpoint_steps(recipe)), []
    for step in range(recipe.steps + 1):
        if step in saves:
            _recipes.save_checkpoint(model, tokenizer, out_dir / f"step{step}")
        if step % recipe.log_every == 0 or step in saves:
            history.append({"step": step, **_evaluate(model, eval_batch)})
        if step == recipe.steps:
            break
        model.train()
        ids, _ = training_batch(data_rng, recipe, recipe.batch_size)
        loss = _token_losses(model, ids).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return history


def build(out_dir: str | Path, *, steps: int | None = None, recipe: Recipe = RECIPE) -> Path:
    """Train the model from its recipe and save its checkpoints under ``out_dir``.

    Writes ``out_dir/step{N}/`` (model + tokenizer) for each of :func:`checkpoint_steps`
    and ``out_dir/recipe.json`` (the recipe, the loss history and the training time).
    Earlier ``step*`` folders in ``out_dir`` are removed first.

    Args:
        out_dir: the folder to write.
        steps: train for this many steps instead of ``recipe.steps`` (checkpoints after it
            are dropped; the last one is always ``steps``).
        recipe: the recipe to run.

    Returns:
        ``out_dir``.
    """
    if steps is not None:
        recipe = replace(recipe, steps=steps)
    return _recipes.run_build(out_dir, recipe, _train, _RECORD)


_RECORD: dict[str, Any] = {
    "name": NAME,
    "architecture": "GPT2LMHeadModel",
    "tokenizer": {"type": "WordLevel", "bos_token": BOS, "words": len(WORDS)},
}


def _distinct(rng: random.Random, pool: Sequence[str], n: int, exclude: set[str]) -> list[str]:
    return rng.sample([w for w in pool if w not in exclude], n)


def _induction_row(rng: random.Random, words: Sequence[str]) -> dict[str, str]:
    seg_len = rng.randint(4, 8)
    lead, gap = rng.randint(2, 8), rng.randint(2, 8)
    first = _distinct(rng, words, lead + seg_len + gap, set())
    segment = first[lead : lead + seg_len]
    shown = rng.randint(2, seg_len - 1)
    prompt = first + segment[:shown]
    others = _distinct(rng, words, seg_len + 1, set(first))
    corrupt = first[:lead] + others[:seg_len] + first[lead + seg_len :] + segment[:shown]
    return {
        "prompt": " ".join(prompt),
        "answer": segment[shown],
        "wrong": others[seg_len],
        "corrupt": " ".join(corrupt),
    }


def induction_rows(
    tokenizer_or_words: PreTrainedTokenizerBase | Sequence[str] | None = None,
    *,
    n: int,
    seed: int,
) -> list[dict[str, str]]:
    """Prompts whose next word is predictable only by induction.

    A prompt is ``lead`` (2-8 random words), a ``segment`` (4-8 words), a ``gap`` (2-8
    words), then the first 2..len-1 words of the segment again; all words of the first
    three parts are distinct, so the last word occurred exactly once before and the
    ``answer`` is the word that followed it there. ``corrupt`` replaces the first
    occurrence of the segment by as many words that appear nowhere in the prompt, so no
    earlier occurrence points to the answer. ``wrong`` is a vocabulary word that appears in
    neither prompt. Every word is one token; prompt and corrupt have equal token counts.

    Args:
        tokenizer_or_words: the vocabulary, or a word-level tokenizer whose vocabulary
            (special tokens excluded) is used; default :data:`WORDS`.
        n: number of rows.
        seed: seeds the row generator.

    Returns:
        ``n`` rows with keys ``prompt``, ``answer``, ``wrong`` and ``corrupt``.

    Raises:
        ValueError: the vocabulary has fewer than 40 words.
    """
    words = _vocabulary(tokenizer_or_words)
    if len(words) < 40:
        raise ValueError(f"induction rows need at least 40 words, got {len(words)}")
    rng = random.Random(seed)
    return [_induction_row(rng, words) for _ in range(n)]


def _vocabulary(source: PreTrainedTokenizerBase | Sequence[str] | None) -> list[str]:
    if source is None:
        return list(WORDS)
    if isinstance(source, PreTrainedTokenizerBase):
        vocab = source.get_vocab()
        special = set(source.all_special_tokens)
        return [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if w not in special]
    return list(dict.fromkeys(source))


def write_rows(path: str | Path, *, n: int = 200, seed: int = 0) -> Path:
    """Write :func:`induction_rows` over :data:`WORDS` to a JSONL file (folders created),
    with named positions: ``END`` (the last token), ``NEXT`` and ``NEXT2`` (one and two
    after the earlier occurrence of the last word)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = make_tokenizer()
    rows = [_with_positions(r, tokenizer) for r in induction_rows(WORDS, n=n, seed=seed)]
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def _with_positions(row: dict[str, Any], tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    ids = tokenizer(row["prompt"])["input_ids"]
    end = len(ids) - 1
    earlier = max(i for i in range(end) if ids[i] == ids[end])
    return {**row, "positions": {"END": end, "NEXT": earlier + 1, "NEXT2": earlier + 2}}
