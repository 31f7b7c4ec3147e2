"""The one place in mechcheck that registers torch hooks.

:func:`hooked` installs forward hooks for one forward pass (recording activations,
replacing them, reading attention patterns) and removes exactly the handles it
installed when the block exits, also when the forward pass raises.  Hooks that the
user or transformers installed are left alone.

:func:`block_outputs` records what whole blocks return, and :func:`replayed` makes
the first blocks of a forward pass return such a recording instead of computing
(the exact sweeps of :mod:`mechcheck.engine.sweep`); both undo what they did on
every path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

from mechcheck.models.adapter import ModelAdapter, Site

__all__ = ["Patch", "block_outputs", "hook_count", "hooked", "module_outputs", "replayed"]

# A patch takes the activation at a site and returns its replacement (same shape).
Patch = Callable[[torch.Tensor], torch.Tensor]


def _pre_activation(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    return kwargs["hidden_states"]


def _with_pre_activation(args: tuple, kwargs: dict, new: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


def _post_activation(output: Any) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else output[0]


def _with_post_activation(output: Any, new: torch.Tensor) -> Any:
    if isinstance(output, torch.Tensor):
        return new
    return (new, *output[1:])


def _site_hook(
    site: Site, patch: Patch | None, record: dict[Any, torch.Tensor] | None
) -> Callable[..., Any]:
    """One hook doing, in order, recording (of the unpatched value) and patching.

    At an SAE's virtual site (``site.sae`` set) both act on ``[f, x - x_hat]`` computed
    from the activation ``x``; a patch's changes are written back into ``x`` by
    :meth:`mechcheck.sae.SAE.merge` (nothing changed: ``x`` exactly)."""

    def apply(act: torch.Tensor) -> torch.Tensor | None:
        sae = site.sae
        value = act if sae is None else sae.split(act)
        if record is not None:
            record[site] = value.detach().clone()
        if patch is None:
            return None
        new = patch(value)
        return new if sae is None else sae.merge(act, value, new)

    if site.when == "pre":

        def pre_hook(module: Any, args: tuple, kwargs: dict) -> Any:
            new = apply(_pre_activation(args, kwargs))
            return None if new is None else _with_pre_activation(args, kwargs, new)

        return pre_hook

    def post_hook(module: Any, args: tuple, output: Any) -> Any:
        new = apply(_post_activation(output))
        return None if new is None else _with_post_activation(output, new)

    return post_hook


def _pattern_hook(layer: int, store: dict[Any, torch.Tensor]) -> Callable[..., Any]:
    def post_hook(module: Any, args: tuple, output: Any) -> None:
        weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if weights is None:
            raise RuntimeError(
                "the attention module returned no pattern; mechcheck selects eager "
                "attention for pattern claims, so this model's attention class does not "
                "return its weights"
            )
        store[("pattern", layer)] = weights.detach().float().clone()

    return post_hook


@contextmanager
def hooked(
    adapter: ModelAdapter,
    *,
    patches: Mapping[Site, Patch] | None = None,
    record: Sequence[Site] = (),
    patterns: Sequence[int] = (),
) -> Iterator[dict[Any, torch.Tensor]]:
    """Install hooks for one forward pass; yield the dict that recordings land in.

    Args:
        adapter: the model's adapter (it resolves module paths).
        patches: site -> function returning the replacement activation.
        record: sites whose (unpatched) activations to store under their ``Site``.
        patterns: layers whose attention weights ``[batch, head, query, key]`` to store
            under ``("pattern", layer)``; the model must run eager attention.

    Yields:
        The dict of recordings, filled during the forward pass.
    """
    patches = dict(patches or {})
    store: dict[Any, torch.Tensor] = {}
    wanted = set(record)
    with ExitStack() as stack:
        # a module's own site before SAE sites on it (each SAE reads what came before)
        for site in sorted(set(patches) | wanted,
                           key=lambda s: (s.module, s.when, s.sae is not None,
                                          "" if s.sae is None else s.sae.source)):
            module = adapter.module(site.module)
            hook = _site_hook(site, patches.get(site), store if site in wanted else None)
            if site.when == "pre":
                handle = module.register_forward_pre_hook(hook, with_kwargs=True)
            else:
                handle = module.register_forward_hook(hook)
            stack.callback(handle.remove)
        for layer in sorted(set(patterns)):
            module = adapter.module(adapter.attention_module(layer))
            stack.callback(module.register_forward_hook(_pattern_hook(layer, store)).remove)
        yield store


def hook_count(model: torch.nn.Module) -> int:
    """Number of forward (pre-)hooks installed on ``model`` and its submodules."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _output_capture(store: dict[Any, Any], layer: Any) -> Callable[..., Any]:
    def post_hook(module: Any, args: tuple, output: Any) -> None:
        store[layer] = output  # the block's own output object: a tensor or a tuple

    return post_hook


