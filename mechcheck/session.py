"""A mechcheck session: the registry, and the models, datasets and runners in use.

The session keeps the models it loaded while their weights fit a memory budget
(``keep_bytes``; the newest model is always kept, the least recently used ones are
released first), and one :class:`~mechcheck.engine.Runner` per model x dataset, so
the clean and corrupt runs are computed once and shared by every claim that uses
them, also when a file's claims alternate between two models.
"""

from __future__ import annotations

import copy
import gc
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mechcheck.errors import DataError, MechcheckError

if TYPE_CHECKING:
    from mechcheck.data import Dataset
    from mechcheck.engine.runner import Runner
    from mechcheck.models.loading import LoadedModel
    from mechcheck.models.source import ModelSource
    from mechcheck.plugins import Registry
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["KEEP_BYTES", "Session"]

KEEP_BYTES = 2 * 1024**3
"""The default budget of weights kept loaded at once (2 GiB: SmolLM2-135M in float32
and every zoo model fit; a 7B model is kept alone)."""


class Session:
    """Shared state of one run over many claim files.

    Args:
        registry: plugins' tables, built by the caller
            (``Registry.from_plugins(get_plugin_manager(plugins))``, as the pytest
            plugin, the CLI and ``evaluate_path`` do); when None, built here from the
            built-ins, the entry points and ``plugins``.
        device: ``cpu``, ``cuda``, ... or None for cuda when available.
        dtype: the model's dtype name.
        batch_size: the most prompts in one forward pass.
        n_resamples: resamples for bootstrap and permutation rules.
        allow_pickle: allow pickle (``.bin``) checkpoints.
        trust_remote_code: passed to transformers; off unless asked for.
        plugins: extra plugin objects or modules to register besides the built-ins
            and the ``mechcheck`` entry points.
        progress: called with one line of text per model load, shared run and file
            evaluated (with timings), and when a batch is retried after running out
            of memory; None for silence.
        keep_bytes: the most bytes of weights kept loaded at once (models beyond it
            are released, least recently used first; the newest is always kept).
            0 keeps one model at a time.
    """

    def __init__(self, *, registry: Registry | None = None, device: str | None = None,
                 dtype: str = "float32", batch_size: int = 128, n_resamples: int = 9999,
                 allow_pickle: bool = False, trust_remote_code: bool = False,
                 plugins: Sequence[object] = (),
                 progress: Callable[[str], None] | None = None,
                 keep_bytes: int = KEEP_BYTES) -> None:
        if registry is None:
            from mechcheck.plugins import Registry, get_plugin_manager

            registry = Registry.from_plugins(get_plugin_manager(plugins))
        self.registry = registry
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self.n_resamples = n_resamples
        self.allow_pickle = allow_pickle
        self.trust_remote_code = trust_remote_code
        self.progress = progress
        self.keep_bytes = keep_bytes
        self._models: dict[str, LoadedModel] = {}  # by key, least recently used first
        self._model_errors: dict[str, MechcheckError] = {}
        self._runners: dict[tuple[Any, ...], Runner] = {}
        self._saes: dict[tuple[str, str], Any] = {}  # (model key, SAE path) -> SAE

    def model(self, source: ModelSource | str, base_dir: str = ".") -> LoadedModel:
        """The loaded model for a claim's source (or a ``model:`` value, read against
        ``base_dir``); loading it releases the previous."""
        from mechcheck.models.loading import LoadOptions
        from mechcheck.models.source import parse_source

        if isinstance(source, str):
            source = parse_source(source, base_dir=base_dir)
        key = str(source)
        if key in self._models:
            self._models[key] = self._models.pop(key)  # now the most recently used
            return self._models[key]
        if key in self._model_errors:  # a fresh copy: each claim adds its own location
            raise copy.copy(self._model_errors[key])
        start = time.perf_counter()
        try:
            options = LoadOptions(archs=self.registry.archs, zoo=self.registry.zoo,
                                  device=self.device, dtype=self.dtype,
                                  allow_pickle=self.allow_pickle,
                                  trust_remote_code=self.trust_remote_code,
                                  progress=self.progress)
            loaded = self.registry.load_model(source, options)
        except MechcheckError as exc:
            located = exc.located(key="model")
            self._model_errors[key] = located
            raise copy.copy(located) from None
        self._models[key] = loaded
        self._evict()
        self.say(f"model {key} loaded on {loaded.device} ({self.dtype}) in "
                 f"{time.perf_counter() - start:.2f} s")
        return loaded

    def _evict(self) -> None:
        """Release the least recently used models until the rest fit ``keep_bytes``
        (the newest always stays)."""
        sizes = {k: _weight_bytes(m) for k, m in self._models.items()}
        dropped = False
        while len(self._models) > 1 and (self.keep_bytes <= 0 or
                                         sum(sizes[k] for k in self._models) > self.keep_bytes):
            self._drop(next(iter(self._models)))
            dropped = True
        if dropped:
            gc.collect()

    def _drop(self, key: str) -> None:
        del self._models[key]
        self._runners = {k: r for k, r in self._runners.items() if k[0] != key}
        self._saes = {k: s for k, s in self._saes.items() if k[0] != key}

    def say(self, line: str) -> None:
        """Pass one line of progress to the ``progress`` callback, if any."""
        if self.progress is not None:
            self.progress(line)

    def release(self) -> None:
        """Drop every loaded model and every runner built on them."""
        self._models.clear()
        self._runners.clear()
        self._saes.clear()
        gc.collect()

    def claim_model(self, claim: ClaimSpec) -> LoadedModel:
        """The claim's loaded model, with the claim's SAEs on its adapter.

        Raises:
            MechcheckError: the claim names no model, or one that cannot be loaded
                (located at ``model``), or a bad SAE (at ``saes``).
        """
        if claim.source_error is not None:
            raise claim.source_error.located(key="model")
        if claim.source is None:
            raise MechcheckError("no model given", key="model",
                                 hint="add model: to the claim or the top of the file")
        loaded = self.model(claim.source)
        loaded.adapter.saes = self.saes(claim, loaded)
        return loaded

    def runner(self, claim: ClaimSpec) -> Runner:
        """The runner for the claim's model and data (built on first use)."""
        from mechcheck.engine.runner import Runner

        loaded = self.claim_model(claim)
        key = (loaded.key, self._data_key(claim), claim.n)
        if key not in self._runners:
            try:
                dataset = self._dataset(claim, loaded)
            except MechcheckError as exc:
                raise exc.located(key="task" if claim.task else "data") from None
            self._runners[key] = Runner(loaded, dataset, batch_size=self.batch_size,
                                        progress=self.progress)
        return self._runners[key]

    def saes(self, claim: ClaimSpec, loaded: LoadedModel) -> dict[str, Any]:
        """The claim's SAEs (``saes:``, paths relative to its file) by name, loaded once
        per model and checked against its width.

        Raises:
            DataError: a missing or unreadable SAE, or one of the wrong width, at ``saes``.
        """
        from mechcheck.sae import load_sae

        out: dict[str, Any] = {}
        for name, written in (claim.saes or {}).items():
            path = Path(written)
            path = (path if path.is_absolute() else Path(claim.base_dir) / path).resolve()
            key = (loaded.key, str(path))
            if key not in self._saes:
                sae = load_sae(path)
                try:
                    loaded.adapter.resolve([sae.site])  # the site exists in this model
                except MechcheckError as exc:
                    raise DataError(f"saes: SAE {name!r} ({path}) reads {sae.site}, which "
                                    f"this model lacks: {exc.message}", key="saes",
                                    hint=exc.hint) from None
                sae.check_model(loaded.adapter.dims.d_model, name=name)
                self._saes[key] = sae
            out[name] = self._saes[key]
        return out

    def _data_key(self, claim: ClaimSpec) -> str:
        if claim.data is not None and claim.task is not None:
            raise MechcheckError("the claim has both data: and task:", key="task",
                                 hint="give one: a file of prompts, or a task generator")
        if claim.task is not None:
            return "task:" + json.dumps(claim.task, sort_keys=True)
        if claim.data is None:
            raise MechcheckError("no data given", key="data",
                                 hint="add data: (a .jsonl or .csv file) or task: to the "
                                 "claim or the top of the file")
        return str(self._data_path(claim).resolve())

    @staticmethod
    def _data_path(claim: ClaimSpec) -> Path:
        path = Path(str(claim.data))
        return path if path.is_absolute() else Path(claim.base_dir) / path

    def _dataset(self, claim: ClaimSpec, loaded: LoadedModel) -> Dataset:
        from mechcheck.data import load_rows, tokenize_rows

        tokenizer, limit = loaded.tokenizer, loaded.context_length
        if claim.task is not None:
            task = self.registry.lookup("tasks", claim.task["name"], key="task")
            try:
                rows = task.rows(tokenizer, claim.task)
            except (ValueError, TypeError) as exc:
                raise DataError(f"task {task.name}: {exc}", key="task",
                                hint="check the task's parameters (docs/tasks.md); its "
                                "words must be single tokens for the model's "
                                "tokenizer") from None
            rows = rows[: claim.n] if claim.n else rows
            return tokenize_rows(rows, tokenizer, source=f"task {task.name}", max_length=limit)
        rows = load_rows(self._data_path(claim), n=claim.n)
        return tokenize_rows(rows, tokenizer, source=str(claim.data), max_length=limit)


def _weight_bytes(loaded: Any) -> int:
    """Bytes of a loaded model's parameters and buffers (0 when it has none)."""
    model = getattr(loaded, "model", None)
    if model is None or not hasattr(model, "parameters"):
        return 0
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)
