"""Prefix reuse for patched runs: blocks before the first patched one are not computed.

A block's input is only its predecessor's output (the attention mask and position
embeddings are computed again from the input ids), so a run whose earliest patched or
recorded site lies in block ``L`` equals a run in which blocks ``0 .. L-1`` return
what block ``L-1`` returned in the unpatched base run.  The shared clean and corrupt
passes record their blocks' outputs (:class:`Prefixes`, within a memory budget); a
patched run then starts at the latest recorded block before its first patch
(:func:`mechcheck.engine.hooks.replayed`).  Where the run reads only the last
position's logits and nothing is patched or recorded in the final block, that block's
attention output projection and MLP see the last position only (attention still
reads every key).  :mod:`mechcheck.engine.sweep` does the same for planned sweeps.

``MECHCHECK_PLAIN_SWEEP=1`` turns prefix reuse off (every block of every run
computes), as it does the sweep's fast paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from mechcheck.addresses import Address

if TYPE_CHECKING:
    from mechcheck.models.adapter import ModelAdapter

__all__ = ["PLAIN_SWITCH", "PREFIX_BYTES", "Prefixes", "fast_sweeps", "final_modules",
           "first_block", "repeat_output", "rows_of_output", "touches_final"]

PLAIN_SWITCH = "MECHCHECK_PLAIN_SWEEP"
"""Environment variable: ``1`` serves every patched run by the plain path (no prefix
or suffix reuse, no fast sweep)."""


def fast_sweeps() -> bool:
    """Whether patched runs take the fast exact paths (``MECHCHECK_PLAIN_SWEEP`` unset
    or 0)."""
    return os.environ.get(PLAIN_SWITCH, "").strip() in ("", "0")

PREFIX_BYTES = 512 * 2**20
"""The shared passes of one runner keep at most about this many bytes of block
outputs; past it they keep every k-th block's (runs then start a little earlier)."""


def first_block(adapter: ModelAdapter, addresses: Iterable[Address]) -> int | None:
    """The first block that a run patching or recording ``addresses`` must compute
    (``n_layers`` when only the final norm is touched), or None where no block may be
    skipped: an SAE site, the unembedding, an attention pattern, an address that names
    no layer."""
    n_layers = adapter.dims.n_layers
    starts: list[int] = []
    for address in addresses:
        if not isinstance(address, Address) or address.sae is not None or \
                address.site in ("unembed", "pattern"):
            return None
        if isinstance(address.layer, int):
            starts.append(address.layer)
        elif address.site in ("embed", "pos_embed"):
            starts.append(0)
        elif address.site == "ln_final":
            starts.append(n_layers)
        else:
            return None
    return min(starts) if starts else None


def touches_final(adapter: ModelAdapter, addresses: Iterable[Address]) -> bool:
    """Whether any address lies in the final block or after it."""
    final = adapter.dims.n_layers - 1
    return any(not (isinstance(a.layer, int) and a.layer < final or
                    a.site in ("embed", "pos_embed")) for a in addresses)


def final_modules(adapter: ModelAdapter) -> tuple[str, ...]:
    """The final block's attention output projection and MLP (whose inputs a run that
    reads the last position only may cut to that position)."""
    final = adapter.dims.n_layers - 1
    head = adapter.site(Address("head", final, 0)).module
    mlp = adapter._existing(f"{adapter.arch.blocks}.{final}.{adapter.arch.mlp}")
    return (head, mlp)


def repeat_output(output: Any, copies: int) -> Any:
    """A block's recorded output with its batch repeated ``copies`` times (always a
    copy: the blocks after it may add to it in place)."""
    if output is None:
        return None
    if isinstance(output, torch.Tensor):
        return output.repeat(copies, *([1] * (output.dim() - 1)))
    return (repeat_output(output[0], copies), *output[1:])


def rows_of_output(output: Any, part: slice) -> Any:
    """A block's recorded output for the rows ``part`` of its batch."""
    if isinstance(output, torch.Tensor):
        return output[part]
    return (output[0][part], *output[1:])


class Prefixes:
    """The block outputs of the shared passes of one runner, per ``(run, batch)``."""

    def __init__(self, adapter: ModelAdapter, budget: int = PREFIX_BYTES) -> None:
        self.adapter = adapter
        self.budget = budget
        self._kept: dict[tuple[str, int], dict[int, Any]] = {}
        self._kv: dict[tuple[str, int], Any] = {}  # keys and values, for suffix runs

    def layers_to_keep(self, rows: int, tokens: int, element_bytes: int) -> list[int]:
        """The blocks whose outputs a shared pass keeps, for a dataset of ``rows``
        prompts of about ``tokens`` tokens: all while they fit the budget, else every
        ``stride``-th (ending at the final block)."""
        dims = self.adapter.dims
        per_block = rows * tokens * dims.d_model * element_bytes
        stride = max(1, -(-per_block * dims.n_layers // max(1, self.budget)))
        return list(range(dims.n_layers - 1, -1, -stride))[::-1]

    def keep(self, run: str, batch: int, outputs: dict[int, Any],
             kv: Any = None) -> None:
        """Remember what the blocks returned in one batch of a shared pass, and its
        per-block keys and values (:func:`mechcheck.engine.suffixes.kv_pairs`)."""
        self._kept[(run, batch)] = dict(outputs)
        if kv is not None:
            self._kv[(run, batch)] = kv

    def kv(self, run: str, batch: int) -> Any:
        """The kept keys and values of one batch of a shared pass, or None."""
        return self._kv.get((run, batch))

    def kv_fits(self, rows: int, tokens: int, element_bytes: int) -> bool:
        """Whether the shared passes may keep their keys and values too (every block's:
        within the budget)."""
        dims = self.adapter.dims
        kv_width = 2 * dims.d_model * self.adapter.n_kv_heads // max(1, dims.n_heads)
        return rows * tokens * kv_width * dims.n_layers * element_bytes <= self.budget

    def start(self, run: str, batch: int, first: int) -> tuple[int, Any]:
        """The block a run whose first patch is in block ``first`` starts at, and what
        the block before it returned (``(0, None)``: compute every block)."""
        kept = self._kept.get((run, batch), {})
        usable = [layer for layer in kept if layer < first]
        if not usable:
            return 0, None
        layer = max(usable)
        return layer + 1, kept[layer]
