"""``mechcheck scan``: the exact and attribution scans, the draft claim file, errors.

The planted model (zoo:planted-prevtoken, mechcheck/zoo/planted.py) has one working
head, 0.0; every other head and both MLPs write exactly nothing.  So the answer of a
scan is known by construction: head 0.0's drop is the whole clean logit difference and
every other component's is 0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mechcheck.cli import main
from mechcheck.scan import scan
from tests.conftest import ROOT, word_rows

PLANTED = str(ROOT / "claims" / "zoo" / "planted.jsonl")
ALL = ["blocks.*.attn.head.*", "mlp 0", "mlp 1"]


def _run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    code = main(["scan", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_exact_scan_finds_the_planted_head(capsys: Any, tmp_path: Path) -> None:
    from mechcheck.api import evaluate_path

    draft, png = tmp_path / "draft.yaml", tmp_path / "heads.png"
    code, out, err = _run(capsys, "zoo:planted-prevtoken", "--data", PLANTED, "--metric",
                          "logit_diff", "--components", *ALL, "--ablation", "zero",
                          "--n", "24", "--top", "3", "--out", str(draft),
                          "--heatmap", str(png))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("top 3 of 6 components by logit_diff drop")
    first = lines[2].split()
    assert first[0] == "blocks.0.attn.head.0" and first[-1] == "pass"
    clean = float(lines[0].split("clean mean ")[1].rstrip("):"))
    assert float(first[1]) == pytest.approx(clean, rel=1e-3) and clean > 5
    assert all(line.split()[1] == "0" for line in lines[3:5])  # nothing else writes
    assert "layer\\head" in out and "1/6 passed" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = draft.read_text()
    assert text.startswith("# DRAFT written by `mechcheck scan`")
    assert "components: [blocks.0.attn.head.0]" in text
    assert text.count("kind: necessary") == 1  # the zero drops are left out
    assert "blocks.1.attn.head.0: drop 0" in text
    # the draft loads, runs as a claim file next to nothing but itself, and passes
    results = evaluate_path(draft)
    assert [(r.id, r.verdict) for r in results] == [
        ("blocks_0_attn_head_0_necessary", "pass")]
    threshold = float(text.split("min_drop: ")[1].split()[0])
    assert 0.75 * clean < threshold < 0.8 * clean  # 20% below a bound just under 9.9


def test_exact_effects_are_kind_necessary_s(tmp_path: Path) -> None:
    """The scan's drop and interval of each head are those of a kind: necessary claim
    on that head alone, measured through the claim pipeline."""
    from mechcheck.api import evaluate_path
    from mechcheck.testing.models import save_tiny

    folder = save_tiny("llama", tmp_path / "m", seed=4, n_kv_heads=2)
    rows = word_rows(10, seed=1, lengths=(7,))
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = scan(str(folder), data=str(data), metric="logprob",
                  components=["blocks.1.attn.head.*"], ablation="mean", at=("last",))
    claims = "\n".join(
        f"  - {{id: h{h}, kind: necessary, components: [head 1.{h}], ablation: mean, "
        f"at: last, min_drop: 0}}" for h in range(4))
    (tmp_path / "test_c.yaml").write_text(
        f"model: {folder}\ndata: rows.jsonl\nmetric: logprob\ncorrection: none\n"
        f"claims:\n{claims}\n")
    results = {r.id: r for r in evaluate_path(tmp_path / "test_c.yaml")}
    assert len(result.rows) == 4
    for h, row in enumerate(result.rows):
        ref = results[f"h{h}"]
        assert row.components == (f"blocks.1.attn.head.{h}",)
        assert row.effect == pytest.approx(ref.effect, rel=1e-5, abs=1e-7)
        assert row.ci_low == pytest.approx(ref.ci_low, rel=1e-5, abs=1e-7)
        assert row.ci_high == pytest.approx(ref.ci_high, rel=1e-5, abs=1e-7)
    assert len({round(r.effect, 9) for r in result.rows}) == 4  # not all alike


def test_attribution_scan_confirms_the_top_estimates(capsys: Any, tmp_path: Path) -> None:
    from mechcheck.engine.attribution import rank_agreement

    common: dict[str, Any] = dict(data=PLANTED, metric="logit_diff", components=ALL,
                                  ablation="zero", n=8)
    exact = scan("zoo:planted-prevtoken", **common)
    approx = scan("zoo:planted-prevtoken", method="attribution", confirm=3, **common)
    assert [r.verdict for r in approx.rows].count("skip") == 3
    by_id = {r.id: r for r in exact.rows}
    for row in approx.rows:
        assert row.estimate is not None
        if row.exact:  # a confirmed row is the exact one, not the estimate
            assert row.effect == pytest.approx(by_id[row.id].effect, rel=1e-6, abs=1e-9)
            assert row.ci_low == pytest.approx(by_id[row.id].ci_low, rel=1e-6, abs=1e-9)
    # the planted head's estimate is large and the zeroed components' exactly 0
    assert approx.rows[0].components == ("blocks.0.attn.head.0",)
    assert approx.rows[0].exact and approx.rows[0].estimate > 1.0
    assert all(r.estimate == 0.0 for r in approx.rows[1:])
    confirmed = [r for r in approx.rows if r.exact]
    assert approx.agreement is not None
    rho, overlap = rank_agreement([r.estimate for r in confirmed],
                                  [r.effect for r in confirmed], top=approx.agreement[2])
    assert approx.agreement[2] == 1  # top-1 of 3 confirmed: the planted head, both ways
    assert approx.agreement[1] == overlap == 1.0
    code, out, err = _run(capsys, "zoo:planted-prevtoken", "--data", PLANTED, "--metric",
                          "logit_diff", "--components", *ALL, "--ablation", "zero",
                          "--n", "8", "--method", "attribution", "--confirm", "3",
                          "--ig-steps", "2")
    assert code == 0, err
    assert "attribution vs exact over the 3 confirmed: Spearman" in out
    assert "estimate" in out.splitlines()[1]


def test_same_seed_same_draft(capsys: Any, tmp_path: Path) -> None:
    texts = []
    for name in ("a.yaml", "b.yaml"):
        code, _, err = _run(capsys, "zoo:planted-prevtoken", "--data", PLANTED, "--metric",
                            "logit_diff", "--components", "head 0.0", "head 0.1",
                            "--n", "12", "--seed", "3", "--out", str(tmp_path / name))
        assert code == 0, err
        texts.append((tmp_path / name).read_text())
    assert texts[0] == texts[1]


@pytest.mark.parametrize(("argv", "words"), [
    (["--method", "guess"], "--method: unknown method 'guess'"),
    (["--data", "nope.jsonl"], "--data: no data file at nope.jsonl"),
    (["--metric", "logit_dif"], "--metric: "),
    (["--components", "head 9.0"], "--components: "),
    (["--components", "heads 0"], "--components: "),
    (["--ablation", "erase"], "--ablation: "),
    (["--ablation", "denoise"], "--ablation: intervention 'denoise' runs on corrupt"),
    (["--ig-steps", "3"], "--ig-steps: applies to --method attribution only"),
    (["--margin", "1.5"], "--margin: must be a fraction"),
    (["--top", "0"], "--top: must be at least 1"),
    (["--confirm", "1", "--method", "attribution"], "--confirm: must be at least 2"),
    (["--out", "draft.txt"], "--out: draft.txt does not end in .yaml"),
    (["--heatmap", "/no/such/dir/h.png"], "--heatmap: cannot write"),
    (["--at", "NOPE"], "--at: "),
    (["--mean-by", "template", "--ablation", "zero"], "--mean-by: mean_by applies"),
    (["--metric", "accuracy", "--method", "attribution"],
     "--metric: metric accuracy is not differentiable"),
])
def test_bad_options_are_one_clear_error(capsys: Any, argv: list[str], words: str) -> None:
    base = {"--data": PLANTED, "--metric": "logit_diff", "--n": "8"}
    for i in range(0, len(argv) - 1):
        if argv[i] in base:
            base[argv[i]] = argv[i + 1]
    rest = [a for i, a in enumerate(argv)
            if not (a in base or (i and argv[i - 1] in base))]
    flat = [x for kv in base.items() for x in kv]
    code, out, err = _run(capsys, "zoo:planted-prevtoken", *flat, *rest)
    assert code == 2
    assert err.startswith("mechcheck: " + words), err
    assert "Traceback" not in err and "fix: " in err
    assert len(err.strip().splitlines()) == 2  # the message and its fix


def test_unknown_model_is_named(capsys: Any) -> None:
    code, _, err = _run(capsys, "zoo:nope", "--data", PLANTED, "--metric", "logprob")
    assert code == 2 and err.startswith("mechcheck: MODEL: "), err


def test_rows_are_records_the_heatmaps_draw() -> None:
    from mechcheck.report.figures import text_heatmap

    result = scan("zoo:planted-prevtoken", data=PLANTED, metric="logit_diff",
                  components=["blocks.*.attn.head.*"], ablation="zero", n=8)
    grid = text_heatmap(result.rows)
    assert grid.splitlines()[1].split()[:2] == ["0", "9*"]
    assert np.isclose(result.rows[0].effect, result.clean_mean)


def test_docs_scan_examples_print_what_they_show(capsys: Any, tmp_path: Path,
                                                 monkeypatch: Any) -> None:
    """tests/test_docs.py runs only claim-running commands; the `mechcheck scan`
    examples of docs/sweeps.md are run here, from a folder holding claims/, and every
    line they show (but `...`) must be printed, in order."""
    import shlex
    import shutil

    shutil.copytree(ROOT / "claims" / "zoo", tmp_path / "claims" / "zoo")
    monkeypatch.chdir(tmp_path)
    page = (ROOT / "docs" / "sweeps.md").read_text()
    examples = [part.split("```")[0] for part in page.split("```console\n")[1:]]
    examples = [e for e in examples if e.startswith("$ mechcheck scan ")]
    assert len(examples) >= 2
    for example in examples:
        command, *shown = example.rstrip("\n").splitlines()
        code, out, err = _run(capsys, *shlex.split(command[2:])[2:])
        assert code == 0, err
        printed = iter(out.splitlines())
        for line in shown:
            if line != "...":
                assert any(p.rstrip() == line.rstrip() for p in printed), (command, line)
