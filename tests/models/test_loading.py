"""Model sources: local folders, hf: (offline), zoo:, and the pickle opt-in."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from mechcheck.errors import ModelLoadError
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
