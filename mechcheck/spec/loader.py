"""Read a YAML claim file into :class:`~mechcheck.spec.schema.ClaimSpec` objects.

The file is read with PyYAML's *safe* composer only: the loader walks the composed
nodes itself, so it keeps every key's line number, rejects duplicate keys (which
``yaml.safe_load`` silently drops) and refuses any tag that is not plain YAML
(``!!python/object`` and friends).  It never executes anything from the file.

Errors are values, not exceptions: a file that cannot be used at all becomes a
:class:`~mechcheck.spec.schema.ClaimFile` whose ``error`` is set, and each bad claim
becomes a :class:`~mechcheck.errors.ClaimSpecError` in ``ClaimFile.claims`` next to the
good ones, so one mistake never hides the others.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mechcheck.errors import ClaimSpecError, closest
from mechcheck.spec.schema import COMMON_KEYS, FILE_KEYS, ClaimFile, ClaimSpec, KeySpec

if TYPE_CHECKING:
    from mechcheck.stats import Correction

__all__ = ["claim_name", "load_claim_file", "parse_claim_text"]

Kinds = Mapping[str, Mapping[str, KeySpec]]

_TAG = "tag:yaml.org,2002:"
_MAP_TAG = _TAG + "map"
_SEQ_TAG = _TAG + "seq"
_STR_TAG = _TAG + "str"
_NULL_TAG = _TAG + "null"
_MERGE_TAG = _TAG + "merge"
_VALUE_TAG = _TAG + "value"
_SCALAR_TAGS = frozenset(
    _TAG + name for name in ("null", "bool", "int", "float", "binary", "timestamp", "str")
)
# Aliases can make a tiny file expand to a huge value ("billion laughs"): refuse it.
_MAX_NODES = 100_000
# Top-level keys that are not defaults for claims.
_FILE_ONLY = frozenset({"claims", "correction", "checkpoints"})
_PROMPT_SOURCES = frozenset({"data", "task"})
_SPEC_FIELDS = ("model", "data", "task", "alpha", "seed", "n", "test", "xfail", "description",
                "skip_if_unavailable", "xfail_before")
# Explicit tags such as ``!!int abc`` or ``!!timestamp x`` make PyYAML's scalar
# constructors raise any of these.
_SCALAR_ERRORS = (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError,
                  OverflowError, IndexError)


# ---------------------------------------------------------------------------
# Public API


def load_claim_file(path: str | os.PathLike[str], kinds: Kinds) -> ClaimFile:
    """Read and check the claim file at ``path``.

    Args:
        path: the YAML claim file.
        kinds: each registered claim kind mapped to the keys it accepts beyond
            :data:`~mechcheck.spec.schema.COMMON_KEYS`.

    Returns:
        The parsed file. It never raises for a bad or missing file: ``ClaimFile.error``
        (whole-file problem) or the errors among ``ClaimFile.claims`` say what is wrong.
    """
    name = os.fsdecode(path)
    try:
        text = Path(name).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        error = ClaimSpecError(
            f"cannot read the claim file: {reason}",
            path=name,
            hint="check that the path exists and is a UTF-8 text file",
        )
        return ClaimFile(path=name, error=error)
    return parse_claim_text(text, name, kinds)


def parse_claim_text(
    text: str, path: str, kinds: Kinds, *, base_dir: str | None = None
) -> ClaimFile:
    """Check the claim-file text ``text`` as if it had been read from ``path``.

    Args:
        text: the YAML text.
        path: reported in every error and stored in every spec, as given.
        kinds: each registered claim kind mapped to the keys it accepts beyond
            :data:`~mechcheck.spec.schema.COMMON_KEYS`.
        base_dir: the folder that relative paths in the claims are resolved against;
            defaults to the (absolute) folder of ``path``.

    Returns:
        The parsed file; it never raises for bad text.
    """
    path = os.fsdecode(path)
    builder = _Builder()
    try:
        header = _read_header(_compose(text), kinds, builder)
    except ClaimSpecError as exc:
        return ClaimFile(path=path, error=exc.located(path=path))
    folder = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(path))
    ctx = _Context(path=path, kinds=kinds, header=header, base_dir=folder, builder=builder)
    claims = tuple(_claim_or_error(node, ctx) for node in header.claim_nodes)
    return ClaimFile(path=path, claims=claims, correction=header.correction,
                     checkpoints=header.checkpoints)


def claim_name(item: ClaimSpec | ClaimSpecError, index: int) -> str:
    """A name for the ``index``-th (0-based) claim of a file, spec or error.

    Returns:
        The claim's id when known, else ``"claim[<index>]"``.
    """
    claim_id = item.id if isinstance(item, ClaimSpec) else getattr(item, "claim_id", None)
    return claim_id if claim_id else f"claim[{index}]"


# ---------------------------------------------------------------------------
# YAML nodes -> plain values, with lines


@dataclass(frozen=True, slots=True)
class _Value:
    """A key's constructed (unparsed) value and where it was written."""

    raw: Any
    key_line: int
    line: int


