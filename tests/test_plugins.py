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
                                   "performs", "path", "circuit", "equivalent",
                                   "independent", "minimal_edges", "sufficient_vs_random",
                                   "probe", "erasure", "steers", "decodes",
                                   "direct_effect", "traced", "activates"}
    assert {"zero", "mean", "resample", "noise", "denoise"} <= set(registry.interventions)
    assert {"logit_diff", "logprob", "prob", "accuracy", "kl"} <= set(registry.metrics)
    assert {a.name for a in registry.archs} >= {"gpt2", "gpt_neox", "llama"}


def test_extra_plugin_adds_a_metric_and_duplicates_are_refused() -> None:
    registry = Registry.from_plugins(get_plugin_manager([TopTwoMetric()]))
    assert "top2" in registry.metrics
    with pytest.raises(MechcheckError, match="two plugins register a metric named 'top2': "
                       "TopTwoMetric object from tests.test_plugins and TopTwoMetric object "
                       "from tests.test_plugins"):
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

    from mechcheck.plugins import AUTOLOAD_ENV, Registry, get_plugin_manager

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
    monkeypatch.setenv(AUTOLOAD_ENV, "1")
    assert "fake_metric" not in Registry.from_plugins(get_plugin_manager()).metrics
    monkeypatch.delenv(AUTOLOAD_ENV)
    assert "fake_metric" in Registry.from_plugins(get_plugin_manager()).metrics
# -- the hooks of issue 10 (typed returns, mechanics as hooks) -----------------------


def test_builtins_register_rules_scores_zoo_and_loading_through_the_hooks() -> None:
    from mechcheck import builtin

    pm = get_plugin_manager()
    registry = Registry.from_plugins(pm)
    assert set(registry.rules) == {"robust", "t", "wilcoxon", "permutation", "bootstrap"}
    assert set(registry.scores) == {"previous_token", "induction", "duplicate_token",
                                    "first_token"}
    assert {"induction-2l", "ioi-small", "planted-prevtoken", "smollm2-135m"} <= set(
        registry.zoo)
    loaders = pm.hook.mechcheck_load_model.get_hookimpls()
    assert [impl.plugin for impl in loaders] == [builtin] and loaders[0].trylast


def _two_metric_plugins() -> tuple[Any, Any]:
    first = SimpleNamespace(__name__="lab_one", mechcheck_metrics=TopTwoMetric().mechcheck_metrics)
    second = SimpleNamespace(__name__="lab_two",
                             mechcheck_metrics=TopTwoMetric().mechcheck_metrics)
    return first, second


def test_a_name_clash_names_both_plugins() -> None:
    first, second = _two_metric_plugins()
    pm = pluggy.PluginManager("mechcheck")
    from mechcheck import hookspecs

    pm.add_hookspecs(hookspecs)
    pm.register(first, name="lab_one")
    pm.register(second, name="lab_two")
    with pytest.raises(MechcheckError) as info:
        Registry.from_plugins(pm)
    # in pluggy's call order: the plugin registered last first
    assert info.value.message == ("two plugins register a metric named 'top2': lab_two and "
                                  "lab_one")


def _arch_plugin(**changes: Any) -> Any:
    from dataclasses import replace

    from mechcheck.models.archs import BUILTIN_ARCHS

    gpt2 = next(a for a in BUILTIN_ARCHS if a.name == "gpt2")
    arch = replace(gpt2, **changes)

    class Arch:
        @hookimpl
        def mechcheck_model_adapters(self) -> list[Any]:
            return [arch]

    return Arch()


def test_two_maps_for_one_model_type_are_an_error_naming_both_plugins() -> None:
    with pytest.raises(MechcheckError) as info:
        Registry.from_plugins(get_plugin_manager([_arch_plugin(name="my_gpt2")]))
    message = info.value.message
    assert message.startswith("two plugins register an architecture map for model_type "
                              "'gpt2': 'my_gpt2' from ")
    assert message.endswith("and 'gpt2' from mechcheck.builtin")
    with pytest.raises(MechcheckError, match="architecture map named 'gpt2'"):
        Registry.from_plugins(get_plugin_manager([_arch_plugin(model_types=("gpt_x",))]))
    fine = Registry.from_plugins(get_plugin_manager([_arch_plugin(name="x", model_types=("x",))]))
    assert fine.archs[0].name == "x"  # plugins' maps come first


class Mechanics:
    """A plugin using every new hook: a rule, a score, a zoo model, a model source and
    two result sinks (the first one raises)."""

    def __init__(self, folder: Any) -> None:
        self.folder = folder
        self.seen: list[str] = []
        self.loaded: list[str] = []

    @hookimpl
    def mechcheck_decision_rules(self) -> list[Any]:
        from mechcheck.rules import DecisionRule
        from tests.test_rules import _always

        return [DecisionRule(name="always", greater=_always)]

    @hookimpl
    def mechcheck_attention_scores(self) -> list[Any]:
        from mechcheck.engine.attention import AttentionScore

        return [AttentionScore(name="to_first", fn=lambda p, t: p[:, -1, 0])]

    @hookimpl
    def mechcheck_zoo_models(self) -> list[Any]:
        from mechcheck.zoo import ZooModel

        return [ZooModel(name="my-tiny", folder=lambda checkpoint, progress: self.folder)]

    @hookimpl
    def mechcheck_load_model(self, source: Any, options: Any) -> Any:
        from dataclasses import replace

        from mechcheck.models.loading import load_source, parse_source

        if source.kind != "tinyrand":
            return None
        self.loaded.append(source.name)
        loaded = load_source(parse_source(str(self.folder)), options)
        return replace(loaded, source=source)

    @hookimpl
    def mechcheck_claim_result(self, result: Any) -> None:
        self.seen.append(f"{result.id}:{result.verdict}")


