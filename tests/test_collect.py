"""Claim items: distinct names, one evaluation per file, shared work charged to setup."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mechcheck.collect import item_names
from mechcheck.errors import ClaimSpecError
from mechcheck.spec.schema import ClaimSpec
from tests.conftest import word_rows


def _claim(claim_id: str, line: int) -> ClaimSpec:
    return ClaimSpec(id=claim_id, kind="attends", path="f.yaml", line=line, base_dir=".",
                     model=None)


def test_item_names_are_distinct_even_when_an_id_looks_generated() -> None:
    duplicate = ClaimSpecError("duplicate id 'x'", claim_id="x", line=7)
    unnamed = ClaimSpecError("the claim has no id", line=12)
    claims = [_claim("x", 3), duplicate, _claim("x@line7", 11), unnamed]
    names = item_names(claims)
    assert names == ["x", "x@line7", "x@line7@line11", "claim[3]"]
    assert len(set(names)) == len(names)


def test_ids_equal_to_generated_names_keep_every_claim_and_error(
        pytester: pytest.Pytester, tiny_folder: Any) -> None:
    pytester.path.joinpath("d.jsonl").write_text(
        "\n".join(json.dumps(r) for r in word_rows(8)))
    pytester.makefile(".yaml", test_ids=f"""\
model: {tiny_folder('gpt2')}
data: d.jsonl
claims:
  - {{id: a, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0.01}}
  - {{id: a, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0.01}}
  - {{id: "a@line5", kind: attends, components: ["head 0.0"], pattern: first_token,
      min_score: 0.01}}
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA", "--mechcheck-report", "r.json")
    records = json.loads(pytester.path.joinpath("r.json").read_text())["results"]
    assert len(records) == 3
    # the duplicate id is an error whatever the third claim is called
    assert any(r["verdict"] == "error" and "duplicate id 'a'" in r["message"] for r in records)
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) + outcomes.get("error", 0) >= 1
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) + outcomes.get("error", 0) == 3


