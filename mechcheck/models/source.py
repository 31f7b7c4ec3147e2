"""A model's identity: a claim's ``model:`` value parsed into a :class:`ModelSource`.

The loader parses each claim's ``model:`` once (``ClaimSpec.source``); loading,
checkpoints and reports use that source.  Nothing here loads a model (or imports
torch).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

from mechcheck.errors import ModelLoadError

__all__ = ["ModelSource", "parse_source", "with_checkpoint"]

_SCHEME = re.compile(r"(?P<kind>[a-z][a-z0-9_-]+):(?P<rest>.*)", re.DOTALL)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSource:
    """Where a model comes from: ``kind`` is ``folder``, ``hf``, ``zoo``, ``gguf`` or a
    plugin's scheme (the part before the colon of ``model: <scheme>:<name>[@<rev>]``)."""

    kind: str
    name: str
    revision: str | None = None

    def at(self, checkpoint: str | None) -> ModelSource:
        """This source at ``checkpoint``, as :func:`with_checkpoint` names it: the revision
        of an ``hf:``, ``zoo:`` or ``gguf:`` model, a subfolder of a local one."""
        if checkpoint is None:
            return self
        if self.kind == "folder":
            return replace(self, name=str((Path(self.name) / checkpoint).resolve()))
        return replace(self, revision=checkpoint)

    def __str__(self) -> str:
        if self.kind == "folder":
            return self.name
        suffix = f"@{self.revision}" if self.revision else ""
        return f"{self.kind}:{self.name}{suffix}"


def parse_source(spec: str, *, base_dir: str | os.PathLike = ".") -> ModelSource:
    """Read a ``model:`` value into a :class:`ModelSource` (no loading)."""
    if spec.startswith("gguf:"):
        where, _, revision = spec[len("gguf:"):].partition("@")
        if not where:
            raise ModelLoadError(
                f"'{spec}' names no file", key="model",
                hint="write gguf:<path to a .gguf file> or gguf:<python-package>/<file>")
        path = Path(where).expanduser()
        if not path.is_absolute():
            path = Path(base_dir) / path
        name = str(path.resolve()) if path.is_file() else where
        return ModelSource(kind="gguf", name=name, revision=revision or None)
    for kind in ("hf", "zoo"):
        if spec.startswith(f"{kind}:"):
            name, _, revision = spec[len(kind) + 1 :].partition("@")
            if not name:
                raise ModelLoadError(
                    f"'{spec}' names no model", key="model",
                    hint=f"write {kind}:<name>, e.g. hf:gpt2 or zoo:induction-2l",
                )
            return ModelSource(kind=kind, name=name, revision=revision or None)
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    scheme = _SCHEME.fullmatch(spec)
    if scheme is not None and not path.exists():  # a plugin's source, not a folder
        name, _, revision = scheme.group("rest").partition("@")
        return ModelSource(kind=scheme.group("kind"), name=name, revision=revision or None)
    return ModelSource(kind="folder", name=str(path.resolve()))


def with_checkpoint(spec: str, checkpoint: str | None) -> str:
    """The ``model:`` value for one checkpoint of ``spec``.

    ``hf:`` and ``zoo:`` models take the checkpoint as their revision
    (``hf:EleutherAI/pythia-70m@step1000``); a local folder takes it as a subfolder.
    """
    if checkpoint is None:
        return spec
    for kind in ("hf:", "zoo:", "gguf:"):
        if spec.startswith(kind):
            return f"{spec.partition('@')[0]}@{checkpoint}"
    return str(Path(spec) / checkpoint)
