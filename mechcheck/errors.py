"""The mechcheck exception tree.

Every error a researcher can cause (a malformed claim file, an unknown component, a
prompt of the wrong length, a model that cannot be found) is a :class:`MechcheckError`
that carries *where* it happened and *how to fix it* as fields, so the pytest plugin can
print it without a traceback and the report can store it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

__all__ = [
    "AddressError",
    "ClaimSpecError",
    "DataError",
    "MechcheckError",
    "ModelLoadError",
    "ModelUnavailableError",
    "RunError",
    "closest",
    "describe_exception",
    "raised_in_mechcheck",
]


_E = TypeVar("_E", bound="MechcheckError")
_LOCATION = ("path", "line", "claim_id", "key", "hint")

class MechcheckError(Exception):
    """Base class of all errors that mechcheck reports to the user.

    Args:
        message: what went wrong, one sentence.
        path: the claim or data file concerned.
        line: 1-based line in ``path``.
        claim_id: the ``id`` of the claim concerned.
        key: the claim-file key concerned (``components``, ``data``, ...).
        hint: what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        claim_id: str | None = None,
        key: str | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.claim_id = claim_id
        self.key = key
        self.hint = hint

    def located(self: _E, **fields: Any) -> _E:
        """A copy of this error with the location fields that are still unset filled in.

        The error itself is never changed, so one error kept (a model that failed to
        load, say) can be located anew for each claim that meets it.
        """
        import copy

        located = copy.copy(self)
        for name, value in fields.items():
            if name not in _LOCATION:
                raise TypeError(f"located() takes {', '.join(_LOCATION)}, not {name!r}")
            if getattr(located, name, None) is None and value is not None:
                setattr(located, name, value)
        return located

    @property
    def location(self) -> str:
        """``path:line: claim 'id', key 'k'`` with the parts that are known."""
        parts = []
        if self.path is not None:
            parts.append(f"{self.path}:{self.line}" if self.line is not None else self.path)
        where = []
        if self.claim_id is not None:
            where.append(f"claim '{self.claim_id}'")
        if self.key is not None:
            where.append(f"key '{self.key}'")
        if where:
            parts.append(", ".join(where))
        return ": ".join(parts)

    def __str__(self) -> str:
        text = f"{self.location}: {self.message}" if self.location else self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class ClaimSpecError(MechcheckError):
    """A claim file (or a claim in it) does not follow the claim-file format."""


class AddressError(MechcheckError):
    """A component address is malformed or names a component the model lacks."""


class DataError(MechcheckError):
    """A data row cannot be used: wrong token count, missing column, bad position."""


class ModelLoadError(MechcheckError):
    """A model or tokenizer cannot be found or loaded."""


class ModelUnavailableError(ModelLoadError):
    """An ``hf:`` model is neither in the local HF cache nor reachable on the hub."""


class RunError(MechcheckError):
    """A forward pass (a shared clean/corrupt run or a patched run) could not complete:
    the model, a plugin's code or the machine (out of memory) raised."""


def closest(word: str, candidates: Iterable[str], *, n: int = 3) -> list[str]:
    """Up to ``n`` candidates close to ``word`` (difflib), best first."""
    import difflib

    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)


def _frames(exc: BaseException) -> list[Any]:
    import traceback

    return list(traceback.extract_tb(exc.__traceback__))


def raised_in_mechcheck(exc: BaseException) -> bool:
    """Whether ``exc`` was raised by mechcheck's own code (a bug), not by code it called
    (the model, torch, a plugin): the innermost frame of its traceback is in mechcheck."""
    import os

    frames = _frames(exc)
    if not frames:
        return False
    package = os.path.dirname(os.path.abspath(__file__))
    return os.path.abspath(frames[-1].filename).startswith(package + os.sep)


def describe_exception(exc: BaseException) -> str:
    """``Type: message (raised in file:line, in function)``, naming the first frame
    outside mechcheck below mechcheck's last frame: the code mechcheck called that
    failed (a plugin's function, the model's forward, torch)."""
    import os

    package = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = _frames(exc)
    last_ours = max((i for i, f in enumerate(frames)
                     if os.path.abspath(f.filename).startswith(package)), default=-1)
    outside = frames[last_ours + 1:] if last_ours + 1 < len(frames) else frames[-1:]
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    # torch's module-call machinery says nothing: name the code it called
    named = [f for f in outside if not _is_torch_machinery(f.filename)] or outside[-1:]
    if named:
        frame = named[0]
        text += f" (raised in {frame.filename}:{frame.lineno}, in {frame.name})"
    return text


def _is_torch_machinery(filename: str) -> bool:
    normal = filename.replace("\\", "/")
    return "/torch/nn/modules/module.py" in normal or "/torch/utils/" in normal
