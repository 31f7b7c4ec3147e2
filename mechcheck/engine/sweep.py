"""Exact sweeps: many patched runs computed together, each equal to its plain run.

A claim file that ablates every head asks for one patched run per head.  The claims
announce those runs in their needs (:class:`~mechcheck.engine.runs.PatchRequest` in
``Needs.patched``); the :class:`Sweeper` then computes the upcoming ones in chunks
and serves each from its cache.  What it saves, and why each saving is exact:

* **Prefix reuse.**  A block's input is the previous block's output, and the
  attention mask and position embeddings are recomputed from the input ids.  So a run
  whose earliest patched site is in block ``L`` equals a run in which blocks
  ``0 .. L-1`` return what block ``L-1`` returned in the unpatched base run (recorded
  once per batch, as the block returned it: tensor or tuple).  Only blocks ``>= L``
  compute (:func:`mechcheck.engine.hooks.replayed`).  The shared passes keep their
  blocks' outputs (:mod:`mechcheck.engine.prefixes`, which gives plain runs the same
  saving); a block output they did not keep costs one unpatched pass per chunk.
* **Only what is read.**  The runner reads the last position's logits only.  In the
  final block, the attention output projection and the MLP act per position, and
  their outputs are added to the residual stream, so cutting their input to the last
  position (the block broadcasts the ``[b, 1, d]`` result onto ``[b, T, d]``) leaves
  the last position exact; attention itself still reads every key.  Not done when a
  request patches anything in the final block or after it.
* **Low-rank head ablation.**  A head's output enters its layer's attention output
  only through the output projection, an affine map ``z -> W z + b``.  A replacement
  that ignores the head's value (zero, a mean, another run's value) changes ``z`` by
  ``new - z`` in the head's columns, so the attention output changes by ``(new - z)
  @ W_O[head rows]``.  The run then starts at the head's own block, with that block's
  attention module returning the base run's output plus this update instead of
  computing (the block's own code still adds it to the residual stream, runs the MLP,
  NeoX's parallel residual or Gemma's norms).  The rows of ``W_O`` are read by
  applying the projection to one-hot inputs, so Linear and GPT-2's Conv1D need no
  code of their own.
* **Batching.**  Several requests share a pass: the batch of prompts is repeated
  once per request and each copy gets its own patches, as
  :meth:`~mechcheck.engine.runner.Runner.run_many` does.  Prompts do not interact,
  so each copy's logits are those of its own run (up to float rounding of batched
  matrix products, far below the tests' 1e-5).

A request takes the plain path (one :meth:`Runner.run`) when any assumption fails:
an SAE site, the unembedding, anything but an :class:`Intervention`, positions that
do not resolve, an error while planning or running a chunk (the plain run then
reports the error as usual).  ``MECHCHECK_PLAIN_SWEEP=1`` turns the fast path off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.engine.hooks import Patch, block_outputs, hooked, module_outputs, replayed
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention
from mechcheck.engine.prefixes import (
    PLAIN_SWITCH,
    fast_sweeps,
    final_modules,
    first_block,
    repeat_output,
    touches_final,
)
from mechcheck.engine.runs import PatchRequest
from mechcheck.engine.suffixes import Suffix, earliest_position

if TYPE_CHECKING:
    from mechcheck.engine.runner import Runner
    from mechcheck.models.adapter import ModelAdapter, Site

__all__ = ["CACHE_BYTES", "PLAIN_SWITCH", "TOKENS_PER_PASS", "Sweeper", "fast_sweeps",
           "start_layer"]

CACHE_BYTES = 256 * 2**20
"""At most this many bytes of computed logits wait to be read."""

TOKENS_PER_PASS = 1024
"""Copies of a batch share a pass while the pass holds at most this many tokens (at
least one copy).  Measured on 2 CPU cores (shared with other jobs, so +-20%), GPT-2
small's shape (12 layers, d 768, 12 heads, vocabulary 50,257), 32 prompts x 16
tokens, last-position logits, best of 3 passes, seconds per copy: 1 copy (512 tokens)
1.32, 2 copies 1.19, 4 copies 1.45, 8 copies 1.38.  Larger passes leave the cache."""


_LINEAR = frozenset(iv.replace for iv in BUILTIN_INTERVENTIONS)
"""The replacements that ignore the current value (zeros, or the source's values), so
a head's ablation changes its layer's attention output by a linear map of the change."""


def start_layer(adapter: ModelAdapter, request: PatchRequest) -> int | None:
    """The first block that a request's run must compute, or None where the request
    takes the plain path."""
    if not all(isinstance(iv, Intervention) for _, iv in request.targets):
        return None
    return first_block(adapter, [address for address, _ in request.targets])


@dataclass(slots=True)
class _Plan:
    """One request, ready to run fast."""

    request: PatchRequest
    base: str
    start: int
    last_only: bool
    low_rank: bool  # one layer's heads, ablated by a replacement that ignores them
    specs: list[tuple[Address, Intervention]]
    masks: list[torch.Tensor]  # per batch, where the patches act


class Sweeper:
    """Computes planned patched runs of one :class:`Runner` together (see the module
    docstring), keeping at most :data:`CACHE_BYTES` of results until they are read."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.ready: dict[PatchRequest, torch.Tensor] = {}
        self._chunk: set[PatchRequest] = set()  # the requests of the last chunk
        self._reads: dict[PatchRequest, int] = {}  # reads each result still awaits

    def serve(self, request: PatchRequest, pending: list[PatchRequest]) -> torch.Tensor | None:
        """The logits of ``request``: from the cache, or by computing it with the
        pending requests that follow it (removed from ``pending``).  None: take the
        plain path."""
        if request in self.ready:
            return self._read(request)
        if request in self._chunk:  # planned with the last chunk, but not fast
            return None
        self.ready.clear()  # results the claims went past are not read any more
        if request not in pending:
            return None
        first = pending.index(request)
        vocab = int(self.runner.logits("clean").shape[-1])
        cap = max(1, CACHE_BYTES // max(1, 4 * vocab * len(self.runner.dataset)))
        chunk = pending[first:first + cap]
        del pending[:first + cap]
        self._chunk = set(chunk)
        self._reads = {r: chunk.count(r) for r in self._chunk}  # claims asking the same
        try:
            self.ready = self.compute(chunk)
        except Exception:  # noqa: BLE001 - the plain path reports the error itself
            self.ready = {}
            return None
        return self._read(request) if request in self.ready else None

    def _read(self, request: PatchRequest) -> torch.Tensor:
        """A computed result, dropped once every claim that planned it has read it (so
        two claims asking for the same run get the same values)."""
        left = self._reads.get(request, 1) - 1
        self._reads[request] = left
        return self.ready.pop(request) if left <= 0 else self.ready[request]

    def compute(self, requests: Sequence[PatchRequest]) -> dict[PatchRequest, torch.Tensor]:
        """Logits ``[n, vocab]`` (row order) of each request that the fast path can
        compute; the others are left out."""
        from mechcheck.engine.runner import Needs

        plans = [p for p in (self._plan(r) for r in dict.fromkeys(requests)) if p]
        if not plans:
            return {}
        needs = Needs(runs=set())
        for plan in plans:
            needs.update(self.runner.needs_for(plan.specs))
        self.runner.prepare(needs)
        runner = self.runner
        out: dict[int, list[torch.Tensor]] = {i: [] for i in range(len(plans))}
        groups: dict[tuple[str, int, bool, bool], list[int]] = {}
        for i, plan in enumerate(plans):
            groups.setdefault((plan.base, plan.start, plan.last_only, plan.low_rank),
                              []).append(i)
        for b, rows in enumerate(runner.batches):
            length = len(runner.dataset.prompts[rows[0]])
            prefixes = self._prefixes(b, rows, {(base, s) for base, s, _, _ in groups},
                                      {(base, s) for base, s, _, low in groups if low})
            cap = max(1, min(runner._max_rows // len(rows),
                             TOKENS_PER_PASS // (len(rows) * length)))
            for (base, start, last_only, low), group in groups.items():
                makers = {i: runner._patches(plans[i].specs, b, plans[i].masks[b], length)
                          for i in group}
                for suffix, members in self._by_suffix(base, b, group, plans):
                    for at in range(0, len(members), cap):
                        part = members[at:at + cap]
                        patches = [makers[i](slice(None)) for i in part]
                        attention = self._low_rank(base, start, patches, prefixes) \
                            if low else None
                        logits = self._forward(base, rows, [] if low else patches, start,
                                               prefixes.get((base, start)), last_only,
                                               attention, copies=len(part), suffix=suffix)
                        for i, piece in zip(part, logits):
                            out[i].append(piece)
        return {plan.request: runner._in_row_order(out[i]) for i, plan in enumerate(plans)}

    # -- pieces -------------------------------------------------------------------
    def _by_suffix(self, base: str, batch: int, members: list[int],
                   plans: list[_Plan]) -> list[tuple[Suffix | None, list[int]]]:
        """The members of a group by the suffix run their patches allow in one batch
        (None: every position), in order (:mod:`mechcheck.engine.suffixes`)."""
        kv = self.runner.prefixes.kv(base, batch)
        by_start: dict[int, list[int]] = {}
        for i in members:
            start = earliest_position([plans[i].masks[batch]]) if kv is not None else 0
            by_start.setdefault(start, []).append(i)
        return [(Suffix(start, kv) if start > 0 and kv is not None else None, part)
                for start, part in by_start.items()]

    def _plan(self, request: PatchRequest) -> _Plan | None:
        from mechcheck.engine.runner import position_mask

        runner, adapter = self.runner, self.runner.loaded.adapter
        start = start_layer(adapter, request)
        if start is None:
            return None
        bases = {iv.base_run for _, iv in request.targets}
        if len(bases) != 1:
            return None
        (base,) = bases
        try:
            runner._check_run(base)
            runner._check_column(request.mean_by)
            masks = [position_mask(runner.dataset, rows, len(runner.dataset.prompts[rows[0]]),
                                   request.at).to(runner.loaded.device)
                     for rows in runner.batches]
        except Exception:  # noqa: BLE001 - the plain run reports it
            return None
        last_only = not touches_final(adapter, [a for a, _ in request.targets])
        specs = [(a, iv.with_mean_by(request.mean_by)) for a, iv in request.targets]
        low_rank = all(a.site == "head" and a.layer == start and iv.replace in _LINEAR
                       for a, iv in request.targets)
        return _Plan(request, base, start, last_only, low_rank, specs, masks)

    def _prefixes(self, batch: int, rows: np.ndarray, wanted: set[tuple[str, int]],
                  low: set[tuple[str, int]]) -> dict[Any, Any]:
        """What block ``start - 1`` returns in the unpatched base run of one batch, per
        ``(base, start)`` with ``start > 0``; and, per ``(base, layer)`` of ``low``
        (low-rank head ablations), that layer's attention output ``("attn", base,
        layer)`` and the input of its output projection ``("heads", base, layer)``."""
        runner, adapter = self.runner, self.runner.loaded.adapter
        out: dict[Any, Any] = {}
        for base in sorted({base for base, _ in wanted}):
            layers = sorted({start - 1 for b, start in wanted if b == base and start > 0})
            for layer in list(layers):  # kept by the shared pass: no forward needed
                start, output = runner.prefixes.start(base, batch, layer + 1)
                if start == layer + 1:
                    out[(base, layer + 1)] = output
                    layers.remove(layer)
            lows = sorted({layer for b, layer in low if b == base})
            if not layers and not lows:
                continue
            attn = {layer: adapter.attention_module(layer) for layer in lows}
            heads = {layer: adapter.site(Address("head", layer, 0)) for layer in lows}
            # this pass too starts from the shared pass's kept outputs where it can
            start, output = runner.prefixes.start(base, batch, min(layers + lows))
            with block_outputs(adapter, layers) as store, \
                    module_outputs(adapter, list(attn.values())) as attn_store, \
                    hooked(adapter, record=list(heads.values())) as recorded, \
                    replayed(adapter, start, repeat_output(output, 1)):
                runner._forward(runner._inputs(base, rows))
            out.update({(base, layer + 1): store[layer] for layer in layers})
            for layer in lows:
                out[("attn", base, layer)] = attn_store[attn[layer]]
                out[("heads", base, layer)] = recorded[heads[layer]]
        return out

    def _low_rank(self, base: str, layer: int, patches: list[dict[Site, Patch]],
                  prefixes: dict[Any, Any]) -> tuple[str, Any]:
        """The attention output of ``layer`` for each copy, as the module returns it:
        the base run's plus ``(new - z) @ W_O`` for the heads' rows of the output
        projection, ``z`` its input in the base run and ``new`` what the copy's
        patches make of it (only the heads' columns change, at their positions)."""
        adapter = self.runner.loaded.adapter
        site = adapter.site(Address("head", layer, 0))
        z = prefixes[("heads", base, layer)]
        recorded = prefixes[("attn", base, layer)]
        value = recorded if isinstance(recorded, torch.Tensor) else recorded[0]
        if not isinstance(recorded, torch.Tensor) and any(
                isinstance(extra, torch.Tensor) for extra in recorded[1:]):
            raise ValueError("the attention module returned tensors besides its output")
        projection = adapter.module(site.module)
        outputs = []
        for copy in patches:
            change = copy[site](z) - z
            zero = torch.zeros_like(change[:1, :1])
            # the output projection is affine: W @ change = proj(change) - proj(0), and
            # only the heads' columns are nonzero, so use their rows of W alone
            cols = change.abs().sum(dim=(0, 1)).nonzero().flatten()
            if len(cols) == 0:
                outputs.append(value)
                continue
            basis = torch.zeros(len(cols), z.shape[-1], dtype=z.dtype, device=z.device)
            basis[torch.arange(len(cols)), cols] = 1
            with torch.inference_mode():
                rows = projection(basis[None])[0] - projection(zero)[0, 0]
            outputs.append(value + change[..., cols] @ rows)
        stacked = torch.cat([o.expand(len(z), *o.shape[1:]) for o in outputs])
        result = stacked if isinstance(recorded, torch.Tensor) else (stacked, *recorded[1:])
        return adapter.attention_module(layer), result

    def _forward(self, base: str, rows: np.ndarray, per_copy: list[dict[Site, Patch]],
                 start: int, prefix: Any, last_only: bool,
                 attention: tuple[str, Any] | None = None, *,
                 copies: int, suffix: Suffix | None = None) -> list[torch.Tensor]:
        """One pass of ``rows`` repeated once per copy, each with its own patches,
        computing blocks ``>= start`` only (and with ``suffix``, positions from its
        start only); ``attention`` (a module path and what it returns) replaces that
        attention module's computation."""
        from mechcheck.engine.runner import stacked_patches

        runner, adapter = self.runner, self.runner.loaded.adapter
        n = len(rows)
        patches = stacked_patches(per_copy, n)
        ids = runner._inputs(base, rows).repeat(copies, 1)
        output, past = repeat_output(prefix, copies), None
        if suffix is not None:
            ids, patches = suffix.ids(ids), suffix.patches(patches)
            output, past = suffix.output(output), suffix.cache(slice(None), copies)
            if attention is not None:
                attention = (attention[0], suffix.output(attention[1]))
        cut = final_modules(adapter) if last_only else ()
        with hooked(adapter, patches=patches), \
                replayed(adapter, start, output, last_only=cut,
                         returning=dict([attention]) if attention else None):
            logits = runner._forward(ids, list(patches), past=past)
        return list(logits.split(n))
