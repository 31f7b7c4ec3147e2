"""The public Hypothesis strategies, used the way their users would use them."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechcheck.addresses import Address, ModelDims
from mechcheck.data import tokenize_rows
from mechcheck.engine.runner import position_mask
from mechcheck.models.tiny import word_tokenizer
from mechcheck.plugins import Registry
from mechcheck.strategies import addresses, positions, prompts
from mechcheck.tasks import Task

WORDS = ["".join(p) for p in itertools.product("bdfgk", "aeiou", "lmnprst")][:64]
TOKENIZER = word_tokenizer(WORDS, bos_token="<bos>")
DIMS = ModelDims(n_layers=3, n_heads=4, d_mlp=8, d_model=16)


@given(addresses())
def test_addresses_round_trip_through_text(address: Address) -> None:
    assert str(Address.parse(str(address))) == str(address)
    assert Address.parse(str(address)) == address


@given(addresses(dims=DIMS))
def test_addresses_within_dims_exist_in_the_model(address: Address) -> None:
    assert address.check(DIMS) is address
    assert address.expand(DIMS)


@given(addresses(dims=DIMS, allow_patterns=False))
def test_concrete_addresses_expand_to_themselves(address: Address) -> None:
    assert not address.is_pattern
    assert address.expand(DIMS) == [address]


@given(addresses(sites=["head", "mlp"], dims=ModelDims(n_layers=2, n_heads=2, d_mlp=0,
                                                      d_model=4, has_pos_embed=False)))
def test_sites_filter_and_models_without_mlp(address: Address) -> None:
    assert address.site == "head"


def test_addresses_reject_unknown_or_impossible_sites() -> None:
    with pytest.raises(ValueError, match="unknown site 'heads'; did you mean head\\?"):
        addresses(sites=["heads"])
    no_mlp = ModelDims(n_layers=1, n_heads=1, d_mlp=0, d_model=4)
    with pytest.raises(ValueError, match="none of them exists"):
        addresses(sites=["neuron"], dims=no_mlp)


@settings(max_examples=30, deadline=None)
@given(prompts("induction", TOKENIZER))
def test_induction_prompts_tokenize_validly(row: dict[str, Any]) -> None:
    ds = tokenize_rows([row], TOKENIZER)
    assert ds.corrupts is not None and len(ds.corrupts[0]) == len(ds.prompts[0])
    words = row["prompt"].split()
    assert row["answer"].strip() == words[words.index(words[-1]) + 1]


def test_prompts_name_unknown_tasks_and_missing_strategies(monkeypatch: Any) -> None:
    with pytest.raises(ValueError, match="no task named 'inductoin'; registered tasks: .*"
                       "induction"):
        prompts("inductoin", TOKENIZER)
    real = Registry.from_plugins()
    bare = Task(name="bare", generate=lambda tokenizer, *, n, seed: [])
    fake = Registry(interventions=real.interventions, metrics=real.metrics, kinds=real.kinds,
                    archs=real.archs, tasks={"bare": bare})
    monkeypatch.setattr(Registry, "from_plugins", classmethod(lambda cls, pm=None: fake))
    with pytest.raises(ValueError, match="task 'bare' offers no Hypothesis strategy"):
        prompts("bare", TOKENIZER)


@st.composite
def _length_and_at(draw: st.DrawFn) -> tuple[int, Any]:
    low = draw(st.integers(min_value=1, max_value=12))
    high = draw(st.integers(min_value=low, max_value=20))
    return draw(st.integers(low, high)), draw(positions(min_len=low, max_len=high))


@settings(deadline=None)
@given(_length_and_at())
def test_positions_are_valid_at_values(case: tuple[int, Any]) -> None:
    length, at = case
    items = at if isinstance(at, list) else [at]
    ds = tokenize_rows([{"prompt": " ".join(WORDS[: length - 1]), "answer": WORDS[0]}],
                       TOKENIZER)
    mask = position_mask(ds, np.array([0]), length, items)
    assert 1 <= int(mask.sum()) <= len(items)
    if "last" in items:
        assert bool(mask[0, -1])


def test_positions_check_their_bounds() -> None:
    with pytest.raises(ValueError, match="1 <= min_len <= max_len"):
        positions(min_len=5, max_len=4)
