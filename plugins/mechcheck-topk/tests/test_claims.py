"""End to end: after ``pip install``, claim files can use the plugin's metrics and rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mechcheck.plugins import Registry, get_plugin_manager

CLAIMS = Path(__file__).parent / "claims"


def test_the_entry_point_registers_the_metrics_and_the_rule() -> None:
    registry = Registry.from_plugins(get_plugin_manager())
    assert {"top_1", "top_5", "top_10", "answer_rank"} <= set(registry.metrics)
    assert "sign" in registry.rules


def test_claims_with_the_plugin_pass_and_fail_as_measured(pytester: pytest.Pytester) -> None:
    # one pytest run (an in-process run restores sys.modules, so run it once)
    pytester.makefile(".yaml", test_topk=(CLAIMS / "topk_claims.yaml").read_text(),
                      test_neg=(CLAIMS / "negligible_sign.yaml").read_text())
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
