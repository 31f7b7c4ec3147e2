"""What a claim's verdict means for the run, as pytest decides it.

Shared by the pytest plugin (which marks claim items ``xfail``) and ``mechcheck
check`` (which has no pytest to decide), so that both give the same outcome and the
same exit status for the same files.  Imports nothing heavy.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["FAILING", "Outcome", "outcome", "xfail_before", "xfail_reason"]

Outcome = Literal["passed", "failed", "xfailed", "xpassed", "skipped"]
# Outcomes that make pytest (and `mechcheck check`) exit with 1.
FAILING: frozenset[str] = frozenset({"failed", "xpassed"})


def xfail_before(claim: Any, checkpoint: str | None,
                 order: tuple[str | None, ...]) -> str | None:
    """The xfail reason when ``checkpoint`` comes before the claim's ``xfail_before``."""
    first = getattr(claim, "xfail_before", None)
    if first is None or first not in order or checkpoint not in order:
        return None
    if order.index(checkpoint) < order.index(first):
        return f"expected to fail before {first} (xfail_before)"
    return None


def xfail_reason(claim: Any, checkpoint: str | None,
                 order: tuple[str | None, ...]) -> str | None:
    """Why a claim (a spec, or the error that replaced a bad one) is expected to fail
    on ``checkpoint``: its ``xfail:``, else its ``xfail_before:``, else None."""
    return getattr(claim, "xfail", None) or xfail_before(claim, checkpoint, order)


def outcome(verdict: str, xfail: str | None) -> Outcome:
    """pytest's outcome of a claim with this verdict.

    An ``xfail`` claim is strict and expects the claim to *fail*: a failed claim is
    ``xfailed``, a passing one ``xpassed`` (XPASS(strict), a failure) and one that
    ends in an error still ``failed`` (an error is not the expected failure).
    """
    if verdict == "skip":
        return "skipped"
    if xfail and verdict == "fail":
        return "xfailed"
    if xfail and verdict == "pass":
        return "xpassed"
    return "passed" if verdict == "pass" else "failed"
