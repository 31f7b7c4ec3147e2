"""Tests for the component-address grammar (mechcheck.addresses)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mechcheck.addresses import WILDCARD, Address, ModelDims, parse_components
from mechcheck.errors import AddressError, MechcheckError

GPT2 = ModelDims(n_layers=12, n_heads=12, d_mlp=3072, d_model=768)
TINY = ModelDims(n_layers=2, n_heads=4, d_mlp=8, d_model=16)
ROTARY = ModelDims(n_layers=2, n_heads=4, d_mlp=8, d_model=16, has_pos_embed=False)

# -- round trip --------------------------------------------------------------

indices = st.integers(min_value=0, max_value=10**6) | st.just(WILDCARD)
addresses = st.one_of(
    st.sampled_from(["embed", "pos_embed", "ln_final", "unembed"]).map(Address),
    st.builds(
        Address,
        st.sampled_from(["resid_pre", "resid_mid", "resid_post", "attn", "mlp"]),
        indices,
    ),
    st.builds(Address, st.sampled_from(["head", "neuron"]), indices, indices),
)


@settings(max_examples=150, deadline=None)
@given(addresses)
def test_round_trip(address: Address) -> None:
    text = str(address)
    assert Address.parse(text) == address
    assert str(Address.parse(text)) == text
    assert text == text.lower()


@pytest.mark.parametrize(
    "text",
    [
        "embed",
        "pos_embed",
        "ln_final",
        "unembed",
        "blocks.0.resid_pre",
        "blocks.11.resid_mid",
        "blocks.3.resid_post",
        "blocks.3.attn",
        "blocks.9.attn.head.9",
        "blocks.3.mlp",
        "blocks.3.mlp.neuron.100",
        "blocks.1.attn.head.*",
        "blocks.*.attn.head.*",
        "blocks.*.mlp",
        "blocks.*.mlp.neuron.7",
    ],
)
def test_canonical_strings_print_as_written(text: str) -> None:
    assert str(Address.parse(text)) == text


# -- shorthand ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("head 9.9", "blocks.9.attn.head.9"),
        ("head 9.*", "blocks.9.attn.head.*"),
        ("head 5.10", "blocks.5.attn.head.10"),
        ("HEAD 0.1", "blocks.0.attn.head.1"),
        ("  Head   2.3 \n", "blocks.2.attn.head.3"),
        ("mlp 3", "blocks.3.mlp"),
        ("MLP *", "blocks.*.mlp"),
        ("attn 3", "blocks.3.attn"),
        ("neuron 3.100", "blocks.3.mlp.neuron.100"),
        ("resid_pre 3", "blocks.3.resid_pre"),
        ("resid_mid 3", "blocks.3.resid_mid"),
        ("Resid_Post 3", "blocks.3.resid_post"),
        ("  blocks.1.mlp  ", "blocks.1.mlp"),
    ],
)
def test_shorthand(text: str, canonical: str) -> None:
    assert str(Address.parse(text)) == canonical


def test_parse_accepts_address() -> None:
    address = Address("head", 1, 2)
    assert Address.parse(address) is address


# -- malformed input ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "L9H9",
        "head 9 9",
        "head 9",
        "mlp 3.5",
        "blocks.3",
        "blocks.3.attn.head",
        "blocks.x.mlp",
        "blocks.05.mlp",
        "Blocks.5.mlp",
        "blocks.5.attn.head.1.2",
        "layer 3",
        "Embed",
        "blocks.1.mlp.neuron.-3",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(AddressError) as info:
        Address.parse(text)
    assert "accepted forms" in info.value.message
    assert "blocks.L.attn.head.H" in info.value.message
    assert info.value.hint


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("blocks.5.atn.head.1", "blocks.5.attn.head.1"),
        ("blocks.5.mlp.neurons.3", "blocks.5.mlp.neuron.3"),
        ("blocks.5.attn.heads.2", "blocks.5.attn.head.2"),
        ("block.2.mlp", "blocks.2.mlp"),
        ("blocks.2.resid-post", "blocks.2.resid_post"),
        ("Blocks.5.MLP", "blocks.5.mlp"),
        ("unembedding", "unembed"),
        ("head 9 9", "head 9.9"),
        ("L9H9", "head 9.9"),
    ],
)
def test_near_miss_suggestions(text: str, suggestion: str) -> None:
    with pytest.raises(AddressError) as info:
        Address.parse(text)
    assert info.value.hint is not None
    assert suggestion in info.value.hint
    assert info.value.hint.startswith("did you mean")


def test_negative_index_in_text() -> None:
    with pytest.raises(AddressError, match="negative"):
        Address.parse("blocks.-1.mlp")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"site": "head", "layer": -1, "index": 0},
        {"site": "neuron", "layer": 0, "index": -5},
        {"site": "mlp", "layer": -2},
    ],
)
def test_negative_index_in_constructor(kwargs: dict[str, object]) -> None:
    with pytest.raises(AddressError, match="negative"):
        Address(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"site": "head", "layer": 1},
        {"site": "mlp", "layer": 1, "index": 2},
        {"site": "embed", "layer": 0},
        {"site": "mlp"},
        {"site": "attn", "layer": True},
        {"site": "attn", "layer": 1.0},
        {"site": "attn", "layer": "x"},
        {"site": "heads", "layer": 1, "index": 1},
    ],
)
def test_inconsistent_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(AddressError):
        Address(**kwargs)  # type: ignore[arg-type]


def test_float_from_yaml() -> None:
    with pytest.raises(AddressError) as info:
        Address.parse(5.1)
    error = info.value
    assert isinstance(error, MechcheckError)
    assert "YAML read it as a number" in error.message
    assert error.hint is not None
    assert "quote it" in error.hint
    assert '"head 5.10"' in error.hint


def test_int_and_other_types() -> None:
    with pytest.raises(AddressError, match="YAML read it as a number"):
        Address.parse(5)
    with pytest.raises(AddressError, match="must be a string"):
        Address.parse(None)
    with pytest.raises(AddressError, match="must be a string"):
        Address.parse(["head 1.1"])


# -- against a model ---------------------------------------------------------


def test_check_returns_self() -> None:
    address = Address.parse("head 11.11")
    assert address.check(GPT2) is address
    assert Address.parse("embed").check(GPT2).site == "embed"
    assert Address.parse("blocks.*.attn.head.3").check(GPT2).is_pattern


def test_layer_out_of_range() -> None:
    with pytest.raises(AddressError) as info:
        Address.parse("blocks.12.attn.head.3").check(GPT2)
    error = info.value
    assert error.message.startswith("blocks.12.attn.head.3 does not exist in this model")
    assert "layers are 0-11" in error.message
    assert "heads 0-11" in error.message
    assert "neurons 0-3071" in error.message
    assert error.hint is not None
    assert "did you mean blocks.11.attn.head.3?" in error.hint


def test_head_out_of_range() -> None:
    with pytest.raises(AddressError) as info:
        Address.parse("head 3.12").check(GPT2)
    assert "heads 0-11" in info.value.message
    assert info.value.hint is not None
    assert "blocks.3.attn.head.11" in info.value.hint


def test_swapped_layer_and_head_suggested() -> None:
    dims = ModelDims(n_layers=12, n_heads=8, d_mlp=16, d_model=32)
    with pytest.raises(AddressError) as info:
        Address.parse("head 2.10").check(dims)
    assert info.value.hint is not None
    assert "blocks.2.attn.head.7" in info.value.hint
    assert "blocks.10.attn.head.2" in info.value.hint


def test_neuron_out_of_range() -> None:
    with pytest.raises(AddressError) as info:
        Address.parse("neuron 2.5000").check(GPT2)
    assert "neurons 0-3071" in info.value.message
    assert info.value.hint is not None
    assert "blocks.2.mlp.neuron.3071" in info.value.hint


def test_layer_level_out_of_range() -> None:
    with pytest.raises(AddressError) as info:
        Address.parse("mlp 40").check(GPT2)
    assert "layers are 0-11" in info.value.message
    assert info.value.hint is not None
    assert "blocks.11.mlp" in info.value.hint


def test_pos_embed_without_positional_embeddings() -> None:
    assert Address.parse("pos_embed").check(GPT2).site == "pos_embed"
    with pytest.raises(AddressError) as info:
        Address.parse("pos_embed").check(ROTARY)
    assert "pos_embed" in info.value.message
    assert "positional" in info.value.message
    with pytest.raises(AddressError):
        Address.parse("pos_embed").expand(ROTARY)


def test_attention_only_model_has_no_mlp() -> None:
    dims = ModelDims(n_layers=2, n_heads=4, d_mlp=0, d_model=16)
    assert Address.parse("blocks.1.attn").check(dims)
    with pytest.raises(AddressError, match="attention-only"):
        Address.parse("mlp 1").check(dims)
    with pytest.raises(AddressError, match="attention-only"):
        Address.parse("blocks.*.mlp.neuron.*").expand(dims)


def test_model_dims_validation() -> None:
    with pytest.raises(ValueError):
        ModelDims(n_layers=0, n_heads=1, d_mlp=1, d_model=1)
    with pytest.raises(ValueError):
        ModelDims(n_layers=1, n_heads=1, d_mlp=-1, d_model=1)


# -- expand ------------------------------------------------------------------


def test_expand_all_heads() -> None:
    expanded = Address.parse("blocks.*.attn.head.*").expand(TINY)
    assert len(expanded) == 8
    assert [str(a) for a in expanded] == [
        f"blocks.{layer}.attn.head.{head}" for layer in range(2) for head in range(4)
    ]
    assert expanded == sorted(expanded)
    assert not any(a.is_pattern for a in expanded)


def test_expand_counts() -> None:
    assert len(Address.parse("head 1.*").expand(TINY)) == 4
    assert [str(a) for a in Address.parse("blocks.*.mlp").expand(TINY)] == [
        "blocks.0.mlp",
        "blocks.1.mlp",
    ]
    assert len(Address.parse("blocks.*.mlp.neuron.*").expand(TINY)) == 16
    assert [str(a) for a in Address.parse("neuron *.3").expand(TINY)] == [
        "blocks.0.mlp.neuron.3",
        "blocks.1.mlp.neuron.3",
    ]
    concrete = Address.parse("embed")
    assert concrete.expand(TINY) == [concrete]


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("blocks.2.attn.head.*", "blocks.1.attn.head.*"),
        ("blocks.*.attn.head.4", "blocks.*.attn.head.3"),
        ("blocks.*.mlp.neuron.8", "blocks.*.mlp.neuron.7"),
        ("resid_post 5", "blocks.1.resid_post"),
    ],
)
def test_expand_out_of_range_fixed_part(text: str, suggestion: str) -> None:
    with pytest.raises(AddressError) as info:
        Address.parse(text).expand(TINY)
    assert "layers are 0-1" in info.value.message
    assert info.value.hint is not None
    assert suggestion in info.value.hint


# -- structure and ordering --------------------------------------------------


def test_parent_and_layer_level() -> None:
    assert Address.parse("head 3.2").parent == Address("attn", 3)
    assert Address.parse("neuron 3.2").parent == Address("mlp", 3)
    assert Address.parse("head *.*").parent == Address("attn", WILDCARD)
    assert Address.parse("mlp 3").parent is None
    assert Address.parse("embed").parent is None
    level = {t: Address.parse(t).layer_level for t in ["attn 1", "mlp 1", "resid_mid 1"]}
    assert all(level.values())
    assert not Address.parse("head 1.1").layer_level
    assert not Address.parse("neuron 1.1").layer_level
    assert not Address.parse("unembed").layer_level


def test_is_pattern() -> None:
    assert Address.parse("head 1.*").is_pattern
    assert Address.parse("mlp *").is_pattern
    assert not Address.parse("head 1.1").is_pattern
    assert not Address.parse("ln_final").is_pattern


def test_sorting_is_forward_pass_order() -> None:
    texts = [
        "unembed",
        "blocks.1.mlp.neuron.2",
        "ln_final",
        "blocks.0.resid_post",
        "blocks.1.attn.head.*",
        "blocks.1.attn.head.10",
        "blocks.1.attn.head.2",
        "blocks.0.mlp",
        "blocks.0.attn",
        "blocks.0.resid_mid",
        "blocks.0.resid_pre",
        "pos_embed",
        "embed",
        "blocks.*.mlp",
    ]
    assert [str(a) for a in sorted(Address.parse(t) for t in texts)] == [
        "embed",
        "pos_embed",
        "blocks.0.resid_pre",
        "blocks.0.attn",
        "blocks.0.resid_mid",
        "blocks.0.mlp",
        "blocks.0.resid_post",
        "blocks.1.attn.head.2",
        "blocks.1.attn.head.10",
        "blocks.1.attn.head.*",
        "blocks.1.mlp.neuron.2",
        "blocks.*.mlp",
        "ln_final",
        "unembed",
    ]
    assert Address("head", 1, 1) <= Address("head", 1, 1)
    assert Address("mlp", 2) > Address("attn", 2)


def test_hashable_and_frozen() -> None:
    address = Address.parse("head 1.1")
    assert {address, Address("head", 1, 1)} == {address}
    with pytest.raises(AttributeError):
        address.layer = 2  # type: ignore[misc]


# -- parse_components --------------------------------------------------------


def test_parse_components_dedup_keeps_first_order() -> None:
    parsed = parse_components(["mlp 1", "head 0.1", "blocks.1.mlp", "HEAD 0.1", "embed"])
    assert [str(a) for a in parsed] == ["blocks.1.mlp", "blocks.0.attn.head.1", "embed"]


def test_parse_components_expands_with_dims() -> None:
    parsed = parse_components(["head 1.2", "head 1.*", "mlp *"], TINY)
    assert [str(a) for a in parsed] == [
        "blocks.1.attn.head.2",
        "blocks.1.attn.head.0",
        "blocks.1.attn.head.1",
        "blocks.1.attn.head.3",
        "blocks.0.mlp",
        "blocks.1.mlp",
    ]


def test_parse_components_without_dims_keeps_patterns() -> None:
    parsed = parse_components(["head 1.*", "blocks.1.attn.head.*"])
    assert parsed == (Address("head", 1, WILDCARD),)


def test_parse_components_single_string_and_errors() -> None:
    assert parse_components("head 1.1") == (Address("head", 1, 1),)
    assert parse_components([]) == ()
    with pytest.raises(AddressError):
        parse_components(["head 1.1", 5.1])
    with pytest.raises(AddressError, match="does not exist"):
        parse_components(["head 1.1", "head 2.0"], TINY)
