"""Sparse autoencoders (SAEs) over one site of a model: loading, encoding, the error term.

An SAE reads the activation ``x`` of one whole-layer site (``blocks.L.resid_post`` ...)
and writes it as a sparse code ``f`` and a reconstruction ``x_hat`` (SAELens's
definitions)::

    x_in  = x - b_dec * apply_b_dec_to_input
    pre   = x_in @ W_enc + b_enc
    f     = relu(pre)                          (architecture standard)
          = relu(top-k of pre), others 0       (topk)
          = relu(pre) * (pre > threshold)      (jumprelu)
    x_hat = f @ W_dec + b_dec
    error = x - x_hat

The engine treats ``[f, error]`` as the activation of a virtual site (addresses
``blocks.L.resid_post.sae.NAME.F`` and ``....error``): recording reads ``f`` and the
error; a patch that changes them writes back ``x + (f' - f) @ W_dec + (error' - error)``,
so with nothing changed the model's activation, and output, are exactly unchanged, and
ablating feature F subtracts ``f_F W_dec[F]``, keeping the error term.

Files are read with ``safetensors`` only (never pickle): a folder in SAELens's saved
layout (``sae_weights.safetensors`` + ``cfg.json``) or one ``.safetensors`` file whose
metadata holds the config as JSON under ``"config"`` (what ``mechcheck sae train``
writes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mechcheck.addresses import LAYER_SITES, Address
from mechcheck.errors import AddressError, DataError

__all__ = ["ARCHITECTURES", "SAE", "load_sae", "save_sae", "site_of_hook"]

ARCHITECTURES = ("standard", "topk", "jumprelu")
WEIGHTS_FILE = "sae_weights.safetensors"
CONFIG_FILE = "cfg.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".pkl", ".pickle", ".ckpt")
# TransformerLens hook names -> mechcheck sites
_TL_HOOKS = {"hook_resid_pre": "resid_pre", "hook_resid_mid": "resid_mid",
             "hook_resid_post": "resid_post", "hook_mlp_out": "mlp", "hook_attn_out": "attn"}


class SAE:
    """One sparse autoencoder, float32, reading ``site``.

    Args:
        W_enc: ``[d_in, d_sae]``.
        b_enc: ``[d_sae]``.
        W_dec: ``[d_sae, d_in]``.
        b_dec: ``[d_in]``.
        site: the whole-layer address the SAE reads (``blocks.L.resid_post`` ...).
        architecture: ``standard``, ``topk`` or ``jumprelu``.
        k: the number of active features of a ``topk`` SAE.
        threshold: ``[d_sae]``, a ``jumprelu`` SAE's thresholds.
        apply_b_dec_to_input: subtract ``b_dec`` before encoding (SAELens's default).
        source: where it was read from (for messages).
        config: the config as read.

    SAEs compare by identity: two loads of one file are two SAEs.
    """

    def __init__(self, *, W_enc: torch.Tensor, b_enc: torch.Tensor, W_dec: torch.Tensor,
                 b_dec: torch.Tensor, site: Address | str, architecture: str = "standard",
                 k: int | None = None, threshold: torch.Tensor | None = None,
                 apply_b_dec_to_input: bool = True, source: str = "<memory>",
                 config: Mapping[str, Any] | None = None) -> None:
        self.W_enc = W_enc.detach().float().contiguous()
        self.b_enc = b_enc.detach().float().contiguous()
        self.W_dec = W_dec.detach().float().contiguous()
        self.b_dec = b_dec.detach().float().contiguous()
        self.threshold = None if threshold is None else threshold.detach().float()
        self.site = Address.parse(site)
        self.architecture = architecture
        self.k = k
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.source = source
        self.config = dict(config or {})
        self._on: dict[Any, tuple[torch.Tensor, ...]] = {}
        _check_shapes(self)

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    def __repr__(self) -> str:
        return (f"SAE({self.architecture}, {self.d_in} -> {self.d_sae}, reads {self.site}, "
                f"from {self.source})")

    def _weights(self, device: torch.device) -> tuple[torch.Tensor, ...]:
        key = str(device)
        if key not in self._on:
            tensors = (self.W_enc, self.b_enc, self.W_dec, self.b_dec,
                       self.threshold if self.threshold is not None else self.b_enc)
            self._on[key] = tuple(t.to(device) for t in tensors)
        return self._on[key]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations ``[..., d_sae]`` (float32) of activations ``[..., d_in]``."""
        W_enc, b_enc, _, b_dec, threshold = self._weights(x.device)
        x = x.float()
        if self.apply_b_dec_to_input:
            x = x - b_dec
        pre = x @ W_enc + b_enc
        if self.architecture == "topk":
            values, indices = torch.topk(pre, k=int(self.k or 1), dim=-1)
            return torch.zeros_like(pre).scatter(-1, indices, values.relu())
        if self.architecture == "jumprelu":
            return pre.relu() * (pre > threshold).to(pre.dtype)
        return pre.relu()

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """The reconstruction ``f @ W_dec + b_dec`` ``[..., d_in]`` (float32)."""
        _, _, W_dec, b_dec, _ = self._weights(f.device)
        return f.float() @ W_dec + b_dec

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[f, x - x_hat]``: ``[..., d_sae + d_in]``, float32 (the virtual site's
        activation the engine records and patches)."""
        f = self.encode(x)
        return torch.cat([f, x.float() - self.decode(f)], dim=-1)

    def merge(self, x: torch.Tensor, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """``x`` with the changes from ``before`` to ``after`` (both from :meth:`split`)
        written back: ``x + (f' - f) @ W_dec + (error' - error)``, in ``x``'s dtype."""
        _, _, W_dec, _, _ = self._weights(x.device)
        change = after.float() - before
        delta = change[..., : self.d_sae] @ W_dec + change[..., self.d_sae:]
        return x + delta.to(x.dtype)

    def check_model(self, d_model: int, *, name: str) -> None:
        """Raise a located error unless the SAE's input width is the model's."""
        if self.d_in != d_model:
            raise DataError(f"saes: SAE {name!r} ({self.source}) reads vectors of width "
                            f"{self.d_in}, but this model's {self.site} has width {d_model}",
                            key="saes", hint="use an SAE trained on this model (mechcheck "
                            "sae train), or point saes: at the right file")


def _check_shapes(sae: SAE) -> None:
    d_in, d_sae = sae.W_enc.shape if sae.W_enc.dim() == 2 else (-1, -1)
    expected = {"W_enc": (d_in, d_sae), "b_enc": (d_sae,), "W_dec": (d_sae, d_in),
                "b_dec": (d_in,)}
    if sae.threshold is not None:
        expected["threshold"] = (d_sae,)
    for name, shape in expected.items():
        tensor = getattr(sae, name)
        if tuple(tensor.shape) != shape or d_in < 1:
            raise DataError(f"saes: {sae.source}: {name} has shape {list(tensor.shape)}, "
                            f"expected {list(shape)} (W_enc is [d_in, d_sae])", key="saes",
                            hint="write the SAE in SAELens's layout: W_enc [d_in, d_sae], "
                            "b_enc [d_sae], W_dec [d_sae, d_in], b_dec [d_in]")
    if sae.site.site not in LAYER_SITES or sae.site.is_pattern:
        raise DataError(f"saes: {sae.source} reads {sae.site}; an SAE reads one whole-layer "
                        "site", key="saes",
                        hint="blocks.L.resid_pre, resid_mid, resid_post, attn or mlp")
    if sae.architecture not in ARCHITECTURES:
        raise DataError(f"saes: {sae.source}: architecture {sae.architecture!r} is not "
                        f"supported", key="saes", hint=f"use one of {', '.join(ARCHITECTURES)}")
    if sae.architecture == "topk" and not (isinstance(sae.k, int) and 1 <= sae.k <= sae.d_sae):
        raise DataError(f"saes: {sae.source}: a topk SAE needs k between 1 and {sae.d_sae}, "
                        f"got {sae.k!r}", key="saes", hint='set "k" in its config')
    if sae.architecture == "jumprelu" and sae.threshold is None:
        raise DataError(f"saes: {sae.source}: a jumprelu SAE needs a threshold tensor",
                        key="saes", hint="save its threshold [d_sae] next to W_enc")


def site_of_hook(hook: object, *, source: str = "the SAE") -> Address:
    """The mechcheck site of a TransformerLens hook name (``blocks.L.hook_resid_post``,
    ``hook_resid_pre``, ``hook_resid_mid``, ``hook_mlp_out``, ``hook_attn_out``) or of a
    mechcheck address (``blocks.L.resid_post``).

    Raises:
        DataError: any other name, located at ``saes``.
    """
    text = str(hook).strip()
    m = re.fullmatch(r"blocks\.([0-9]+)\.(hook_[a-z_]+)", text)
    if m and m[2] in _TL_HOOKS:
        return Address(_TL_HOOKS[m[2]], int(m[1]))  # type: ignore[arg-type]
    try:
        address = Address.parse(text)
    except AddressError:
        address = None
    if address is not None and address.site in LAYER_SITES and not address.is_pattern:
        return address
    raise DataError(f"saes: {source} reads hook point {text!r}, which mechcheck cannot map "
                    "to a site", key="saes",
                    hint="supported: blocks.L.hook_resid_pre, hook_resid_mid, "
                    "hook_resid_post, hook_mlp_out, hook_attn_out, or a mechcheck address "
                    "such as blocks.L.resid_post")


def _config_value(config: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if config.get(name) is not None:
            return config[name]
    metadata = config.get("metadata")
    if isinstance(metadata, Mapping):
        for name in names:
            if metadata.get(name) is not None:
                return metadata[name]
    return None


def _from_parts(tensors: Mapping[str, torch.Tensor], config: Mapping[str, Any],
                source: str) -> SAE:
    missing = [k for k in ("W_enc", "b_enc", "W_dec", "b_dec") if k not in tensors]
    if missing:
        raise DataError(f"saes: {source} has no {', '.join(missing)} (its tensors: "
                        f"{', '.join(sorted(tensors)) or 'none'})", key="saes",
                        hint="an SAE file holds W_enc, b_enc, W_dec and b_dec (SAELens's "
                        "names)")
    hook = _config_value(config, "hook_name", "hook_point", "site")
    if hook is None:
        raise DataError(f"saes: {source}: the config names no site", key="saes",
                        hint='add "hook_name": "blocks.L.hook_resid_post" (or "site": '
                        '"blocks.L.resid_post") to the config')
    norm = config.get("normalize_activations")
    if norm not in (None, "none"):
        raise DataError(f"saes: {source}: normalize_activations {norm!r} is not supported",
                        key="saes", hint="mechcheck reads SAEs on raw activations "
                        "(normalize_activations: none); fold the scaling into the weights")
    if config.get("reshape_activations") not in (None, "none") or \
            config.get("rescale_acts_by_decoder_norm"):
        raise DataError(f"saes: {source}: reshaped or decoder-norm-rescaled SAEs are not "
                        "supported", key="saes",
                        hint="use an SAE on a whole-layer site with plain weights")
    architecture = str(config.get("architecture") or "standard")
    activation = config.get("activation_fn") or config.get("activation_fn_str")
    kwargs = config.get("activation_fn_kwargs") or {}
    k = config.get("k")
    if architecture == "standard" and activation == "topk":
        architecture = "topk"
    if architecture == "standard" and activation not in (None, "relu"):
        raise DataError(f"saes: {source}: activation_fn {activation!r} is not supported",
                        key="saes", hint="use relu or topk")
    if k is None and isinstance(kwargs, Mapping):
        k = kwargs.get("k")
    site = site_of_hook(hook, source=source)
    sae = SAE(W_enc=tensors["W_enc"], b_enc=tensors["b_enc"], W_dec=tensors["W_dec"],
              b_dec=tensors["b_dec"], threshold=tensors.get("threshold"), site=site,
              architecture=architecture, k=None if k is None else int(k),
              apply_b_dec_to_input=bool(config.get("apply_b_dec_to_input", True)),
              source=source, config=config)
    for name in ("d_in", "d_sae"):
        if config.get(name) is not None and int(config[name]) != getattr(sae, name):
            raise DataError(f"saes: {source}: the config says {name} {config[name]}, the "
                            f"weights {getattr(sae, name)}", key="saes",
                            hint="the config and the weights disagree: re-save the SAE")
    return sae


def load_sae(path: str | Path) -> SAE:
    """Read an SAE: a SAELens folder or a ``.safetensors`` file with its config.

    Raises:
        DataError: a missing or unreadable file, a pickle file, a config mechcheck
            cannot map, or tensors of the wrong shapes; located at ``saes``.
    """
    from safetensors import safe_open

    path = Path(path)
    source = str(path)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise DataError(f"saes: {source} is a pickle file; mechcheck never unpickles (it can "
                        "run arbitrary code)", key="saes",
                        hint="save the SAE as safetensors (SAELens's sae.save_model writes "
                        "sae_weights.safetensors + cfg.json)")
    if path.is_dir():
        weights, config_path = path / WEIGHTS_FILE, path / CONFIG_FILE
        if not weights.is_file():
            pickled = [p.name for p in path.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES]
            why = f" (it holds {', '.join(pickled)}: pickle is refused)" if pickled else ""
            raise DataError(f"saes: the folder {source} has no {WEIGHTS_FILE}{why}",
                            key="saes", hint="a SAELens folder holds sae_weights.safetensors "
                            "and cfg.json")
        if not config_path.is_file():
            raise DataError(f"saes: the folder {source} has no {CONFIG_FILE}", key="saes",
                            hint="a SAELens folder holds sae_weights.safetensors and cfg.json")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"saes: {config_path} is not JSON: {exc}", key="saes",
                            hint="write the config as a JSON object") from None
    elif path.is_file():
        weights, config = path, None
    else:
        raise DataError(f"saes: no SAE at {source}", key="saes",
                        hint="give a .safetensors file (mechcheck sae train writes one) or "
                        "a SAELens folder, relative to the claim file")
    try:
        with safe_open(str(weights), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            metadata = handle.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - safetensors' own errors vary by version
        raise DataError(f"saes: {weights} is not a safetensors file ({exc})", key="saes",
                        hint="save the SAE with safetensors") from None
    if config is None:
        text = metadata.get("config")
        if text is None:
            raise DataError(f"saes: {source} holds no config in its metadata", key="saes",
                            hint='save it with metadata {"config": <JSON with hook_name, '
                            'architecture ...>} (mechcheck.sae.save_sae), or as a SAELens '
                            'folder with cfg.json')
        try:
            config = json.loads(text)
        except ValueError as exc:
            raise DataError(f"saes: {source}: its config metadata is not JSON ({exc})",
                            key="saes", hint="re-save it with mechcheck.sae.save_sae") from None
    if not isinstance(config, Mapping):
        raise DataError(f"saes: {source}: the config is not a JSON object", key="saes",
                        hint="write the config as a JSON object")
    return _from_parts(tensors, config, source)


def save_sae(path: str | Path, sae: SAE, *, dtype: torch.dtype = torch.float32,
             extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``sae`` as one ``.safetensors`` file with SAELens's tensor names and its
    config (JSON) in the metadata under ``"config"``; ``dtype`` shrinks the file."""
    from safetensors.torch import save_file

    config: dict[str, Any] = {
        "architecture": sae.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae,
        "hook_name": str(sae.site), "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none"}
    if sae.k is not None:
        config["k"] = sae.k
    config.update(extra or {})
    tensors = {"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec, "b_dec": sae.b_dec}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold
    path = Path(path)
    save_file({k: v.to(dtype).contiguous() for k, v in tensors.items()}, str(path),
              metadata={"config": json.dumps(config, sort_keys=True)})
    return path
