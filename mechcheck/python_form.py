"""Claims written in Python: the ``mechcheck`` fixture's :class:`Checker`.

A Python claim is the same mapping a YAML claim file holds, passed as keyword
arguments; it goes through the same loader (so the same keys and errors), the same
engine and into the same report.  Several claims passed to one :meth:`Checker.check_all`
call form one family for the multiple-comparison correction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from mechcheck.results import ClaimResult, format_failure
from mechcheck.session import Session

__all__ = ["Checker"]


class Checker:
    """Evaluates claims given as keyword arguments; fails the test if one fails.

    Args:
        session: the mechcheck session (shared with YAML claim files).
        path: the test file; relative ``model:``/``data:`` paths resolve against its folder.
        shown: the test file as reports and messages name it (relative to the rootdir).
        line: the test function's 1-based line, reported as every claim's line.
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
        """Evaluate claims as one family and return the results without failing."""
        from mechcheck.evaluate import evaluate_file
        from mechcheck.spec.loader import parse_claim_text

        text = yaml.safe_dump({"correction": correction, "claims": [dict(c) for c in claims]},
                              sort_keys=False)
        parsed = parse_claim_text(text, self.shown, self.session.registry.kind_keys(),
                                  base_dir=str(Path(self.path).parent))
        results = [self._at_test_line(r) for r in evaluate_file(parsed, self.session)]
        self.results.extend(results)
        return results

    def _at_test_line(self, result: ClaimResult) -> ClaimResult:
        """Point a result at the test function instead of the generated claim text."""
        if self.line is None:
            return result
        moved = replace(result, line=self.line)
        if result.verdict == "fail":
            return replace(moved, message=format_failure(moved))
        old, new = f"{self.shown}:{result.line}", f"{self.shown}:{self.line}"
        return replace(moved, message=result.message.replace(old, new, 1))