@contextmanager
def block_outputs(adapter: ModelAdapter, layers: Sequence[int]) -> Iterator[dict[int, Any]]:
    """Record, for one forward pass, what the blocks ``layers`` return, as returned
    (a tensor or a tuple), under the layer index."""
    store: dict[int, Any] = {}
    blocks: Any = adapter.module(adapter.arch.blocks)  # a ModuleList
    with ExitStack() as stack:
        for layer in sorted(set(layers)):
            handle = blocks[layer].register_forward_hook(_output_capture(store, layer))
            stack.callback(handle.remove)
        yield store


def _last_position(module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    act = _pre_activation(args, kwargs)
    return _with_pre_activation(args, kwargs, act[:, -1:])


@contextmanager
def module_outputs(adapter: ModelAdapter, paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Record, for one forward pass, what the modules ``paths`` return, as returned,
    under their path."""
    store: dict[str, Any] = {}
    with ExitStack() as stack:
        for path in sorted(set(paths)):
            handle = adapter.module(path).register_forward_hook(_output_capture(store, path))
            stack.callback(handle.remove)
        yield store


@contextmanager
def replayed(adapter: ModelAdapter, start: int, output: Any, *,
             last_only: Sequence[str] = (),
             returning: dict[str, Any] | None = None) -> Iterator[None]:
    """For one forward pass, blocks ``0 .. start-1`` return ``output`` (what block
    ``start - 1`` returned in an earlier pass, repeated to this pass's batch) without
    computing; ``last_only`` names modules whose input is cut to the last position;
    ``returning`` maps further module paths to what they return instead of computing
    (an attention module whose output a low-rank update gives).

    A block's input is only its predecessor's output (and the mask and position
    embeddings the model computes again), so block ``start`` then sees exactly what
    it saw in the earlier pass.  The blocks' ``forward`` attributes and the hooks are
    restored when the block exits, also when the forward pass raises.
    """
    blocks: Any = adapter.module(adapter.arch.blocks)  # a ModuleList
    with ExitStack() as stack:
        for layer in range(start):
            stack.enter_context(_returning(blocks[layer], output))
        for path, value in (returning or {}).items():
            stack.enter_context(_returning(adapter.module(path), value))
        for path in last_only:
            module = adapter.module(path)
            handle = module.register_forward_pre_hook(_last_position, with_kwargs=True)
            stack.callback(handle.remove)
        yield


@contextmanager
def _returning(module: torch.nn.Module, output: Any) -> Iterator[None]:
    """``module`` returns ``output`` when called, until the block exits."""
    had = "forward" in module.__dict__
    before = module.__dict__.get("forward")

    def forward(*args: Any, **kwargs: Any) -> Any:
        return output

    module.__dict__["forward"] = forward  # an instance attribute shadows the method
    try:
        yield
    finally:
        if had:
            module.__dict__["forward"] = before
        else:
            del module.__dict__["forward"]