def _line(node: Node) -> int:
    return node.start_mark.line + 1


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(_TAG):] if tag.startswith(_TAG) else tag


def _compose(text: str) -> Node | None:
    """The single YAML document in ``text`` as a node tree (nothing constructed)."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise _yaml_error(exc, text) from None
    except RecursionError:
        raise ClaimSpecError(
            "not valid YAML: the file is nested too deeply", line=1,
            hint="flatten the nesting of lists and mappings") from None


def _yaml_error(exc: yaml.YAMLError, text: str) -> ClaimSpecError:
    """A YAML syntax error as a ClaimSpecError with the line and column YAML reported."""
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return ClaimSpecError(
            f"not valid YAML at line {line}: {exc.reason} ({exc.character!r})", line=line,
            hint=f"remove the special character near line {line}")
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return ClaimSpecError(f"not valid YAML: {problem}", line=1,
                              hint="check indentation and quoting")
    line, column = mark.line + 1, mark.column + 1
    context = getattr(exc, "context", None)
    message = f"not valid YAML at line {line}, column {column}: {problem}"
    if context:
        message += f" ({context})"
    hint = f"check indentation and quoting near line {line}"
    if "'\\t'" in problem:
        hint += "; indent with spaces, not tabs"
    return ClaimSpecError(message, line=line, hint=hint)


@dataclass(slots=True)
class _Builder:
    """Constructs plain Python values from safe YAML nodes, checking as it goes.

    Only the standard scalar tags, ``!!seq`` and ``!!map`` are accepted; duplicate keys
    in a mapping and recursive aliases are errors.  Values shared through aliases are
    built once, as PyYAML does.
    """

    memo: dict[int, tuple[Any, int]] = field(default_factory=dict)
    active: set[int] = field(default_factory=set)
    scalars: SafeConstructor = field(default_factory=SafeConstructor)

    def value(self, node: Node) -> Any:
        """The plain value of ``node``; raises ClaimSpecError with the line at fault."""
        try:
            return self._build(node)[0]
        except RecursionError:
            raise ClaimSpecError("the value is nested too deeply", line=_line(node),
                                 hint="flatten the nesting of lists and mappings") from None

    def pairs(self, node: MappingNode) -> list[tuple[Any, Node, Node]]:
        """``(key, key node, value node)`` of a mapping, ``<<`` merges applied.

        Raises:
            ClaimSpecError: a key is repeated, is not a scalar, or a merge is malformed.
        """
        own: dict[Any, tuple[Node, Node]] = {}
        merged: dict[Any, tuple[Node, Node]] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merged.update(self._merge_sources(value_node))
                continue
            key = self._key(key_node)
            if key in own:
                raise ClaimSpecError(
                    f"duplicate key '{key_node.value}' (line {_line(own[key][0])} "
                    f"already sets it)", line=_line(key_node), key=str(key_node.value),
                    hint="write each key once per mapping; YAML would keep only the last")
            own[key] = (key_node, value_node)
        both = {**merged, **own}
        return [(key, key_node, value_node) for key, (key_node, value_node) in both.items()]

    def _key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise ClaimSpecError("a mapping key must be a plain name, not a list or mapping",
                                 line=_line(node), hint="write keys as plain words")
        return self._scalar(node)

    def _merge_sources(self, node: Node) -> dict[Any, tuple[Node, Node]]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        result: dict[Any, tuple[Node, Node]] = {}
        for source in reversed(sources):  # earlier sources win: apply them last
            if not isinstance(source, MappingNode) or source.tag != _MAP_TAG:
                raise ClaimSpecError("'<<' must merge a mapping or a list of mappings",
                                     line=_line(node), hint="merge an anchored mapping: <<: *name")
            self._enter(source)
            try:
                result.update({k: (kn, vn) for k, kn, vn in self.pairs(source)})
            finally:
                self.active.discard(id(source))
        return result

    def _enter(self, node: Node) -> None:
        if id(node) in self.active:
            raise ClaimSpecError("an alias refers to the mapping or list that contains it",
                                 line=_line(node), hint="remove the recursive alias")
        self.active.add(id(node))

    def _build(self, node: Node) -> tuple[Any, int]:
        """``(value, number of nodes it expands to)``, memoised per node."""
        if id(node) in self.memo:
            return self.memo[id(node)]
        self._enter(node)
        try:
            built = self._build_new(node)
        finally:
            self.active.discard(id(node))
        if built[1] > _MAX_NODES:
            raise ClaimSpecError(
                f"the value expands to more than {_MAX_NODES} items", line=_line(node),
                hint="claim files should not use aliases to build huge values")
        self.memo[id(node)] = built
        return built

    def _build_new(self, node: Node) -> tuple[Any, int]:
        if isinstance(node, ScalarNode):
            return self._scalar(node), 1
        if isinstance(node, SequenceNode) and node.tag == _SEQ_TAG:
            items = [self._build(child) for child in node.value]
            return [value for value, _ in items], 1 + sum(size for _, size in items)
        if isinstance(node, MappingNode) and node.tag == _MAP_TAG:
            result: dict[Any, Any] = {}
            size = 1
            for key, _, value_node in self.pairs(node):
                result[key], count = self._build(value_node)
                size += count
            return result, size
        raise _tag_error(node)

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag == _VALUE_TAG:  # a plain "=": PyYAML's safe loader has no constructor
            return node.value
        if node.tag not in _SCALAR_TAGS:
            raise _tag_error(node)
        try:
            return SafeConstructor.yaml_constructors[node.tag](self.scalars, node)
        except _SCALAR_ERRORS as exc:
            raise ClaimSpecError(
                f"cannot read {node.value!r} as {_show_tag(node.tag)}: {exc}",
                line=_line(node), hint="fix the value or remove the explicit tag") from None


def _tag_error(node: Node) -> ClaimSpecError:
    return ClaimSpecError(
        f"the YAML tag {_show_tag(node.tag)} is not allowed: claim files hold plain "
        f"values only, and are never run as code", line=_line(node),
        hint="remove the tag (anything starting with '!')")


# ---------------------------------------------------------------------------
# The file header: defaults, correction and the claims list


@dataclass(frozen=True, slots=True)
class _Header:
    """What the top level of a claim file says besides the claims themselves."""

    defaults: dict[str, _Value]
    correction: Correction
    claim_nodes: list[Node]
    checkpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Context:
    """Everything a single claim is checked against."""

    path: str
    kinds: Kinds
    header: _Header
    base_dir: str
    builder: _Builder
    seen_ids: dict[str, int] = field(default_factory=dict)


def _read_header(root: Node | None, kinds: Kinds, builder: _Builder) -> _Header:
    """Check the top-level mapping; raises ClaimSpecError for a whole-file problem."""
    if root is None or (isinstance(root, ScalarNode) and root.tag == _NULL_TAG):
        raise ClaimSpecError("the claim file is empty", line=1,
                             hint="start with a `claims:` list of claims")
    if not isinstance(root, MappingNode) or root.tag != _MAP_TAG:
        raise ClaimSpecError(
            "the top level of a claim file must be a mapping (keys such as model, data "
            "and claims)", line=_line(root), hint="write `key: value` lines and a `claims:` list")
    allowed = _top_level_keys(kinds)
    claims_node: Node | None = None
    for _, key_node, value_node in builder.pairs(root):
        _check_known(str(key_node.value), allowed, _line(key_node), "top-level keys")
        if key_node.value == "claims":
            claims_node = value_node
    defaults = _mapping_values(root, builder, skip="claims")
    for name, value in defaults.items():
        if name in FILE_KEYS:
            _parse_value(name, FILE_KEYS[name], value.raw, value.line)
    checkpoints = defaults.get("checkpoints")
    return _Header(defaults, _correction(defaults), _claim_nodes(claims_node, root),
                   FILE_KEYS["checkpoints"].parse(checkpoints.raw) if checkpoints else ())


def _mapping_values(node: MappingNode, builder: _Builder, skip: str = "") -> dict[str, _Value]:
    """Each key of a mapping (as written) with its constructed value and lines."""
    values: dict[str, _Value] = {}
    for _, key_node, value_node in builder.pairs(node):
        name = str(key_node.value)
        if name == skip:
            continue
        try:
            raw = builder.value(value_node)
        except ClaimSpecError as exc:
            exc.key = name  # a nested problem is reported against the top key
            raise
        values[name] = _Value(raw, _line(key_node), _line(value_node))
    return values


def _top_level_keys(kinds: Kinds) -> list[str]:
    kind_keys = {key for keys in kinds.values() for key in keys}
    return sorted(set(FILE_KEYS) | {"claims"} | kind_keys)


def _check_known(name: str, allowed: list[str], line: int, what: str) -> None:
    """Raise an 'unknown key' error with suggestions unless ``name`` is allowed."""
    if name in allowed:
        return
    near = closest(name, allowed)
    guess = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
    raise ClaimSpecError(f"unknown key '{name}'", line=line, key=name,
                         hint=f"{guess}{what}: {', '.join(allowed)}")


def _correction(defaults: dict[str, _Value]) -> Correction:
    spec = FILE_KEYS["correction"]
    if "correction" not in defaults:
        return spec.default
    return cast("Correction", spec.parse(defaults["correction"].raw))  # checked on reading


def _claim_nodes(node: Node | None, root: Node) -> list[Node]:
    """The entries of the ``claims:`` list; raises if it is missing, not a list or empty."""
    hint = "add a `claims:` list whose entries start with `- id: <name>` and `kind: <kind>`"
    if node is None:
        raise ClaimSpecError("the file has no `claims:` list", line=_line(root),
                             key="claims", hint=hint)
    if isinstance(node, ScalarNode) and node.tag == _NULL_TAG:
        raise ClaimSpecError("claims: the list is empty", line=_line(node), key="claims",
                             hint=hint)
    if not isinstance(node, SequenceNode) or node.tag != _SEQ_TAG:
        if node.tag not in (_MAP_TAG, _SEQ_TAG) and node.tag not in _SCALAR_TAGS:
            raise _tag_error(node).located(key="claims")
        raise ClaimSpecError("claims: must be a list of claims", line=_line(node),
                             key="claims", hint=hint)
    if not node.value:
        raise ClaimSpecError("claims: the list is empty", line=_line(node), key="claims",
                             hint=hint)
    return list(node.value)


def _parse_value(name: str, spec: KeySpec, raw: Any, line: int) -> Any:
    """``spec.parse(raw)``, with a failure turned into a located ClaimSpecError."""
    try:
        value = spec.parse(raw)
    except (ValueError, TypeError) as exc:
        raise ClaimSpecError(f"{name}: {exc}", line=line, key=name,
                             hint=f"expected {spec.expected}") from None
    if name == "n" and isinstance(value, int) and value < 1:
        raise ClaimSpecError(f"n: got {value}, which is not a positive integer", line=line,
                             key=name, hint=f"expected {spec.expected}")
    return value


# ---------------------------------------------------------------------------
# One claim


def _claim_or_error(node: Node, ctx: _Context) -> ClaimSpec | ClaimSpecError:
    """The claim at ``node`` as a spec, or the first error found in it."""
    try:
        return _parse_claim(node, ctx)
    except ClaimSpecError as exc:
        return exc.located(path=ctx.path, line=_line(node), claim_id=_guess_id(node))


def _guess_id(node: Node) -> str | None:
    """The claim's id as written, if it is a plain string: used to label errors."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if (isinstance(key_node, ScalarNode) and key_node.value == "id"
                and isinstance(value_node, ScalarNode) and value_node.tag == _STR_TAG
                and value_node.value.strip()):
            return value_node.value
    return None


