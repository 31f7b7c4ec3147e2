"""The claim suites give the same reports, number for number, as the recorded ones.

``tests/golden/`` holds the report of ``pytest claims/zoo claims/smollm2`` (every field
but timings, versions and device) and a digest of its per-prompt values, recorded
before the renovation of issue 10.  A refactoring that changes any verdict, effect,
interval, p-value, message or per-prompt value fails here.  When a change of numbers
is intended, rerun with ``MECHCHECK_UPDATE_GOLDEN=1`` and review the diff.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
SUITES = ("claims/zoo", "claims/smollm2")
VOLATILE = {"duration_s", "versions", "device", "dtype"}
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def _report_rows(report: dict) -> dict[str, dict]:
    rows = {}
    for r in report["results"]:
        key = f"{r['file']}::{r['id']}@{r.get('checkpoint')}"
        rows[key] = {k: v for k, v in r.items() if k not in VOLATILE}
    return rows


def _digest(prompts_csv: Path) -> dict[str, dict]:
    """Per claim: the row count and, per numeric column, its sum and first values."""
    groups: dict[str, dict[str, list[float]]] = {}
    with prompts_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = f"{row['file']}::{row['id']}@{row['checkpoint'] or None}"
            columns = groups.setdefault(key, {})
            for name, value in row.items():
                if name in ("file", "id", "checkpoint") or value == "":
                    continue
                try:
                    number = float(value)
                except ValueError:
                    continue
                columns.setdefault(name, []).append(number)
    return {key: {name: {"n": len(v), "sum": math.fsum(v), "head": v[:3]}
                  for name, v in columns.items()} for key, columns in groups.items()}


def _close(a: object, b: object, where: str) -> list[str]:
    """Differences between two JSON values: numbers to a relative 1e-3 or an absolute
    1e-4, numbers inside text to 4 significant digits.  CPUs of different kinds round
    float32 matrix products differently: two Xeon machines gave SmolLM2's per-prompt
    values up to 2e-5 apart, their sums up to 1.5e-4 (4e-4 relative), and a difference
    near zero tens of percent apart; a changed computation moves numbers far more."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return [] if a == b else [f"{where}: {a!r} != {b!r}"]
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if math.isnan(a) and math.isnan(b):
            return []
        return [] if math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-4) else \
            [f"{where}: {a!r} != {b!r}"]
    if isinstance(a, str) and isinstance(b, str):
        if NUMBER.sub("#", a) != NUMBER.sub("#", b):
            return [f"{where}: text differs:\n  {a!r}\n  {b!r}"]
        pairs = zip(NUMBER.findall(a), NUMBER.findall(b))
        return [f"{where}: {x} != {y} in text" for x, y in pairs
                if not math.isclose(float(x), float(y), rel_tol=2e-3, abs_tol=1e-3)]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{where}: keys {sorted(set(a) ^ set(b))} differ"]
        return [d for k in a for d in _close(a[k], b[k], f"{where}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} items != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _close(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {a!r} != {b!r}"]


def _claims_run(tmp_path: Path) -> tuple[Path, Path]:
    """The report and per-prompt CSV of the claim suites: those CI's claims step wrote
    (``MECHCHECK_CLAIMS_REPORT=report.json``, its prompts beside it as
    ``report.prompts.csv``), so that CI runs the suites once, or a fresh run."""
    given = os.environ.get("MECHCHECK_CLAIMS_REPORT")
    if given:
        report = Path(given)
        prompts = report.with_suffix(".prompts.csv")
        assert report.exists() and prompts.exists(), (
            f"MECHCHECK_CLAIMS_REPORT={given}: run `pytest claims/ --mechcheck-report "
            f"{report} --mechcheck-report-prompts {prompts}` first, or unset it")
        return report, prompts
    report, prompts = tmp_path / "report.json", tmp_path / "prompts.csv"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *SUITES, "-q", "-p", "no:cacheprovider",
         "--mechcheck-report", str(report), "--mechcheck-report-prompts", str(prompts)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert report.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    return report, prompts


def _in_suites(rows: dict[str, dict]) -> dict[str, dict]:
    return {k: v for k, v in rows.items() if k.startswith(tuple(f"{s}/" for s in SUITES))}


@pytest.mark.slow
def test_claim_suites_give_the_recorded_reports(tmp_path: Path) -> None:
    report, prompts = _claims_run(tmp_path)
    now = {"report": _in_suites(_report_rows(json.loads(report.read_text()))),
           "prompts": _in_suites(_digest(prompts))}
    if os.environ.get("MECHCHECK_UPDATE_GOLDEN"):
        GOLDEN.mkdir(exist_ok=True)
        (GOLDEN / "claims.json").write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    recorded = json.loads((GOLDEN / "claims.json").read_text())
    differences = _close(recorded, now, "claims")
    assert not differences, "\n".join(differences[:40])


def test_the_comparison_sees_a_changed_number_verdict_or_message() -> None:
    base = {"effect": 1.25, "verdict": "pass", "message": "drop 1.234 > 1.0", "ci": [1, 2]}
    assert _close(base, dict(base), "r") == []
    assert _close(base, {**base, "effect": 1.2515}, "r")
    assert _close(base, {**base, "effect": 1.2501}, "r") == []  # another CPU's rounding
    assert _close(base, {**base, "verdict": "fail"}, "r")
    assert _close(base, {**base, "message": "drop 1.301 > 1.0"}, "r")
    assert _close(base, {**base, "message": "rise 1.234 > 1.0"}, "r")
    assert _close(base, {**base, "ci": [1, 2, 3]}, "r")
    assert _close(base, {**base, "ci": [1, None]}, "r")
