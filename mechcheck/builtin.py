"""mechcheck's own interventions, metrics, claim kinds and adapters, as a plugin."""

from __future__ import annotations

from typing import Any

from mechcheck.hookspecs import hookimpl

__all__ = [
    "mechcheck_claim_kinds",
    "mechcheck_interventions",
    "mechcheck_metrics",
    "mechcheck_model_adapters",
    "mechcheck_tasks",
]


@hookimpl(trylast=True)
def mechcheck_interventions() -> list[Any]:
    from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS

    return list(BUILTIN_INTERVENTIONS)


@hookimpl(trylast=True)
def mechcheck_metrics() -> list[Any]:
    from mechcheck.metrics import BUILTIN_METRICS
    from mechcheck.tasks.builtin import BUILTIN_TASK_METRICS

    return [*BUILTIN_METRICS, *BUILTIN_TASK_METRICS]


@hookimpl(trylast=True)
def mechcheck_claim_kinds() -> list[Any]:
    from mechcheck.kinds import BUILTIN_KINDS

    return list(BUILTIN_KINDS)


@hookimpl(trylast=True)
def mechcheck_tasks() -> list[Any]:
    from mechcheck.tasks.builtin import BUILTIN_TASKS

    return list(BUILTIN_TASKS)


@hookimpl(trylast=True)
def mechcheck_model_adapters() -> list[Any]:
    from mechcheck.models.archs import BUILTIN_ARCHS

    return list(BUILTIN_ARCHS)
