"""Claim specifications as frozen dataclasses, and the key specs that validate them.

A claim kind declares the keys it accepts as :class:`KeySpec` objects; the loader
(:mod:`mechcheck.spec.loader`) checks every key of every claim against them and turns
a bad value into a :class:`~mechcheck.errors.ClaimSpecError` naming the file, line,
claim and key, with ``KeySpec.expected`` as the fix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mechcheck.errors import ModelLoadError
from mechcheck.models.source import ModelSource, parse_source, with_checkpoint

if TYPE_CHECKING:
    from mechcheck.stats import Correction

__all__ = [
    "COMMON_KEYS",
    "FILE_KEYS",
    "ClaimFile",
    "ClaimSpec",
    "KeySpec",
    "RegisteredName",
    "as_alpha",
    "as_bool",
    "as_choice",
    "as_components",
    "as_count",
    "int_at_least",
    "as_int",
    "as_number",
    "as_number_or_percent",
    "as_positions",
    "as_seed",
    "as_str",
    "bind_all",
    "bind_names",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySpec:
    """One claim-file key: how to check it and what to tell the user when it is wrong.

    Attributes:
        name: the key as written in the file.
        expected: the expected form in words, shown when the value is wrong.
        parse: turns the YAML value into the stored value; raises ``ValueError`` with a
            short reason when the value is wrong.
        required: the claim is an error without it (after file-level defaults apply).
        default: the value used when the key is absent and not required.
    """

    name: str
    expected: str
    parse: Callable[[Any], Any]
    required: bool = False
    default: Any = None


@dataclass(frozen=True, slots=True)
class RegisteredName:
    """The ``parse`` of a key whose value names an entry of a registry table.

    ``names`` are the accepted names: the built-in ones until a registry binds the
    key to its table (:meth:`mechcheck.plugins.Registry.kind_keys`), so the loader
    checks a plugin's names before any model loads.
    """

    table: str
    names: tuple[str, ...]

    def __call__(self, value: Any) -> str:
        if not isinstance(value, str) or value not in self.names:
            raise ValueError(f"got {value!r}")
        return value


def bind_names(spec: KeySpec, tables: Mapping[str, Collection[str]]) -> KeySpec:
    """``spec`` accepting the names of its registry table, if it names one in ``tables``.

    The names that the table adds to the built-in ones are appended to ``expected``.
    """
    parse = spec.parse
    if not isinstance(parse, RegisteredName) or parse.table not in tables:
        return spec
    names = tuple(tables[parse.table])
    extra = [n for n in sorted(names) if n not in parse.names]
    expected = spec.expected + (f" (or from plugins: {', '.join(extra)})" if extra else "")
    return replace(spec, parse=RegisteredName(parse.table, names), expected=expected)


def bind_all(keys: Mapping[str, KeySpec],
             tables: Mapping[str, Collection[str]]) -> dict[str, KeySpec]:
    """Every key of ``keys`` bound by :func:`bind_names`."""
    return {name: bind_names(spec, tables) for name, spec in keys.items()}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimSpec:
    """One validated claim, with where it was written.

    ``params`` holds the kind-specific keys (``components``, ``ablation``,
    ``min_drop``, ``at`` ...) already parsed by their :class:`KeySpec`.

    ``model`` is the ``model:`` value as written (reports show it); ``source`` is that
    value parsed, once, when the spec is made (against ``base_dir``), and is what the
    model is loaded from.  A value that cannot be parsed (``hf:`` with no name) leaves
    ``source`` None and ``source_error`` the error, which the claim meets when its model
    is loaded, at its ``model:`` key, as any other model error.
    """

    id: str
    kind: str
    path: str
    line: int
    base_dir: str
    model: str | None
    data: str | None = None
    task: Mapping[str, Any] | None = None
    alpha: float = 0.05
    seed: int = 0
    n: int | None = None
    test: str = "t"  # a registered decision rule
    correction: Correction = "holm"
    xfail: str | None = None
    skip_if_unavailable: bool = False
    xfail_before: str | None = None
    checkpoint: str | None = None
    description: str | None = None
    saes: Mapping[str, str] | None = None  # SAE name -> path as written (see as_saes)
    each: bool = False  # one claim per component (mechcheck.each.expand_each)
    each_of: str | None = None  # for a copy that each: true made, the parent claim's id
    params: Mapping[str, Any] = field(default_factory=dict)
    key_lines: Mapping[str, int] = field(default_factory=dict)
    source: ModelSource | None = None
    source_error: ModelLoadError | None = None

    def __post_init__(self) -> None:
        if self.model is None or self.source is not None or self.source_error is not None:
            return
        try:
            object.__setattr__(self, "source", parse_source(self.model, base_dir=self.base_dir))
        except ModelLoadError as exc:
            object.__setattr__(self, "source_error", exc)

    def at_checkpoint(self, checkpoint: str | None) -> ClaimSpec:
        """This claim on ``checkpoint`` of its model (itself for None): ``model`` names
        the checkpoint as :func:`~mechcheck.models.source.with_checkpoint` writes it and
        ``source`` is the parsed source at that checkpoint."""
        if checkpoint is None or self.model is None:
            return self
        # a value that did not parse is parsed again as written for the checkpoint, so
        # that its error names that value
        return replace(self, model=with_checkpoint(self.model, checkpoint),
                       checkpoint=checkpoint, source_error=None,
                       source=None if self.source is None else self.source.at(checkpoint))

    def line_of(self, key: str | None) -> int:
        """The line where ``key`` was written (the claim's own line if unknown)."""
        if key is None:
            return self.line
        return self.key_lines.get(key, self.line)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimFile:
    """A parsed claim file: its claims, each either a spec or the error that replaced it.

    ``error`` is set when the file as a whole is unusable (not YAML, no ``claims:``
    list, a bad file-level key); ``claims`` is then empty.
    """

    path: str
    claims: tuple[Any, ...] = ()  # ClaimSpec | ClaimSpecError, in file order
    error: Any = None  # ClaimSpecError | None
    correction: Correction = "holm"
    checkpoints: tuple[str, ...] = ()


# ---------------------------------------------------------------------------
# Value parsers.  Each raises ValueError with a short reason; the loader adds the
# location and KeySpec.expected.


def as_str(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"got {value!r}")
    return value


def as_number(value: Any) -> float:
    """A finite number (``.nan``, ``.inf`` and ``-.inf`` are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"got {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"got {value!r}, which is too large for a number") from None
    if not math.isfinite(number):
        raise ValueError(f"got {_shown(number)}, which is not a finite number")
    return number


def as_number_or_percent(value: Any) -> float | str:
    """A finite number, or a finite percentage written as text such as ``'40%'``
    (kept as the text, stripped)."""
    if not isinstance(value, str):
        return as_number(value)
    text = value.strip()
    try:
        number = float(text[:-1]) if text.endswith("%") else None
    except ValueError:
        number = None
    if number is None:
        raise ValueError(f"got {value!r}")
    if not math.isfinite(number):
        raise ValueError(f"got {value!r}, which is not a finite percentage")
    return text


def _shown(number: float) -> str:
    """``number`` as YAML writes it when it is not finite (``.nan``, ``.inf``)."""
    if math.isnan(number):
        return ".nan"
    if math.isinf(number):
        return ".inf" if number > 0 else "-.inf"
    return repr(number)


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"got {value!r}")
    return value


def int_at_least(minimum: int, reason: str) -> Callable[[Any], int]:
    """A key's parser for integers of at least ``minimum``; a smaller one is refused
    with ``got V; <reason>``."""
    def parse(value: Any) -> int:
        number = as_int(value)
        if number < minimum:
            raise ValueError(f"got {value!r}; {reason}")
        return number

    return parse


def as_seed(value: Any) -> int:
    """A non-negative integer (numpy's generators refuse negative seeds)."""
    seed = as_int(value)
    if seed < 0:
        raise ValueError(f"got {seed}; a seed must be 0 or more")
    return seed


def as_count(value: Any) -> int:
    """A number of prompts: an integer of at least 2, the fewest any decision rule
    (a t-test, a bootstrap) can work with."""
    n = as_int(value)
    if n < 2:
        raise ValueError(f"got {n}; the decision rules need at least 2 prompts")
    return n


def as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"got {value!r}")
    return value


def as_alpha(value: Any) -> float:
    number = as_number(value)
    if not 0.0 < number < 0.5:
        raise ValueError(f"got {value!r}, which is not between 0 and 0.5")
    return number


def as_choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ValueError(f"got {value!r}")
        return str(value)

    return parse


def as_components(value: Any) -> tuple[str, ...]:
    """A component address or a list of them, each checked by the address grammar
    (:mod:`mechcheck.addresses`, its only owner) and kept as written."""
    from mechcheck.addresses import Address
    from mechcheck.errors import AddressError

    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("got an empty list")
    for item in items:
        try:
            Address.parse(item)
        except AddressError as exc:
            reason = exc.message + (f" ({exc.hint})" if exc.hint else "")
            raise ValueError(reason) from None
    return tuple(items)


def as_saes(value: Any) -> dict[str, str]:
    """``{NAME: path}``: sparse autoencoders by name (letters, digits, ``_``, ``-``), each a
    ``.safetensors`` file or a SAELens folder, relative to the claim file."""
    import re

    if not isinstance(value, dict) or not value:
        raise ValueError(f"got {value!r}")
    for name, path in value.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
            raise ValueError(f"the SAE name {name!r} is not a name (letters, digits, _ and -, "
                             "not starting with a digit)")
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"the path of SAE {name!r} must be text, got {path!r}")
    return dict(value)


