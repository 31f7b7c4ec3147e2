"""Load a model and its tokenizer from a claim file's ``model:`` value.

Four sources share one entry point, :func:`load_model`:

- a local folder written by ``save_pretrained`` (relative paths resolve against the
  claim file's folder);
- ``hf:<repo id>[@<revision>]``: the hub or the local HF cache;
- ``zoo:<name>[@<checkpoint>]``: the tiny models that ship with mechcheck, and names
  for real models that come in a Python package (``zoo:smollm2-135m``);
- ``gguf:<file>`` or ``gguf:<python-package>/<file>``: a GGUF file, converted once to
  float32 and cached (:mod:`mechcheck.models.gguf`).

Weights load from safetensors; a pickle checkpoint only with ``allow_pickle=True``.
``trust_remote_code`` stays off unless asked for.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechcheck.errors import ModelLoadError, ModelUnavailableError
from mechcheck.models.adapter import ArchMap, ModelAdapter, adapter_for
from mechcheck.models.source import ModelSource, parse_source, with_checkpoint

if TYPE_CHECKING:
    from mechcheck.zoo import ZooModel

__all__ = ["BUILTIN_SOURCES", "LoadOptions", "LoadedModel", "ModelSource", "eager_attention",
           "load_model", "load_source", "parse_source", "with_checkpoint"]

# The source kinds that the built-in loading knows; any other ``<scheme>:`` prefix is a
# plugin's source (``mechcheck_load_model``).
BUILTIN_SOURCES = ("folder", "hf", "zoo", "gguf")


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadOptions:
    """How a session loads models: what ``mechcheck_load_model`` receives besides the source.

    Attributes:
        archs: the registry's architecture maps (for :func:`~mechcheck.models.adapter.adapter_for`).
        zoo: the registry's zoo models by name (empty: the built-in zoo).
        device: ``cpu``, ``cuda``, ... or None for cuda when available.
        dtype: the dtype name, e.g. ``float32``.
        allow_pickle: pickle (``.bin``) checkpoints may load.
        trust_remote_code: passed to transformers.
        progress: called with one line for slow steps, or None.
    """

    archs: Sequence[ArchMap]
    zoo: Mapping[str, ZooModel] = field(default_factory=dict)
    device: str | None = None
    dtype: str = "float32"
    allow_pickle: bool = False
    trust_remote_code: bool = False
    progress: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedModel:
    """A model ready for mechcheck: the HF model, its tokenizer and its adapter."""

    source: ModelSource
    model: Any
    tokenizer: Any
    adapter: ModelAdapter
    device: str
    dtype: str

    @property
    def key(self) -> str:
        return str(self.source)

    @property
    def context_length(self) -> int | None:
        """The most tokens one prompt may have (``n_positions`` or
        ``max_position_embeddings`` of the config), or None when the config says none."""
        config = getattr(self.model, "config", None)
        for name in ("n_positions", "max_position_embeddings", "n_ctx"):
            value = getattr(config, name, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
        return None


def _pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _folder_for(source: ModelSource, progress: Any = None,
                zoo_models: Mapping[str, ZooModel] | None = None) -> tuple[str, dict[str, Any]]:
    """The ``from_pretrained`` path and keyword arguments for a source."""
    if source.kind == "zoo":
        from mechcheck import zoo

        spec = source.name + (f"@{source.revision}" if source.revision else "")
        if zoo_models is None:
            return str(zoo.resolve(spec, progress=progress)), {}
        return str(zoo.resolve_in(zoo_models, spec, progress=progress)), {}
    if source.kind == "gguf":
        from mechcheck.models import gguf

        if source.revision:
            raise ModelLoadError(
                f"{source} asks for checkpoint '{source.revision}', but a GGUF file has none",
                key="model", hint="drop @<checkpoint> (and checkpoints:) for gguf: models")
        return str(gguf.cached_folder(gguf.locate(source.name), progress=progress)), {}
    if source.kind == "hf":
        return source.name, {"revision": source.revision} if source.revision else {}
    path = Path(source.name)
    if path.is_file() and path.suffix == ".gguf":
        raise ModelLoadError(f"{path} is a GGUF file, not a model folder", key="model",
                             hint=f"write model: gguf:{path}")
    if not path.is_dir():
        raise ModelLoadError(
            f"no model folder at {path}", key="model",
            hint="model: takes a folder written by save_pretrained (relative to the claim "
            "file's folder), hf:<repo id>[@<revision>], zoo:<name> or gguf:<file>",
        )
    return str(path), {}


def _check_weights(path: str, source: ModelSource, allow_pickle: bool) -> bool:
    """Whether to load safetensors; refuse a pickle-only folder unless allowed."""
    if source.kind != "folder":
        return not allow_pickle
    files = os.listdir(path)
    if any(f.endswith(".safetensors") for f in files):
        return True
    if any(f.endswith(".bin") or f.endswith(".pt") for f in files):
        if allow_pickle:
            return False
        raise ModelLoadError(
            f"{path} holds only pickle weights (.bin), which can run code when loaded",
            key="model",
            hint="re-save the model with save_pretrained(safe_serialization=True), or opt "
            "in with --mechcheck-allow-pickle if you trust the file",
        )
    raise ModelLoadError(
        f"{path} holds no model weights (*.safetensors)", key="model",
        hint="point model: at a folder written by save_pretrained",
    )


_NOT_ON_HUB = ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError")


def _hub_answered_no(exc: BaseException | None) -> str | None:
    """The name of a hub error in ``exc``'s chain saying the repo/revision is not there."""
    seen = 0
    while exc is not None and seen < 10:
        if type(exc).__name__ in _NOT_ON_HUB:
            return type(exc).__name__
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _hub_error(source: ModelSource, exc: Exception) -> ModelLoadError:
    answered = _hub_answered_no(exc)
    if answered is not None:  # the hub was reached and said no: not a matter of access
        return ModelLoadError(
            f"the hub has no model '{source.name}'"
            f"{' at revision ' + source.revision if source.revision else ''} ({answered})",
            key="model", hint="check the repo id and revision (e.g. hf:EleutherAI/"
            "pythia-70m@step1000); gated models need `hf auth login`")
    revision = f" --revision {source.revision}" if source.revision else ""
    return ModelUnavailableError(
        f"model '{source.name}'{' at ' + source.revision if source.revision else ''} is not "
        f"in the local HF cache and could not be fetched ({type(exc).__name__})",
        key="model",
        hint=f"on a machine with network run `hf download {source.name}{revision}` "
        "(or huggingface-cli download), then rerun; set HF_HOME to use another cache; "
        "or add skip_if_unavailable: true to skip such claims instead",
    )


