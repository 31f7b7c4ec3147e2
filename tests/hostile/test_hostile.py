"""Every case of the hostile corpus: a normal exit status, a located message without a
traceback, nothing executed from the input, and the control claims still passing.

The cases are folders under ``cases/`` (see ``harness.py`` for their format); one test
per case, named after its folder.  With ``MECHCHECK_HOSTILE_DUMP=<folder>`` each case's
output is also written to ``<folder>/<case>.txt``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.hostile.harness import (
    AREAS,
    Case,
    all_cases,
    prepare,
    problems,
    run_inprocess,
    run_interrupted,
)

CASES = all_cases()

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_case(case: Case, pytester: pytest.Pytester, warm_modules: None) -> None:
    root = pytester.path
    prepare(case, root)
    pytester.syspathinsert()  # plugin modules named in a case's pytest.ini
    report = root / case.report["path"] if case.report else None
    before = report.read_bytes() if report is not None and report.is_file() else None
    if case.mode == "sigint":
        outcome = run_interrupted(case, root)
    else:
        outcome = run_inprocess(case, pytester)
    dump = os.environ.get("MECHCHECK_HOSTILE_DUMP")
    if dump:  # keep what the user would have seen, for reading the corpus' results
        Path(dump).mkdir(parents=True, exist_ok=True)
        Path(dump, f"{case.name}.txt").write_text(
            f"status {outcome.status}, {outcome.seconds:.2f} s\n{outcome.output}")
    found = problems(case, outcome, root, before)
    if found:
        listing = "\n".join(f"- {p}" for p in found)
        pytest.fail(f"[{case.area}] {case.name}: {case.about}\n{listing}\n"
                    f"--- output ({outcome.seconds:.1f} s, status {outcome.status}) ---\n"
                    f"{outcome.output[-6000:]}", pytrace=False)


def test_the_corpus_is_large_and_every_case_has_an_owner() -> None:
    assert len(CASES) >= 60
    assert {c.area for c in CASES} <= set(AREAS)
    vague = [c.name for c in CASES
             if not (c.messages or c.report or c.not_created or c.created or c.passed)]
    assert not vague, f"cases that check nothing specific: {vague}"


LOCATED = re.compile(
    r"^(?P<file>[\w.-]+\.ya?ml):(?P<line>\d+): claim '[^']*', key '(?P<key>[^']+)'$")


def test_located_messages_point_at_their_keys() -> None:
    """The corpus' own check: every expected ``file:line: claim 'id', key 'k'`` names a
    line of that case's file where ``k:`` is written (so a case cannot expect a wrong
    line and pass against a wrong implementation)."""
    checked = 0
    for case in CASES:
        for message in case.messages:
            match = LOCATED.match(message[0])
            path = case.folder / match["file"] if match else None
            if match is None or path is None or not path.is_file():
                continue
            line = path.read_text(encoding="utf-8").splitlines()[int(match["line"]) - 1]
            assert re.match(rf"\s*(- )?{re.escape(match['key'])}:", line), \
                f"{case.name}: {message[0]!r} but that line is {line!r}"
            checked += 1
    assert checked >= 60
