"""The pluggy hook specifications of mechcheck (project name ``mechcheck``).

Every extension point is a hook here; the built-in interventions, metrics, claim
kinds, tasks, architecture maps, decision rules, attention scores, zoo models and
model loading are registered by :mod:`mechcheck.builtin` as an ordinary plugin, so a
third-party plugin (entry-point group ``mechcheck``, a ``conftest.py``, a ``-p``
plugin or a module named in the ``mechcheck_plugins`` ini key) uses the same hooks.

The return types are imported for type checkers only, so importing this module (as
the pytest plugin does on every run) imports neither torch nor the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from mechcheck.engine.attention import AttentionScore
    from mechcheck.engine.interventions import Intervention
    from mechcheck.kinds import ClaimKind
    from mechcheck.metrics import Metric
    from mechcheck.models.adapter import ArchMap
    from mechcheck.models.loading import LoadedModel, LoadOptions, ModelSource
    from mechcheck.report.results import ClaimResult
    from mechcheck.rules import DecisionRule
    from mechcheck.tasks import Task
    from mechcheck.zoo import ZooModel

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("mechcheck")
hookimpl = pluggy.HookimplMarker("mechcheck")


@hookspec
def mechcheck_interventions() -> list[Intervention]:
    """Return the :class:`~mechcheck.engine.interventions.Intervention` objects this plugin adds.

    Called once when the registry is built; all results are collected (not
    firstresult).  Names must be unique across plugins.
    """


@hookspec
def mechcheck_metrics() -> list[Metric]:
    """Return the :class:`~mechcheck.metrics.Metric` objects this plugin adds.

    Called once when the registry is built; all results are collected.  Names must
    be unique across plugins.
    """


@hookspec
def mechcheck_claim_kinds() -> list[ClaimKind]:
    """Return the claim kinds this plugin adds (objects following
    :class:`~mechcheck.kinds.ClaimKind`: ``name``, ``keys``, ``description``,
    ``needs()`` and ``measure()``).

    Called once when the registry is built; all results are collected.
    """


@hookspec
def mechcheck_tasks() -> list[Task]:
    """Return the :class:`~mechcheck.tasks.Task` generators this plugin adds.

    Called once when the registry is built; all results are collected.  Claim files
    name them in ``task: {name: ...}``.
    """


@hookspec
def mechcheck_model_adapters() -> list[ArchMap]:
    """Return the :class:`~mechcheck.models.adapter.ArchMap` objects this plugin adds.

    Called once when the registry is built; all results are collected.  Map names and
    the ``model_types`` they cover must be unique across plugins: two maps for one
    architecture are an error that names both plugins.
    """


@hookspec
def mechcheck_decision_rules() -> list[DecisionRule]:
    """Return the :class:`~mechcheck.rules.DecisionRule` objects this plugin adds.

    Called once when the registry is built; all results are collected.  Claim files
    select a rule by name with ``test:``; it decides the one-sided claims (``necessary``,
    ``attends``, ``performs``).  Names must be unique across plugins.
    """


@hookspec
def mechcheck_attention_scores() -> list[AttentionScore]:
    """Return the :class:`~mechcheck.engine.attention.AttentionScore` objects this
    plugin adds.

    Called once when the registry is built; all results are collected.  ``attends``
    claims name them in ``pattern:``.  Names must be unique across plugins.
    """


@hookspec
def mechcheck_zoo_models() -> list[ZooModel]:
    """Return the :class:`~mechcheck.zoo.ZooModel` entries this plugin adds.

    Called once when the registry is built; all results are collected.  ``zoo:<name>``
    model sources resolve to them.  Names must be unique across plugins.
    """


@hookspec(firstresult=True)
def mechcheck_load_model(source: ModelSource, options: LoadOptions) -> LoadedModel | None:
    """Load the model that a claim's ``model:`` names, or return None to pass.

    Called each time a session loads a model (once per model and checkpoint in a
    run).  ``source`` is the parsed ``model:`` value (its ``kind`` is the part before
    the colon: ``hf``, ``zoo``, ``gguf``, ``folder`` or a plugin's own scheme);
    ``options`` holds the session's dtype, device, allow_pickle, trust_remote_code,
    progress callback and the registry's architecture maps and zoo models.

    firstresult: the first implementation that returns a
    :class:`~mechcheck.models.loading.LoadedModel` wins.  The built-in loading
    (folders, ``hf:``, ``zoo:``, ``gguf:``) is the ``trylast`` implementation, so a
    plugin sees every source first.  Raise
    :class:`~mechcheck.errors.ModelLoadError` for a source the plugin owns but cannot
    load.
    """


@hookspec
def mechcheck_claim_result(result: ClaimResult) -> None:
    """Receive one final :class:`~mechcheck.report.results.ClaimResult` (a result sink).

    Called once per claim result after the file's correction, by every run that
    evaluates claim files (pytest, ``mechcheck check``, ``evaluate_path``).  Return
    values are ignored.  A sink that raises does not stop the run: mechcheck warns
    with a line naming the plugin and still calls the other sinks.
    """