HUB_PROBE_TIMEOUT_S = 10.0


def _probe_hub(source: ModelSource) -> Exception | None:
    """Ask the hub once, without retries, whether it has ``source``.

    Returns the exception to report when the hub cannot be reached (no network, DNS,
    proxy, timeout) or says the repo or revision is not there, else None. transformers
    itself retries an unreachable hub for most of a minute before giving up; this probe
    answers in about a second.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().model_info(source.name, revision=source.revision, timeout=HUB_PROBE_TIMEOUT_S)
    except HfHubHTTPError as exc:  # the hub answered
        return exc if _hub_answered_no(exc) else None
    except Exception as exc:  # noqa: BLE001 - any failure to get an answer means no network
        return exc
    return None


def _from_pretrained(source: ModelSource, *, allow_pickle: bool, trust_remote_code: bool,
                     dtype: Any, progress: Any = None,
                     zoo_models: Mapping[str, ZooModel] | None = None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path, kwargs = _folder_for(source, progress, zoo_models)
    use_safetensors = _check_weights(path, source, allow_pickle)
    if source.kind != "hf":
        _check_tokenizer_files(path)
        if not trust_remote_code:
            _refuse_custom_code(path)
    common = {"trust_remote_code": trust_remote_code, **kwargs}
    attempts = [True] if source.kind != "hf" else [True, False]
    for local_only in attempts:
        try:
            tok = AutoTokenizer.from_pretrained(path, local_files_only=local_only, **common)
            loaded: Any = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=local_only, use_safetensors=use_safetensors or None,
                dtype=dtype, output_loading_info=True, ignore_mismatched_sizes=True,
                **common,
            )
            model, info = loaded
        except (OSError, ValueError) as exc:  # transformers raises both for missing files
            if source.kind != "hf" or _is_remote_code_refusal(exc):
                raise _folder_error(path, exc) from None
            reason: Exception = exc
            if local_only and os.environ.get("HF_HUB_OFFLINE") not in ("1", "true", "True"):
                unreachable = _probe_hub(source)
                if unreachable is None:
                    continue
                reason = unreachable
            raise _hub_error(source, reason) from None
        except Exception as exc:  # noqa: BLE001 - corrupt files raise many kinds of errors
            raise _folder_error(path, exc) from None
        _check_loaded(path, model, tok, info)
        return model, tok
    raise AssertionError("unreachable")


_TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "spiece.model",
                    "vocab.txt", "tokenizer_config.json")


def _check_tokenizer_files(path: str) -> None:
    """A local model folder must hold its tokenizer: without one, transformers quietly
    builds an empty tokenizer that turns every prompt into no tokens at all."""
    if not any(os.path.isfile(os.path.join(path, name)) for name in _TOKENIZER_FILES):
        raise ModelLoadError(
            f"{path} holds no tokenizer (none of {', '.join(_TOKENIZER_FILES[:4])} ...)",
            key="model", hint="save the tokenizer next to the model: "
            "tokenizer.save_pretrained(folder)")


def _refuse_custom_code(path: str) -> None:
    """Refuse a folder whose config asks for its own Python code (``auto_map``) before
    transformers sees it: without trust_remote_code, transformers would quietly load its
    built-in class for a known model_type instead, which is not the model in the folder."""
    import json

    try:
        config = json.loads(Path(path, "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # transformers reports a missing or broken config.json
    if isinstance(config, dict) and "auto_map" in config:
        raise _folder_error(path, ValueError("requires trust_remote_code (auto_map)"))


def _is_remote_code_refusal(exc: BaseException) -> bool:
    return "trust_remote_code" in str(exc)


def _weight_files(path: str) -> str:
    names = sorted(f for f in os.listdir(path) if f.endswith(".safetensors")) \
        if os.path.isdir(path) else []
    return ", ".join(names) or "the weights"


def _folder_error(path: str, exc: BaseException) -> ModelLoadError:
    """A failed load of a local (or zoo) folder, naming the folder and the file at fault."""
    text = f"{exc}".strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    name = type(exc).__name__
    if _is_remote_code_refusal(exc):
        return ModelLoadError(
            f"{path} needs custom code from its folder (auto_map in config.json), which "
            "mechcheck does not run by default", key="model",
            hint="load only models you trust this way: pass --mechcheck-trust-remote-code "
            "(Session(trust_remote_code=True)) to allow it")
    if name == "SafetensorError" or "safetensors" in reason.lower():
        return ModelLoadError(
            f"{path}: the weights file ({_weight_files(path)}) is corrupt or truncated: "
            f"{reason}", key="model",
            hint="re-save the model with save_pretrained, or download it again")
    if "mismatch" in reason.lower() or "ignore_mismatched_sizes" in reason:
        return ModelLoadError(
            f"{path}: a tensor in {_weight_files(path)} has the wrong shape for the "
            f"architecture in config.json ({reason})", key="model",
            hint="the weights and config.json come from different models: save both "
            "from the same model with save_pretrained")
    if "config" in reason.lower() or name.endswith("ValidationError") or \
            "model_type" in reason:
        return ModelLoadError(
            f"{path}: config.json cannot be used: {reason}", key="model",
            hint="config.json must be the JSON that save_pretrained writes (with a "
            "model_type); re-save the model")
    return ModelLoadError(f"could not load {path}: {name}: {reason}", key="model",
                          hint="check that the folder holds a model and a tokenizer saved "
                          "with save_pretrained")


def _mismatch(entry: Any) -> str:
    """``name is [a, b] in the file, [c, d] in the model`` from transformers' report."""
    if isinstance(entry, (tuple, list)) and len(entry) == 3:
        name, in_file, in_model = entry
        return f"{name} is {list(in_file)} in the file but {list(in_model)} in the model"
    return str(entry)


