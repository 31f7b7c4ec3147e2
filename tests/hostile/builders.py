"""Builders that a case's ``setup:`` names: model folders, broken weights, bombs and
files that cannot be kept as text in the corpus.  Each takes the run directory first."""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path
from typing import Any


def _zoo_folder(name: str = "planted-prevtoken") -> Path:
    from mechcheck import zoo

    return zoo.resolve(name)


def planted_model(root: Path, dest: str = "model") -> None:
    """A copy of zoo:planted-prevtoken's folder (safetensors, config, tokenizer)."""
    shutil.copytree(_zoo_folder(), root / dest)


def truncate(root: Path, path: str, keep: float = 0.5) -> None:
    """Cut the file to ``keep`` of its size, as an interrupted download leaves it."""
    target = root / path
    data = target.read_bytes()
    target.write_bytes(data[: int(len(data) * keep)])


def garbage(root: Path, path: str, size: int = 4096, seed: int = 0) -> None:
    """``size`` random bytes (seeded) at ``path``."""
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(random.Random(seed).randbytes(size))


def write_bytes(root: Path, path: str, hex: str) -> None:
    """Exact bytes, given in hex, for files that are not valid UTF-8 text."""
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(bytes.fromhex(hex))


def latin1(root: Path, path: str, text: str) -> None:
    """``text`` encoded as Latin-1 (so any accented letter is not UTF-8)."""
    (root / path).write_bytes(text.encode("latin-1"))


def mkdir(root: Path, path: str) -> None:
    (root / path).mkdir(parents=True)


def remove(root: Path, paths: list[str]) -> None:
    for path in paths:
        (root / path).unlink()


def reshape_tensor(root: Path, path: str = "model/model.safetensors",
                   tensor: str = "transformer.wte.weight", rows: int = 40) -> None:
    """Rewrite the weights with one tensor cut to ``rows`` rows (shape != config)."""
    from safetensors.torch import load_file, save_file

    target = root / path
    tensors = load_file(target)
    tensors[tensor] = tensors[tensor][:rows].clone()
    save_file(tensors, target, metadata={"format": "pt"})


def edit_config(root: Path, path: str = "model/config.json", **changes: Any) -> None:
    """Change keys of a model's config.json (a value of null removes the key)."""
    target = root / path
    config = json.loads(target.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    target.write_text(json.dumps(config, indent=2), encoding="utf-8")


class _Touch:
    """Unpickling this calls ``open(marker, "w")``: proof that the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (open, (self.marker, "w"))


def pickle_only_model(root: Path, dest: str = "model", marker: str = "PICKLE_RAN") -> None:
    """The planted model's config and tokenizer with ``pytorch_model.bin`` only: a pickle
    that creates ``marker`` when it is unpickled (``torch.load`` would do that)."""
    folder = root / dest
    shutil.copytree(_zoo_folder(), folder)
    (folder / "model.safetensors").unlink()
    payload = {"transformer.wte.weight": _Touch((root / marker).resolve())}
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(payload, protocol=4))


_MODELING = '''\
"""Custom model code: importing it proves that the folder's code ran."""
from pathlib import Path

Path({marker!r}).touch()

from transformers import GPT2Config, GPT2LMHeadModel


class HostileConfig(GPT2Config):
    model_type = "hostile_gpt"


class HostileModel(GPT2LMHeadModel):
    config_class = HostileConfig
'''


def custom_code_model(root: Path, dest: str = "model", marker: str = "CODE_RAN") -> None:
    """The planted weights under a config whose ``auto_map`` points at code in the folder
    (``model_type`` unknown to transformers, so only that code could load it)."""
    folder = root / dest
    shutil.copytree(_zoo_folder(), folder)
    source = _MODELING.format(marker=str((root / marker).resolve()))
    (folder / "modeling_hostile.py").write_text(source, encoding="utf-8")
    (folder / "configuration_hostile.py").write_text(source, encoding="utf-8")
    edit_config(root, f"{dest}/config.json", model_type="hostile_gpt",
                architectures=["HostileModel"],
                auto_map={"AutoConfig": "configuration_hostile.HostileConfig",
                          "AutoModelForCausalLM": "modeling_hostile.HostileModel"})


def huge_claim_file(root: Path, path: str = "test_huge.yaml", claims: int = 60_000) -> None:
    """A claim file of ``claims`` distinct claims (about 8 MB)."""
    lines = ["model: zoo:planted-prevtoken", "data: planted.jsonl", "claims:"]
    for i in range(claims):
        lines += [f"  - id: head_attends_{i}", "    kind: attends",
                  '    components: ["head 0.0"]', "    pattern: previous_token",
                  "    min_score: 0.5"]
    (root / path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def long_prompts(root: Path, path: str = "long.jsonl", words: int = 40, rows: int = 3) -> None:
    """Rows whose prompts are longer than zoo:planted-prevtoken's 32 positions."""
    pattern = ["box", "cup"] * words
    with (root / path).open("w", encoding="utf-8") as out:
        for i in range(rows):
            prompt = pattern[: words + i]
            out.write(json.dumps({"prompt": " ".join(prompt), "answer": "box"}) + "\n")