def _parse_claim(node: Node, ctx: _Context) -> ClaimSpec:
    if not isinstance(node, MappingNode) or node.tag != _MAP_TAG:
        if node.tag not in (_MAP_TAG, _SEQ_TAG) and node.tag not in _SCALAR_TAGS:
            raise _tag_error(node)
        raise ClaimSpecError(
            "each entry of claims: must be a mapping with id, kind and the kind's keys",
            line=_line(node), hint="start each claim with `- id: <name>` and indent its keys")
    own = _mapping_values(node, ctx.builder)
    claim_id = _claim_id(own, ctx)
    kind, accepted = _claim_kind(own, ctx.kinds)
    for name, value in own.items():
        _check_known(name, sorted(accepted), value.key_line, f"{kind} claims accept")
    merged = _merge(own, ctx.header.defaults, accepted)
    parsed = {name: _parse_value(name, accepted[name], value.raw, value.line)
              for name, value in merged.items()}
    _check_required(parsed, accepted)
    return _spec(claim_id, kind, node, parsed, merged, accepted, ctx)


def _claim_id(own: dict[str, _Value], ctx: _Context) -> str:
    """The claim's id, checked and recorded as used."""
    spec = COMMON_KEYS["id"]
    if "id" not in own:
        raise ClaimSpecError("the claim has no id", key="id",
                             hint=f"add `id:` to the claim: {spec.expected}")
    value = own["id"]
    claim_id = _parse_value("id", spec, value.raw, value.line)
    if claim_id in ctx.seen_ids:
        raise ClaimSpecError(
            f"duplicate id '{claim_id}': line {ctx.seen_ids[claim_id]} already uses it",
            line=value.line, key="id", hint="give every claim in the file its own id")
    ctx.seen_ids[claim_id] = value.line
    return claim_id


