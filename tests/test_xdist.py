"""pytest-xdist: a run spread over workers writes the same report as a serial run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mechcheck.report.io import matrix, read_report
from tests.conftest import checkpointed_project

pytest.importorskip("xdist")

# step5 < step10 < step20 in training order, not in alphabetical order
STEPS = ("step5", "step10", "step20")


@pytest.fixture
def checkpointed(pytester: pytest.Pytester) -> pytest.Pytester:
    """A claim file over three checkpoints of a tiny gpt2, one without, and a Python claim."""
    pytester.makefile(".yaml", test_ckpt=checkpointed_project(pytester.path, STEPS),
                      test_plain="""\
model: model/step5
data: d.jsonl
claims:
  - id: prev
    kind: attends
    components: ["head 0.1"]
    pattern: previous_token
    min_score: 0.0
""")
    pytester.makepyfile(test_python="""\
def test_in_python(mechcheck):
    mechcheck.check(id="py_first", kind="attends", model="model/step10", data="d.jsonl",
                    components=["head 0.0"], pattern="first_token", min_score=0.0)
""")
    return pytester


def _report(path: Path) -> dict[str, Any]:
    body = json.loads(path.read_text())
    for record in body["results"]:
        record.pop("duration_s")
    return body


def test_xdist_report_equals_serial_report(checkpointed: pytest.Pytester) -> None:
    common = ("-p", "no:cacheprovider", "-p", "xdist")
    serial = checkpointed.runpytest(*common, "-n", "0", "--mechcheck-report", "serial.json")
    serial.assert_outcomes(passed=5, failed=3)
    spread = checkpointed.runpytest_subprocess(*common, "-n", "2",
                                               "--mechcheck-report", "xdist.json")
    spread.assert_outcomes(passed=5, failed=3)
    spread.stdout.fnmatch_lines(["*2 workers*"])
    one, two = (_report(checkpointed.path / name) for name in ("serial.json", "xdist.json"))
    assert len(one["results"]) == 8
    assert one == two
    rows = [(r["file"], r["id"], r["checkpoint"]) for r in two["results"]]
    assert rows[:3] == [("test_ckpt.yaml", "first", step) for step in STEPS]
    assert ("test_python.py", "py_first", None) in rows
    assert list(matrix(read_report(checkpointed.path / "xdist.json")).columns) == [*STEPS, "-"]
