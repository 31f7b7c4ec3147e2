"""benchmarks/bench_claims.py: its claim file scales to any model's depth and width."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import yaml

from mechcheck.session import Session
from mechcheck.spec.loader import load_claim_file
from mechcheck.spec.schema import ClaimSpec

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_claims",
                                                  ROOT / "benchmarks" / "bench_claims.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _components(text: str) -> list[str]:
    return [c for claim in yaml.safe_load(text)["claims"] for c in claim["components"]]


def test_gpt2_small_layout_is_the_original() -> None:
    parts = _components(_bench().claims_yaml("model", "d.jsonl"))
    assert parts == ["head 9.*", "mlp 3", "head 5.1", "head 5.7", "mlp 7", "head 2.3",
                     "mlp 10", "head 11.*", "head 1.4"]


def test_claims_scale_to_other_models(tmp_path: Path) -> None:
    bench = _bench()
    for layers, heads in [(30, 9), (2, 4), (1, 1)]:
        text = bench.claims_yaml("model", "d.jsonl", n_layers=layers, n_heads=heads)
        for part in _components(text):
            layer, head = re.fullmatch(r"(?:head|mlp) (\d+)(?:\.(\d+|\*))?", part).groups()
            assert int(layer) < layers
            assert head in (None, "*") or int(head) < heads
        path = tmp_path / f"claims_{layers}.yaml"
        path.write_text(text)
        (tmp_path / "d.jsonl").write_text('{"prompt": "a b", "answer": "c"}\n')
        parsed = load_claim_file(path, Session().registry.kind_keys())
        assert parsed.error is None
        assert all(isinstance(c, ClaimSpec) for c in parsed.claims)
    deep = _components(bench.claims_yaml("m", "d", n_layers=30, n_heads=9))
    assert deep[0] == "head 24.*" and deep[-1] == "head 3.4"


def test_model_values_become_absolute(tmp_path: Path, monkeypatch) -> None:
    bench = _bench()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert bench.model_value("zoo:smollm2-135m") == "zoo:smollm2-135m"
    assert bench.model_value("hf:gpt2") == "hf:gpt2"
    assert bench.model_value("gguf:m.gguf") == f"gguf:{tmp_path / 'm.gguf'}"
    assert bench.model_value("gguf:pkg/x.gguf") == "gguf:pkg/x.gguf"
    assert bench.model_value("folder") == str(tmp_path / "folder")
