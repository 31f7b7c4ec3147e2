"""The pluggy hook specifications of mechcheck (project name ``mechcheck``).

Every extension point is a hook here; the built-in interventions, metrics, claim
kinds and model adapters are registered by :mod:`mechcheck.builtin` as an ordinary
plugin, so a third-party plugin (entry-point group ``mechcheck``) uses the same hooks.
"""

from __future__ import annotations

from typing import Any

import pluggy

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("mechcheck")
hookimpl = pluggy.HookimplMarker("mechcheck")


@hookspec
def mechcheck_interventions() -> list[Any]:
    """Return the :class:`~mechcheck.engine.interventions.Intervention` objects this plugin adds.

    Called once when the registry is built; all results are collected (not
    firstresult).  Names must be unique across plugins.
    """


@hookspec
def mechcheck_metrics() -> list[Any]:
    """Return the :class:`~mechcheck.metrics.Metric` objects this plugin adds.

    Called once when the registry is built; all results are collected.
    """


@hookspec
def mechcheck_claim_kinds() -> list[Any]:
    """Return the claim kinds this plugin adds (objects following
    :class:`~mechcheck.kinds.ClaimKind`: ``name``, ``keys``, ``description``,
    ``needs()`` and ``measure()``).

    Called once when the registry is built; all results are collected.
    """


@hookspec
def mechcheck_tasks() -> list[Any]:
    """Return the :class:`~mechcheck.tasks.Task` generators this plugin adds.

    Called once when the registry is built; all results are collected.  Claim files
    name them in ``task: {name: ...}``.
    """


@hookspec
def mechcheck_model_adapters() -> list[Any]:
    """Return the :class:`~mechcheck.models.adapter.ArchMap` objects this plugin adds.

    Maps registered by plugins are tried before the built-in ones, so a plugin can
    override how an architecture is addressed.  All results are collected.
    """
