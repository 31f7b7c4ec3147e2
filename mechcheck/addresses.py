"""Component addresses: the one grammar for naming parts of a transformer.

Every other mechcheck module parses addresses through :meth:`Address.parse`.

Canonical addresses are lowercase, dot-separated and zero-based::

    embed | pos_embed | ln_final | unembed
    blocks.{L}.resid_pre | blocks.{L}.resid_mid | blocks.{L}.resid_post
    blocks.{L}.attn | blocks.{L}.attn.head.{H}
    blocks.{L}.attn.head.{H}.q | .k | .v | .pattern   (a head's inputs and pattern)
    blocks.{L}.mlp  | blocks.{L}.mlp.neuron.{N}
    blocks.{L}.{resid_pre|resid_mid|resid_post|attn|mlp}.sae.{NAME}.{F} | ... .sae.{NAME}.error
        (feature F of the claim file's SAE NAME reading that site; its error term)

``*`` in place of any index makes a pattern (``blocks.*.attn.head.*``) that
:meth:`Address.expand` turns into concrete addresses for a given model.

Shorthand is accepted by the same parser and always printed canonically:
``head 9.9``, ``head 9.*``, ``neuron 3.100``, ``attn 3``, ``mlp 3``,
``resid_pre 3``, ``resid_mid 3``, ``resid_post 3`` (keyword case-insensitive).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from mechcheck.errors import AddressError, closest

__all__ = [
    "ACCEPTED_FORMS",
    "GLOBAL_SITES",
    "HEAD_INPUT_SITES",
    "HEAD_SITES",
    "LAYER_SITES",
    "SITES",
    "WILDCARD",
    "SAE_SITES",
    "Address",
    "ModelDims",
    "Site",
    "parse_components",
]

WILDCARD = "*"

Site = Literal[
    "embed",
    "pos_embed",
    "ln_final",
    "unembed",
    "resid_pre",
    "resid_mid",
    "resid_post",
    "attn",
    "head",
    "q",
    "k",
    "v",
    "pattern",
    "mlp",
    "neuron",
    "feature",
    "sae_error",
]
Index = int | str | None

GLOBAL_SITES: tuple[str, ...] = ("embed", "pos_embed", "ln_final", "unembed")
"""Sites outside the blocks: no layer, no index."""

LAYER_SITES: tuple[str, ...] = ("resid_pre", "resid_mid", "resid_post", "attn", "mlp")
"""Whole-layer sites: a layer, no index."""

HEAD_INPUT_SITES: tuple[str, ...] = ("q", "k", "v", "pattern")
"""A head's query, key and value vectors and its attention pattern."""

HEAD_SITES: tuple[str, ...] = ("head", *HEAD_INPUT_SITES)
"""Sites indexed by a head: its output (``head``) and its inputs."""

_INDEXED_SITES: tuple[str, ...] = (*HEAD_SITES, "neuron")
SITES: tuple[str, ...] = GLOBAL_SITES + LAYER_SITES + _INDEXED_SITES
"""Every site an :class:`Address` can name (besides the SAE sites)."""

SAE_SITES: tuple[str, ...] = ("feature", "sae_error")
"""A sparse autoencoder's feature activation (indexed) and its reconstruction error,
read from one whole-layer site (``sae_site``) by the SAE named ``sae``."""

# Sort ranks: where a site sits in the forward pass.
_STAGE = {"embed": 0, "pos_embed": 1, "ln_final": 3, "unembed": 4}
_BLOCK_STAGE = 2
_IN_BLOCK = {
    "resid_pre": 0,
    "q": 1,
    "k": 2,
    "v": 3,
    "pattern": 4,
    "attn": 5,
    "head": 6,
    "resid_mid": 7,
    "mlp": 8,
    "neuron": 9,
    "resid_post": 10,
}

_NUM = r"(0|[1-9][0-9]*|\*)"
_CANONICAL_LAYER = re.compile(r"blocks\." + _NUM + r"\.(resid_pre|resid_mid|resid_post|attn|mlp)")
_CANONICAL_HEAD = re.compile(r"blocks\." + _NUM + r"\.attn\.head\." + _NUM
                             + r"(?:\.(q|k|v|pattern))?")