def _check_loaded(path: str, model: Any, tokenizer: Any, info: dict[str, Any]) -> None:
    """Refuse a model whose weights file lacked some of its parameters (transformers
    would initialise them at random and only warn) or whose tokenizer is empty."""
    mismatched = list(info.get("mismatched_keys") or [])
    if mismatched:
        shown = "; ".join(_mismatch(m) for m in mismatched[:3]) + (
            f"; and {len(mismatched) - 3} more" if len(mismatched) > 3 else "")
        raise ModelLoadError(
            f"{path}: a tensor in {_weight_files(path)} has the wrong shape for the "
            f"architecture in config.json: {shown}", key="model",
            hint="the weights and config.json come from different models: save both "
            "from the same model with save_pretrained")
    missing = sorted(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more"
                                          if len(missing) > 4 else "")
        raise ModelLoadError(
            f"{path}: {_weight_files(path)} lacks {len(missing)} of the model's tensors "
            f"({shown}); they would be random", key="model",
            hint="the weights file is incomplete or from another model: re-save the model "
            "with save_pretrained")
    if len(tokenizer) <= 1:
        raise ModelLoadError(f"{path}: the tokenizer has no vocabulary", key="model",
                             hint="save the model's tokenizer into the folder with "
                             "tokenizer.save_pretrained(folder)")


