"""HTML and Markdown reports: onsets, self-contained output, escaping, determinism."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from pathlib import Path

import pytest

from mechcheck.cli import main
from mechcheck.errors import MechcheckError
from mechcheck.report.html import onsets, render
from mechcheck.report.io import write_report
from mechcheck.report.results import ClaimResult
from tests.test_figures import probe_profile, steering_profile

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
    assert '<td>x</td><td>-</td><td>-</td><td>-</td><td class="v-pass">pass</td>' in text
    assert "checkpoint" not in text.replace("without checkpoints", "")  # no heatmap, no column
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


def test_changes_are_coloured_by_their_kind(tmp_path: Path) -> None:
    old = _run("lost", "pppp") + _run("emerges", "ffff") + _run("steady", "pppp")
    now = (_run("lost", "ppfp") + _run("emerges", "ffpp")
           + [replace(r, effect=(r.effect or 0) + 1.0) for r in _run("steady", "pppp")])
    text = render(now, tmp_path / "r.html", baseline=old, max_drift=0.5).read_text()
    assert '<td class="c-regression">regression</td><td>claims/test_a.yaml</td><td>lost</td>' \
        in text
    assert '<td class="c-fixed">fixed</td>' in text and '<td class="c-drift">drift</td>' in text
    css = text.split("<style>")[1].split("</style>")[0]
    assert ".c-regression { background: #f8d0cc; border-left: 4px solid #d73027; }" in css
    assert ".c-fixed { background: #d9f0d3; border-left: 4px solid #1a9850; }" in css
    assert "pass -&gt; fail" in text and 'class="v-pass -&gt;' not in text


def test_a_run_without_checkpoints_lists_claims_and_plots_effects(tmp_path: Path) -> None:
    flat = [
        ClaimResult(file="c/test_a.yaml", id="drop", model="m", kind="necessary", line=4,
                    verdict="pass", effect=1.2, ci_low=0.9, ci_high=float("inf"),
                    threshold=0.5, p_adjusted=0.0, n=30, expected="logprob drop > 0.5"),
        ClaimResult(file="c/test_a.yaml", id="known_gap", model="m", kind="negligible",
                    line=12, verdict="fail", reason="refuted", effect=0.8, ci_low=0.6,
                    ci_high=1.0, threshold=0.3, n=30, expected="|logprob change| < 0.3",
                    xfail="the MLP carries it too", message="c/test_a.yaml:12 claim "
                    "'known_gap' failed: refuted\n  observed  0.8"),
        ClaimResult(file="c/test_a.yaml", id="lucky", model="m", kind="attends", line=20,
                    verdict="pass", effect=0.7, ci_low=0.6, ci_high=0.8, threshold=0.5,
                    n=30, expected="first_token score > 0.5", xfail="thought it fails"),
        ClaimResult(file="c/test_a.yaml", id="broken", model="m", line=25,
                    verdict="error", message="c/test_a.yaml:25: claim 'broken', key "
                    "'data': no data given"),
    ]
    text = render(flat, tmp_path / "flat.html").read_text()
    assert text.count('<img src="data:image/png;base64,') == 1  # the effect plot only
    assert "<h2>Verdicts</h2>" not in text and "<h2>Onsets</h2>" not in text
    assert ("<td>c/test_a.yaml</td><td>drop</td><td>4</td><td>necessary</td>"
            "<td>logprob drop &gt; 0.5</td><td class=\"v-pass\">pass</td>") in text
    assert '<td>|logprob change| &lt; 0.3</td><td class="v-xfail">xfail</td>' in text
    assert '<td class="v-xpass">xpass</td>' in text
    assert "<td>&lt; 1e-300</td>" in text  # an underflowed p is not 0
    assert "<summary>c/test_a.yaml::known_gap: xfail</summary>" in text
    assert "expected to fail (xfail): the MLP carries it too" in text
    assert "key &#x27;data&#x27;: no data given" in text
    assert "1 pass, 1 error, 1 xfail, 1 xpass." in text
    md = render(flat, tmp_path / "flat.md").read_text()
    assert "### c/test_a.yaml::broken: error" in md and "![Effects](flat_files/effects.png)" in md


def test_sweeps_show_xfail_cells_and_every_claims_expectation(tmp_path: Path) -> None:
    runs = [replace(r, xfail="before step20" if r.checkpoint in ("step5", "step10") else None,
                    expected="logprob drop > 0.5") for r in _run("emerges", "ffpp")]
    text = render(runs + _run("other", "pppp", file="claims/test_b.yaml"),
                  tmp_path / "s.html", incomplete="interrupted").read_text()
    assert text.count('<img src="data:image/png;base64,') == 2
    assert '<td>step5</td><td class="v-xfail">xfail</td>' in text
    assert "<h2>Claims</h2>" in text and "<td>logprob drop &gt; 0.5</td>" in text
    assert '<p class="warn">Incomplete run (interrupted): only the claims measured' in text
    assert "<td>emerges</td><td>step20</td><td>-</td>" in text  # onset from real verdicts


def test_a_circuits_criteria_get_a_section_of_their_own(tmp_path: Path) -> None:
    criteria = [
        {"name": "faithfulness", "effect": 0.9553, "ci_low": 0.94, "ci_high": 0.968,
         "threshold": 0.9, "p_value": 0.0001, "passed": True, "detail": ""},
        {"name": "completeness", "effect": -1.5, "ci_low": -1.7, "ci_high": -1.4,
         "threshold": 1.27, "p_value": 0.999, "passed": False,
         "detail": "least complete for K = {blocks.1.attn.head.2}"}]
    results = [ClaimResult(file="claims/test_c.yaml", id="circ", model="m", kind="circuit",
                           n=200, effect=-1.5, verdict="fail", criteria=criteria),
               ClaimResult(file="claims/test_c.yaml", id="plain", model="m", n=5,
                           effect=1.0, verdict="pass")]
    text = render(results, tmp_path / "r.md").read_text()
    section = text.split("## Criteria", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| claims/")]
    assert len(rows) == 2  # the circuit's two criteria; the plain claim has none
    assert "faithfulness" in rows[0] and "pass" in rows[0] and "0.9553" in rows[0]
    assert "least complete for K = {blocks.1.attn.head.2}" in rows[1] and "fail" in rows[1]
    plain = render(results[1:], tmp_path / "p.md").read_text()
    assert "## Criteria" not in plain


def _profiled() -> list[ClaimResult]:
    """A probe with a curve, a steering claim with a dose-response, a plain claim."""
    return [
        ClaimResult(file="claims/test_p.yaml", id="probe", model="m", kind="probe",
                    verdict="pass", effect=0.3, ci_low=0.25, ci_high=0.35, threshold=0.1,
                    profile=probe_profile()),
        ClaimResult(file="claims/test_p.yaml", id="steer", model="m", kind="steers",
                    verdict="fail", effect=3.2, ci_low=2.9, ci_high=3.5, threshold=4.0,
                    profile=steering_profile(),
                    criteria=[{"name": "min_shift", "effect": 3.2, "passed": False}]),
        ClaimResult(file="claims/test_p.yaml", id="plain", model="m", verdict="pass",
                    effect=1.0),
    ]


def test_profiles_get_a_plot_and_a_table_under_curves(tmp_path: Path) -> None:
    text = render(_profiled(), tmp_path / "r.html").read_text()
    assert text.count("<h2>Curves</h2>") == 1
    assert text.index("<h2>Criteria</h2>") < text.index("<h2>Curves</h2>") \
        < text.index("<h2>Messages</h2>")
    curves = text.split("<h2>Curves</h2>", 1)[1].split("<h2>", 1)[0]
    parts = curves.split("<h3>")[1:]
    assert [p.split("</h3>")[0] for p in parts] == ["claims/test_p.yaml::probe",
                                                    "claims/test_p.yaml::steer"]
    for part in parts:
        data = re.findall(r'<img src="data:image/png;base64,([^"]+)"', part)
        assert len(data) == 1 and base64.b64decode(data[0]).startswith(b"\x89PNG")
    assert ("<tr><th>site</th><th>layer</th><th>task</th><th>control</th>"
            "<th>selectivity</th><th>CI</th><th>chance</th></tr>") in parts[0]
    assert ("<tr><td>blocks.3.resid_post</td><td>3</td><td>0.93</td><td>0.6</td>"
            "<td>0.33</td><td>[0.28, inf]</td><td>0.5</td></tr>") in parts[0]
    assert "<tr><th>scale</th><th>shift</th><th>CI</th><th>random_shift</th></tr>" in parts[1]
    assert "<tr><td>4</td><td>1.6</td><td>[1.3, 1.9]</td><td>0.12</td></tr>" in parts[1]
    assert text.count('<img src="data:image/png;base64,') == 3  # effects + two curves


def test_markdown_writes_each_curve_beside_the_report(tmp_path: Path) -> None:
    text = render(_profiled(), tmp_path / "r.md").read_text()
    section = text.split("## Curves", 1)[1].split("\n## ", 1)[0]
    assert "### claims/test_p.yaml::probe\n\n![claims/test_p.yaml::probe](r_files/curve1.png)" \
        in section
    assert "![claims/test_p.yaml::steer](r_files/curve2.png)" in section
    assert "| 8 | 3.2 | [2.9, 3.5] | 0.24 |" in section
    for name in ("curve1.png", "curve2.png"):
        assert (tmp_path / "r_files" / name).read_bytes().startswith(b"\x89PNG")
    assert not (tmp_path / "r_files" / "curve3.png").exists()  # the plain claim has none


def test_curves_are_deterministic_and_only_for_claims_with_a_profile(tmp_path: Path) -> None:
    one = render(_profiled(), tmp_path / "one.html").read_bytes()
    assert render(_profiled(), tmp_path / "two.html").read_bytes() == one
    render(_profiled(), tmp_path / "r.md")
    first = (tmp_path / "r_files" / "curve1.png").read_bytes()
    render(_profiled(), tmp_path / "r.md")
    assert (tmp_path / "r_files" / "curve1.png").read_bytes() == first
    bare = [replace(r, profile=[]) for r in _profiled()]
    for name in ("bare.html", "bare.md"):
        text = render(bare, tmp_path / name).read_text()
        assert "Curves" not in text and "<h3>" not in text and "curve1.png" not in text
    assert not (tmp_path / "bare_files" / "curve1.png").exists()
    swept = [replace(r, checkpoint=step) for r in _profiled()[:1] for step in STEPS[:2]]
    text = render(swept, tmp_path / "s.html").read_text()
    assert "<h3>claims/test_p.yaml::probe [step10]</h3>" in text