_CANONICAL_NEURON = re.compile(r"blocks\." + _NUM + r"\.mlp\.neuron\." + _NUM)
_SHORT_INDEXED = re.compile(r"(head|neuron)\s+" + _NUM + r"\." + _NUM, re.IGNORECASE)
_SHORT_LAYER = re.compile(r"(attn|mlp|resid_pre|resid_mid|resid_post)\s+" + _NUM, re.IGNORECASE)
_CANONICAL_SAE = re.compile(r"blocks\." + _NUM + r"\.(resid_pre|resid_mid|resid_post|attn|mlp)"
                            r"\.sae\.([A-Za-z_][A-Za-z0-9_-]*)\.(0|[1-9][0-9]*|\*|error)")
_LH_STYLE = re.compile(r"[lL]([0-9]+)[hH]([0-9]+)")

ACCEPTED_FORMS = (
    "accepted forms are embed, pos_embed, ln_final, unembed, "
    "blocks.L.resid_pre, blocks.L.resid_mid, blocks.L.resid_post, "
    "blocks.L.attn, blocks.L.attn.head.H, blocks.L.attn.head.H.q (or .k, .v, .pattern), "
    "blocks.L.mlp, blocks.L.mlp.neuron.N, "
    "or the shorthand 'head L.H', 'neuron L.N', 'attn L', 'mlp L', "
    "'resid_pre L', 'resid_mid L', 'resid_post L' "
    "(L, H, N are zero-based integers or *)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDims:
    """The sizes of a model that decide which addresses exist in it.

    Attributes:
        n_layers: number of transformer blocks (at least 1).
        n_heads: attention heads per block (at least 1).
        d_mlp: hidden width of each MLP; 0 for attention-only models.
        d_model: width of the residual stream.
        has_pos_embed: whether the model has a learned ``pos_embed`` (False for
            rotary and other schemes).
    """

    n_layers: int
    n_heads: int
    d_mlp: int
    d_model: int
    has_pos_embed: bool = True

    def __post_init__(self) -> None:
        minimum = {"n_layers": 1, "n_heads": 1, "d_mlp": 0, "d_model": 1}
        for name, low in minimum.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"ModelDims.{name} must be an integer >= {low}, got {value!r}")

    def ranges(self, site: str) -> str:
        """Valid index ranges, the ones that matter for ``site`` first.

        Args:
            site: the site an address names.

        Returns:
            e.g. ``"layers are 0-11, heads 0-11 (neurons 0-3071)"``.
        """
        layers = f"layers are {_span(self.n_layers)}"
        heads = f"heads {_span(self.n_heads)}"
        neurons = f"neurons {_span(self.d_mlp)}" if self.d_mlp else "no MLP neurons"
        if site in HEAD_SITES:
            return f"{layers}, {heads} ({neurons})"
        if site == "neuron":
            return f"{layers}, {neurons} ({heads})"
        return f"{layers} ({heads}, {neurons})"


def _span(n: int) -> str:
    return f"0-{n - 1}"


def _is_index(value: object) -> bool:
    if value == WILDCARD and isinstance(value, str):
        return True
    return isinstance(value, int) and not isinstance(value, bool)


def _index_key(value: Index) -> tuple[int, int]:
    if isinstance(value, int):
        return (0, value)
    return (1, 0) if value == WILDCARD else (-1, 0)


def _as_index(token: str) -> int | str:
    return WILDCARD if token == WILDCARD else int(token)


