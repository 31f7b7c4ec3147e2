"""The plugin manager: built-ins as an ordinary plugin, extra plugins, loud failures."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy
import pytest

from mechcheck.errors import ClaimSpecError, MechcheckError
from mechcheck.hookspecs import hookimpl
from mechcheck.plugins import Registry, get_plugin_manager
from tests.conftest import word_rows


class TopTwoMetric:
    """A plugin adding a metric: 1 where the answer is among the two top tokens."""

    @hookimpl
    def mechcheck_metrics(self) -> list[Any]:
        import torch

        from mechcheck.metrics import Metric

        def top2(logits: torch.Tensor, inputs: Any) -> torch.Tensor:
            top = logits.topk(2, dim=-1).indices
            return (top == inputs.answers.view(-1, 1)).any(-1).float()

        return [Metric(name="top2", fn=top2, description="answer in the top two")]


def test_builtins_are_registered_like_any_plugin() -> None:
    registry = Registry.from_plugins()
    assert set(registry.kinds) == {"necessary", "sufficient", "negligible", "attends",
                                   "performs"}
    assert {"zero", "mean", "resample", "noise", "denoise"} <= set(registry.interventions)
    assert {"logit_diff", "logprob", "prob", "accuracy", "kl"} <= set(registry.metrics)
    assert {a.name for a in registry.archs} >= {"gpt2", "gpt_neox", "llama"}


def test_extra_plugin_adds_a_metric_and_duplicates_are_refused() -> None:
    registry = Registry.from_plugins(get_plugin_manager([TopTwoMetric()]))
    assert "top2" in registry.metrics
    with pytest.raises(MechcheckError, match="two plugins register a metric named 'top2'"):
        Registry.from_plugins(get_plugin_manager([TopTwoMetric(), TopTwoMetric()]))


def test_misspelled_hook_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def mechcheck_metric(self) -> list[Any]:
            return []

    with pytest.raises(pluggy.PluginValidationError):
        get_plugin_manager([Typo()])


def test_unknown_names_list_what_is_registered() -> None:
    registry = Registry.from_plugins()
    with pytest.raises(ClaimSpecError, match="unknown metric 'logit_dif'") as info:
        registry.lookup("metrics", "logit_dif", key="metric")
    assert "did you mean logit_diff" in info.value.hint


def test_plugin_metric_in_a_claim_file(pytester: pytest.Pytester, tiny_folder: Any) -> None:
    pytester.makepyfile(top2plugin="""
        from tests.test_plugins import TopTwoMetric
        mechcheck_metrics = TopTwoMetric().mechcheck_metrics
    """)
    pytester.makeini("[pytest]\nmechcheck_plugins = top2plugin\n")
    pytester.path.joinpath("d.jsonl").write_text(
        "\n".join(json.dumps(r) for r in word_rows(12)))
    pytester.makefile(".yaml", test_top2=f"""\
model: {tiny_folder('gpt2')}
data: d.jsonl
claims:
  - id: plugin_metric
    kind: negligible
    metric: top2
    components: ["head 0.0"]
    ablation: zero
    margin: 0.9
""")
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "r.json")
    result.assert_outcomes(passed=1)
    record = json.loads(pytester.path.joinpath("r.json").read_text())["results"][0]
    assert record["metric"] == "top2"


def test_plugin_namespace_objects_are_accepted() -> None:
    plugin = SimpleNamespace(mechcheck_metrics=TopTwoMetric().mechcheck_metrics)
    assert "top2" in Registry.from_plugins(get_plugin_manager([plugin])).metrics


def test_entry_point_plugins_load_unless_autoload_is_off(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    from mechcheck.plugins import AUTOLOAD_OFF, Registry, get_plugin_manager

    (tmp_path / "mc_fake_plugin.py").write_text(
        "import mechcheck\nfrom mechcheck.metrics import Metric\n\n"
        "@mechcheck.hookimpl\ndef mechcheck_metrics():\n"
        "    return [Metric(name='fake_metric', fn=lambda logits, inputs: logits[:, 0])]\n")
    info = tmp_path / "mc_fake_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mc-fake-plugin\n"
                                   "Version: 0.1\n")
    (info / "entry_points.txt").write_text("[mechcheck]\nfake = mc_fake_plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.setenv(AUTOLOAD_OFF, "1")
    assert "fake_metric" not in Registry.from_plugins(get_plugin_manager()).metrics
    monkeypatch.delenv(AUTOLOAD_OFF)
    assert "fake_metric" in Registry.from_plugins(get_plugin_manager()).metrics
