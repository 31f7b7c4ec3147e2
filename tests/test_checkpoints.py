"""Claims across checkpoints: one item per claim x checkpoint, the matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mechcheck.models.loading import with_checkpoint
from mechcheck.models.source import parse_source
from mechcheck.report.io import matrix, read_report
from tests.conftest import checkpointed_project


def test_with_checkpoint() -> None:
    assert with_checkpoint("hf:EleutherAI/pythia-70m", "step1000") == \
        "hf:EleutherAI/pythia-70m@step1000"
    assert with_checkpoint("hf:x@main", "step1") == "hf:x@step1"
    assert with_checkpoint("zoo:induction-2l", "step0") == "zoo:induction-2l@step0"
    assert with_checkpoint("models/m", "step3") == str(Path("models/m/step3"))
    assert with_checkpoint("models/m", None) == "models/m"


@pytest.mark.parametrize("model", ["hf:EleutherAI/pythia-70m", "hf:x@main",
                                   "zoo:induction-2l", "models/m", "../m", "gguf:x.gguf"])
@pytest.mark.parametrize("checkpoint", ["step3", None])
def test_a_parsed_source_at_a_checkpoint_is_the_checkpoint_parsed(
        model: str, checkpoint: str | None, tmp_path: Path) -> None:
    """ModelSource.at (what a claim's source becomes on a checkpoint) equals parsing the
    checkpoint's model: value, so the source is parsed once, when the claim is read."""
    source = parse_source(model, base_dir=tmp_path)
    assert source.at(checkpoint) == parse_source(with_checkpoint(model, checkpoint),
                                                 base_dir=tmp_path)


@pytest.fixture
def checkpointed(pytester: pytest.Pytester) -> pytest.Pytester:
    text = checkpointed_project(pytester.path, ("step0", "step5", "step9"))
    pytester.makefile(".yaml", test_ckpt=text)
    return pytester


def test_one_item_per_claim_and_checkpoint(checkpointed: pytest.Pytester) -> None:
    result = checkpointed.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_ckpt.yaml::first[[]step0[]]",
                                 "test_ckpt.yaml::never[[]step0[]]",
                                 "test_ckpt.yaml::first[[]step5[]]"])
    result = checkpointed.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "r.json")
    result.assert_outcomes(passed=3, failed=3)
    results = read_report(checkpointed.path / "r.json")
    assert [(r.id, r.checkpoint) for r in results][:2] == [("first", "step0"),
                                                            ("first", "step5")]
    table = matrix(results)
    assert list(table.columns) == ["step0", "step5", "step9"]
    assert table.loc[("test_ckpt.yaml", "first")].tolist() == ["pass"] * 3
    assert table.loc[("test_ckpt.yaml", "never")].tolist() == ["fail"] * 3
    effects = matrix(results, values="effect")
    assert effects.loc[("test_ckpt.yaml", "first"), "step0"] != \
        effects.loc[("test_ckpt.yaml", "first"), "step9"]  # different weights


def test_option_overrides_and_k_selects(checkpointed: pytest.Pytester) -> None:
    result = checkpointed.runpytest("-p", "no:cacheprovider", "--mechcheck-checkpoints",
                                    "step9", "-k", "first")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*test_ckpt.yaml::first[[]step9[]]*pass*"])
    result = checkpointed.runpytest("-p", "no:cacheprovider", "--mechcheck-checkpoints",
                                    "step7", "-k", "first")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*key 'model': no model folder at *step7*"])


def test_each_checkpoint_is_loaded_once(checkpointed: pytest.Pytester,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import mechcheck.models.loading as loading

    loads: list[str] = []
    real = loading.load_source  # what the built-in mechcheck_load_model calls
    monkeypatch.setattr(loading, "load_source", lambda source, options: loads.append(source)
                        or real(source, options))
    checkpointed.runpytest("-p", "no:cacheprovider")
    assert [Path(str(s)).name for s in loads] == ["step0", "step5", "step9"]


def test_matrix_accepts_a_frame(tmp_path: Path) -> None:
    from mechcheck.report.io import results_frame
    from mechcheck.report.results import ClaimResult

    results = [ClaimResult(file="f", id=i, model="m", checkpoint=c, verdict=v)
               for i, c, v in [("a", "s1", "fail"), ("a", "s2", "pass"), ("b", "s1", "pass")]]
    table = matrix(results_frame(results))
    assert table.loc[("f", "a")].tolist() == ["fail", "pass"]
    assert Any is not None


def test_xfail_before_marks_earlier_checkpoints(checkpointed: pytest.Pytester) -> None:
    text = checkpointed.path.joinpath("test_ckpt.yaml").read_text()
    checkpointed.path.joinpath("test_ckpt.yaml").write_text(
        text.replace("min_score: 0.99", "min_score: 0.99\n    xfail_before: step9"))
    result = checkpointed.runpytest("-p", "no:cacheprovider", "-k", "never")
    result.assert_outcomes(xfailed=2, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_ckpt.yaml::never[[]step9[]]*"])
