"""Run one hostile case with pytester and check what a user would see.

A case is a folder ``cases/<name>/``.  Everything in it except ``case.yaml`` is copied
into a fresh pytester directory, together with ``planted.jsonl`` (12 rows of
``claims/zoo/planted.jsonl``, all 7 tokens long, so that each run is one forward pass)
and, unless ``control: none``, a control claim file
``test_control.yaml`` whose claim ``control`` must pass whatever the hostile files
beside it do.  Then pytest runs there, in-process (the heavy modules are imported once
by ``tests/conftest.py``) under a hang guard, or, with ``mode: sigint``, as a
subprocess that is interrupted mid-run.

``case.yaml`` keys (all optional but ``area`` and ``about``):

``area``
    who owns the behaviour: ``loader`` (loader/data), ``stats``, ``surface`` (pytest
    plugin/CLI/report) or ``engine`` (engine/evaluate/session/model loading).
``about``
    one line: what the case does.
``args``
    extra pytest arguments.
``setup``
    builders from :mod:`tests.hostile.builders` to run in the directory before pytest:
    a list of names or ``{name: {keyword: value}}`` mappings.
``control``
    ``planted`` (default), ``induction`` or ``none``: the control claim file.
``status``
    the exit statuses allowed (default ``[1]``).  3 (internal error) never is.
``ran``
    true (default): the control must pass; false, for a whole-run usage error: no
    claim may have run, not even the control; null: either (the control is not checked).
``passed``
    node ids that must pass besides the control (``test_x.yaml::id``).
``messages``
    a list of messages; each is a list of phrases that must all appear in one section of
    the output (between two pytest separator lines): the first phrase locates it.
    A phrase starting with ``re:`` is a regular expression, else a literal substring.
``absent``
    phrases that must not appear anywhere in the output.
``at_most``
    ``{phrase: count}``: the phrase appears at most that many times (one error, not
    one per claim).
``exactly``
    ``{phrase: count}``: the phrase appears exactly that many times.
``created``
    paths that must exist afterwards (proof that a simulated fault was hit).
``not_created``
    paths (relative to the run directory) that must not exist afterwards.
``max_seconds``
    a bound on the wall time of the run (startup excluded: modules are imported).
``timeout``
    the hang guard in seconds (default 60).
``allow_traceback``
    a plugin's own traceback may be shown (never a frame from mechcheck's modules).
``report``
    ``{path, ids, count, unique, complete, measured}``: the report written at ``path``
    lists exactly ``ids`` (``file::id``), or ``count`` results, each once with
    ``unique``; ``complete: false`` at its top; ``measured``: ids it must contain.
    With ``mode: sigint`` the report may instead be the untouched file that was there
    before.
``wait_for``
    with ``mode: sigint``: the file whose appearance means the run is under way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

HERE = Path(__file__).resolve().parent
CASES = HERE / "cases"
ROOT = HERE.parents[1]
AREAS = ("loader", "stats", "surface", "engine")

CONTROLS = {
    "planted": """\
# The control: a claim that holds on zoo:planted-prevtoken by construction.
model: zoo:planted-prevtoken
data: planted.jsonl
claims:
  - id: control
    kind: attends
    components: ["head 0.0"]
    pattern: previous_token
    min_score: 0.99
""",
    "induction": """\
# The control on another model than the hostile case's (head 0.2 scores 0.99).
model: zoo:induction-2l
data: induction.jsonl
claims:
  - id: control
    kind: attends
    components: ["head 0.2"]
    pattern: previous_token
    min_score: 0.9
