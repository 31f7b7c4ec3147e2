"""``screen: attribution`` on a sweep: attribution patching picks which components
are measured exactly; only exact results decide, the rest are skipped with their
estimate."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mechcheck.api import evaluate_path
from mechcheck.session import Session

ZOO = Path(__file__).resolve().parents[1] / "claims" / "zoo"

FILE = """\
model: zoo:planted-prevtoken
data: planted.jsonl
n: 40
metric: logit_diff
claims:
  - id: sweep
    kind: necessary
    each: true
    components: ["blocks.*.attn.head.*", "mlp 0", "mlp 1"]
    ablation: zero
    min_drop: 5.0
{screen}
  - id: exact_planted_head
    kind: necessary
    components: ["head 0.0"]
    ablation: zero
    min_drop: 5.0
"""


def _run(tmp_path: Path, screen: str) -> dict[str, object]:
    shutil.copy(ZOO / "planted.jsonl", tmp_path / "planted.jsonl")
    path = tmp_path / "test_screen.yaml"
    path.write_text(FILE.format(screen=screen))
    return {r.id: r for r in evaluate_path(path, Session(device="cpu"))}


def test_the_screen_keeps_the_planted_head_and_skips_the_zeroed_ones(tmp_path: Path) -> None:
    results = _run(tmp_path, "    screen: attribution\n    screen_top: 1")
    kept = results["sweep[blocks.0.attn.head.0]"]
    exact = results["exact_planted_head"]
    assert kept.verdict == "pass"
    # measured exactly, as the same claim without a screen
    assert (kept.effect, kept.ci_low, kept.ci_high, kept.p_value) == \
        (exact.effect, exact.ci_low, exact.ci_high, exact.p_value)
    others = [r for name, r in results.items() if name.startswith("sweep[") and r is not kept]
    assert len(others) == 5  # heads 0.1, 1.0, 1.1 and both MLPs
    for r in others:
        assert r.verdict == "skip" and r.reason == "screened out" and r.effect is None
        assert "screened out by attribution patching" in r.message
        assert "top 1 (screen_top)" in r.message and r.components
        assert r.each_of == "sweep"


def test_without_a_screen_every_member_is_measured(tmp_path: Path) -> None:
    results = _run(tmp_path, "")
    members = [r for name, r in results.items() if name.startswith("sweep[")]
    assert len(members) == 6
    assert sorted(r.verdict for r in members) == ["fail"] * 5 + ["pass"]


def test_a_screen_wider_than_the_sweep_measures_all(tmp_path: Path) -> None:
    results = _run(tmp_path, "    screen: attribution\n    screen_top: 50")
    members = [r for name, r in results.items() if name.startswith("sweep[")]
    assert sorted(r.verdict for r in members) == ["fail"] * 5 + ["pass"]


@pytest.mark.parametrize(("screen", "key", "text"), [
    ("    screen: gradients", "screen", "got 'gradients'"),
    ("    screen: attribution\n    screen_top: 0", "screen_top", "confirm at least one"),
    ("    screen: attribution\n    ig_steps: -1", "ig_steps", "0 is plain attribution"),
])
def test_bad_screen_keys_are_located_errors(tmp_path: Path, screen: str, key: str,
                                            text: str) -> None:
    results = _run(tmp_path, screen)
    bad = results["sweep"]
    assert bad.verdict == "error"
    assert f"key '{key}'" in bad.message and text in bad.message
    assert "Traceback" not in bad.message
    assert results["exact_planted_head"].verdict == "pass"


def test_a_screen_outside_a_sweep_is_an_error_at_screen(tmp_path: Path) -> None:
    shutil.copy(ZOO / "planted.jsonl", tmp_path / "planted.jsonl")
    path = tmp_path / "test_screen.yaml"
    path.write_text(FILE.format(screen="").replace(
        "    min_drop: 5.0\n", "    min_drop: 5.0\n    screen: attribution\n", 2)
        .replace("each: true\n", "each: false\n"))
    results = {r.id: r for r in evaluate_path(path, Session(device="cpu"))}
    for r in results.values():
        assert r.verdict == "error" and "key 'screen'" in r.message
        assert "add each: true" in r.message