def load_model(
    spec: str | ModelSource,
    *,
    base_dir: str | os.PathLike = ".",
    archs: Sequence[ArchMap],
    device: str | None = None,
    dtype: str = "float32",
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    progress: Any = None,
) -> LoadedModel:
    """Load ``spec`` (folder, ``hf:``, ``zoo:`` or ``gguf:``) for evaluation.

    ``spec`` is a ``model:`` value (read against ``base_dir``) or a source already
    parsed from one (a claim's ``ClaimSpec.source``).

    ``progress``, a callable taking one line, hears about slow steps (a GGUF conversion).

    Raises:
        ModelLoadError: the model cannot be found or has no adapter; the message says
            how to get it.
    """
    source = spec if isinstance(spec, ModelSource) else parse_source(spec, base_dir=base_dir)
    return load_source(source, LoadOptions(archs=archs, device=device, dtype=dtype,
                                           allow_pickle=allow_pickle,
                                           trust_remote_code=trust_remote_code,
                                           progress=progress))


def load_source(source: ModelSource, options: LoadOptions) -> LoadedModel:
    """The built-in loading of a parsed source (folder, ``hf:``, ``zoo:``, ``gguf:``): the
    ``trylast`` implementation of ``mechcheck_load_model``.

    ``zoo:`` names resolve among ``options.zoo`` (the registry's zoo models), or among
    the built-in zoo when it is empty.

    Raises:
        ModelLoadError: the model cannot be found, no plugin loads its scheme, or it
            has no adapter; the message says how to get it.
    """
    import torch

    if source.kind not in BUILTIN_SOURCES:
        raise ModelLoadError(
            f"no plugin loads '{source.kind}:' models ({source})", key="model",
            hint="model: takes a folder, hf:<repo id>[@<revision>], zoo:<name> or "
            "gguf:<file>; another scheme needs a plugin implementing mechcheck_load_model")
    zoo = options.zoo or None
    torch_dtype = getattr(torch, options.dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ModelLoadError(f"unknown dtype '{options.dtype}'", key="dtype",
                             hint="use float32, bfloat16 or float16")
    model, tokenizer = _from_pretrained(source, allow_pickle=options.allow_pickle,
                                        trust_remote_code=options.trust_remote_code,
                                        dtype=torch_dtype, progress=options.progress,
                                        zoo_models=zoo)
    device = _pick_device(options.device)
    model.to(device)
    model.eval()
    adapter = adapter_for(model, options.archs)
    return LoadedModel(source=source, model=model, tokenizer=tokenizer, adapter=adapter,
                       device=device, dtype=options.dtype)


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Run ``model`` with eager attention (which returns patterns) inside the block."""
    before = model.config._attn_implementation
    if before == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)
