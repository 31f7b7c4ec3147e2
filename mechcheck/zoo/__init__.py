"""The zoo: tiny models that mechcheck trains (or plants) itself, shipped with the package.

``zoo:<name>`` in a claim file resolves here; ``zoo:<name>@<checkpoint>`` picks a
checkpoint saved during training.  Each model has a deterministic recipe in its own
module, run by ``mechcheck zoo build NAME``; the built weights (safetensors) live under
``mechcheck/zoo/weights/<name>/``, so claims need neither training nor network.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from mechcheck.errors import ModelLoadError, closest

__all__ = ["WEIGHTS", "build", "checkpoints", "names", "resolve"]

WEIGHTS = Path(__file__).parent / "weights"

# name -> module holding its recipe (a ``build(out_dir, ...)`` function)
_RECIPES = {
    "induction-2l": "mechcheck.zoo.induction",
    "ioi-small": "mechcheck.zoo.ioi",
    "planted-prevtoken": "mechcheck.zoo.planted",
}


def names() -> list[str]:
    """The zoo's model names."""
    return sorted(_RECIPES)


def _check_name(name: str) -> None:
    if name not in _RECIPES:
        near = closest(name, _RECIPES)
        hint = f"did you mean {near[0]}? " if near else ""
        raise ModelLoadError(f"no zoo model named '{name}'", key="model",
                             hint=f"{hint}zoo models: {', '.join(names())} (a new one needs a "
                             "recipe module here, then `mechcheck zoo build NAME`)")


def _step(folder: Path) -> tuple[int, str]:
    match = re.fullmatch(r"step(\d+)", folder.name)
    return (int(match.group(1)) if match else -1, folder.name)


def checkpoints(name: str) -> list[str]:
    """The checkpoints saved for ``name``, in training order (empty if none)."""
    _check_name(name)
    folder = WEIGHTS / name
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if (p / "config.json").is_file()]
    return [p.name for p in sorted(found, key=_step)]


def resolve(spec: str) -> Path:
    """The folder to load for ``name`` or ``name@checkpoint``.

    Without a checkpoint: the model's folder if the final weights sit there, else its
    last checkpoint.
    """
    name, _, checkpoint = spec.partition("@")
    _check_name(name)
    folder = WEIGHTS / name
    saved = checkpoints(name)
    if not folder.is_dir() or not ((folder / "config.json").is_file() or saved):
        raise ModelLoadError(f"zoo model '{name}' is not built", key="model",
                             hint=f"run `mechcheck zoo build {name}`")
    if checkpoint:
        if checkpoint not in saved:
            near = closest(checkpoint, saved)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ModelLoadError(f"zoo model '{name}' has no checkpoint '{checkpoint}'",
                                 key="model",
                                 hint=f"{hint}its checkpoints: "
                                 f"{', '.join(saved) or 'none (it has only final weights)'}; "
                                 "a claim's checkpoint comes from @<checkpoint>, the file's "
                                 "checkpoints: or --mechcheck-checkpoints")
        return folder / checkpoint
    return folder if (folder / "config.json").is_file() else folder / saved[-1]


def build(name: str, out_dir: str | Path | None = None, *, steps: int | None = None) -> Path:
    """Run ``name``'s recipe into ``out_dir`` (default: the shipped weights folder).

    ``steps`` overrides the recipe's number of training steps (recipes that train only).
    """
    _check_name(name)
    module = importlib.import_module(_RECIPES[name])
    extra = {"steps": steps} if steps is not None else {}
    return module.build(Path(out_dir) if out_dir else WEIGHTS / name, **extra)
