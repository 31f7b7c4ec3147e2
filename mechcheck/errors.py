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
    "closest",
]


_E = TypeVar("_E", bound="MechcheckError")

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
        """Return this error with the location fields that are still unset filled in."""
        for name, value in fields.items():
            if getattr(self, name, None) is None and value is not None:
                setattr(self, name, value)
        return self

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


def closest(word: str, candidates: Iterable[str], *, n: int = 3) -> list[str]:
    """Up to ``n`` candidates close to ``word`` (difflib), best first."""
    import difflib

    return difflib.get_close_matches(word, list(candidates), n=n, cutoff=0.5)
