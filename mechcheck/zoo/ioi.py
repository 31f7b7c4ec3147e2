"""``zoo:ioi-small``: a 4-layer GPT-2 trained from scratch to do indirect-object
identification.

The model reads word-level IOI sentences (:mod:`mechcheck.tasks.ioi`, punctuation as
separate words) such as ``"When Mary and John went to the store , John gave a drink to
Mary"`` and is trained as a language model on every token of them, so at the last word
of a prompt it must name the person who was mentioned once (the indirect object, IO)
rather than the one mentioned twice (the subject, S), as in Wang et al. (arXiv
2211.00593).  Training is fully seeded and takes about 3-5 minutes on one CPU thread
(3000 AdamW steps of 64 sentences); the model learns the task abruptly between steps
500 and 750.

:func:`build` writes ``step{N}/`` checkpoint folders (weights as safetensors plus the
tokenizer; steps 500, 1000 and 3000, the last being the model ``zoo:ioi-small``
loads) and ``recipe.json`` (the recipe, the held-out IO-vs-S accuracy and logit
difference during training, and the training time).  What the trained model does is
stated, with measured values, in ``claims/zoo/test_ioi_small.yaml``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import GPT2LMHeadModel, PreTrainedTokenizerBase

from mechcheck.models.tiny import word_tokenizer
from mechcheck.tasks.ioi import IOIPools, ioi_pools, ioi_row, ioi_rows, ioi_vocabulary
from mechcheck.zoo import _recipes

__all__ = [
    "BOS",
    "NAME",
    "RECIPE",
    "WORDS",
    "Recipe",
    "build",
    "checkpoint_steps",
    "evaluate_ioi",
    "make_model",
    "make_tokenizer",
    "training_batch",
]

NAME = "ioi-small"
BOS = "<bos>"
WORDS: tuple[str, ...] = tuple(ioi_vocabulary())


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the trained weights (recorded in ``recipe.json``).

    Attributes:
        seed: seeds model init (``torch.manual_seed``) and, offset by 1 and 2, the
            training and held-out sentence generators.
        n_layers: transformer blocks.
        n_heads: attention heads per block.
        d_model: residual width.
        d_mlp: MLP hidden width.
        n_positions: context length (the longest sentence is 23 tokens with BOS).
        batch_size: sentences per step.
        lr: AdamW peak learning rate (linear warm-up, then cosine decay to 10%).
        betas: AdamW betas.
        weight_decay: AdamW weight decay.
        warmup_steps: linear learning-rate warm-up.
        steps: optimiser steps in all.
        checkpoints: steps at which a checkpoint folder ``step{N}`` is saved (plus
            ``steps``).
        log_every: evaluate on the held-out prompts every this many steps.
        eval_size: held-out prompts for the recorded accuracy and logit difference.
        threads: ``torch.set_num_threads`` during training; one thread is as fast for a
            model this small, far faster when the cores are shared, and keeps the
            reductions in one order.
    """

    seed: int = 2024
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 64
    d_mlp: int = 256
    n_positions: int = 32
    batch_size: int = 64
    lr: float = 2e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    warmup_steps: int = 100
    steps: int = 3000
    checkpoints: tuple[int, ...] = (500, 1000)
    log_every: int = 250
    eval_size: int = 512
    threads: int = 1


RECIPE = Recipe()


def make_tokenizer() -> PreTrainedTokenizerBase:
    """The word-level tokenizer: ``<unk>``, ``<bos>``, then :data:`WORDS`."""
    return word_tokenizer(WORDS, bos_token=BOS)


def make_model(recipe: Recipe = RECIPE) -> GPT2LMHeadModel:
    """The randomly initialised model (seeded by ``recipe.seed``), all dropout 0."""
    return _recipes.gpt2_model(recipe, make_tokenizer())


