"""Per-component claims (``each: true``): expansion, names, correction over the expanded
family, pytest items (-k, --lf), errors, checkpoints, the text and image heatmaps."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import checkpointed_project, word_rows

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _parse(text: str, folder: Path) -> Any:
    from mechcheck.plugins import Registry, get_plugin_manager
    from mechcheck.spec.loader import parse_claim_text

    registry = Registry.from_plugins(get_plugin_manager())
    return parse_claim_text(text, str(folder / "test_x.yaml"), registry.kind_keys(),
                            base_dir=str(folder), common=registry.common_keys())


def _spec(kind_keys: str, folder: Path, model: str = "m") -> Any:
    parsed = _parse(f"model: {model}\ndata: d.jsonl\nmetric: logit_diff\nclaims:\n"
                    f"  - id: c\n{kind_keys}",
                    folder)
    assert parsed.error is None, parsed.error
    (spec,) = parsed.claims
    assert not isinstance(spec, Exception), spec
    return spec


NECESSARY = "    kind: necessary\n    each: true\n    ablation: zero\n    min_drop: 1\n"


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_expansion_names_and_count_follow_the_models_dims(
        arch: str, tiny_loaded: Callable[..., Any], tmp_path: Path) -> None:
    from mechcheck.each import expand_each

    loaded = tiny_loaded(arch)
    config = loaded.model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    d_mlp = getattr(config, "n_inner", None) or config.intermediate_size
    if arch == "llama":  # grouped-query attention: heads are the query heads
        assert config.num_key_value_heads < n_heads
    spec = _spec(NECESSARY + '    components: ["blocks.*.attn.head.*"]\n', tmp_path)
    copies = expand_each(spec, loaded.adapter)
    hand = [f"blocks.{la}.attn.head.{h}" for la in range(n_layers) for h in range(n_heads)]
    assert [c.id for c in copies] == [f"c[{a}]" for a in hand]
    assert [c.params["components"] for c in copies] == [(a,) for a in hand]
    for copy in copies:
        assert (copy.each, copy.each_of, copy.line, copy.kind) == (False, "c", spec.line,
                                                                   "necessary")
        assert {k: v for k, v in copy.params.items() if k != "components"} == \
            {k: v for k, v in spec.params.items() if k != "components"}
    neurons = expand_each(_spec(NECESSARY + '    components: ["blocks.1.mlp.neuron.*"]\n',
                                tmp_path), loaded.adapter)
    assert [c.id for c in neurons] == [f"c[blocks.1.mlp.neuron.{n}]" for n in range(d_mlp)]
    # a list, in shorthand, with a repeat: canonical names in the order written, once each
    listed = expand_each(_spec(NECESSARY + '    components: ["head 1.2", "mlp 0", '
                               '"blocks.1.attn.head.2", "resid_post 1"]\n', tmp_path),
                         loaded.adapter)
    assert [c.id for c in listed] == ["c[blocks.1.attn.head.2]", "c[blocks.0.mlp]",
                                      "c[blocks.1.resid_post]"]
    # without each: the claim stands for itself
    plain = _spec('    kind: necessary\n    components: ["blocks.*.attn.head.*"]\n'
                  '    ablation: zero\n    min_drop: 1\n', tmp_path)
    assert expand_each(plain, loaded.adapter) == [plain]


def test_layer_kinds_expand_to_one_claim_per_layer(tiny_loaded: Callable[..., Any],
                                                   tmp_path: Path) -> None:
    from mechcheck.each import expand_each

    adapter = tiny_loaded("neox").adapter
    n = adapter.model.config.num_hidden_layers
    decodes = _spec('    kind: decodes\n    each: true\n    layers: "*"\n    min_score: -5\n',
                    tmp_path)
    copies = expand_each(decodes, adapter)
    assert [(c.id, c.params["layers"]) for c in copies] == [(f"c[{la}]", (la, la))
                                                             for la in range(n)]
    ranged = _spec("    kind: decodes\n    each: true\n    layers: [1, 1]\n    min_score: -5\n",
                   tmp_path)
    assert [c.id for c in expand_each(ranged, adapter)] == ["c[1]"]
    traced = _spec("    kind: traced\n    each: true\n    layers: [0, 1]\n    site: mlp\n"
                   "    min_effect: 0.01\n", tmp_path)
    assert [(c.id, c.params["layers"]) for c in expand_each(traced, adapter)] == \
        [("c[0]", (0,)), ("c[1]", (1,))]
    # a decodes claim with components: one claim per residual site
    sites = _spec('    kind: decodes\n    each: true\n    components: ["blocks.*.resid_post"]\n'
                  "    min_score: -5\n", tmp_path)
    assert [c.id for c in expand_each(sites, adapter)] == \
        [f"c[blocks.{la}.resid_post]" for la in range(n)]


def test_each_on_a_kind_without_components_is_a_located_error(tmp_path: Path) -> None:
    parsed = _parse("model: m\ndata: d.jsonl\nmetric: logprob\nclaims:\n  - id: does_it\n"
                    "    kind: performs\n    min_value: 0\n    each: true\n", tmp_path)
    (error,) = parsed.claims
    assert isinstance(error, Exception)
    assert (error.key, error.line, error.claim_id) == ("each", 8, "does_it")
    assert "performs claims take no components:" in str(error)
    assert "fix: remove each: true" in str(error)
    # a file-wide each: true leaves such claims alone and splits the others
    parsed = _parse("model: m\ndata: d.jsonl\nmetric: logprob\neach: true\nclaims:\n"
                    "  - id: does_it\n    kind: performs\n    min_value: 0\n"
                    "  - id: heads\n    kind: necessary\n"
                    '    components: ["head 0.1"]\n    ablation: zero\n    min_drop: 1\n',
                    tmp_path)
    performs, necessary = parsed.claims
    assert (performs.each, necessary.each) == (False, True)
    # not a boolean
    parsed = _parse("model: m\ndata: d.jsonl\nmetric: logprob\nclaims:\n  - id: c\n"
                    "    kind: necessary\n"
                    '    components: ["head 0.1"]\n    ablation: zero\n    min_drop: 1\n'
                    "    each: yes please\n",
                    tmp_path)
    assert parsed.claims[0].key == "each" and "true or false" in str(parsed.claims[0])


FILE = """\
model: {model}
data: data.jsonl
metric: logit_diff
claims:
  - id: heads
    kind: necessary
    each: true
    components: ["blocks.*.attn.head.*"]
    ablation: zero
    min_drop: {min_drop}
  - id: single
    kind: necessary
    components: ["head 1.2"]
    ablation: zero
    min_drop: {min_drop}
