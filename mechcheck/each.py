"""Per-component claims: ``each: true`` makes one claim per component (or layer).

A claim with ``each: true`` whose ``components`` expand to several addresses
(``blocks.*.attn.head.*``, ``blocks.9.mlp.neuron.*``, a list) stands for one claim per
address, named ``<id>[<canonical address>]``; a ``decodes`` or ``traced`` claim that
selects layers with ``layers:`` stands for one claim per layer, ``<id>[<layer>]``.
Each copy is an ordinary :class:`~mechcheck.spec.schema.ClaimSpec` with one component
(or one layer) and ``each_of`` set to the parent's id, so it is measured, corrected and
reported like any other claim of its file.

The expansion needs the model's sizes, so both the pytest collection (one item per
copy) and :func:`~mechcheck.evaluate.evaluate_file` (one result per copy) call
:func:`expand_entries`, which loads the model through the session (cached, so once).
A claim whose expansion fails (its model cannot be loaded, a component pattern that
matches nothing) stays one entry, :class:`EachFailed`, which becomes one error result
(a skip under ``skip_if_unavailable``); the file's other claims are unaffected.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from mechcheck.errors import ClaimSpecError, MechcheckError
from mechcheck.spec.schema import ClaimSpec

if TYPE_CHECKING:
    from mechcheck.models.adapter import ModelAdapter
    from mechcheck.session import Session

__all__ = ["LAYER_KINDS", "EachFailed", "expand_each", "expand_entries", "needs_model",
           "suffix_of"]


def _decodes_layers(value: Any, n_layers: int) -> list[int]:
    """``decodes``' ``layers:`` (``("*",)`` or ``(a, b)``, inclusive) as a list."""
    if tuple(value) == ("*",):
        return list(range(n_layers))
    a, b = value
    return list(range(a, b + 1))


def _traced_layers(value: Any, n_layers: int) -> list[int]:
    """``traced``' ``layers:`` (``"*"``, ``(a, b)`` inclusive, or a list) as a list."""
    if value == "*":
        return list(range(n_layers))
    if len(value) == 2:
        return list(range(value[0], value[1] + 1))
    return list(dict.fromkeys(value))


LAYER_KINDS: Mapping[str, tuple[Callable[[Any, int], list[int]], Callable[[int], Any]]] = {
    "decodes": (_decodes_layers, lambda layer: (layer, layer)),
    "traced": (_traced_layers, lambda layer: (layer,)),
}
"""The kinds whose ``layers:`` key ``each: true`` splits: kind -> (the layers the value
selects, given the model's number of layers; the value that selects one layer)."""


@dataclass(frozen=True, slots=True)
class EachFailed:
    """A claim with ``each: true`` that could not be expanded, and why: it stays one
    entry of its file (one pytest item, one error result)."""

    spec: ClaimSpec
    error: MechcheckError

    @property
    def claim_id(self) -> str:
        return self.spec.id

    @property
    def line(self) -> int:
        return self.spec.line

    @property
    def path(self) -> str:
        return self.spec.path


def suffix_of(claim_id: str, parent: str) -> str:
    """What ``each: true`` added to ``parent`` to name a copy: ``blocks.9.attn.head.9``
    for ``id[blocks.9.attn.head.9]``, ``7`` for ``id[7]``."""
    if not claim_id.startswith(parent + "[") or not claim_id.endswith("]"):
        raise ValueError(f"{claim_id!r} is not a copy of {parent!r}")
    return claim_id[len(parent) + 1:-1]


def _copy(spec: ClaimSpec, label: str, params: dict[str, Any]) -> ClaimSpec:
    return replace(spec, id=f"{spec.id}[{label}]", each=False, each_of=spec.id,
                   params=params)


def expand_each(spec: ClaimSpec, adapter: ModelAdapter) -> list[ClaimSpec]:
    """The claims that ``spec`` stands for on the model of ``adapter``.

    A spec without ``each: true`` stands for itself.  With it, ``components`` expand
    (patterns, lists, SAE features) to one copy per concrete address, in the order
    :meth:`~mechcheck.models.adapter.ModelAdapter.resolve` gives, each with that one
    address as its ``components``; for ``decodes`` and ``traced`` claims with
    ``layers:``, one copy per layer selected.  Each copy has ``each`` false and
    ``each_of`` the parent's id.

    Raises:
        ClaimSpecError: the claim has neither ``components`` nor ``layers`` (at key
            ``each``), or a layer outside the model (at ``layers``).
        MechcheckError: a component that matches nothing in the model (at
            ``components``).
    """
    if not spec.each:
        return [spec]
    params = dict(spec.params)
    if params.get("components") is not None:
        try:
            addresses = adapter.resolve(list(params["components"]))
        except MechcheckError as exc:
            raise exc.located(key="components") from None
        return [_copy(spec, str(a), {**params, "components": (str(a),)}) for a in addresses]
    if params.get("layers") is not None and spec.kind in LAYER_KINDS:
        return _layer_copies(spec, params, adapter.dims.n_layers)
    raise ClaimSpecError(
        f"each: true makes one claim per component, but this {spec.kind} claim has "
        "no components:" + (" or layers:" if spec.kind in LAYER_KINDS else ""), key="each",
        hint="add components: (e.g. blocks.*.attn.head.*) or remove each: true")


def _layer_copies(spec: ClaimSpec, params: dict[str, Any], n_layers: int) -> list[ClaimSpec]:
    selected, single = LAYER_KINDS[spec.kind]
    if spec.kind == "traced" and params.get("peak") is not None:
        raise ClaimSpecError("peak: compares the layers of one sweep, but each: true "
                             "makes one claim per layer", key="each",
                             hint="remove peak: (and state min_effect: or min_share:), "
                             "or remove each: true")
    layers = selected(params["layers"], n_layers)
    bad = [layer for layer in layers if layer >= n_layers]
    if bad:
        raise ClaimSpecError(f"layers: layer {bad[0]} does not exist: this model's layers "
                             f"are 0 to {n_layers - 1}", key="layers",
                             hint=f'use layers within 0..{n_layers - 1}, or "*"')
    return [_copy(spec, str(layer), {**params, "layers": single(layer)}) for layer in layers]


def needs_model(entries: Iterable[Any]) -> bool:
    """Whether any of a file's entries has ``each: true`` (and so needs the model's sizes
    to be named)."""
    return any(isinstance(e, ClaimSpec) and e.each for e in entries)


def expand_entries(entries: Sequence[Any], session: Session) -> list[Any]:
    """A file's entries (specs and the errors that replaced bad claims) with every
    ``each: true`` spec replaced by its copies (:func:`expand_each`), in file order.

    The model is loaded through ``session`` (which keeps the loaded model), with the
    claim's SAEs.  A spec that cannot be expanded becomes one :class:`EachFailed`.
    """
    out: list[Any] = []
    for entry in entries:
        if not (isinstance(entry, ClaimSpec) and entry.each):
            out.append(entry)
            continue
        try:
            out.extend(expand_each(entry, _adapter(entry, session)))
        except MechcheckError as exc:
            error = exc.located(path=entry.path, claim_id=entry.id,
                                line=entry.line_of(exc.key))
            out.append(EachFailed(entry, error))
    return out


def _adapter(spec: ClaimSpec, session: Session) -> ModelAdapter:
    return session.claim_model(spec).adapter