def _claim_kind(own: dict[str, _Value], kinds: Kinds) -> tuple[str, dict[str, KeySpec]]:
    """The claim's kind and every key that kind accepts (common keys included)."""
    known = sorted(kinds)
    listing = f"registered kinds: {', '.join(known)}" if known else "no kinds are registered"
    if "kind" not in own:
        raise ClaimSpecError("the claim has no kind", key="kind",
                             hint=f"add `kind: <kind>` to the claim; {listing}")
    value = own["kind"]
    kind = _parse_value("kind", COMMON_KEYS["kind"], value.raw, value.line)
    if kind not in kinds:
        near = closest(kind, known)
        guess = f"did you mean {' or '.join(repr(n) for n in near)}? " if near else ""
        raise ClaimSpecError(f"unknown kind '{kind}'", line=value.line, key="kind",
                             hint=f"{guess}{listing}")
    return kind, {**kinds[kind], **COMMON_KEYS}


def _merge(own: dict[str, _Value], defaults: dict[str, _Value],
           accepted: Mapping[str, KeySpec]) -> dict[str, _Value]:
    """File-level defaults that this claim accepts, overridden by the claim's own keys.

    ``data`` and ``task`` are one choice, the prompts: a claim that gives either one
    inherits neither from the file. A claim that gives both is an error.
    """
    if "data" in own and "task" in own:
        raise ClaimSpecError("the claim has both data: and task:", line=own["task"].key_line,
                             key="task", hint="give one: a file of prompts (data:) or a "
                             "task generator (task:)")
    skip = _PROMPT_SOURCES if _PROMPT_SOURCES & own.keys() else frozenset()
    inherited = {name: value for name, value in defaults.items()
                 if name in accepted and name not in _FILE_ONLY and name not in skip}
    return {**inherited, **own}