@dataclass(frozen=True, slots=True)
class Address:
    """One component of a transformer, or a pattern (``*``) over several.

    Addresses sort in forward-pass order: ``embed``, ``pos_embed``, then block by
    block (``resid_pre``, ``attn``, its heads, ``resid_mid``, ``mlp``, its neurons,
    ``resid_post``), then ``ln_final``, ``unembed``; ``*`` sorts after numbers.

    Attributes:
        site: what kind of component.
        layer: block index, ``"*"``, or None for embed/pos_embed/ln_final/unembed.
        index: head, neuron or SAE feature index, ``"*"``, or None for other sites.
        sae: for ``feature`` and ``sae_error``: the name of the SAE (the claim file's
            ``saes:`` key); None otherwise.
        sae_site: for ``feature`` and ``sae_error``: the whole-layer site the SAE reads
            (``resid_post`` ...); None otherwise.

    Raises:
        AddressError: if the fields do not fit together (e.g. a head without an
            index, a negative index).
    """

    site: Site
    layer: int | str | None = None
    index: int | str | None = None
    sae: str | None = None
    sae_site: str | None = None

    def __post_init__(self) -> None:
        if self.site not in SITES and self.site not in SAE_SITES:
            raise AddressError(
                f"unknown site {self.site!r}",
                hint=f"use one of {', '.join(SITES + SAE_SITES)}",
            )
        _check_field(self, "layer", self.layer, needed=self.site not in GLOBAL_SITES)
        _check_field(self, "index", self.index,
                     needed=self.site in _INDEXED_SITES or self.site == "feature")
        _check_sae(self)

    # -- parsing and printing ------------------------------------------------

    @classmethod
    def parse(cls, text: object) -> Address:
        """Parse a canonical or shorthand address.

        Args:
            text: the address as written; an :class:`Address` is returned as is.

        Returns:
            The address.

        Raises:
            AddressError: if ``text`` is not an address; the message lists the
                accepted forms and the hint suggests close spellings.
        """
        if isinstance(text, Address):
            return text
        if not isinstance(text, str):
            raise _not_a_string(text)
        stripped = text.strip()
        parsed = _match(stripped)
        if parsed is None:
            raise _malformed(stripped)
        return parsed

    def __str__(self) -> str:
        if self.site in GLOBAL_SITES:
            return self.site
        if self.site == "head":
            return f"blocks.{self.layer}.attn.head.{self.index}"
        if self.site in HEAD_INPUT_SITES:
            return f"blocks.{self.layer}.attn.head.{self.index}.{self.site}"
        if self.site == "neuron":
            return f"blocks.{self.layer}.mlp.neuron.{self.index}"
        if self.site in SAE_SITES:
            tail = "error" if self.site == "sae_error" else self.index
            return f"blocks.{self.layer}.{self.sae_site}.sae.{self.sae}.{tail}"
        return f"blocks.{self.layer}.{self.site}"

    # -- structure -----------------------------------------------------------

    @property
    def is_pattern(self) -> bool:
        """Whether the layer or index is ``*``."""
        return self.layer == WILDCARD or self.index == WILDCARD

    @property
    def parent(self) -> Address | None:
        """The whole-layer component a head or neuron belongs to, else None."""
        if self.site in HEAD_SITES:
            return Address("attn", self.layer)
        if self.site == "neuron":
            return Address("mlp", self.layer)
        return None

    @property
    def layer_level(self) -> bool:
        """True for whole-layer components: attn, mlp, resid_pre/mid/post."""
        return self.site in LAYER_SITES

    # -- against a model -----------------------------------------------------

    def check(self, dims: ModelDims) -> Address:
        """Check that this address (or, for a pattern, its fixed parts) exists.

        Args:
            dims: the model's sizes.

        Returns:
            ``self``.

        Raises:
            AddressError: naming the valid ranges and the closest valid addresses.
        """
        if self.site == "pos_embed" and not dims.has_pos_embed:
            raise AddressError(
                "pos_embed does not exist in this model: it has no learned positional "
                "embeddings (positions enter through rotary or another scheme)",
                hint="drop pos_embed; use embed or blocks.0.resid_pre for the block input",
            )
        if self.site in ("mlp", "neuron") and dims.d_mlp == 0:
            raise AddressError(
                f"{self} does not exist in this model: it is attention-only (no MLP layers)",
                hint="drop MLP components from the claim",
            )
        if self.site in SAE_SITES:  # the SAE's size is checked by the model's adapter
            if _out_of_range(self.layer, dims.n_layers):
                raise self._range_error(dims, None)
            return self
        limit = _index_limit(self.site, dims)
        layer_bad = _out_of_range(self.layer, dims.n_layers)
        index_bad = limit is not None and _out_of_range(self.index, limit)
        if layer_bad or index_bad:
            raise self._range_error(dims, limit)
        return self

    def expand(self, dims: ModelDims) -> list[Address]:
        """Concrete addresses this pattern matches, in layer then index order.

        A concrete address expands to itself.

        Args:
            dims: the model's sizes.

        Returns:
            The concrete addresses.

        Raises:
            AddressError: if the address (or a fixed part of the pattern) does not
                exist in the model.
        """
        self.check(dims)
        if not self.is_pattern:
            return [self]
        if self.site in SAE_SITES:
            raise AddressError(
                f"{self}: an SAE address with * is expanded by the model's adapter, which "
                "knows the SAE's size", hint="resolve it with ModelAdapter.resolve")
        layers = _values(self.layer, dims.n_layers)
        limit = _index_limit(self.site, dims)
        indices = [None] if limit is None else _values(self.index, limit)
        return [Address(self.site, layer, index) for layer in layers for index in indices]

    def _range_error(self, dims: ModelDims, limit: int | None) -> AddressError:
        verb = "matches nothing in" if self.is_pattern else "does not exist in"
        message = f"{self} {verb} this model: {dims.ranges(self.site)}"
        suggestions = self._suggestions(dims, limit)
        hint = f"did you mean {_or(suggestions)}?" if suggestions else None
        if _is_one_past(self.layer, dims.n_layers) or (
            limit is not None and _is_one_past(self.index, limit)
        ):
            note = "indices are zero-based"
            hint = f"{hint} ({note})" if hint else note
        return AddressError(message, hint=hint)

    def _suggestions(self, dims: ModelDims, limit: int | None) -> list[str]:
        clamped = Address(
            self.site,
            _clamp(self.layer, dims.n_layers),
            self.index if limit is None else _clamp(self.index, limit),
            self.sae,
            self.sae_site,
        )
        found = [str(clamped)]
        if limit is not None:
            swapped = Address(self.site, self.index, self.layer)
            if not _out_of_range(swapped.layer, dims.n_layers) and not _out_of_range(
                swapped.index, limit
            ):
                found.append(str(swapped))
        return list(dict.fromkeys(found))

    # -- ordering (forward-pass order; fields mix int, "*" and None) ---------

    def _sort_key(self) -> tuple[int, tuple[int, int], int, tuple[int, int], str]:
        if self.site in GLOBAL_SITES:
            return (_STAGE[self.site], (0, 0), 0, (0, 0), "")
        if self.site in SAE_SITES:  # after the site the SAE reads; error after features
            index = (2, 0) if self.site == "sae_error" else _index_key(self.index)
            return (_BLOCK_STAGE, _index_key(self.layer), _IN_BLOCK[str(self.sae_site)],
                    index, str(self.sae))
        return (
            _BLOCK_STAGE,
            _index_key(self.layer),
            _IN_BLOCK[self.site],
            _index_key(self.index),
            "",
        )

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return self._sort_key() < other._sort_key()

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return self._sort_key() <= other._sort_key()

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return self._sort_key() > other._sort_key()

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Address):
            return NotImplemented
        return self._sort_key() >= other._sort_key()


