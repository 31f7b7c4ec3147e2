"""A mechcheck session: the registry, and the models, datasets and runners in use.

The session keeps one model in memory at a time (loading the next releases the
last), and one :class:`~mechcheck.engine.Runner` per model x dataset, so the clean
and corrupt runs are computed once and shared by every claim that uses them.
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

__all__ = ["Session"]


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
    """

    def __init__(self, *, registry: Registry | None = None, device: str | None = None,
                 dtype: str = "float32", batch_size: int = 128, n_resamples: int = 9999,
                 allow_pickle: bool = False, trust_remote_code: bool = False,
                 plugins: Sequence[object] = (),
                 progress: Callable[[str], None] | None = None) -> None:
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
        self._model: LoadedModel | None = None
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
        if self._model is not None and self._model.key == key:
            return self._model
        if key in self._model_errors:  # a fresh copy: each claim adds its own location
            raise copy.copy(self._model_errors[key])
        self.release()
        start = time.perf_counter()
        try:
            options = LoadOptions(archs=self.registry.archs, zoo=self.registry.zoo,
                                  device=self.device, dtype=self.dtype,
                                  allow_pickle=self.allow_pickle,
                                  trust_remote_code=self.trust_remote_code,
                                  progress=self.progress)
            self._model = self.registry.load_model(source, options)
        except MechcheckError as exc:
            located = exc.located(key="model")
            self._model_errors[key] = located
            raise copy.copy(located) from None
        self.say(f"model {key} loaded on {self._model.device} ({self.dtype}) in "
                 f"{time.perf_counter() - start:.2f} s")
        return self._model

    def say(self, line: str) -> None:
        """Pass one line of progress to the ``progress`` callback, if any."""
        if self.progress is not None:
            self.progress(line)

    def release(self) -> None:
        """Drop the current model and every runner built on it."""
        self._model = None
        self._runners.clear()
        self._saes.clear()
        gc.collect()

    def runner(self, claim: ClaimSpec) -> Runner:
        """The runner for the claim's model and data (built on first use)."""
        from mechcheck.engine.runner import Runner

        if claim.source_error is not None:
            raise claim.source_error.located(key="model")
        if claim.source is None:
            raise MechcheckError("no model given", key="model",
                                 hint="add model: to the claim or the top of the file")
        loaded = self.model(claim.source)
        loaded.adapter.saes = self.saes(claim, loaded)
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