"""


def _write(folder: Path, text: str, name: str = "test_sweep.yaml") -> Path:
    folder.joinpath("data.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(16)))
    path = folder / name
    path.write_text(text)
    return path


def _holm(p: list[float]) -> list[float]:
    """Holm's step-down adjustment, written out."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def test_copies_are_ordinary_claims_corrected_with_the_file(
        tiny_folder: Callable[..., Any], tmp_path: Path) -> None:
    from mechcheck.api import evaluate_path

    path = _write(tmp_path, FILE.format(model=tiny_folder("gpt2"), min_drop=-0.0005))
    results = evaluate_path(path)
    ids = [r.id for r in results]
    assert ids == [f"heads[blocks.{la}.attn.head.{h}]" for la in range(2) for h in range(4)] \
        + ["single"]
    assert [r.each_of for r in results] == ["heads"] * 8 + [None]
    by_id = {r.id: r for r in results}
    copy, single = by_id["heads[blocks.1.attn.head.2]"], by_id["single"]
    for field in ("effect", "ci_low", "ci_high", "p_value", "n", "components"):
        assert getattr(copy, field) == getattr(single, field), field
    raw = [r.p_value for r in results]
    assert len({round(p, 12) for p in raw}) > 2  # the heads differ
    assert [r.p_adjusted for r in results] == pytest.approx(_holm(raw), rel=1e-12)
    assert len({r.verdict for r in results}) == 2  # some heads pass, some fail


def test_bad_component_and_missing_model_stay_one_error_entry(
        tiny_folder: Callable[..., Any], tmp_path: Path) -> None:
    from mechcheck.api import evaluate_path

    text = FILE.format(model=tiny_folder("gpt2"), min_drop=-0.0005) + """\
  - id: too_deep
    kind: necessary
    each: true
    components: ["blocks.7.attn.head.*"]
    ablation: zero
    min_drop: 1
  - id: elsewhere
    model: ./no_such_model
    kind: negligible
    each: true
    components: ["blocks.*.attn.head.*"]
    ablation: zero
    margin: 1
  - id: peaked
    kind: traced
    each: true
    layers: "*"
    peak: [0, 0]
"""
    results = {r.id: r for r in evaluate_path(_write(tmp_path, text))}
    assert len(results) == 9 + 3
    assert "single" in results and results["single"].verdict in ("pass", "fail")
    for claim_id, key, words in [("too_deep", "components", "matches nothing in this model"),
                                 ("elsewhere", "model", "no_such_model"),
                                 ("peaked", "each", "one claim per layer")]:
        result = results[claim_id]
        assert result.verdict == "error", result.message
        assert f"claim '{claim_id}', key '{key}'" in result.message
        assert words in result.message and "Traceback" not in result.message
        assert result.each_of is None