""",
}
CONTROL_ID = "test_control.yaml::control"

# What must never reach a user: pytest's crash report, mechcheck's own crash text, and
# any traceback frame inside mechcheck's package.
FORBIDDEN = (
    ("INTERNALERROR", re.compile(r"INTERNALERROR")),
    ("'internal error'", re.compile(r"internal error", re.IGNORECASE)),
    ("'bug in mechcheck'", re.compile(r"bug in mechcheck", re.IGNORECASE)),
)
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^E\s+\w+(Error|Exception)\b",
                       re.MULTILINE)
MECHCHECK_FRAME = re.compile(
    r"""File "[^"]*[\\/]mechcheck[\\/][^"]*\.py"|(?<![\w.-])mechcheck[\\/](?:[\w.-]+[\\/])*"""
    r"""[\w.-]+\.py:\d+""")
SEPARATOR = re.compile(r"^(_{3,}|={3,}|-{3,}|!{3,})")
SUMMARY_LINE = re.compile(r"^(FAILED|PASSED|XFAIL|XPASS|SKIPPED|ERROR) \S+")


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """One case folder and its ``case.yaml``."""

    name: str
    folder: Path
    area: str
    about: str
    args: tuple[str, ...] = ()
    setup: tuple[tuple[str, dict[str, Any]], ...] = ()
    control: str = "planted"
    status: tuple[int, ...] = (1,)
    ran: bool | None = True
    passed: tuple[str, ...] = ()
    messages: tuple[tuple[str, ...], ...] = ()
    absent: tuple[str, ...] = ()
    at_most: dict[str, int] = field(default_factory=dict)
    exactly: dict[str, int] = field(default_factory=dict)
    not_created: tuple[str, ...] = ()
    created: tuple[str, ...] = ()
    max_seconds: float | None = None
    timeout: float = 60.0
    allow_traceback: bool = False
    report: dict[str, Any] | None = None
    mode: str = "inprocess"
    wait_for: str | None = None


_KEYS = set(Case.__dataclass_fields__) - {"name", "folder"}


def load_case(folder: Path) -> Case:
    spec = yaml.safe_load(folder.joinpath("case.yaml").read_text(encoding="utf-8"))
    unknown = set(spec) - _KEYS
    assert not unknown, f"{folder.name}/case.yaml: unknown keys {sorted(unknown)}"
    assert spec.get("area") in AREAS, f"{folder.name}/case.yaml: area must be one of {AREAS}"
    steps = []
    for step in spec.pop("setup", []) or []:
        if isinstance(step, str):
            steps.append((step, {}))
        else:
            ((builder, kwargs),) = step.items()
            steps.append((builder, dict(kwargs or {})))
    for key in ("args", "passed", "absent", "not_created", "created", "status"):
        if key in spec:
            spec[key] = tuple(spec[key])
    if "messages" in spec:
        spec["messages"] = tuple(tuple(m) for m in spec["messages"])
    return Case(name=folder.name, folder=folder, setup=tuple(steps), **spec)


def all_cases() -> list[Case]:
    return [load_case(p) for p in sorted(CASES.iterdir()) if (p / "case.yaml").is_file()]


# -- preparing the run directory ---------------------------------------------------


def prepare(case: Case, root: Path) -> None:
    """Copy the case, the shared data and the control into ``root``; run its builders."""
    from tests.hostile import builders

    for source in case.folder.rglob("*"):
        relative = source.relative_to(case.folder)
        if relative.name == "case.yaml" or "__pycache__" in relative.parts:
            continue
        target = root / relative
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    _rows(ROOT / "claims" / "zoo" / "planted.jsonl", root / "planted.jsonl", end=6)
    if case.control != "none":
        if case.control == "induction":
            _rows(ROOT / "claims" / "zoo" / "induction.jsonl", root / "induction.jsonl", end=20)
        root.joinpath("test_control.yaml").write_text(CONTROLS[case.control], encoding="utf-8")
    for name, kwargs in case.setup:
        getattr(builders, name)(root, **kwargs)


def _rows(source: Path, target: Path, *, end: int, rows: int = 12) -> None:
    """The first ``rows`` rows of ``source`` whose last token is at ``end``: one length."""
    if not target.exists():
        lines = [line for line in source.read_text(encoding="utf-8").splitlines()
                 if json.loads(line)["positions"]["END"] == end][:rows]
        assert len(lines) == rows, f"{source} has too few rows ending at {end}"
        target.write_text("\n".join(lines) + "\n", encoding="utf-8")


# -- running ---------------------------------------------------------------------------


class _Guard:
    """Interrupts a pytest run that takes too long, the way Ctrl-C would.

    pytest turns any other exception raised inside a test item into that item's failure
    and goes on with the next item, so the alarm raises KeyboardInterrupt, which ends
    the whole session; ``fired`` records that it did.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False

    def _alarm(self, signum: int, frame: Any) -> None:
        self.fired = True
        signal.setitimer(signal.ITIMER_REAL, 1.0)  # again, if this one is swallowed
        raise KeyboardInterrupt(f"hostile case still running after {self.seconds:g} s")

    @contextmanager
    def armed(self) -> Iterator[_Guard]:
        previous = signal.signal(signal.SIGALRM, self._alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            yield self
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    status: int
    output: str
    seconds: float
    hung: str | None = None


BASE_ARGS = ("-p", "no:cacheprovider", "-rA")


def run_inprocess(case: Case, pytester: pytest.Pytester) -> Outcome:
    start = time.perf_counter()
    guard = _Guard(case.timeout)
    try:
        with guard.armed():
            result = pytester.runpytest_inprocess(*BASE_ARGS, *case.args)
    except KeyboardInterrupt:
        if not guard.fired:
            raise
        return Outcome(status=-1, output="", seconds=time.perf_counter() - start,
                       hung=f"interrupted after {case.timeout:g} s")
    seconds = time.perf_counter() - start
    output = "\n".join(result.outlines) + "\n" + "=" * 20 + " stderr\n" + \
        "\n".join(result.errlines)
    hung = f"interrupted after {case.timeout:g} s" if guard.fired else None
    return Outcome(status=int(result.ret), output=output, seconds=seconds, hung=hung)


def default_sigint() -> None:
    """In the child, before exec: SIGINT back to its default. A shell starts background
    jobs with SIGINT ignored, and Python leaves an inherited SIG_IGN alone (no
    KeyboardInterrupt), so a suite run in the background would otherwise hang here."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_interrupted(case: Case, root: Path) -> Outcome:
    """Start pytest as a subprocess, wait for ``wait_for``, send SIGINT, collect."""
    assert case.wait_for, "mode: sigint needs wait_for"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(root), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    log = root / "pytest-output.txt"
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pytest", *BASE_ARGS, *case.args],
                                cwd=root, stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=default_sigint)
        try:
            deadline = time.monotonic() + case.timeout
            while not (root / case.wait_for).exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            started = (root / case.wait_for).exists()
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            try:
                status = proc.wait(timeout=30)
                hung = None if started else f"{case.wait_for} never appeared"
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                status, hung = -1, "still running 30 s after SIGINT"
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log.read_text(encoding="utf-8", errors="replace")
    log.unlink()
    return Outcome(status=status, output=output, seconds=time.perf_counter() - start,
                   hung=hung)


# -- checking ----------------------------------------------------------------------------


def _found(phrase: str, text: str) -> bool:
    if phrase.startswith("re:"):
        return re.search(phrase[3:], text, re.MULTILINE) is not None
    return phrase in text


def sections(output: str, anchor: str) -> list[str]:
    """The output sections (between separator lines) in which ``anchor`` is found,
    leaving out pytest's one-line short summary, whose text is truncated."""
    lines = output.splitlines()
    cuts = [i for i, line in enumerate(lines) if SEPARATOR.match(line)]
    found = []
    for i, line in enumerate(lines):
        if SUMMARY_LINE.match(line) or not _found(anchor, line):
            continue
        before = max([c for c in cuts if c < i], default=-1)
        after = min([c for c in cuts if c > i], default=len(lines))
        found.append("\n".join(lines[before + 1: after]))
    return found


def problems(case: Case, outcome: Outcome, root: Path, before: bytes | None) -> list[str]:
    """Everything the case's expectations find wrong with the run (empty: it passed)."""
    if outcome.hung:
        return [f"the run hung ({outcome.hung}); nothing else was checked"]
    out = outcome.output
    found: list[str] = []
    if outcome.status not in case.status:
        found.append(f"exit status {outcome.status}, expected one of {list(case.status)}")
    for label, pattern in FORBIDDEN:
        match = pattern.search(out)
        if match:
            found.append(f"{label} in the output: {_around(out, match.start())}")
    frame = MECHCHECK_FRAME.search(out)
    if frame:
        found.append(f"a frame of mechcheck's modules in the output: {_around(out, frame.start())}")
    trace = TRACEBACK.search(out)
    if trace and not case.allow_traceback:
        found.append(f"a traceback in the output: {_around(out, trace.start())}")
    if case.ran is True:
        needed = ([CONTROL_ID] if case.control != "none" else []) + list(case.passed)
        for node in needed:
            if not re.search(rf"^PASSED {re.escape(node)}\s*$", out, re.MULTILINE):
                found.append(f"{node} did not pass")
    elif case.ran is False and (re.search(r"^(PASSED|FAILED) \S+::", out, re.MULTILINE)
                                or "mechcheck claims" in out):
        found.append("claims ran although the run should have stopped with a usage error "
                     "before any claim")
    for message in case.messages:
        found.extend(_message_problems(message, out))
    for phrase in case.absent:
        if _found(phrase, out):
            found.append(f"{phrase!r} must not appear in the output")
    for phrase, most in case.at_most.items():
        if _count(phrase, out) > most:
            found.append(f"{phrase!r} appears {_count(phrase, out)} times (at most {most})")
    for phrase, wanted in case.exactly.items():
        if _count(phrase, out) != wanted:
            found.append(f"{phrase!r} appears {_count(phrase, out)} times (expected {wanted})")
    for path in case.not_created:
        if (root / path).exists():
            found.append(f"{path} exists: something in the hostile input was executed")
    for path in case.created:
        if not (root / path).exists():
            found.append(f"{path} does not exist: the simulated fault was never hit")
    if case.max_seconds is not None and outcome.seconds > case.max_seconds:
        found.append(f"the run took {outcome.seconds:.1f} s (at most {case.max_seconds} s)")
    if case.report is not None:
        found.extend(_report_problems(case, root, before))
    return found


def _count(phrase: str, text: str) -> int:
    if phrase.startswith("re:"):
        return len(re.findall(phrase[3:], text))
    return text.count(phrase)


def _message_problems(message: tuple[str, ...], out: str) -> list[str]:
    anchor, *rest = message
    places = sections(out, anchor)
    if not places:
        return [f"no message contains {anchor!r}"]
    best = min(places, key=lambda s: sum(not _found(p, s) for p in rest))
    missing = [p for p in rest if not _found(p, best)]
    if missing:
        return [f"the message at {anchor!r} lacks {missing}:\n{_indent(best)}"]
    return []


def _report_problems(case: Case, root: Path, before: bytes | None) -> list[str]:
    spec = case.report or {}
    path = root / spec["path"]
    if not path.is_file():
        return [f"no report at {spec['path']}"]
    raw = path.read_bytes()
    if case.mode == "sigint" and before is not None and raw == before:
        return []  # untouched: nothing was lost
    try:
        body = json.loads(raw)
    except ValueError as exc:
        return [f"the report {spec['path']} is not JSON ({exc}): {raw[:200]!r}"]
    found = []
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        return [f"the report {spec['path']} has no results list: {raw[:200]!r}"]
    ids = [f"{r.get('file')}::{r.get('id')}" for r in body["results"]]
    if "ids" in spec and sorted(ids) != sorted(spec["ids"]):
        found.append(f"the report lists {ids}, expected {spec['ids']}")
    if "count" in spec and len(ids) != spec["count"]:
        found.append(f"the report lists {len(ids)} results, expected {spec['count']}: {ids}")
    if spec.get("unique") and len(set(ids)) != len(ids):
        found.append(f"the report repeats a claim: {ids}")
    if "complete" in spec and body.get("complete", True) != spec["complete"]:
        found.append(f"the report's complete is {body.get('complete', '(absent)')!r}, "
                     f"expected {spec['complete']!r}")
    for node in spec.get("measured", []):
        if node not in ids:
            found.append(f"the report lost the measured claim {node}: it lists {ids}")
    return found


def _around(text: str, index: int, width: int = 300) -> str:
    start = text.rfind("\n", 0, max(0, index - width // 2)) + 1
    return "\n" + _indent(text[start: index + width])


def _indent(text: str) -> str:
    return "\n".join("    | " + line for line in text.splitlines())
