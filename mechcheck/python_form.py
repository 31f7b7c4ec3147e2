"""Claims written in Python: the ``mechcheck`` fixture's :class:`Checker`.

A Python claim is the same mapping a YAML claim file holds, passed as keyword
arguments; it goes through the same loader (:func:`~mechcheck.spec.loader.parse_claim_mapping`:
the same keys and errors, located at the test function's line), the same engine and
into the same report.  Several claims passed to one :meth:`Checker.check_all`
call form one family for the multiple-comparison correction.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from mechcheck.errors import ClaimSpecError
from mechcheck.report.results import ClaimResult
from mechcheck.session import Session

__all__ = ["Checker", "plain_claim", "plain_key", "plain_value"]


class Checker:
    """Evaluates claims given as keyword arguments; fails the test if one fails.

    Args:
        session: the mechcheck session (shared with YAML claim files).
        path: the test file; relative ``model:``/``data:`` paths resolve against its folder.
        shown: the test file as reports and messages name it (relative to the rootdir).
        line: the test function's 1-based line, reported as every claim's (and key's)
            line; 1 when None.
    """

    def __init__(self, session: Session, *, path: str, shown: str | None = None,
                 line: int | None = None) -> None:
        self.session = session
        self.path = path
        self.shown = shown or path
        self.line = line
        self.results: list[ClaimResult] = []

    def check(self, **claim: Any) -> ClaimResult:
        """Evaluate one claim and fail the test unless it passes."""
        return self.check_all([claim])[0]

    def check_all(self, claims: Sequence[Mapping[str, Any]], *,
                  correction: str = "holm") -> list[ClaimResult]:
        """Evaluate claims as one family; fail the test unless all pass."""
        import pytest

        results = self.evaluate(claims, correction=correction)
        bad = [r for r in results if r.verdict in ("fail", "error")]
        if bad:
            pytest.fail("\n\n".join(r.message for r in bad), pytrace=False)
        if results and all(r.verdict == "skip" for r in results):
            pytest.skip(results[0].message.split("\n")[0])
        return results

    def evaluate(self, claims: Sequence[Mapping[str, Any]], *,
                 correction: str = "holm") -> list[ClaimResult]:
        """Evaluate claims as one family and return the results without failing.

        Values are converted to plain YAML values first: numpy scalars and arrays,
        tuples and paths become numbers, lists and text.  A value that cannot be
        converted makes its claim an error naming the key; the other claims still run.
        """
        from mechcheck.evaluate import evaluate_file
        from mechcheck.spec.loader import parse_claim_mapping

        plain, problems = [], {}
        for i, claim in enumerate(claims):
            try:
                plain.append(plain_claim(claim))
            except ClaimSpecError as exc:
                problems[i] = exc
                plain.append(_placeholder(claim))
        try:
            family = plain_value(correction, "correction")
        except ClaimSpecError:
            family = str(correction)  # the loader says what it should be
        line = self.line if self.line is not None else 1
        parsed = parse_claim_mapping({"correction": family, "claims": plain}, self.shown,
                                     line, kinds=self.session.registry.kind_keys(),
                                     base_dir=str(Path(self.path).parent),
                                     common=self.session.registry.common_keys())
        if problems and parsed.error is None:
            parsed = replace(parsed, claims=tuple(
                problems[i].located(path=self.shown, line=line) if i in problems
                else entry for i, entry in enumerate(parsed.claims)))
        results = evaluate_file(parsed, self.session)
        self.results.extend(results)
        return results


# ---------------------------------------------------------------------------
# Python values -> plain YAML values

_PLAIN_HINT = ("pass text, numbers, true/false, None, or lists and mappings of them "
               "(numpy scalars and arrays, tuples and paths are converted)")


def plain_claim(claim: Any) -> Any:
    """``claim`` with every value made a plain YAML value (see :func:`plain_value`).

    Raises:
        ClaimSpecError: a value (or the claim itself) cannot be written as YAML; the
            error names the claim (when its id is plain text) and the key.
    """
    if not isinstance(claim, Mapping):
        return plain_value(claim, None)
    claim_id = str(claim["id"]) if isinstance(claim.get("id"), str) else None
    out: dict[Any, Any] = {}
    for key, value in claim.items():
        name = plain_key(key, None)
        try:
            out[name] = plain_value(value, str(name))
        except ClaimSpecError as exc:
            raise exc.located(claim_id=claim_id) from None
    return out


def plain_value(value: Any, key: str | None) -> Any:
    """``value`` as plain YAML: text, numbers, booleans, None, lists and mappings.

    numpy scalars become Python values, numpy arrays, tuples and other sequences
    lists, ``os.PathLike`` objects (``pathlib.Path``) text.

    Raises:
        ClaimSpecError: naming ``key``, for anything else (a set, an object, a tensor).
    """
    import numpy as np

    if value is None or type(value) in (str, bool, int, float):
        return value
    if isinstance(value, np.generic):  # np.float64, np.str_ ... (some subclass float, str)
        return plain_value(value.item(), key)
    for kind in (bool, int, float, str):  # e.g. an enum.StrEnum member: its plain value
        if isinstance(value, kind):
            return str.__str__(value) if kind is str else kind(value)
    if isinstance(value, np.ndarray):
        return plain_value(value.tolist(), key)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, Mapping):
        return {plain_key(k, key): plain_value(v, key) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        return [plain_value(item, key) for item in value]
    what = "a set has no order" if isinstance(value, (set, frozenset)) else (
        f"a {type(value).__module__}.{type(value).__qualname__} is not a plain value")
    raise ClaimSpecError(f"cannot write {value!r:.60} in a claim: {what}", key=key,
                         hint=("pass a list" if isinstance(value, (set, frozenset))
                               else _PLAIN_HINT))


def plain_key(key: Any, where: str | None) -> str | int | float | bool | None:
    """A mapping key as plain YAML (text, a number, a boolean or None)."""
    plain = plain_value(key, where)
    if plain is not None and not isinstance(plain, (str, int, float, bool)):
        raise ClaimSpecError(f"cannot write the key {key!r:.60} in a claim: a key must be "
                             "text", key=where, hint="write keys as text")
    return cast("str | int | float | bool | None", plain)


def _placeholder(claim: Any) -> dict[str, Any]:
    """What stands in for a claim that cannot be written: its id, if it has a plain one,
    so that the loader still sees the id (and a repeat of it)."""
    claim_id = claim.get("id") if isinstance(claim, Mapping) else None
    return {"id": str(claim_id)} if isinstance(claim_id, str) else {}
