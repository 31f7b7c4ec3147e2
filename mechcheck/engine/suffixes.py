"""Suffix runs: a patched run computes only the positions from its first patched one.

In a causal model, position ``t`` of every block depends only on positions ``<= t``
of the block before.  A run whose patches all act at positions ``>= p`` (``at: END``,
a probe's erasure at the last token, a steering vector there) therefore equals the
unpatched base run at every position before ``p``, in every block: only positions
``p ..`` need computing, with attention reading the base run's keys and values for
the positions before ``p``.  The shared clean and corrupt passes keep those keys and
values (the model's own cache, ``use_cache=True``), and a suffix run passes the first
``p`` of them as the model's cache with the input ids from ``p`` on.

Each patch still sees a full-length activation: the suffix is put after zeros standing
for the positions before ``p``, the patch runs, and its positions from ``p`` are kept.
A patch acts position by position (it replaces its masked positions), so what it does
there is what it does in a full run, noise drawn for the full shape included.

:mod:`mechcheck.engine.prefixes` adds prefix reuse on top (blocks before the first
patched one return the base run's output, here from ``p`` on).
``MECHCHECK_PLAIN_SWEEP=1`` turns both off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["Suffix", "earliest_position", "kv_pairs"]

KV = list[tuple[torch.Tensor, torch.Tensor]]


def kv_pairs(cache: Any, n_layers: int, length: int) -> KV | None:
    """The per-block ``(keys, values)`` ``[batch, kv_heads, length, head_dim]`` of a
    model's returned cache, or None where the cache is not one mechcheck can read
    (another layout, a sliding window, a block missing)."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        pairs = [(getattr(la, "keys", None), getattr(la, "values", None)) for la in layers]
    elif hasattr(cache, "key_cache"):  # transformers 4.x
        pairs = list(zip(cache.key_cache, cache.value_cache))
    else:
        return None
    if len(pairs) != n_layers or any(type(la).__name__ != "DynamicLayer"
                                     for la in (layers or ())):
        return None
    ok = all(isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor) and
             k.dim() == 4 and k.shape[-2] == length == v.shape[-2] for k, v in pairs)
    return [(k, v) for k, v in pairs] if ok else None  # type: ignore[misc]


def earliest_position(masks: Iterable[torch.Tensor]) -> int:
    """The first position ``[rows, length]`` masks mark in any row (0 when none is
    marked: a run with no masked position is not cut)."""
    first = None
    for mask in masks:
        columns = mask.any(dim=0).nonzero()
        if len(columns):
            here = int(columns[0])
            first = here if first is None else min(first, here)
    return first or 0


@dataclass(frozen=True)
class Suffix:
    """One batch's suffix run: positions from ``start`` on, after the base run's
    keys and values ``pairs`` (per block, the batch's rows, every position)."""

    start: int
    pairs: KV

    def ids(self, ids: torch.Tensor) -> torch.Tensor:
        return ids[:, self.start:]

    def cache(self, part: slice, copies: int = 1) -> Any:
        """A fresh cache holding positions ``< start`` of the rows ``part``, each row
        repeated ``copies`` times (the model appends to the cache, which replaces its
        tensors: the kept ones are never changed)."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for layer, (keys, values) in enumerate(self.pairs):
            k, v = keys[part, :, :self.start], values[part, :, :self.start]
            if copies > 1:
                k, v = k.repeat(copies, 1, 1, 1), v.repeat(copies, 1, 1, 1)
            cache.update(k, v, layer)  # update makes its own tensors
        return cache

    def output(self, output: Any) -> Any:
        """A recorded block output (full length) from ``start`` on."""
        if output is None:
            return None
        if isinstance(output, torch.Tensor):
            return output[:, self.start:]
        return (output[0][:, self.start:], *output[1:])

    def patches(self, patches: Mapping[Any, Any]) -> dict[Any, Any]:
        """Each patch applied to its activation at full length (zeros before
        ``start``), with the positions from ``start`` kept."""
        return {site: self._padded(patch) for site, patch in patches.items()}

    def _padded(self, patch: Any) -> Any:
        start = self.start

        def on_suffix(act: torch.Tensor) -> torch.Tensor:
            before = act.new_zeros(act.shape[0], start, *act.shape[2:])
            # contiguous: modules after a patch may view() their input
            return patch(torch.cat([before, act], dim=1))[:, start:].contiguous()

        return on_suffix