def parse_components(items: Iterable[object], dims: ModelDims | None = None) -> tuple[Address, ...]:
    """Parse a list of addresses; with ``dims``, expand patterns and check each.

    Duplicates (after expansion) are dropped, keeping the first occurrence.

    Args:
        items: addresses as written; a single string or Address counts as one item.
        dims: the model's sizes, or None to parse only.

    Returns:
        The addresses, in first-seen order.

    Raises:
        AddressError: for the first item that is malformed or not in the model.
    """
    if isinstance(items, (str, Address)):
        items = [items]
    found: dict[Address, None] = {}
    for item in items:
        address = Address.parse(item)
        for concrete in address.expand(dims) if dims is not None else [address]:
            found.setdefault(concrete, None)
    return tuple(found)


# -- helpers -----------------------------------------------------------------


def _check_field(address: Address, name: str, value: object, *, needed: bool) -> None:
    if not needed:
        if value is not None:
            raise AddressError(f"{address.site} takes no {name}, got {value!r}")
        return
    if value is None:
        raise AddressError(f"{address.site} needs a {name}")
    if not _is_index(value):
        raise AddressError(
            f"{address.site} {name} must be a non-negative integer or '*', got {value!r}"
        )
    if isinstance(value, int) and value < 0:
        raise AddressError(
            f"negative {name} {value} for {address.site}: indices count from 0",
            hint="write the index from the start, e.g. the last of 12 layers is 11",
        )


def _check_sae(address: Address) -> None:
    if address.site not in SAE_SITES:
        if address.sae is not None or address.sae_site is not None:
            raise AddressError(f"{address.site} takes no SAE, got {address.sae!r}")
        return
    if not isinstance(address.sae, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*",
                                                             address.sae):
        raise AddressError(f"{address.site} needs an SAE name (letters, digits, _ and -), "
                           f"got {address.sae!r}")
    if address.sae_site not in LAYER_SITES:
        raise AddressError(f"an SAE reads a whole-layer site ({', '.join(LAYER_SITES)}), "
                           f"got {address.sae_site!r}")


