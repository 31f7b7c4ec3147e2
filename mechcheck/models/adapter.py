"""Map component addresses onto the modules of a transformers model.

An :class:`ArchMap` is a declarative description of one architecture family (which
module holds the blocks, which linear layer reads the heads ...).  A
:class:`ModelAdapter` binds a map to a live model and answers, for any address, the
:class:`Site` where its activation can be read or replaced: a module, whether the
activation is that module's input (``"pre"``) or output (``"post"``), and which slice
of the last dimension belongs to the address.  Weights are never converted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mechcheck.addresses import Address, ModelDims
from mechcheck.errors import AddressError, ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = ["ArchMap", "ModelAdapter", "Site", "adapter_for"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchMap:
    """Where each part of the address grammar lives in one architecture.

    Module paths are dotted attribute paths; block-relative paths (``attn``,
    ``attn_out_proj``, ``mlp``, ``mlp_out_proj``, ``resid_mid``) are relative to one
    block.  ``a|b`` means "a if the model has it, else b" (renamed modules across
    transformers versions).  ``n_layers`` ... ``d_mlp`` name config attributes.
    """

    name: str
    model_types: tuple[str, ...]
    blocks: str
    attn: str
    attn_out_proj: str
    mlp: str
    mlp_out_proj: str
    resid_mid: str | None
    embed: str
    pos_embed: str | None
    ln_final: str
    unembed: str
    n_layers: str
    n_heads: str
    d_model: str
    d_mlp: str
    resid_mid_unless: str | None = None  # a config flag that removes resid_mid
    # The inputs of the heads (block-relative modules whose *outputs* hold them):
    # separate projections ``q``/``k``/``v``, or one fused ``qkv`` projection whose
    # output is laid out as ``qkv_layout``: "qkv" = [all q | all k | all v] (GPT-2's
    # c_attn), "per_head" = per head [q_h | k_h | v_h] (GPT-NeoX's query_key_value).
    q: str | None = None
    k: str | None = None
    v: str | None = None
    qkv: str | None = None
    qkv_layout: str = "qkv"
    n_kv_heads: str | None = None  # config attribute: key/value heads (grouped-query)
    # Block-relative modules whose outputs are what attention and the MLP add to the
    # residual stream, where that is not the output of ``attn`` / ``mlp`` (Gemma 2 and 3
    # normalise both outputs before adding them: post_attention_layernorm, ...).
    attn_out: str | None = None
    mlp_out: str | None = None
    # The block-relative norm that attention's input passes through (ln_1,
    # input_layernorm); edge-level circuits recompute a head's q/k/v from it.
    attn_norm: str | None = None


@dataclass(frozen=True, slots=True)
class Site:
    """A place in the forward pass: a module's input (``pre``) or output (``post``).

    With ``sae`` set (a :class:`mechcheck.sae.SAE`), the virtual site of that SAE's
    features and error term ``[f, x - x_hat]`` computed from the activation at
    ``module``/``when`` (the hooks record and patch it, see :mod:`mechcheck.sae`).
    """

    module: str
    when: str  # "pre" | "post" | "pattern" (attention weights, recorded only)
    sae: Any = None


class ModelAdapter:
    """An :class:`ArchMap` bound to one model: address -> site, slice and shape."""

    def __init__(self, arch: ArchMap, model: object) -> None:
        self.arch = arch
        self.model = model
        config = model.config  # type: ignore[attr-defined]
        d_model = int(getattr(config, arch.d_model))
        d_mlp = getattr(config, arch.d_mlp, None) or 4 * d_model
        self.dims = ModelDims(
            n_layers=int(getattr(config, arch.n_layers)),
            n_heads=int(getattr(config, arch.n_heads)),
            d_mlp=int(d_mlp),
            d_model=d_model,
            has_pos_embed=arch.pos_embed is not None,
        )
        self.d_head = int(getattr(config, "head_dim", None) or d_model // self.dims.n_heads)
        kv = getattr(config, arch.n_kv_heads, None) if arch.n_kv_heads else None
        self.n_kv_heads = int(kv or self.dims.n_heads)
        self._has_resid_mid = arch.resid_mid is not None and not (
            arch.resid_mid_unless and getattr(config, arch.resid_mid_unless, False)
        )
        # The SAEs that SAE addresses name (the claim file's ``saes:``), by name; the
        # session sets them for each claim.
        self.saes: dict[str, Any] = {}

    # -- addresses ------------------------------------------------------------
    def resolve(self, items: Sequence[object]) -> tuple[Address, ...]:
        """Parse, expand and check component addresses against this model."""
        from mechcheck.addresses import SAE_SITES, parse_components

        if isinstance(items, (str, Address)):
            items = [items]
        found: dict[Address, None] = {}
        for item in items:
            parsed = Address.parse(item)
            concrete = (self._sae_addresses(parsed) if parsed.site in SAE_SITES
                        else parse_components([parsed], self.dims))
            for address in concrete:
                found.setdefault(address, None)
        addresses = tuple(found)
        for address in addresses:
            if address.site in ("q", "k", "v"):
                self._check_inputs(address)
            if address.site == "resid_mid" and not self._has_resid_mid:
                raise AddressError(
                    f"{address} does not exist in this model: {self.arch.name} with a "
                    "parallel residual has no stream between attention and MLP",
                    hint=f"use blocks.{address.layer}.resid_pre or blocks.{address.layer}.attn",
                )
        return addresses

    def sae_of(self, address: Address) -> Any:
        """The SAE an SAE address names (one of :attr:`saes`), checked against it.

        Raises:
            AddressError: the name is not one of the claim file's SAEs, or the address's
                site is not the one the SAE reads.
        """
        sae = self.saes.get(str(address.sae))
        if sae is None:
            from mechcheck.errors import closest

            known = sorted(self.saes)
            near = closest(str(address.sae), known)
            guess = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
            listing = (f"the file's saes: {', '.join(known)}" if known else
                       "the claim file has no saes: (add saes: {NAME: path/to/sae.safetensors})")
            raise AddressError(f"{address}: no SAE named {address.sae!r}",
                               hint=f"{guess}{listing}")
        base = Address(address.sae_site, address.layer)  # type: ignore[arg-type]
        if base != sae.site:
            raise AddressError(
                f"{address}: SAE {address.sae!r} reads {sae.site}, not {base}",
                hint=f"write {sae.site}.sae.{address.sae}."
                f"{'error' if address.site == 'sae_error' else address.index}")
        return sae

    def _sae_addresses(self, address: Address) -> list[Address]:
        """An SAE address, checked; ``*`` expanded to every feature."""
        if address.layer == "*":
            raise AddressError(f"{address}: an SAE reads one layer, so its address names "
                               "the layer", hint="write the layer the SAE reads, e.g. "
                               "blocks.6.resid_post.sae.NAME.3")
        address.check(self.dims)
        sae = self.sae_of(address)
        if address.site == "sae_error":
            return [address]
        if address.index == "*":
            return [Address("feature", address.layer, f, address.sae, address.sae_site)
                    for f in range(sae.d_sae)]
        if int(address.index) >= sae.d_sae:  # type: ignore[arg-type]
            raise AddressError(f"{address} does not exist: SAE {address.sae!r} has "
                               f"{sae.d_sae} features (0-{sae.d_sae - 1})",
                               hint=f"use a feature from 0 to {sae.d_sae - 1}")
        return [address]

    def _check_inputs(self, address: Address) -> None:
        arch = self.arch
        if arch.qkv is None and None in (arch.q, arch.k, arch.v):
            raise AddressError(
                f"{address}: the {arch.name} architecture map does not say where the heads' "
                "queries, keys and values are",
                hint="give its ArchMap q=, k=, v= (separate projections) or qkv= (a fused "
                "one); or use the head's output, blocks.L.attn.head.H")

    def kv_group(self, head: int) -> int:
        """The key/value head that query head ``head`` reads (grouped-query attention)."""
        return head // (self.dims.n_heads // self.n_kv_heads)

    def site(self, address: Address) -> Site:
        """The module and hook direction holding ``address``'s activation.

        ``q``/``k``/``v`` are the outputs of the query/key/value projections (before
        any rotary embedding or per-head norm); a ``pattern`` is recorded from the
        attention module's weights, ``Site(<attention module>, "pattern")``.
        """
        arch, layer = self.arch, address.layer
        block = f"{arch.blocks}.{layer}"
        if address.sae is not None:
            sae = self.sae_of(address)
            base = self.site(sae.site)
            return Site(base.module, base.when, sae)
        if address.site in ("q", "k", "v"):
            self._check_inputs(address)
            module = arch.qkv or getattr(arch, address.site)
            return Site(self._existing(f"{block}.{module}"), "post")
        if address.site == "pattern":
            return Site(self.attention_module(int(layer)), "pattern")  # type: ignore[arg-type]
        table = {
            "embed": Site(arch.embed, "post"),
            "pos_embed": Site(arch.pos_embed or "", "post"),
            "ln_final": Site(arch.ln_final, "post"),
            "unembed": Site(arch.unembed, "post"),
            "resid_pre": Site(block, "pre"),
            "resid_mid": Site(f"{block}.{arch.resid_mid}", "pre"),
            "resid_post": Site(block, "post"),
            "attn": Site(f"{block}.{arch.attn_out or arch.attn}", "post"),
            "head": Site(f"{block}.{arch.attn_out_proj}", "pre"),
            "mlp": Site(f"{block}.{arch.mlp_out or arch.mlp}", "post"),
            "neuron": Site(f"{block}.{arch.mlp_out_proj}", "pre"),
        }
        site = table[address.site]
        return Site(self._existing(site.module), site.when)

    def columns(self, address: Address) -> slice:
        """The slice of the site's last dimension that belongs to ``address``.

        For ``k``/``v`` of a query head under grouped-query attention this is its key/
        value group's slice (the heads of one group share it).
        """
        if address.site in ("q", "k", "v"):
            return self._input_columns(address.site, int(address.index))  # type: ignore[arg-type]
        if address.site == "pattern":
            return slice(int(address.index), int(address.index) + 1)  # type: ignore[arg-type]
        if address.site == "head":
            start = int(address.index) * self.d_head  # type: ignore[arg-type]
            return slice(start, start + self.d_head)
        if address.site in ("neuron", "feature"):
            return slice(int(address.index), int(address.index) + 1)  # type: ignore[arg-type]
        if address.site == "sae_error":  # [f, error]: the error follows the features
            sae = self.sae_of(address)
            return slice(sae.d_sae, sae.d_sae + sae.d_in)
        return slice(None)

    def _input_columns(self, which: str, head: int) -> slice:
        dh = self.d_head
        index = head if which == "q" else self.kv_group(head)
        if self.arch.qkv is None:
            return slice(index * dh, (index + 1) * dh)
        if self.arch.qkv_layout == "per_head":
            start = head * 3 * dh + "qkv".index(which) * dh
            return slice(start, start + dh)
        n_q, n_kv = self.dims.n_heads * dh, self.n_kv_heads * dh
        offset = {"q": 0, "k": n_q, "v": n_q + n_kv}[which]
        return slice(offset + index * dh, offset + (index + 1) * dh)

    def attention_module(self, layer: int) -> str:
        """The attention module of ``layer`` (its output holds the pattern)."""
        return self._existing(f"{self.arch.blocks}.{layer}.{self.arch.attn}")

    def module(self, path: str) -> torch.nn.Module:
        """The submodule at a dotted path."""
        return self.model.get_submodule(path)  # type: ignore[attr-defined]

    def _existing(self, path: str) -> str:
        """Pick the first existing alternative in each ``a|b`` part of ``path``."""
        options = [""]
        for part in path.split("."):
            options = [f"{o}.{alt}" if o else alt for o in options for alt in part.split("|")]
        for option in options:
            try:
                self.module(option)
            except AttributeError:
                continue
            return option
        raise ModelLoadError(
            f"the {self.arch.name} adapter expects a module '{path}' that this model lacks",
            hint="the model's layout differs from the adapter's map: register an adapter "
            "for it with the mechcheck_model_adapters hook",
        )


def adapter_for(model: object, archs: Sequence[ArchMap]) -> ModelAdapter:
    """The adapter whose map covers ``model.config.model_type``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for arch in archs:
        if model_type in arch.model_types:
            return ModelAdapter(arch, model)
    known = sorted(t for arch in archs for t in arch.model_types)
    raise ModelLoadError(
        f"no mechcheck adapter for model_type '{model_type}'",
        hint=f"supported model types: {', '.join(known)}; a plugin can add one through "
        "the mechcheck_model_adapters hook",
    )
