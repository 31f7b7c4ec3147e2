"""Attention-pattern figures for the zoo's documentation pages.

``python -m mechcheck.zoo.figures`` redraws ``docs/zoo/<name>.png`` for every zoo model
from a sample prompt of its own task, so the pictures in the docs always show the
shipped weights.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

__all__ = ["SAMPLES", "attention_grid", "main"]

# A sample prompt per zoo model: (model spec, a function of the tokenizer -> prompt)
SAMPLES: dict[str, Any] = {}


def _first_row(task: str, **params: Any) -> Any:
    def prompt(tokenizer: Any) -> str:
        from mechcheck.plugins import Registry

        spec = {"name": task, "n": 1, "seed": 0, **params}
        return Registry.from_plugins().tasks[task].rows(tokenizer, spec)[0]["prompt"]

    return prompt


def _planted_prompt(tokenizer: Any) -> str:
    from mechcheck.zoo.planted import planted_rows

    return str(planted_rows(n=1, seed=0)[0]["prompt"])


SAMPLES.update({
    "induction-2l": _first_row("induction"),
    "ioi-small": _first_row("ioi"),
    "planted-prevtoken": _planted_prompt,
})


def attention_grid(spec: str, prompt: str, path: str | Path, *, title: str = "") -> Path:
    """Draw every head's attention pattern on ``prompt`` as one PNG grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mechcheck.models.archs import BUILTIN_ARCHS
    from mechcheck.models.loading import eager_attention, load_model

    loaded = load_model(spec, archs=BUILTIN_ARCHS, device="cpu")
    ids = loaded.tokenizer(prompt, return_tensors="pt")["input_ids"]
    with eager_attention(loaded.model), torch.inference_mode():
        attentions = loaded.model(input_ids=ids, output_attentions=True).attentions
    labels = loaded.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    dims = loaded.adapter.dims
    fig = Figure(figsize=(2.6 * dims.n_heads, 2.6 * dims.n_layers + 0.6))
    FigureCanvasAgg(fig)
    for layer, pattern in enumerate(attentions):
        for head in range(dims.n_heads):
            ax = fig.add_subplot(dims.n_layers, dims.n_heads, layer * dims.n_heads + head + 1)
            ax.imshow(pattern[0, head].float().numpy(), cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"head {layer}.{head}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title or f"{spec}: attention (query rows, key columns) on\n"
                 f"{' '.join(labels)[:110]}", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, metadata={"Software": None})
    return path


def main(argv: list[str] | None = None) -> int:
    """Redraw the figures of the given zoo models (default: all) into docs/zoo/."""
    from mechcheck import zoo

    out = Path(__file__).resolve().parents[2] / "docs" / "zoo"
    for name in (argv if argv else zoo.names()):
        from transformers import AutoTokenizer

        spec = f"zoo:{name}"
        prompt = SAMPLES[name](AutoTokenizer.from_pretrained(zoo.resolve(name)))
        print(attention_grid(spec, prompt, out / f"{name}.png"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