class BrokenSink:
    @hookimpl(tryfirst=True)
    def mechcheck_claim_result(self, result: Any) -> None:
        raise RuntimeError("disk full")


def test_the_new_hooks_end_to_end(tmp_path: Any, tiny_folder: Any) -> None:
    from mechcheck.evaluate import evaluate_file
    from mechcheck.session import Session
    from mechcheck.spec.loader import load_claim_file

    plugin = Mechanics(tiny_folder("gpt2"))
    tmp_path.joinpath("d.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(12)))
    tmp_path.joinpath("test_new.yaml").write_text("""\
data: d.jsonl
claims:
  - id: by_zoo
    model: zoo:my-tiny
    kind: attends
    components: ["head 0.0"]
    pattern: to_first
    min_score: 0.0
    test: always
  - id: by_source
    model: tinyrand:gpt2
    kind: performs
    metric: logprob
    min_value: 100
    test: always
""")
    registry = Registry.from_plugins(get_plugin_manager([plugin, BrokenSink()]))
    session = Session(registry=registry, device="cpu")
    parsed = load_claim_file(tmp_path / "test_new.yaml", registry.kind_keys(),
                             common=registry.common_keys())
    with pytest.warns(RuntimeWarning) as warned:
        results = evaluate_file(parsed, session)
    assert [(r.id, r.verdict, r.method) for r in results] == [
        ("by_zoo", "pass", "always"), ("by_source", "pass", "always")]
    assert results[1].model == "tinyrand:gpt2" and set(plugin.loaded) == {"gpt2"}
    assert plugin.seen == ["by_zoo:pass", "by_source:pass"]  # after the broken sink
    lines = [str(w.message) for w in warned]
    assert len(lines) == 2 and lines[0].startswith("mechcheck plugin ")
    assert "failed in mechcheck_claim_result for claim 'by_zoo': RuntimeError: disk full" in (
        lines[0])


def test_an_unknown_source_scheme_names_the_missing_plugin(tmp_path: Any) -> None:
    from mechcheck.errors import ModelLoadError
    from mechcheck.session import Session

    session = Session(registry=Registry.from_plugins(get_plugin_manager()), device="cpu")
    with pytest.raises(ModelLoadError) as info:
        session.model("tinyrand:gpt2", str(tmp_path))
    assert info.value.message == "no plugin loads 'tinyrand:' models (tinyrand:gpt2)"
    assert "mechcheck_load_model" in info.value.hint


def _runtime_imports() -> dict[str, set[str]]:
    """mechcheck module -> the mechcheck modules it imports at run time (at the top or
    inside functions; imports for type checkers only are left out)."""
    import ast
    from pathlib import Path

    import mechcheck

    root = Path(mechcheck.__file__).parent
    modules = {".".join(("mechcheck", *p.relative_to(root).with_suffix("").parts))
               .removesuffix(".__init__"): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_plugins_imports_no_layer_above_it() -> None:
    """The plugins -> session cycle is gone: mechcheck.plugins reaches neither the
    session nor the built-ins (registered by name); callers build the registry."""
    reached = _reachable(_runtime_imports(), "mechcheck.plugins")
    assert "mechcheck.session" not in reached and "mechcheck.builtin" not in reached
    assert "mechcheck.kinds" not in reached and "mechcheck.engine.context" not in reached


def test_hookspec_returns_are_typed() -> None:
    """Each hookspec names what it returns (mypy checks plugins against these: CI runs
    it on plugins/mechcheck-topk)."""
    import typing

    from mechcheck import hookspecs
    from mechcheck.engine.attention import AttentionScore
    from mechcheck.engine.interventions import Intervention
    from mechcheck.kinds import ClaimKind
    from mechcheck.metrics import Metric
    from mechcheck.models.adapter import ArchMap
    from mechcheck.models.loading import LoadedModel, LoadOptions, ModelSource
    from mechcheck.plugins import HOOK_NAMES
    from mechcheck.report.results import ClaimResult
    from mechcheck.rules import DecisionRule
    from mechcheck.tasks import Task
    from mechcheck.zoo import ZooModel

    names = {c.__name__: c for c in (AttentionScore, Intervention, ClaimKind, Metric, ArchMap,
                                     LoadedModel, LoadOptions, ModelSource, ClaimResult,
                                     DecisionRule, Task, ZooModel)}
    hints = {name: typing.get_type_hints(getattr(hookspecs, name), localns=names)
             for name in HOOK_NAMES}
    assert {name: h["return"] for name, h in hints.items()} == {
        "mechcheck_attention_scores": list[AttentionScore],
        "mechcheck_claim_kinds": list[ClaimKind],
        "mechcheck_claim_result": type(None),
        "mechcheck_decision_rules": list[DecisionRule],
        "mechcheck_interventions": list[Intervention],
        "mechcheck_load_model": LoadedModel | None,
        "mechcheck_metrics": list[Metric],
        "mechcheck_model_adapters": list[ArchMap],
        "mechcheck_tasks": list[Task],
        "mechcheck_zoo_models": list[ZooModel],
    }
    assert hints["mechcheck_load_model"]["source"] is ModelSource
    assert hints["mechcheck_load_model"]["options"] is LoadOptions
    assert hints["mechcheck_claim_result"]["result"] is ClaimResult


def test_a_scheme_that_names_no_folder_is_a_plugin_source(tmp_path: Any) -> None:
    from mechcheck.models.loading import ModelSource, parse_source

    assert parse_source("lab:x@v1", base_dir=tmp_path) == ModelSource(kind="lab", name="x",
                                                                      revision="v1")
    (tmp_path / "lab:x").mkdir()  # an existing folder keeps its meaning
    assert parse_source("lab:x", base_dir=tmp_path).kind == "folder"