def as_task(value: Any) -> dict[str, Any]:
    """``{name: ..., n: ..., seed: ..., <task parameters>}``: ``n`` at least 2, ``seed``
    0 or more."""
    if not isinstance(value, dict):
        raise ValueError(f"got {value!r}")
    if not isinstance(value.get("name"), str) or not value["name"].strip():
        raise ValueError(f"the task has no name, got {value!r}")
    for key in ("n", "seed"):
        if key in value and (isinstance(value[key], bool) or not isinstance(value[key], int)):
            raise ValueError(f"{key} must be an integer, got {value[key]!r}")
    if value.get("n", 2) < 2:
        raise ValueError(f"n must be at least 2 (the decision rules need at least 2 "
                         f"prompts), got {value['n']!r}")
    if value.get("seed", 0) < 0:
        raise ValueError(f"seed must be 0 or more, got {value['seed']!r}")
    return dict(value)


def as_checkpoints(value: Any) -> tuple[str, ...]:
    """A non-empty list of checkpoint names (numbers are accepted and stringified)."""
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(i, bool) or not isinstance(i, (str, int)) for i in items):
        raise ValueError(f"got {value!r}")
    names = tuple(str(i) for i in items)
    if len(set(names)) != len(names):
        raise ValueError(f"got a repeated checkpoint in {list(names)}")
    return names