def training_batch(rng: random.Random, tokenizer: PreTrainedTokenizerBase,
                   pools: IOIPools, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of whole IOI sentences (prompt followed by the IO name).

    Args:
        rng: the sentence generator (advanced in place).
        tokenizer: the model's tokenizer (adds BOS).
        pools: the task's word pools for that tokenizer.
        batch_size: number of sentences.

    Returns:
        ``(ids, mask)``: ids ``[batch, longest]``, right-padded with BOS, and a bool
        mask ``[batch, longest - 1]`` marking the targets ``ids[:, 1:]`` that are real
        tokens (not padding).
    """
    rows = [ioi_row(rng, tokenizer, pools) for _ in range(batch_size)]
    encoded = [tokenizer(r["prompt"] + r["answer"])["input_ids"] for r in rows]
    width = max(len(e) for e in encoded)
    ids = torch.full((batch_size, width), tokenizer.bos_token_id, dtype=torch.long)
    mask = torch.zeros(batch_size, width - 1, dtype=torch.bool)
    for b, seq in enumerate(encoded):
        ids[b, : len(seq)] = torch.tensor(seq)
        mask[b, : len(seq) - 1] = True
    return ids, mask


@torch.no_grad()
def evaluate_ioi(model: GPT2LMHeadModel, tokenizer: PreTrainedTokenizerBase,
                 rows: list[dict[str, Any]]) -> dict[str, float]:
    """Held-out IOI behaviour at the last prompt token (prompts batched by length).

    Returns:
        ``accuracy`` (share of prompts with logit(IO) > logit(S)), ``logit_diff`` (mean
        logit(IO) - logit(S)) and ``p_io`` (mean probability of IO).
    """
    model.eval()
    by_length: dict[int, list[tuple[list[int], int, int]]] = {}
    for row in rows:
        ids = tokenizer(row["prompt"])["input_ids"]
        io, s = (tokenizer(row[k], add_special_tokens=False)["input_ids"][0]
                 for k in ("answer", "wrong"))
        by_length.setdefault(len(ids), []).append((ids, io, s))
    diffs, probs = [], []
    for group in by_length.values():
        logits = model(input_ids=torch.tensor([g[0] for g in group])).logits[:, -1]
        io, s = torch.tensor([g[1] for g in group]), torch.tensor([g[2] for g in group])
        picked = logits.gather(1, torch.stack([io, s], 1))
        diffs += (picked[:, 0] - picked[:, 1]).tolist()
        probs += logits.softmax(-1).gather(1, io[:, None])[:, 0].tolist()
    return {
        "accuracy": round(sum(d > 0 for d in diffs) / len(diffs), 4),
        "logit_diff": round(sum(diffs) / len(diffs), 4),
        "p_io": round(sum(probs) / len(probs), 4),
    }


def checkpoint_steps(recipe: Recipe = RECIPE) -> list[int]:
    """Steps with a checkpoint folder, in training order; the last one is ``recipe.steps``."""
    return _recipes.checkpoint_steps(recipe.steps, recipe.checkpoints)


def _schedule(recipe: Recipe) -> Any:
    """Linear warm-up to 1, then cosine decay to 0.1 at ``recipe.steps``."""

    def factor(step: int) -> float:
        if step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        done = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * min(1.0, done)))

    return factor


def _step(model: GPT2LMHeadModel, opt: torch.optim.Optimizer,
          batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    ids, mask = batch
    model.train()
    logits = model(input_ids=ids).logits[:, :-1]
    losses = F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    loss = losses[mask].mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return float(loss.detach())


def _train(recipe: Recipe, out_dir: Path) -> list[dict]:
    tokenizer = make_tokenizer()
    pools = ioi_pools(tokenizer)
    model = make_model(recipe)
    data_rng = random.Random(recipe.seed + 1)
    held_out = ioi_rows(tokenizer, n=recipe.eval_size, seed=recipe.seed + 2)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, betas=recipe.betas,
                            weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(recipe))
    saves, history, loss = set(checkpoint_steps(recipe)), [], float("nan")
    for step in range(recipe.steps + 1):
        if step in saves:
            _recipes.save_checkpoint(model, tokenizer, out_dir / f"step{step}")
        if step % recipe.log_every == 0 or step in saves:
            history.append({"step": step, "train_loss": round(loss, 4),
                            **evaluate_ioi(model, tokenizer, held_out)})
        if step == recipe.steps:
            break
        loss = _step(model, opt, training_batch(data_rng, tokenizer, pools, recipe.batch_size))
        sched.step()
    return history


def build(out_dir: str | Path, *, steps: int | None = None, recipe: Recipe = RECIPE) -> Path:
    """Train the model from its recipe and save it under ``out_dir``.

    Writes ``out_dir/step{N}/`` (model + tokenizer) for each of :func:`checkpoint_steps`
    and ``out_dir/recipe.json``.  Earlier ``step*`` folders in ``out_dir`` are removed
    first.

    Args:
        out_dir: the folder to write.
        steps: train for this many steps instead of ``recipe.steps`` (checkpoints after
            it are dropped; the last one is always ``steps``).
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
    "task": "ioi (mechcheck.tasks.ioi), whole sentences, next-token loss on every token",
}
