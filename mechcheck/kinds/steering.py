"""Claims that adding a direction changes behaviour: ``steers``.

The vector is read from a file (``vector:``, ``.safetensors`` or ``.npy``) or made from
two prompt sets (``contrast: {positive: ..., negative: ...}``): the mean of the site's
activation at each prompt's last token over the positive set minus that over the
negative set (activation addition, Turner et al. 2023; contrastive activation addition,
Rimsky et al. 2024).  ``scale`` times the vector is added to the site at the positions
``at:`` names (every position by default).  The shift is ``metric(steered) -
metric(clean)`` per prompt (``direction: decrease``: its negative, so that a steering
that lowers the metric is claimed with a positive ``min_shift``).

The control adds ``n_random`` random directions of the vector's norm (seeded); the
claim needs the shift to beat their mean shift on the same prompts.  With a list of
scales the claim is a dose-response: the shift exceeds ``min_shift`` at the largest
scale and rises with the scale (each prompt's least-squares slope), and the report
draws the shift per scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.errors import ClaimSpecError, DataError
from mechcheck.kinds.base import AT, COMPONENTS, METRIC, Criterion, Measurement, all_of, keys
from mechcheck.kinds.probing import probe_site
from mechcheck.spec.schema import KeySpec, as_choice, as_number, as_str, int_at_least

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Needs
    from mechcheck.spec.schema import ClaimSpec

__all__ = ["Steers"]

_MAX_PROMPT_FILE = 10 * 2**20  # bytes
_RUNS = {"prompt": "clean", "corrupt": "corrupt"}  # contrast sets that are the data's own


def _as_scales(value: Any) -> tuple[float, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("got an empty list")
    scales = tuple(as_number(v) for v in items)
    if any(s == 0 for s in scales):
        raise ValueError(f"got {value!r}; a scale of 0 adds nothing")
    return scales


def _as_contrast(value: Any) -> dict[str, str]:
    if not isinstance(value, dict) or set(value) != {"positive", "negative"}:
        raise ValueError(f"got {value!r}")
    return {k: as_str(v) for k, v in value.items()}


_as_count = int_at_least(1, "at least 1")


class Steers:
    """Adding ``scale`` x a direction at a site shifts the metric by more than
    ``min_shift``, and more than random directions of the same norm do."""

    name = "steers"
    description = ("adding scale x a direction (from a file or a contrast of two prompt "
                   "sets) at the site shifts the metric by more than min_shift, beyond "
                   "random directions of the same norm")
    keys = keys(COMPONENTS, AT, METRIC,
                KeySpec(name="vector", parse=as_str,
                        expected="a .safetensors or .npy file holding one vector of the "
                        "site's width (path relative to the claim file)"),
                KeySpec(name="vector_key", parse=as_str,
                        expected="the tensor's name in a .safetensors file with several"),
                KeySpec(name="contrast", parse=_as_contrast,
                        expected="{positive: P, negative: N}, each prompt or corrupt (the "
                        "data's own), a data column of prompts or a .txt/.jsonl file"),
                KeySpec(name="scale", parse=_as_scales, default=(1.0,),
                        expected="a non-zero number or a list of them (a dose-response)"),
                KeySpec(name="min_shift", required=True, parse=as_number,
                        expected="the least mean shift of the metric, e.g. 1.0"),
                KeySpec(name="direction", parse=as_choice("increase", "decrease"),
                        default="increase",
                        expected="increase (the default) or decrease: which way the metric "
                        "must move"),
                KeySpec(name="control", parse=as_choice("random_direction", "none"),
                        default="random_direction",
                        expected="random_direction (the default) or none"),
                KeySpec(name="n_random", parse=_as_count, default=3,
                        expected="how many random directions the control averages (default 3)"))

    def needs(self, claim: ClaimSpec, ctx: ClaimContext) -> Needs:
        return ctx.record_needs("clean", [probe_site(ctx)])

    def measure(self, claim: ClaimSpec, ctx: ClaimContext) -> Measurement:
        p = claim.params
        site = probe_site(ctx)
        vector, origin = steering_vector(ctx, site)
        clean = ctx.metric_values("clean")
        scales = p["scale"]
        sign = 1.0 if p["direction"] == "increase" else -1.0
        shifts = sign * np.stack([_steered(ctx, site, s * vector, keep=s == scales[-1]) - clean
                                  for s in scales])
        top = shifts[-1]
        metric = ctx.metric()
        criteria = [Criterion(name="min_shift", decision=ctx.decide_greater(top, p["min_shift"]),
                              expected=f"{metric.name} {p['direction']} at scale "
                              f"{scales[-1]:g} > {p['min_shift']:.4g}",
                              detail=f"vector {origin}, norm {float(vector.norm()):.4g}; "
                              f"mean shift {top.mean():.4g}")]
        random = sign * _random_shifts(ctx, site, vector, scales, clean) \
            if p["control"] == "random_direction" else None
        if random is not None:
            criteria.append(Criterion(
                name="control", decision=ctx.decide_greater(top - random[-1], 0.0),
                expected=f"shift exceeds {p['n_random']} random directions' of the same norm",
                detail=f"random directions' mean shift {random[-1].mean():.4g}"))
        if len(scales) > 1:
            criteria.append(_dose(ctx, np.asarray(scales), shifts))
        profile = tuple(_point(ctx, s, shifts[i], None if random is None else random[i])
                        for i, s in enumerate(scales)) if len(scales) > 1 else ()
        return Measurement(decision=all_of(criteria).decision,
                           intervention=f"add {', '.join(f'{s:g}' for s in scales)} x "
                           f"vector at {site}",
                           metric=metric.name, components=(str(site),),
                           expected="; ".join(c.expected for c in criteria),
                           criteria=tuple(criteria), profile=profile)


def steering_vector(ctx: ClaimContext, site: Any) -> tuple[torch.Tensor, str]:
    """The claim's vector (float64, the site's width) and where it came from."""
    p = ctx.params
    if (p.get("vector") is None) == (p.get("contrast") is None):
        raise ClaimSpecError("a steers claim needs exactly one of vector: and contrast:",
                             key="vector" if p.get("vector") else "kind",
                             hint="give vector: FILE, or contrast: {positive: P, negative: N}")
    width = ctx.activations("clean", site)[0].shape[-1]
    if p.get("vector") is not None:
        origin = str(p["vector"])
        vector = _read_vector(ctx, origin, p.get("vector_key"))
    else:
        means = []
        for side in ("positive", "negative"):
            name = p["contrast"][side]
            if name in _RUNS and name not in ctx.dataset.columns:
                acts = ctx.activations(_RUNS[name], site)
            else:
                acts = ctx.text_activations(_prompts(ctx, name, side), site, key="contrast")
            means.append(torch.stack([a[-1].double() for a in acts]).mean(0))
        vector = means[0] - means[1]
        origin = f"contrast {p['contrast']['positive']} - {p['contrast']['negative']}"
    if vector.shape != (width,):
        raise ClaimSpecError(f"the vector has shape {tuple(vector.shape)}, but {site} is "
                             f"{width} wide", key="vector",
                             hint=f"give a vector of {width} numbers for this site")
    if not torch.isfinite(vector).all() or float(vector.norm()) == 0.0:
        raise ClaimSpecError("the steering vector is zero or not finite", key="vector"
                             if p.get("vector") else "contrast",
                             hint="check the file, or use contrast sets that differ")
    return vector, origin


def _read_vector(ctx: ClaimContext, name: str, tensor_key: str | None) -> torch.Tensor:
    path = Path(ctx.claim.base_dir) / name
    if not path.is_file():
        raise DataError(f"vector: no file {path}", key="vector",
                        hint="write the path relative to the claim file")
    try:
        if path.suffix == ".npy":
            return torch.from_numpy(np.load(path, allow_pickle=False)).double().flatten()
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
            if tensor_key is None and len(tensors) != 1:
                raise DataError(f"vector: {path} holds {len(tensors)} tensors "
                                f"({', '.join(sorted(tensors))})", key="vector_key",
                                hint="name one with vector_key:")
            key = tensor_key if tensor_key is not None else next(iter(tensors))
            if key not in tensors:
                raise DataError(f"vector_key: {path} has no tensor '{key}'", key="vector_key",
                                hint=f"its tensors: {', '.join(sorted(tensors))}")
            return tensors[key].double().flatten()
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file, named
        raise DataError(f"vector: {path} could not be read ({type(exc).__name__}: {exc})",
                        key="vector", hint="write it with numpy.save or "
                        "safetensors.torch.save_file") from None
    raise DataError(f"vector: {path} is neither .safetensors nor .npy", key="vector",
                    hint="save the vector with safetensors (or numpy.save, .npy)")


def _prompts(ctx: ClaimContext, name: str, side: str) -> list[str]:
    """A contrast set: a data column of prompts, or a .txt / .jsonl file of them."""
    columns = ctx.dataset.columns
    if name in columns:
        return [str(v) for v in columns[name]]
    path = Path(ctx.claim.base_dir) / name
    if not path.is_file():
        raise DataError(f"contrast: {side} '{name}' is neither a data column nor a file",
                        key="contrast", hint=f"data columns: {', '.join(sorted(columns))}; "
                        "or a .txt file (one prompt per line) or .jsonl with a prompt field")
    if path.stat().st_size > _MAX_PROMPT_FILE:
        raise DataError(f"contrast: {path} is over 10 MiB", key="contrast",
                        hint="use fewer prompts")
    text = path.read_text(encoding="utf-8")
    if path.suffix != ".jsonl":
        return [line for line in text.splitlines() if line.strip()]
    out = []
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            try:
                out.append(str(json.loads(line)["prompt"]))
            except (ValueError, KeyError, TypeError):
                raise DataError(f"contrast: {path} line {i + 1} is not a JSON object with "
                                "a prompt", key="contrast",
                                hint='write one {"prompt": "..."} per line') from None
    return out


def _steered(ctx: ClaimContext, site: Any, delta: torch.Tensor, *,
             keep: bool = False) -> np.ndarray:
    def add(current: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        return current + delta.to(current.device, current.dtype)

    result = ctx.run("clean", {site: add}, at=ctx.params.get("at"))
    return ctx.metric_values(result, keep="patched" if keep else None)


def _random_shifts(ctx: ClaimContext, site: Any, vector: torch.Tensor,
                   scales: tuple[float, ...], clean: np.ndarray) -> np.ndarray:
    """Per scale, each prompt's mean shift over ``n_random`` random directions."""
    gen = torch.Generator().manual_seed(ctx.claim.seed)
    norm = vector.norm()
    shifts = np.zeros((len(scales), len(clean)))
    for _ in range(ctx.params["n_random"]):
        direction = torch.randn(vector.shape, generator=gen, dtype=torch.float64)
        direction = direction / direction.norm() * norm
        for i, s in enumerate(scales):
            shifts[i] += _steered(ctx, site, s * direction) - clean
    return shifts / ctx.params["n_random"]


def _dose(ctx: ClaimContext, scales: np.ndarray, shifts: np.ndarray) -> Criterion:
    centred = scales - scales.mean()
    slopes = centred @ (shifts - shifts.mean(0)) / float(centred @ centred)
    return Criterion(name="scale", decision=ctx.decide_greater(slopes, 0.0),
                     expected="the shift rises with the scale (per-prompt slope > 0)",
                     detail="mean shift per scale: " + ", ".join(
                         f"{s:g}: {m:.4g}" for s, m in zip(scales, shifts.mean(1))))


def _point(ctx: ClaimContext, scale: float, shift: np.ndarray,
           random: np.ndarray | None) -> dict[str, Any]:
    decision = ctx.decide_greater(shift, 0.0)
    point = {"scale": scale, "shift": decision.effect, "ci_low": decision.ci_low,
             "ci_high": decision.ci_high}
    if random is not None:
        point["random_shift"] = float(random.mean())
    return point