def test_a_file_is_evaluated_once_and_its_work_is_charged_to_setup(
        pytester: pytest.Pytester, tiny_folder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import mechcheck.evaluate as evaluate

    calls: list[str] = []
    real = evaluate.evaluate_file

    def counting(parsed: Any, session: Any, **kwargs: Any) -> Any:
        calls.append(parsed.path)
        return real(parsed, session, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_file", counting)
    pytester.path.joinpath("d.jsonl").write_text(
        "\n".join(json.dumps(r) for r in word_rows(8)))
    pytester.makefile(".yaml", test_once=f"""\
model: {tiny_folder('gpt2')}
data: d.jsonl
claims:
  - {{id: one, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0.01}}
  - {{id: two, kind: attends, components: ["head 9.9"], pattern: first_token, min_score: 0.01}}
  - {{id: three, kind: attends, components: ["head 0.1"], pattern: first_token,
      min_score: 0.01}}
""")
    result = pytester.runpytest("-p", "no:cacheprovider", "--durations=0", "-vv")
    result.assert_outcomes(passed=2, failed=1)
    assert len(calls) == 1
    # the shared runs are the first claim's setup, not its call
    result.stdout.re_match_lines([r".*s setup\s+test_once.yaml::one"])


ONCE = """\
model: {model}
data: d.jsonl
claims:
  - {{id: one, kind: attends, components: ["head 0.0"], pattern: first_token, min_score: 0.01}}
  - {{id: two, kind: attends, components: ["head 9.9"], pattern: first_token, min_score: 0.01}}
  - {{id: three, kind: attends, components: ["head 0.1"], pattern: first_token,
      min_score: 0.01}}
"""


def test_the_file_node_measures_in_its_setup_and_items_read_their_results_from_it(
        pytester: pytest.Pytester, tiny_folder: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The file is measured once, in the setup phase of its first item that runs (pytest
    runs a collector's setup there: --durations lists no collector); each item's result
    is its parent's, by position; -k selects items, never the family."""
    import os

    import mechcheck.evaluate as evaluate

    phases: list[str] = []
    real = evaluate.evaluate_file

    def recording(parsed: Any, session: Any, **kwargs: Any) -> Any:
        phases.append(os.environ["PYTEST_CURRENT_TEST"])
        return real(parsed, session, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_file", recording)
    pytester.path.joinpath("d.jsonl").write_text(
        "\n".join(json.dumps(r) for r in word_rows(8)))
    pytester.makefile(".yaml", test_once=ONCE.format(model=tiny_folder("gpt2")))
    pytester.makeconftest("""
        from mechcheck.collect import ClaimFileNode, ClaimItem

        def pytest_runtest_teardown(item):
            results = item.parent.results(item.checkpoint)
            assert isinstance(item.parent, ClaimFileNode)
            assert item.result is not None
            assert item.result.id == results[item.index].id == item.name
            assert not hasattr(item.config, "_mechcheck") and item.index >= 0
    """)
    full = pytester.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "all.json")
    full.assert_outcomes(passed=2, failed=1)
    assert phases == ["test_once.yaml::one (setup)"]
    phases.clear()
    only = pytester.runpytest("-p", "no:cacheprovider", "-k", "two", "--durations=0", "-vv",
                              "--mechcheck-report", "two.json")
    only.assert_outcomes(failed=1)
    assert phases == ["test_once.yaml::two (setup)"]
    only.stdout.re_match_lines([r".*s setup\s+test_once.yaml::two"])
    (two,) = json.loads(pytester.path.joinpath("two.json").read_text())["results"]
    every = json.loads(pytester.path.joinpath("all.json").read_text())["results"]
    same = next(r for r in every if r["id"] == "two")
    assert {k: v for k, v in two.items() if k != "duration_s"} == \
        {k: v for k, v in same.items() if k != "duration_s"}


def test_each_checkpoint_is_measured_in_the_setup_of_its_first_item(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    import mechcheck.evaluate as evaluate
    from tests.conftest import checkpointed_project

    phases: list[str] = []
    real = evaluate.evaluate_file

    def recording(parsed: Any, session: Any, **kwargs: Any) -> Any:
        phases.append(os.environ["PYTEST_CURRENT_TEST"])
        return real(parsed, session, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_file", recording)
    pytester.makefile(".yaml", test_ckpt=checkpointed_project(pytester.path,
                                                              ("step0", "step5")))
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2, failed=2)
    assert phases == ["test_ckpt.yaml::first[step0] (setup)",
                      "test_ckpt.yaml::first[step5] (setup)"]


def test_plugin_state_is_in_typed_stash_keys_and_the_wrapper_is_new_style(
        pytester: pytest.Pytester) -> None:
    import mechcheck.pytest_plugin as plugin_module
    from mechcheck.collect import CHECKER_KEY, PLUGIN_KEY

    assert isinstance(PLUGIN_KEY, pytest.StashKey) and isinstance(CHECKER_KEY, pytest.StashKey)
    impl = plugin_module.pytest_runtest_makereport.pytest_impl  # type: ignore[attr-defined]
    assert impl.get("wrapper") is True and not impl.get("hookwrapper")
    pytester.makeconftest("""
        from mechcheck.collect import CHECKER_KEY, PLUGIN_KEY
        from mechcheck.pytest_plugin import MechcheckPlugin

        def pytest_runtest_teardown(item):
            assert isinstance(item.config.stash[PLUGIN_KEY], MechcheckPlugin)
            checker = item.stash[CHECKER_KEY]
            assert [r.verdict for r in checker.results] == ["error"]
            assert not hasattr(item, "mechcheck_checker")
            print("STASH-CHECKED")
    """)
    pytester.makepyfile(test_py="""
        def test_claim(mechcheck):
            mechcheck.check(id="x", kind="no_such_kind")
    """)
    result = pytester.runpytest("-p", "no:cacheprovider", "-s")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*STASH-CHECKED*", "*unknown kind 'no_such_kind'*"])