def test_report_fields_and_html_heatmap(tiny_folder: Callable[..., Any], tmp_path: Path) -> None:
    import pandas as pd

    from mechcheck.api import evaluate_path
    from mechcheck.report.html import render
    from mechcheck.report.io import write_report
    from mechcheck.report.results import REPORT_FIELDS

    results = evaluate_path(_write(tmp_path, FILE.format(model=tiny_folder("gpt2"),
                                                         min_drop=-0.0005)))
    write_report(results, tmp_path / "r.json")
    write_report(results, tmp_path / "r.csv")
    records = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [r["each_of"] for r in records] == ["heads"] * 8 + [None]
    assert list(records[0])[: len(REPORT_FIELDS)] == list(REPORT_FIELDS)
    frame = pd.read_csv(tmp_path / "r.csv")
    assert list(frame.columns)[-1] == "each_of"
    assert frame["each_of"].fillna("").tolist() == ["heads"] * 8 + [""]
    render(results, tmp_path / "r.html")
    page = (tmp_path / "r.html").read_text()
    section = page.split("<h2>Per-component claims</h2>")[1]
    assert "::heads</h3>" in section.split("<h2>")[0]
    assert '<img src="data:image/png;base64,' in section.split("</h3>")[1].split("<h")[0]
    assert "layer\\head" in section and "/8 passed" in section


def _result(cell: str, effect: float | None, verdict: str, xfail: str | None = None) -> Any:
    from mechcheck.report.results import ClaimResult

    return ClaimResult(file="f.yaml", id=f"p[{cell}]", model="m", effect=effect,
                       verdict=verdict, xfail=xfail, each_of="p", components=(cell,))


def test_text_heatmap_cell_by_cell() -> None:
    from mechcheck.report.figures import text_heatmap

    grid = [  # layer 0: heads 0-2; layer 1: heads 0-1 (head 1.2 not measured)
        _result("blocks.0.attn.head.0", 2.0, "pass"),
        _result("blocks.0.attn.head.1", 1.0, "fail"),
        _result("blocks.0.attn.head.2", -0.5, "fail", xfail="known"),
        _result("blocks.1.attn.head.0", 0.0, "pass"),
        _result("blocks.1.attn.head.1", None, "error"),
    ]
    lines = text_heatmap(list(reversed(grid))).splitlines()  # order does not matter
    assert len(lines) == 5
    header, row0, row1, legend, marks = lines
    left = len("layer\\head")
    assert header[:left] == "layer\\head"

    def cells(line: str) -> list[str]:
        body = line[left + 1:].ljust(12)
        return [body[i:i + 4] for i in range(0, 12, 4)]

    assert [c.strip() for c in cells(header)] == ["0", "1", "2"]
    assert row0[:left].strip() == "0" and row1[:left].strip() == "1"
    # sign, |effect| on 0-9 of the largest (2.0), verdict mark
    assert cells(row0) == ["  9*", "  5 ", " -2x"]  # 1.0 -> 4.5 rounds to 5; -0.5 -> 2.25
    assert cells(row1) == ["  0*", "  E ", "  . "]  # an error has no number; 1.2: none
    assert legend == "2/5 passed; digit: |effect| on 0-9, 9 = 2"
    assert marks.startswith("- negative; * pass; x xfail")
    assert all(len(line) <= 120 for line in lines)


def test_text_heatmap_of_layers_and_wide_grids() -> None:
    from mechcheck.report.figures import text_heatmap

    layers = [_result(str(la), 0.1 * la, "pass" if la > 1 else "fail") for la in range(4)]
    for r in layers:  # a decodes copy, id p[<layer>], reading one residual site
        object.__setattr__(r, "components", (f"blocks.{r.id[2]}.resid_post",))
    header, row, _, _ = text_heatmap(layers).splitlines()
    assert header.split() == ["layer", "0", "1", "2", "3"]
    assert row.split() == ["effect", "0", "3", "6*", "9*"]
    # 30 layers x 9 heads fits in 80 columns; 12 x 64 neurons is split into blocks
    heads = [_result(f"blocks.{la}.attn.head.{h}", float(h), "pass")
             for la in range(30) for h in range(9)]
    text = text_heatmap(heads).splitlines()
    assert len(text) == 33 and max(map(len, text)) <= 80
    neurons = [_result(f"blocks.{la}.mlp.neuron.{n}", 1.0, "fail")
               for la in range(12) for n in range(64)]
    text = text_heatmap(neurons, width=100).splitlines()
    assert text[0].startswith("layer\\neuron") and max(map(len, text)) <= 100
    assert sum(line.startswith("layer\\neuron") for line in text) == 4  # 64 / 18 per block


