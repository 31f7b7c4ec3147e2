"""Model sources: local folders, hf: (offline), zoo:, and the pickle opt-in."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from mechcheck.errors import ModelLoadError, ModelUnavailableError
from mechcheck.models.archs import BUILTIN_ARCHS
from mechcheck.models.loading import load_model, parse_source


def test_parse_sources(tmp_path: Path) -> None:
    assert str(parse_source("hf:EleutherAI/pythia-70m@step1000")) == \
        "hf:EleutherAI/pythia-70m@step1000"
    assert parse_source("hf:gpt2").revision is None
    assert parse_source("zoo:induction-2l@step0").revision == "step0"
    assert parse_source("models/x", base_dir=tmp_path).name == str(tmp_path / "models" / "x")


def test_relative_folder_resolves_against_base_dir(tmp_path: Path, tiny_folder: Any) -> None:
    shutil.copytree(tiny_folder("gpt2"), tmp_path / "m")
    loaded = load_model("m", base_dir=tmp_path, archs=BUILTIN_ARCHS, device="cpu")
    assert loaded.adapter.arch.name == "gpt2"
    assert loaded.device == "cpu" and not loaded.model.training


def test_missing_folder_and_offline_hub(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model folder"):
        load_model("nope", base_dir=tmp_path, archs=BUILTIN_ARCHS)
    with pytest.raises(ModelLoadError, match="not in the local HF cache") as info:
        load_model("hf:nobody/missing-model", archs=BUILTIN_ARCHS)
    assert "download" in info.value.hint


def test_pickle_checkpoints_need_opt_in(tmp_path: Path, tiny_folder: Any) -> None:
    import torch
    from safetensors.torch import load_file

    shutil.copytree(tiny_folder("gpt2"), tmp_path / "p")
    weights = tmp_path / "p" / "model.safetensors"
    torch.save(load_file(weights), tmp_path / "p" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ModelLoadError, match="pickle") as info:
        load_model(str(tmp_path / "p"), archs=BUILTIN_ARCHS)
    assert "--mechcheck-allow-pickle" in info.value.hint
    assert load_model(str(tmp_path / "p"), archs=BUILTIN_ARCHS, allow_pickle=True)


class _HubCalls:
    """Records whether transformers was asked to go to the network."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import transformers

        self.networked = 0
        for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
            monkeypatch.setattr(cls, "from_pretrained", self._refuse)

    def _refuse(self, path: str, *, local_files_only: bool = False, **kwargs: Any) -> Any:
        self.networked += not local_files_only
        raise OSError(f"{path} is not available here")


def _hub_says(monkeypatch: pytest.MonkeyPatch, answer: BaseException | None) -> None:
    import huggingface_hub

    def model_info(self: Any, repo_id: str, **kwargs: Any) -> Any:
        if answer is not None:
            raise answer
        return object()

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)


def test_unreachable_hub_fails_fast_without_transformers_retries(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without HF_HUB_OFFLINE, a model missing from the cache on a machine without network
    is reported after one probe of the hub, not after transformers' retries."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = _HubCalls(monkeypatch)
    _hub_says(monkeypatch, ConnectionError("Name or service not known"))
    with pytest.raises(ModelUnavailableError, match=r"could not be fetched \(ConnectionError\)"):
        load_model("hf:nobody/missing-model", archs=BUILTIN_ARCHS)
    assert calls.networked == 0


def test_hub_that_says_no_and_hub_that_has_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import RepositoryNotFoundError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = _HubCalls(monkeypatch)
    missing = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
    Exception.__init__(missing, "404: repository not found")
    _hub_says(monkeypatch, missing)
    with pytest.raises(ModelLoadError, match="the hub has no model 'nobody/typo'"):
        load_model("hf:nobody/typo", archs=BUILTIN_ARCHS)
    assert calls.networked == 0
    _hub_says(monkeypatch, None)  # the hub has it: transformers downloads it
    with pytest.raises(ModelLoadError):
        load_model("hf:somebody/model", archs=BUILTIN_ARCHS)
    assert calls.networked == 1


# --- corrupt model folders: model errors naming the folder and the file ------------------


def _broken_copy(tmp_path: Path, tiny_folder: Any, name: str) -> Path:
    folder = tmp_path / name
    shutil.copytree(tiny_folder("gpt2"), folder)
    return folder


def _edit_weights(folder: Path, edit: Any) -> None:
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    tensors = edit(load_file(weights))
    save_file(tensors, weights, metadata={"format": "pt"})


def _wrong_shape(tensors: dict[str, Any]) -> dict[str, Any]:
    import torch

    key = next(k for k in tensors if k.endswith("attn.c_attn.weight"))
    return {**tensors, key: torch.zeros(3, 3)}


CORRUPTIONS = {
    "truncated": (lambda f: (f / "model.safetensors").write_bytes(
        (f / "model.safetensors").read_bytes()[:400]),
        "model.safetensors) is corrupt or truncated"),
    "garbage": (lambda f: (f / "model.safetensors").write_bytes(bytes(range(256)) * 8),
                "model.safetensors) is corrupt or truncated"),
    "wrong shape": (lambda f: _edit_weights(f, _wrong_shape),
                    "attn.c_attn.weight is [3, 3] in the file but [32, 96] in the model"),
    "missing tensors": (lambda f: _edit_weights(f, lambda t: dict(list(t.items())[::2])),
                        "model.safetensors lacks"),
    "no tokenizer": (lambda f: [p.unlink() for p in f.iterdir() if "token" in p.name],
                     "holds no tokenizer"),
    "config not json": (lambda f: (f / "config.json").write_text("{nope"),
                        "config.json cannot be used"),
    "config wrong type": (lambda f: (f / "config.json").write_text(
        '{"model_type": "gpt2", "n_layer": "x"}'), "config.json cannot be used"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_corrupt_model_files_are_model_errors_naming_folder_and_file(
        case: str, tmp_path: Path, tiny_folder: Any) -> None:
    corrupt, expected = CORRUPTIONS[case]
    folder = _broken_copy(tmp_path, tiny_folder, case.replace(" ", "-"))
    corrupt(folder)
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), archs=BUILTIN_ARCHS, device="cpu")
    assert str(folder) in info.value.message
    assert expected in info.value.message
    assert info.value.key == "model" and info.value.hint


def test_custom_code_folder_is_refused_and_nothing_runs(tmp_path: Path, tiny_folder: Any) -> None:
    import json

    folder = _broken_copy(tmp_path, tiny_folder, "remote")
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('x')\n"
        "from transformers import GPT2LMHeadModel\n"
        "class Evil(GPT2LMHeadModel):\n    pass\n")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), archs=BUILTIN_ARCHS, device="cpu")
    assert "needs custom code" in info.value.message
    assert "--mechcheck-trust-remote-code" in (info.value.hint or "")
    assert not marker.exists()


def test_context_length_comes_from_the_config(tiny_loaded: Any) -> None:
    loaded = tiny_loaded("gpt2")
    assert loaded.context_length == loaded.model.config.n_positions
    assert tiny_loaded("llama").context_length == \
        tiny_loaded("llama").model.config.max_position_embeddings


def test_custom_model_type_is_refused_too(tmp_path: Path, tiny_folder: Any) -> None:
    import json

    folder = _broken_copy(tmp_path, tiny_folder, "remote-type")
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "evil-arch"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError) as info:
        load_model(str(folder), archs=BUILTIN_ARCHS, device="cpu")
    assert str(folder) in info.value.message