def as_positions(value: Any) -> tuple[int | str, ...]:
    """``last``, a position name, an index, or a list of indices and names."""
    items = value if isinstance(value, list) else [value]
    if not items:
        raise ValueError("got an empty list")
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ValueError(f"got {item!r}")
    return tuple(items)


# Keys every claim may carry, whatever its kind.
COMMON_KEYS: Mapping[str, KeySpec] = {
    spec.name: spec
    for spec in (
        KeySpec(name="id", expected="a unique name such as head_9_9_necessary", parse=as_str,
                required=True),
        KeySpec(name="kind", expected="a claim kind such as necessary", parse=as_str,
                required=True),
        KeySpec(name="description", expected="free text", parse=as_str),
        KeySpec(name="model", expected="a folder, hf:<repo id>[@<revision>] or zoo:<name>",
                parse=as_str, required=True),
        KeySpec(name="data", expected="a .jsonl or .csv file next to the claim file",
                parse=as_str),
        KeySpec(name="task", parse=as_task,
                expected="a task generator, e.g. {name: ioi, n: 200, seed: 0} (n at least "
                "2, seed 0 or more)"),
        KeySpec(name="alpha", expected="a number between 0 and 0.5, e.g. 0.05",
                parse=as_alpha, default=0.05),
        KeySpec(name="seed", expected="an integer of 0 or more, e.g. 0", parse=as_seed,
                default=0),
        KeySpec(name="n", parse=as_count,
                expected="an integer of at least 2: use the first n rows"),
        KeySpec(name="test", expected="one of robust (the default), t, wilcoxon, "
                "permutation, bootstrap",
                parse=RegisteredName("rules", ("robust", "t", "wilcoxon", "permutation",
                                               "bootstrap")),
                default="robust"),
        KeySpec(name="xfail", expected="a reason string: the claim is expected to fail",
                parse=as_str),
        KeySpec(name="xfail_before", parse=as_str,
                expected="a checkpoint name: on the checkpoints listed before it the claim is "
                "expected to fail (strict xfail), e.g. before a phase change"),
        KeySpec(name="saes", parse=as_saes,
                expected="a mapping of SAE names to .safetensors files or SAELens folders "
                "next to the claim file, e.g. {res6: sae_l6.safetensors}"),
        KeySpec(name="skip_if_unavailable", parse=as_bool, default=False,
                expected="true or false: skip (not fail) when an hf: model is neither in "
                "the local HF cache nor reachable"),
        KeySpec(name="each", parse=as_bool, default=False,
                expected="true or false: one claim per component of components: (or per "
                "layer of layers: for decodes and traced), named id[<component>]"),
    )
}

# Keys allowed at the top of a claim file.  All but ``claims`` and ``correction``
# are defaults that a claim may override.
FILE_KEYS: Mapping[str, KeySpec] = {
    **{k: COMMON_KEYS[k] for k in ("model", "data", "task", "alpha", "seed", "n", "test",
                                   "description", "skip_if_unavailable", "xfail_before",
                                   "saes", "each")},
    "metric": KeySpec(name="metric", expected="a metric such as logit_diff, logprob, prob, "
                      "accuracy or kl", parse=as_str),
    "correction": KeySpec(name="correction", expected="one of holm, bh, none",
                          parse=as_choice("holm", "bh", "none"), default="holm"),
    "checkpoints": KeySpec(name="checkpoints", parse=as_checkpoints,
                           expected="a list of checkpoint names: hf revisions such as "
                           "step1000, subfolders of a local model, or zoo checkpoints"),
}