def test_component_heatmap_writes_the_same_png(tmp_path: Path) -> None:
    from mechcheck.report.figures import component_grid, component_heatmap

    grid = [_result(f"blocks.{la}.attn.head.{h}", la - h, "pass" if h else "fail")
            for la in range(3) for h in range(4)]
    data = component_heatmap(grid, tmp_path / "h.png")
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and (tmp_path / "h.png").read_bytes() == data
    assert component_heatmap(list(reversed(grid))) == data
    laid = component_grid(grid)
    assert (laid.rows, laid.columns) == (("0", "1", "2"), ("0", "1", "2", "3"))
    assert laid.cells[("2", "1")].effect == 1


# -- as pytest items -------------------------------------------------------------------
@pytest.fixture
def project(pytester: pytest.Pytester, tiny_folder: Callable[..., Any]) -> pytest.Pytester:
    _write(pytester.path, FILE.format(model=tiny_folder("gpt2"), min_drop=-0.0005))
    return pytester


def test_items_minus_k_and_the_terminal_heatmap(project: pytest.Pytester) -> None:
    result = project.runpytest("-p", "no:cacheprovider", "--mechcheck-report", "all.json")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 9
    result.stdout.fnmatch_lines(["*mechcheck per-component claims*",
                                 "test_sweep.yaml::heads",
                                 "  layer\\head   0   1   2   3",
                                 "           0 *", "           1 *", "  */8 passed; digit*"])
    assert "Traceback" not in result.stdout.str()
    one = project.runpytest("-p", "no:cacheprovider", "-k", "heads and head.2 and blocks.1",
                            "--mechcheck-report", "one.json")
    everything = {r["id"]: r for r in json.loads(
        project.path.joinpath("all.json").read_text())["results"]}
    (only,) = json.loads(project.path.joinpath("one.json").read_text())["results"]
    assert only["id"] == "heads[blocks.1.attn.head.2]"
    for field in ("verdict", "effect", "p_value", "p_adjusted"):
        assert only[field] == everything[only["id"]][field], field
    assert one.parseoutcomes().get("deselected") == 8


def test_last_failed_reruns_only_the_failed_copies(project: pytest.Pytester) -> None:
    first = project.runpytest("--mechcheck-report", "first.json")
    failed = [r["id"] for r in json.loads(
        project.path.joinpath("first.json").read_text())["results"] if r["verdict"] == "fail"]
    assert 0 < len(failed) < 9
    assert first.parseoutcomes()["failed"] == len(failed)
    again = project.runpytest("--lf", "--mechcheck-report", "again.json")
    again.assert_outcomes(failed=len(failed))
    rerun = [r["id"] for r in json.loads(project.path.joinpath("again.json").read_text())[
        "results"]]
    assert rerun == failed


def test_model_missing_at_collection_is_one_item(pytester: pytest.Pytester,
                                                  tiny_folder: Callable[..., Any]) -> None:
    text = FILE.format(model=tiny_folder("gpt2"), min_drop=-0.0005) + """\
  - id: elsewhere
    model: ./no_such_model
    kind: negligible
    each: true
    components: ["blocks.*.attn.head.*"]
    ablation: zero
    margin: 1
  - id: offline
    model: hf:nobody/no-such-model-anywhere
    skip_if_unavailable: true
    kind: negligible
    each: true
    components: ["blocks.*.attn.head.*"]
    ablation: zero
    margin: 1
"""
    _write(pytester.path, text)
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA")
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 10
    assert outcomes.get("skipped") == 1
    result.stdout.fnmatch_lines(["SKIPPED * model unavailable (skip_if_unavailable)*",
                                 "FAILED test_sweep.yaml::elsewhere - *"])
    assert "elsewhere[" not in result.stdout.str() and "offline[" not in result.stdout.str()


def test_checkpoint_items_are_named_component_then_checkpoint(
        pytester: pytest.Pytester) -> None:
    text = checkpointed_project(pytester.path, ("step0", "step5"))
    text += """\
  - id: heads
    kind: attends
    each: true
    components: ["blocks.0.attn.head.*"]
    pattern: first_token
    min_score: 0.0
"""
    pytester.path.joinpath("test_ck.yaml").write_text(text)
    result = pytester.runpytest("-p", "no:cacheprovider", "--collect-only", "-q")
    names = [line.split("::", 1)[1] for line in result.stdout.lines if "::" in line]
    heads = [f"heads[blocks.0.attn.head.{h}]" for h in range(4)]
    assert names == [f"{n}[{step}]" for step in ("step0", "step5")
                     for n in ["first", "never", *heads]]
    ran = pytester.runpytest("-p", "no:cacheprovider", "-k", "heads",
                             "--mechcheck-report", "r.json")
    ran.assert_outcomes(passed=8, deselected=4)
    records = json.loads(pytester.path.joinpath("r.json").read_text())["results"]
    assert {(r["id"], r["checkpoint"]) for r in records} == {
        (h, step) for h in heads for step in ("step0", "step5")}
    ran.stdout.fnmatch_lines(["test_ck.yaml::heads [step0]", "test_ck.yaml::heads [step5]"])
