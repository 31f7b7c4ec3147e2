"""What every trained zoo recipe shares: checkpoint steps, saving, and the build run.

A recipe module supplies its model, data and training loop; :func:`run_build` clears
the output folder, trains with the recipe's thread count, and writes ``recipe.json``
(the recipe, the loss history, the time taken and the torch version).  Inside
:func:`reporting`, a build reports each training step to a progress callback.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

__all__ = ["checkpoint_steps", "gpt2_model", "reporting", "run_build", "save_checkpoint"]

Progress = Callable[[int, int], None]
_PROGRESS: ContextVar[Progress | None] = ContextVar("mechcheck_zoo_progress", default=None)


@contextmanager
def reporting(progress: Progress) -> Iterator[None]:
    """Within this block, builds call ``progress(step, total)`` after each training step.

    Example::

        with reporting(lambda step, total: print(f"{step}/{total}")):
            zoo.build("induction-2l", "out")
    """
    token = _PROGRESS.set(progress)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def _step_counter(total: int) -> Any:
    """A handle on an optimizer hook that reports each step to the current progress
    callback; None outside :func:`reporting`."""
    progress = _PROGRESS.get()
    if progress is None:
        return None
    from torch.optim.optimizer import register_optimizer_step_post_hook

    done = [0]

    def count(optimizer: Any, args: Any, kwargs: Any) -> None:
        done[0] += 1
        progress(done[0], total)

    return register_optimizer_step_post_hook(count)


def gpt2_model(recipe: Any, tokenizer: Any, *, tie_embeddings: bool = True) -> Any:
    """A randomly initialised GPT-2 sized by ``recipe`` (seeded by ``recipe.seed``), with
    dropout 0 and eager attention, for ``tokenizer``'s vocabulary."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=recipe.n_positions, n_embd=recipe.d_model,
        n_layer=recipe.n_layers, n_head=recipe.n_heads, n_inner=recipe.d_mlp,
        activation_function="gelu", tie_word_embeddings=tie_embeddings,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.bos_token_id,
    )
    config._attn_implementation = "eager"
    torch.manual_seed(recipe.seed)
    return GPT2LMHeadModel(config).eval()


def checkpoint_steps(steps: int, checkpoints: Iterable[int]) -> list[int]:
    """Steps with a checkpoint folder, in training order; the last one is ``steps``."""
    return sorted({s for s in checkpoints if s < steps} | {steps})


def save_checkpoint(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save model and tokenizer (safetensors) into ``folder``, world-readable."""
    model.eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for path in folder.iterdir():
        path.chmod(0o644)  # safetensors are written 0600; the package must be readable


def _clear(out_dir: Path) -> None:
    """Remove an earlier build's checkpoint folders and recipe from ``out_dir``."""
    for child in out_dir.glob("step*"):
        if child.is_dir() and re.fullmatch(r"step\d+", child.name):
            shutil.rmtree(child)
    (out_dir / "recipe.json").unlink(missing_ok=True)


def run_build(out_dir: str | Path, recipe: Any, train: Callable[[Any, Path], list[dict]],
              record: Mapping[str, Any]) -> Path:
    """Train ``recipe`` into ``out_dir`` and write its ``recipe.json``.

    Args:
        out_dir: the folder to (re)write.
        recipe: a dataclass with ``steps``, ``checkpoints`` and ``threads``.
        train: ``train(recipe, out_dir) -> history``; saves the checkpoints itself.
        record: what ``recipe.json`` says besides the recipe, history and timing.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _clear(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    start = time.perf_counter()
    counter = _step_counter(recipe.steps)
    try:
        history = train(recipe, out)
    finally:
        torch.set_num_threads(threads)
        if counter is not None:
            counter.remove()
    body = {**record, "recipe": asdict(recipe),
            "checkpoints": [f"step{s}" for s in checkpoint_steps(recipe.steps,
                                                                  recipe.checkpoints)],
            "final": history[-1], "train_seconds": round(time.perf_counter() - start, 1),
            "torch": torch.__version__, "history": history}
    (out / "recipe.json").write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
    return out