def _match(text: str) -> Address | None:
    if m := _CANONICAL_SAE.fullmatch(text):
        if m[4] == "error":
            return Address("sae_error", _as_index(m[1]), None, m[3], m[2])
        return Address("feature", _as_index(m[1]), _as_index(m[4]), m[3], m[2])
    if text in GLOBAL_SITES:
        return Address(text)  # type: ignore[arg-type]
    if m := _CANONICAL_LAYER.fullmatch(text):
        return Address(m[2], _as_index(m[1]))  # type: ignore[arg-type]
    if m := _CANONICAL_HEAD.fullmatch(text):
        return Address(m[3] or "head", _as_index(m[1]), _as_index(m[2]))  # type: ignore[arg-type]
    if m := _CANONICAL_NEURON.fullmatch(text):
        return Address("neuron", _as_index(m[1]), _as_index(m[2]))
    if m := _SHORT_INDEXED.fullmatch(text):
        return Address(m[1].lower(), _as_index(m[2]), _as_index(m[3]))  # type: ignore[arg-type]
    if m := _SHORT_LAYER.fullmatch(text):
        return Address(m[1].lower(), _as_index(m[2]))  # type: ignore[arg-type]
    return None


def _not_a_string(value: object) -> AddressError:
    if isinstance(value, float):
        return AddressError(
            f"component address {value!r} is a number, not text: YAML read it as a "
            "number, which loses digits (5.10 becomes 5.1)",
            hint='quote it and name the component, e.g. "head 5.10"',
        )
    if isinstance(value, int) and not isinstance(value, bool):
        return AddressError(
            f"component address {value!r} is a number, not text: YAML read it as a number",
            hint=f'quote it and name the component, e.g. "mlp {value}" or "head 5.10"',
        )
    return AddressError(
        f"component address must be a string, got {type(value).__name__} {value!r}; "
        + ACCEPTED_FORMS,
        hint='write e.g. "blocks.9.attn.head.9" or "head 9.9"',
    )


def _malformed(text: str) -> AddressError:
    if not text:
        return AddressError(
            "empty component address; " + ACCEPTED_FORMS,
            hint='write e.g. "blocks.9.attn.head.9" or "head 9.9"',
        )
    if re.search(r"-\s*[0-9]", text):
        return AddressError(
            f"{text!r} has a negative index; indices count from 0; " + ACCEPTED_FORMS,
            hint="count from the start, e.g. the last of 12 layers is blocks.11",
        )
    if ".sae." in text:
        return AddressError(
            f"{text!r} is not an SAE address: write blocks.L.SITE.sae.NAME.F (feature F, "
            "from 0, or *) or blocks.L.SITE.sae.NAME.error, where SITE is resid_pre, "
            "resid_mid, resid_post, attn or mlp and NAME a key of the file's saes:",
            hint='e.g. "blocks.3.resid_post.sae.res3.17"')
    message = f"{text!r} is not a component address; " + ACCEPTED_FORMS
    suggestions = _near_misses(text)
    if suggestions:
        hint = f"did you mean {_or(suggestions)}?"
    else:
        hint = 'write e.g. "blocks.9.attn.head.9" or "head 9.9"'
    return AddressError(message, hint=hint)


def _near_misses(text: str) -> list[str]:
    """Close spellings of a malformed address, built from the numbers it contains."""
    if m := _LH_STYLE.fullmatch(text):
        return [f"head {int(m[1])}.{int(m[2])}"]
    normal = " ".join(text.lower().split())
    relaxed = _match(normal)
    if relaxed is not None:
        return [str(relaxed)]
    tokens = [_token(t) for t in re.findall(r"[0-9]+|\*", text)]
    return closest(normal, _candidates(tokens))


def _token(raw: str) -> str:
    return raw if raw == WILDCARD else str(int(raw))


def _candidates(tokens: list[str]) -> list[str]:
    candidates = list(GLOBAL_SITES)
    if tokens:
        layer = tokens[0]
        for site in LAYER_SITES:
            candidates += [f"blocks.{layer}.{site}", f"{site} {layer}"]
    if len(tokens) >= 2:
        layer, index = tokens[0], tokens[1]
        candidates += [
            f"blocks.{layer}.attn.head.{index}",
            f"blocks.{layer}.mlp.neuron.{index}",
            f"head {layer}.{index}",
            f"neuron {layer}.{index}",
        ]
    return candidates


def _index_limit(site: str, dims: ModelDims) -> int | None:
    if site in HEAD_SITES:
        return dims.n_heads
    if site == "neuron":
        return dims.d_mlp
    return None


def _out_of_range(value: Index, limit: int) -> bool:
    return isinstance(value, int) and value >= limit


def _is_one_past(value: Index, limit: int) -> bool:
    return isinstance(value, int) and value == limit


def _clamp(value: Index, limit: int) -> Index:
    if isinstance(value, int):
        return min(value, limit - 1)
    return value


def _values(value: Index, limit: int) -> list[int]:
    if isinstance(value, int):
        return [value]
    return list(range(limit))


def _or(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + " or " + items[-1]