def _check_required(parsed: dict[str, Any], accepted: Mapping[str, KeySpec]) -> None:
    missing = [name for name, spec in accepted.items() if spec.required and name not in parsed]
    if not missing:
        return
    first = accepted[missing[0]]
    names = ", ".join(f"'{name}'" for name in missing)
    plural = "s" if len(missing) > 1 else ""
    raise ClaimSpecError(f"missing required key{plural} {names}", key=missing[0],
                         hint=f"add `{missing[0]}:` to the claim (or to the "
                              f"top of the file): expected {first.expected}")


def _spec(claim_id: str, kind: str, node: Node, parsed: dict[str, Any],
          merged: dict[str, _Value], accepted: Mapping[str, KeySpec],
          ctx: _Context) -> ClaimSpec:
    """Assemble the ClaimSpec from checked values."""
    common = {name: parsed.get(name, COMMON_KEYS[name].default) for name in _SPEC_FIELDS}
    params = {name: spec.default for name, spec in accepted.items()
              if name not in COMMON_KEYS and spec.default is not None}
    params.update({name: value for name, value in parsed.items() if name not in COMMON_KEYS})
    return ClaimSpec(
        id=claim_id, kind=kind, path=ctx.path, line=_line(node), base_dir=ctx.base_dir,
        correction=ctx.header.correction, params=params,
        key_lines={name: value.key_line for name, value in merged.items()}, **common)
