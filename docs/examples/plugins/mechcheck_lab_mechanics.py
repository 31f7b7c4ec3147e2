# mechcheck_lab_mechanics.py
import logging
from dataclasses import replace

import mechcheck
from mechcheck.engine.attention import AttentionScore
from mechcheck.models.loading import LoadedModel, LoadOptions, ModelSource, load_source
from mechcheck.zoo import ZooModel, resolve


def _self_score(pattern, tokens):
    """Mean over query positions of the attention a position pays to itself."""
    return pattern.diagonal(dim1=-2, dim2=-1).mean(dim=-1)


@mechcheck.hookimpl
def mechcheck_attention_scores() -> list[AttentionScore]:
    return [AttentionScore(name="self", fn=_self_score,
                           description="attention from each position to itself")]


@mechcheck.hookimpl
def mechcheck_zoo_models() -> list[ZooModel]:
    def folder(checkpoint, progress):
        return resolve(f"induction-2l@{checkpoint}" if checkpoint else "induction-2l")

    return [ZooModel(name="induction", folder=folder,
                     description="a short name for induction-2l")]


@mechcheck.hookimpl
def mechcheck_load_model(source: ModelSource, options: LoadOptions) -> LoadedModel | None:
    if source.kind != "lab":
        return None  # not ours: the next implementation (in the end the built-in) loads it
    zoo = ModelSource(kind="zoo", name=source.name, revision=source.revision)
    return replace(load_source(zoo, options), source=source)


@mechcheck.hookimpl
def mechcheck_claim_result(result) -> None:
    logging.getLogger("mechcheck_lab").info("%s %s: %s", result.file, result.id,
                                            result.verdict)
