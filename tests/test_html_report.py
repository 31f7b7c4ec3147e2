"""HTML and Markdown reports: onsets, self-contained output, escaping, determinism."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import pytest

from mechcheck.cli import main
from mechcheck.errors import MechcheckError
from mechcheck.html_report import onsets, render
from mechcheck.report import write_report
from mechcheck.results import ClaimResult

STEPS = ("step5", "step10", "step20", "step40")
EVIL = "<script>alert('x')</script>&$"


def _run(claim: str, verdicts: str, *, file: str = "claims/test_a.yaml",
         kind: str = "necessary") -> list[ClaimResult]:
    """One claim over STEPS; ``verdicts`` spells them: p(ass) f(ail) e(rror) s(kip)."""
    names = {"p": "pass", "f": "fail", "e": "error", "s": "skip"}
    results = []
    for i, (step, letter) in enumerate(zip(STEPS, verdicts, strict=True)):
        effect = None if letter in "es" else 0.2 + 0.3 * i
        results.append(ClaimResult(
            file=file, id=claim, model="m", checkpoint=step, kind=kind, n=20,
            effect=effect, ci_low=None if effect is None else effect - 0.1,
            ci_high=None if effect is None else float("inf"), threshold=0.5,
            p_adjusted=0.01, verdict=names[letter], line=3))
    return results


def _results() -> list[ClaimResult]:
    return (_run("emerges", "ffpp") + _run("never", "ffff") + _run("lost", "ppfp")
            + _run("gap", "fepf", kind="negligible") + _run(EVIL, "pppp"))


def test_onsets_on_hand_made_results() -> None:
    found = onsets(_results())
    file = "claims/test_a.yaml"
    assert list(found) == [(file, "emerges"), (file, "never"), (file, "lost"),
                           (file, "gap"), (file, EVIL)]
    assert found[(file, "emerges")] == ("step20", None)
    assert found[(file, "never")] == (None, None)
    assert found[(file, "lost")] == ("step5", "step20")  # regained at step40: still lost
    assert found[(file, "gap")] == ("step20", "step40")  # an error is not a loss
    assert found[(file, EVIL)] == ("step5", None)


def test_onsets_follow_first_appearance_and_no_checkpoint() -> None:
    late_first = _run("a", "fppf")[::-1]  # step40 appears first: it comes first
    assert onsets(late_first)[("claims/test_a.yaml", "a")] == ("step20", "step5")
    bare = [ClaimResult(file="f", id="x", model="m", verdict="pass"),
            ClaimResult(file="f", id="y", model="m", verdict="fail")]
    assert onsets(bare) == {("f", "x"): ("-", None), ("f", "y"): (None, None)}
    assert onsets([]) == {}


def test_html_is_self_contained_and_escaped(tmp_path: Path) -> None:
    baseline = _run("lost", "pppp")
    path = render(_results(), tmp_path / "r.html", baseline=baseline, title="T <&>")
    text = path.read_text(encoding="utf-8")
    assert text.count('<img src="data:image/png;base64,') == 2
    assert "http://" not in text and "https://" not in text
    assert "<script" not in text and "javascript" not in text.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;$" in text
    assert "<title>T &lt;&amp;&gt;</title>" in text
    assert "regression" in text and "1 regression(s) or drift" in text
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', text):
        assert base64.b64decode(data).startswith(b"\x89PNG")
    assert "<td>lost</td><td>step5</td><td>step20</td>" in text


def test_baseline_drift_is_listed_with_max_drift(tmp_path: Path) -> None:
    moved = [replace(r, effect=r.effect + 1.0) for r in _run("steady", "pppp")]
    now = _run("steady", "pppp")
    text = render(now, tmp_path / "r.md", baseline=moved).read_text()
    assert "0 regression(s) or drift" in text
    text = render(now, tmp_path / "r.md", baseline=moved, max_drift=0.5).read_text()
    assert "4 regression(s) or drift" in text and "| drift | claims/test_a.yaml |" in text


def test_render_is_deterministic(tmp_path: Path) -> None:
    one = render(_results(), tmp_path / "one.html").read_bytes()
    two = render(_results(), tmp_path / "two.html").read_bytes()
    assert one == two
    render(_results(), tmp_path / "r.md")
    first = (tmp_path / "r_files" / "verdicts.png").read_bytes()
    render(_results(), tmp_path / "r.md")
    assert (tmp_path / "r_files" / "verdicts.png").read_bytes() == first


def test_markdown_links_its_figures(tmp_path: Path) -> None:
    path = render(_results(), tmp_path / "r.md")
    text = path.read_text(encoding="utf-8")
    assert "![Verdicts](r_files/verdicts.png)" in text
    assert "![Effects](r_files/effects.png)" in text
    for name in ("verdicts.png", "effects.png"):
        assert (tmp_path / "r_files" / name).read_bytes().startswith(b"\x89PNG")
    assert "&lt;script&gt;" in text and "<script" not in text
    assert "| claims/test_a.yaml | lost | step5 | step20 |" in text


def test_results_without_checkpoints_and_empty_runs(tmp_path: Path) -> None:
    bare = [ClaimResult(file="f.yaml", id="x", model="m", verdict="pass", effect=1.0,
                        ci_low=0.5, ci_high=1.5, threshold=0.2),
            ClaimResult(file="f.yaml", id="y", model="m", verdict="error")]
    text = render(bare, tmp_path / "bare.html").read_text()
    assert '<td>x</td><td>-</td><td class="v-pass">pass</td>' in text
    text = render([], tmp_path / "empty.md", baseline=[]).read_text()
    assert "0 result(s)" in text and not (tmp_path / "empty_files").exists()
    with pytest.raises(MechcheckError, match="unknown report format"):
        render(bare, tmp_path / "r.pdf")


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_report(_results(), tmp_path / "new.json")
    write_report(_run("lost", "pppp"), tmp_path / "old.json")
    assert main(["report", str(tmp_path / "new.json"), "-o", str(tmp_path / "r.html"),
                 "--baseline", str(tmp_path / "old.json")]) == 0
    assert "report written to" in capsys.readouterr().out
    assert "Changes from the baseline" in (tmp_path / "r.html").read_text()
    assert main(["report", str(tmp_path / "new.json"), "-o", str(tmp_path / "r.md")]) == 0
    assert (tmp_path / "r_files" / "effects.png").exists()
    assert main(["report", str(tmp_path / "new.json"), "-o", str(tmp_path / "r.txt")]) == 2
