"""Hypothesis strategies for property tests of mechcheck and of code built on it.

- :func:`addresses`: component addresses (:class:`~mechcheck.addresses.Address`);
- :func:`prompts`: rows of a registered task for a given tokenizer;
- :func:`positions`: values of a claim's ``at:`` key.

Example:
    >>> from hypothesis import given
    >>> @given(addresses())
    ... def test_round_trip(address):
    ...     assert str(Address.parse(str(address))) == str(address)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypothesis import strategies as st

from mechcheck.addresses import (
    GLOBAL_SITES,
    HEAD_SITES,
    LAYER_SITES,
    SITES,
    WILDCARD,
    Address,
    ModelDims,
)
from mechcheck.errors import closest

__all__ = ["addresses", "positions", "prompts"]

_LARGEST_INDEX = 10_000  # without dims: indices up to this


def _usable_sites(dims: ModelDims | None, sites: Iterable[str] | None) -> list[str]:
    chosen = list(SITES if sites is None else dict.fromkeys(sites))
    for site in chosen:
        if site not in SITES:
            near = closest(site, SITES)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ValueError(f"sites: unknown site {site!r}; {hint}sites are {', '.join(SITES)}")
    if dims is not None:
        if not dims.has_pos_embed:
            chosen = [s for s in chosen if s != "pos_embed"]
        if dims.d_mlp == 0:
            chosen = [s for s in chosen if s not in ("mlp", "neuron")]
    if not chosen:
        raise ValueError(f"sites={list(sites or ())!r}: none of them exists in a model "
                         f"with {dims}")
    return chosen


def _indices(limit: int, allow_patterns: bool) -> st.SearchStrategy[int | str]:
    numbers = st.integers(min_value=0, max_value=limit - 1)
    return numbers | st.just(WILDCARD) if allow_patterns else numbers


def _for_site(site: str, dims: ModelDims | None,
              allow_patterns: bool) -> st.SearchStrategy[Address]:
    if site in GLOBAL_SITES:
        return st.just(Address(site))  # type: ignore[arg-type]
    layers = _indices(dims.n_layers if dims else _LARGEST_INDEX, allow_patterns)
    if site in LAYER_SITES:
        return st.builds(Address, st.just(site), layers)
    limit = _LARGEST_INDEX if dims is None else dims.n_heads if site in HEAD_SITES else dims.d_mlp
    return st.builds(Address, st.just(site), layers, _indices(limit, allow_patterns))


def addresses(*, dims: ModelDims | None = None, sites: Iterable[str] | None = None,
              allow_patterns: bool = True) -> st.SearchStrategy[Address]:
    """Component addresses.

    Args:
        dims: when given, every address exists in a model of these sizes
            (``address.check(dims)`` passes and ``address.expand(dims)`` is not empty):
            indices lie within its layers, heads and MLP width, and ``pos_embed`` or MLP
            sites are left out where the model has none.  Without it, indices run up to
            10,000.
        sites: draw only these sites (e.g. ``["head"]``); default all of
            :data:`~mechcheck.addresses.SITES`.
        allow_patterns: let any layer or index be ``*``; pass False for concrete
            addresses only.

    Returns:
        A strategy of :class:`~mechcheck.addresses.Address`.

    Raises:
        ValueError: an unknown site, or no site left for ``dims``.
    """
    chosen = _usable_sites(dims, sites)
    return st.one_of(*(_for_site(site, dims, allow_patterns) for site in chosen))


def prompts(task: str, tokenizer: Any, **params: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Rows (prompt, answer, corrupt, ...) of the registered task ``task``.

    Args:
        task: a task name registered through the ``mechcheck_tasks`` hook, e.g.
            ``"induction"``.
        tokenizer: the tokenizer the rows are made for.
        **params: the task's own parameters (see its ``params``).

    Returns:
        The task's strategy of row dicts.

    Raises:
        ValueError: no task of that name, or the task offers no strategy.
    """
    from mechcheck.plugins import Registry

    tasks = Registry.from_plugins().tasks
    if task not in tasks:
        raise ValueError(f"no task named {task!r}; registered tasks: {', '.join(sorted(tasks))}")
    found = tasks[task]
    if found.strategy is None:
        raise ValueError(f"task {task!r} offers no Hypothesis strategy (its Task.strategy is "
                         "None); generate rows with its generate() instead")
    return found.strategy(tokenizer, **params)


def positions(*, min_len: int = 1, max_len: int = 32) -> st.SearchStrategy[Any]:
    """Values of a claim's ``at:`` key for prompts of ``min_len`` to ``max_len`` tokens.

    Each value is ``"last"``, a token index, or a list of 1 to 4 of these; an index is
    valid in every prompt of ``min_len`` to ``max_len`` tokens, so non-negative ones lie
    below ``min_len`` and negative ones (counting from the end) at or above ``-min_len``.
    Draw the prompt length from ``st.integers(min_len, max_len)`` to pair them.

    Raises:
        ValueError: ``min_len < 1`` or ``max_len < min_len``.
    """
    if min_len < 1 or max_len < min_len:
        raise ValueError(f"min_len={min_len}, max_len={max_len}, but must satisfy "
                         "1 <= min_len <= max_len")
    one = st.just("last") | st.integers(min_value=-min_len, max_value=min_len - 1)
    return one | st.lists(one, min_size=1, max_size=4)
