"""The conformance kit passes the built-in maps, interventions and metrics, and fails
broken ones with a message naming what to fix."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention
from mechcheck.metrics import BUILTIN_METRICS, Metric, MetricInputs
from mechcheck.models.archs import GPT2, LLAMA, NEOX
from mechcheck.testing import build_tiny, check_arch_map, check_intervention, check_metric

ROOT = Path(__file__).resolve().parents[2]


def _sequential_neox() -> Any:
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=42, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=4, intermediate_size=64,
                           use_parallel_residual=False, attention_dropout=0.0,
                           hidden_dropout=0.0)
    return GPTNeoXForCausalLM(config)


FACTORIES = {
    "gpt2": (GPT2, lambda: build_tiny("gpt2", perturb=False)[0]),
    "neox-parallel": (NEOX, lambda: build_tiny("neox", perturb=False)[0]),
    "neox-sequential": (NEOX, _sequential_neox),
    "llama-gqa": (LLAMA, lambda: build_tiny("llama", n_heads=4, n_kv_heads=2,
                                             perturb=False)[0]),
    "qwen2": (LLAMA, lambda: build_tiny("qwen2", perturb=False)[0]),
    "mistral-mqa": (LLAMA, lambda: build_tiny("mistral", n_kv_heads=1, perturb=False)[0]),
}


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_builtin_maps_conform(name: str) -> None:
    arch_map, factory = FACTORIES[name]
    check_arch_map(arch_map, factory)


def _llama() -> Any:
    return build_tiny("llama", perturb=False)[0]


@pytest.mark.parametrize(("change", "message"), [
    ({"attn_out_proj": "mlp.down_proj"},
     r"blocks\.0\.attn\.head\.3 at model\.layers\.0\.mlp\.down_proj \(pre\) is 64 wide; "
     r"the address needs 32\n  fix: point attn_out_proj at the projection"),
    ({"n_heads": "num_key_value_heads"},  # 2 heads of 8 columns: the wrong head width
     r"blocks\.0\.attn\.head\.1 at model\.layers\.0\.self_attn\.o_proj \(pre\) is 32 wide; "
     r"the address needs 16"),
    ({"resid_mid": "input_layernorm"},
     r"blocks\.0\.resid_mid differs from blocks\.0\.resid_pre \+ attn by .*\n  fix: check "
     "attn_out"),
    ({"attn": "self_attn.o_proj"},  # the output is right, the pattern module is not
     r"no attention pattern for head 0\.3: .*\n  fix: point attn at the attention module"),
    ({"mlp": "mlp.act_fn"},
     r"blocks\.0\.mlp at model\.layers\.0\.mlp\.act_fn \(post\) is 64 wide"),
    ({"ln_final": "model.layers.1.input_layernorm"},
     r"ln_final does not read the last block's output"),
    ({"embed": "model.no_such_module"},
     r"embed does not resolve: .*model\.no_such_module.*\n  fix: point the map's embed"),
    ({"k": "self_attn.q_proj"},  # queries in place of keys (head 0's group slice is its
     # own query, so zeroing it also flattens head 0; head 3 shows the error)
     r"zeroing blocks\.0\.attn\.head\.3\.k did not make the head's pattern uniform"),
    ({"n_kv_heads": None},  # GQA read as one key/value head per query head
     r"blocks\.0\.attn\.head\.3\.k is 0 wide, not d_head = 8\n  fix: check qkv_layout "
     "and n_kv_heads"),
    ({"model_types": ("mistral",)},
     r"model_type 'llama', which the map does not cover \(mistral\)"),
    ({"attn_norm": "post_attention_layernorm"},  # the MLP's norm, not attention's
     r"blocks\.1\.attn\.head\.0\.q is not the projection of "
     r"post_attention_layernorm\(resid_pre\)"),
])
def test_a_broken_map_fails_naming_the_field(change: dict[str, Any], message: str) -> None:
    broken = dataclasses.replace(LLAMA, **change)
    with pytest.raises(AssertionError, match=message):
        check_arch_map(broken, _llama)


def test_the_kit_perturbs_the_model_itself() -> None:
    models: list[Any] = []

    def factory() -> Any:
        models.append(build_tiny("gpt2", perturb=False)[0])
        return models[-1]

    check_arch_map(GPT2, factory)
    plain = build_tiny("gpt2", perturb=False)[0]
    ln = models[0].transformer.ln_f
    assert not torch.equal(ln.weight, plain.transformer.ln_f.weight)
    assert not torch.equal(ln.bias, plain.transformer.ln_f.bias)


@pytest.mark.parametrize("iv", BUILTIN_INTERVENTIONS, ids=lambda iv: iv.name)
def test_builtin_interventions_conform(iv: Intervention) -> None:
    check_intervention(iv, addresses=("blocks.0.attn.head.1", "blocks.1.mlp"))


def _in_place(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    return current.mul_(0.5)


@pytest.mark.parametrize(("iv", "message"), [
    (Intervention(name="narrow", base_run="clean", source=None,
                  replace=lambda c, s: c[..., :1]),
     r"check_intervention\(narrow\): replace returned \(3, 5, 1\) for an activation of "
     r"shape \(3, 5, 8\)"),
    (Intervention(name="halve_", base_run="clean", source=None, replace=_in_place),
     r"replace changed its arguments in place"),
    (Intervention(name="nan", base_run="clean", source=None, replace=lambda c, s: c / 0),
     r"NaN or infinite"),
    (Intervention(name="dirty", base_run="dirty", source=None, replace=lambda c, s: c),
     r"base_run is 'dirty'\n  fix: set base_run to 'clean' or 'corrupt'"),
    (Intervention(name="noisy", base_run="clean", source=None,
                  replace=lambda c, s: c + torch.randn_like(c)),
     r"different values for the same arguments"),
])
def test_a_broken_intervention_fails(iv: Intervention, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_intervention(iv)


@pytest.mark.parametrize("metric", [m for m in BUILTIN_METRICS if m.name != "greater_than_pd"],
                         ids=lambda m: m.name)
def test_builtin_metrics_conform(metric: Metric) -> None:
    check_metric(metric)


def _centered(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    picked = logits.gather(-1, inputs.answers.view(-1, 1)).squeeze(-1)
    return picked - picked.mean()  # depends on the batch


@pytest.mark.parametrize(("fn", "message"), [
    (lambda logits, inputs: logits.mean(), r"returned \(\) for 6 prompts\n  fix: return one "
     r"value per prompt, a tensor of shape \[6\]"),
    (lambda logits, inputs: logits.softmax(-1)[:, 0].log() - torch.inf, r"NaN or infinite"),
    (lambda logits, inputs: logits.sub_(1)[:, 0], r"changed the logits in place"),
    (_centered, r"a prompt's value depends on the other prompts of the batch"),
])
def test_a_broken_metric_fails(fn: Any, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        check_metric(Metric(name="broken", fn=fn))


def test_the_docs_example_plugin_conforms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "docs" / "examples" / "plugins"))
    import mechcheck_lab

    for metric in mechcheck_lab.mechcheck_metrics():
        check_metric(metric)
    for intervention in mechcheck_lab.mechcheck_interventions():
        check_intervention(intervention)
