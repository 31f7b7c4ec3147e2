"""End to end: after ``pip install``, claim files can use the plugin's metrics and rule."""

from __future__ import annotations

import json

import pytest

from mechcheck.plugins import Registry, get_plugin_manager

CLAIMS = """\
model: zoo:induction-2l
task: {name: induction, n: 40, seed: 0}
claims:
  - id: answer_in_top_5
    kind: performs
    metric: top_5
    min_value: 0.5
    test: sign
  - id: head_0_2_raises_the_rank
    description: without the previous-token head the answer falls down the ranking
    kind: necessary
    components: ["head 0.2"]
    ablation: mean
    metric: answer_rank
    min_drop: 5
    test: sign
  - id: head_0_0_raises_the_rank
    kind: necessary
    components: ["head 0.0"]
    ablation: mean
    metric: answer_rank
    min_drop: 1
    test: sign
"""


def test_the_entry_point_registers_the_metrics_and_the_rule() -> None:
    registry = Registry.from_plugins(get_plugin_manager())
    assert {"top_1", "top_5", "top_10", "answer_rank"} <= set(registry.metrics)
    assert "sign" in registry.rules


NEGLIGIBLE = """\
model: zoo:induction-2l
task: {name: induction, n: 10}
claims:
  - id: no_sign_here
    kind: negligible
    components: ["head 0.0"]
    ablation: mean
    metric: answer_rank
    margin: 1
    test: sign
"""


def test_claims_with_the_plugin_pass_and_fail_as_measured(pytester: pytest.Pytester) -> None:
    # one pytest run (an in-process run restores sys.modules, so run it once)
    pytester.makefile(".yaml", test_topk=CLAIMS, test_neg=NEGLIGIBLE)
    result = pytester.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "r.json")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*claim 'head_0_0_raises_the_rank' failed*",
                                 "*expected*answer_rank rise > 1*"])
    records = {r["id"]: r for r in json.loads((pytester.path / "r.json").read_text())["results"]}
    assert {records[i]["method"] for i in ("answer_in_top_5", "head_0_2_raises_the_rank",
                                           "head_0_0_raises_the_rank")} == {"sign"}
    assert records["answer_in_top_5"]["effect"] == 1.0     # the median prompt's value
    assert records["head_0_2_raises_the_rank"]["effect"] > 5
    assert records["head_0_0_raises_the_rank"]["effect"] == 0.0
    # negligible keeps its own tests: sign is refused there, at the claim's test: key
    result.stdout.fnmatch_lines(["*claim 'no_sign_here', key 'test': test: sign does not "
                                 "apply here*"])
