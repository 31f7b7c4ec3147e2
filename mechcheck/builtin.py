"""mechcheck's own interventions, metrics, claim kinds, tasks, adapters, decision rules,
attention scores, zoo models and model loading, as a plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from mechcheck.hookspecs import hookimpl

if TYPE_CHECKING:
    from mechcheck.engine.attention import AttentionScore
    from mechcheck.engine.interventions import Intervention
    from mechcheck.kinds import ClaimKind
    from mechcheck.metrics import Metric
    from mechcheck.models.adapter import ArchMap
    from mechcheck.models.loading import LoadedModel, LoadOptions, ModelSource
    from mechcheck.rules import DecisionRule
    from mechcheck.tasks import Task
    from mechcheck.zoo import ZooModel

__all__ = [
    "mechcheck_attention_scores",
    "mechcheck_claim_kinds",
    "mechcheck_decision_rules",
    "mechcheck_interventions",
    "mechcheck_load_model",
    "mechcheck_metrics",
    "mechcheck_model_adapters",
    "mechcheck_tasks",
    "mechcheck_zoo_models",
]


@hookimpl(trylast=True)
def mechcheck_interventions() -> list[Intervention]:
    from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS

    return list(BUILTIN_INTERVENTIONS)


@hookimpl(trylast=True)
def mechcheck_metrics() -> list[Metric]:
    from mechcheck.metrics import BUILTIN_METRICS
    from mechcheck.tasks.builtin import BUILTIN_TASK_METRICS

    return [*BUILTIN_METRICS, *BUILTIN_TASK_METRICS]


@hookimpl(trylast=True)
def mechcheck_claim_kinds() -> list[ClaimKind]:
    from mechcheck.kinds import BUILTIN_KINDS

    return cast("list[ClaimKind]", list(BUILTIN_KINDS))


@hookimpl(trylast=True)
def mechcheck_tasks() -> list[Task]:
    from mechcheck.tasks.builtin import BUILTIN_TASKS

    return list(BUILTIN_TASKS)


@hookimpl(trylast=True)
def mechcheck_model_adapters() -> list[ArchMap]:
    from mechcheck.models.archs import BUILTIN_ARCHS

    return list(BUILTIN_ARCHS)


@hookimpl(trylast=True)
def mechcheck_decision_rules() -> list[DecisionRule]:
    from mechcheck.rules import BUILTIN_RULES

    return list(BUILTIN_RULES)


@hookimpl(trylast=True)
def mechcheck_attention_scores() -> list[AttentionScore]:
    from mechcheck.engine.attention import BUILTIN_SCORES

    return list(BUILTIN_SCORES)


@hookimpl(trylast=True)
def mechcheck_zoo_models() -> list[ZooModel]:
    from mechcheck.zoo import BUILTIN_ZOO

    return list(BUILTIN_ZOO)


@hookimpl(trylast=True)
def mechcheck_load_model(source: ModelSource, options: LoadOptions) -> LoadedModel | None:
    from mechcheck.models.loading import load_source

    return load_source(source, options)
