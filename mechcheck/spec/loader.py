"""Read a YAML claim file into :class:`~mechcheck.spec.schema.ClaimSpec` objects.

The file is read with PyYAML's *safe* composer only: the loader walks the composed
nodes itself, so it keeps every key's line number, rejects duplicate keys (which
``yaml.safe_load`` silently drops) and refuses any tag that is not plain YAML
(``!!python/object`` and friends).  It never executes anything from the file.

:func:`parse_claim_mapping` checks the same contents given as a Python mapping (the
``mechcheck`` fixture's keyword arguments) with the same rules and messages, every key
located at one given line.

Errors are values, not exceptions: a file that cannot be used at all becomes a
:class:`~mechcheck.spec.schema.ClaimFile` whose ``error`` is set, and each bad claim
becomes a :class:`~mechcheck.errors.ClaimSpecError` in ``ClaimFile.claims`` next to the
good ones, so one mistake never hides the others.  The error of a claim lists every
problem found in it (unknown keys, bad values, missing keys), so that one run shows
them all.  Aliases and merge keys are expanded in linear time and counted as written
out against the size limits of :mod:`mechcheck.spec.nodes`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mechcheck.errors import ClaimSpecError, closest
from mechcheck.spec.nodes import (
    MAP_TAG,
    MAX_FILE_CHARS,
    MAX_FILE_NODES,
    MAX_NODES,
    NULL_TAG,
    SCALAR_TAGS,
    SEQ_TAG,
    STR_TAG,
    Builder,
    FileTooLarge,
    compose,
    line_of,
    tag_error,
)
from mechcheck.spec.schema import COMMON_KEYS, FILE_KEYS, ClaimFile, ClaimSpec, KeySpec

if TYPE_CHECKING:
    from mechcheck.stats import Correction

__all__ = ["MAX_FILE_CHARS", "MAX_FILE_NODES", "MAX_NODES", "claim_name", "load_claim_file",
           "parse_claim_mapping", "parse_claim_text"]

Kinds = Mapping[str, Mapping[str, KeySpec]]
_T = TypeVar("_T")

# Characters of the names mechcheck makes up (<id>@line<N>, claim[<i>], <id>[<checkpoint>]),
# which an id may therefore not contain.
_RESERVED_ID_CHARS = "@[]"
# A claim with more problems than this lists the first ones and counts the rest.
_MAX_LISTED = 20
# Top-level keys that are not defaults for claims.
_FILE_ONLY = frozenset({"claims", "correction", "checkpoints"})
_PROMPT_SOURCES = frozenset({"data", "task"})
_SPEC_FIELDS = ("model", "data", "task", "alpha", "seed", "n", "test", "xfail", "description",
                "skip_if_unavailable", "xfail_before", "saes", "each")


# ---------------------------------------------------------------------------
# Public API


def load_claim_file(path: str | os.PathLike[str], kinds: Kinds, *,
                    shown: str | None = None,
                    common: Mapping[str, KeySpec] | None = None) -> ClaimFile:
    """Read and check the claim file at ``path``.

    Args:
        path: the YAML claim file.
        kinds: each registered claim kind mapped to the keys it accepts beyond
            :data:`~mechcheck.spec.schema.COMMON_KEYS`.
        shown: the name messages and results give the file (default: ``path``).
        common: the keys every claim may carry (default
            :data:`~mechcheck.spec.schema.COMMON_KEYS`); a registry's
            ``common_keys()`` accept its decision rules in ``test:``.

    Returns:
        The parsed file. It never raises for a bad or missing file: ``ClaimFile.error``
        (whole-file problem) or the errors among ``ClaimFile.claims`` say what is wrong.
    """
    name = os.fsdecode(path)
    label = shown if shown is not None else name
    try:
        data = Path(name).read_bytes()
        text = data.decode("utf-8-sig")
    except OSError as exc:
        error = ClaimSpecError(f"cannot read the claim file: {exc.strerror or exc}",
                               path=label,
                               hint="check that the path exists and is a UTF-8 text file")
        return ClaimFile(path=label, error=error)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        error = ClaimSpecError(
            f"the claim file is not UTF-8 text: byte {data[exc.start]:#04x} at line {line} "
            f"({exc.reason})", path=label, line=line,
            hint=f"save the file as UTF-8 (the byte near line {line} is likely an accented "
            "letter in another encoding such as Latin-1)")
        return ClaimFile(path=label, error=error)
    if shown is not None:
        return parse_claim_text(text, shown, kinds, base_dir=str(Path(name).parent),
                                common=common)
    return parse_claim_text(text, name, kinds, common=common)


def parse_claim_text(
    text: str, path: str, kinds: Kinds, *, base_dir: str | None = None,
    common: Mapping[str, KeySpec] | None = None,
) -> ClaimFile:
    """Check the claim-file text ``text`` as if it had been read from ``path``.

    Args:
        text: the YAML text.
        path: reported in every error and stored in every spec, as given.
        kinds: each registered claim kind mapped to the keys it accepts beyond
            :data:`~mechcheck.spec.schema.COMMON_KEYS`.
        base_dir: the folder that relative paths in the claims are resolved against;
            defaults to the (absolute) folder of ``path``.
        common: the keys every claim may carry (default
            :data:`~mechcheck.spec.schema.COMMON_KEYS`).

    Returns:
        The parsed file; it never raises for bad text.
    """
    path = os.fsdecode(path)
    builder = Builder()
    common = COMMON_KEYS if common is None else common
    try:
        header = _read_header(compose(text), kinds, builder, common)
    except ClaimSpecError as exc:
        return ClaimFile(path=path, error=exc.located(path=path))
    except FileTooLarge as exc:
        return ClaimFile(path=path, error=exc.error.located(path=path))
    return _parse_claims(header, path, kinds, builder, base_dir, line=None, common=common)


def parse_claim_mapping(mapping: Mapping[str, Any], path: str, line: int, *, kinds: Kinds,
                        base_dir: str | None = None,
                        common: Mapping[str, KeySpec] | None = None) -> ClaimFile:
    """Check a claim file's contents given as a mapping, as if read from ``path``.

    The mapping is what a claim file holds (top-level defaults, ``correction``,
    ``checkpoints`` and a ``claims`` list of mappings), made of plain values as
    ``yaml.safe_load`` returns them: text, numbers, booleans, None, lists and mappings.
    It is checked by the same rules as a file, with the same messages; every key of it
    is reported at ``line`` (the Python form gives the test function's line).

    Args:
        mapping: the contents.
        path: reported in every error and stored in every spec, as given.
        line: the 1-based line that every claim and key is located at.
        kinds: each registered claim kind mapped to the keys it accepts beyond
            :data:`~mechcheck.spec.schema.COMMON_KEYS`.
        base_dir: the folder that relative paths in the claims are resolved against;
            defaults to the (absolute) folder of ``path``.
        common: the keys every claim may carry (default
            :data:`~mechcheck.spec.schema.COMMON_KEYS`), as for :func:`load_claim_file`.

    Returns:
        The parsed file; it never raises for bad contents.
    """
    path = os.fsdecode(path)
    common = COMMON_KEYS if common is None else common
    builder = Builder()
    try:
        header = _mapping_header(mapping, kinds, line, builder, common)
    except ClaimSpecError as exc:
        return ClaimFile(path=path, error=exc.located(path=path))
    except FileTooLarge as exc:
        return ClaimFile(path=path, error=exc.error.located(path=path))
    return _parse_claims(header, path, kinds, builder, base_dir, line=line, common=common)


def _parse_claims(header: _Header, path: str, kinds: Kinds, builder: Builder,
                  base_dir: str | None, *, line: int | None,
                  common: Mapping[str, KeySpec] = COMMON_KEYS) -> ClaimFile:
    folder = base_dir if base_dir is not None else os.path.dirname(os.path.abspath(path))
    ctx = _Context(path=path, kinds=kinds, header=header, base_dir=folder, builder=builder,
                   line=line, common=common)
    try:
        claims = tuple(_claim_or_error(node, i, ctx) for i, node in enumerate(header.claim_nodes))
    except FileTooLarge as exc:
        return ClaimFile(path=path, error=exc.error.located(path=path))
    return ClaimFile(path=path, claims=claims, correction=header.correction,
                     checkpoints=header.checkpoints)


def claim_name(item: ClaimSpec | ClaimSpecError, index: int) -> str:
    """A name for the ``index``-th (0-based) claim of a file, spec or error.

    Returns:
        The claim's id when known, else ``"claim[<index>]"``.
    """
    claim_id = item.id if isinstance(item, ClaimSpec) else getattr(item, "claim_id", None)
    return claim_id if claim_id else f"claim[{index}]"


@dataclass(frozen=True, slots=True)
class _Value:
    """A key's constructed (unparsed) value, where it was written and its size."""

    raw: Any
    key_line: int
    line: int
    size: int = 1


# ---------------------------------------------------------------------------
# The file header: defaults, correction and the claims list


@dataclass(frozen=True, slots=True)
class _Header:
    """What the top level of a claim file says besides the claims themselves."""

    defaults: dict[str, _Value]
    correction: Correction
    claim_nodes: list[Any]  # YAML nodes, or the claims of a mapping
    checkpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Context:
    """Everything a single claim is checked against."""

    path: str
    kinds: Kinds
    header: _Header
    base_dir: str
    builder: Builder
    line: int | None = None  # a mapping's one line; None for YAML (each node's own)
    common: Mapping[str, KeySpec] = field(default_factory=lambda: COMMON_KEYS)
    seen_ids: dict[str, int] = field(default_factory=dict)
    # Parsed lists and mappings by (id of the value, id of the parser): a value that
    # aliases or defaults share is checked once, however many claims use it.
    parsed: dict[tuple[int, int], Any] = field(default_factory=dict)


def _read_header(root: Node | None, kinds: Kinds, builder: Builder,
                 common: Mapping[str, KeySpec] = COMMON_KEYS) -> _Header:
    """Check the top-level mapping; raises ClaimSpecError for a whole-file problem."""
    if root is None or (isinstance(root, ScalarNode) and root.tag == NULL_TAG):
        raise ClaimSpecError("the claim file is empty", line=1,
                             hint="start with a `claims:` list of claims")
    if not isinstance(root, MappingNode) or root.tag != MAP_TAG:
        raise ClaimSpecError(
            "the top level of a claim file must be a mapping (keys such as model, data "
            "and claims)", line=line_of(root), hint="write `key: value` lines and a `claims:` list")
    allowed = _top_level_keys(kinds)
    claims_node: Node | None = None
    for _, key_node, value_node in builder.pairs(root):
        _check_known(str(key_node.value), allowed, line_of(key_node), "top-level keys")
        if key_node.value == "claims":
            claims_node = value_node
    defaults = _mapping_values(root, builder, skip="claims")
    return _header(defaults, _claim_nodes(claims_node, root), common)


def _header(defaults: dict[str, _Value], claims: list[Any],
            common: Mapping[str, KeySpec] = COMMON_KEYS) -> _Header:
    for name, value in defaults.items():
        if name in FILE_KEYS:
            spec = common[name] if name in common else FILE_KEYS[name]
            _parse_value(name, spec, value.raw, value.line)
    checkpoints = defaults.get("checkpoints")
    return _Header(defaults, _correction(defaults), claims,
                   FILE_KEYS["checkpoints"].parse(checkpoints.raw) if checkpoints else ())


def _mapping_header(mapping: Any, kinds: Kinds, line: int, builder: Builder,
                    common: Mapping[str, KeySpec] = COMMON_KEYS) -> _Header:
    """:func:`_read_header` for contents given as a mapping, located at ``line``."""
    if not isinstance(mapping, Mapping):
        raise ClaimSpecError(
            "the top level of a claim file must be a mapping (keys such as model, data "
            "and claims)", line=line, hint="pass a mapping with a `claims` list")
    allowed = _top_level_keys(kinds)
    for name in mapping:
        _check_known(str(name), allowed, line, "top-level keys")
    defaults = _python_values(mapping, line, builder, skip="claims")
    hint = "add a `claims:` list whose entries start with `- id: <name>` and `kind: <kind>`"
    if "claims" not in mapping:
        raise ClaimSpecError("the file has no `claims:` list", line=line, key="claims",
                             hint=hint)
    claims = mapping["claims"]
    if claims is None or (isinstance(claims, list) and not claims):
        raise ClaimSpecError("claims: the list is empty", line=line, key="claims", hint=hint)
    if not isinstance(claims, list):
        raise ClaimSpecError("claims: must be a list of claims", line=line, key="claims",
                             hint=hint)
    return _header(defaults, list(claims), common)


_PLAIN = (str, int, float, bool, type(None))


def _python_size(value: Any, line: int) -> int:
    """The number of items a plain value holds (as :class:`Builder` counts them).

    Raises:
        ClaimSpecError: the value is not plain YAML, nested too deeply or too large.
    """
    try:
        size = _count(value)
    except RecursionError:
        raise ClaimSpecError("the value is nested too deeply", line=line,
                             hint="flatten the nesting of lists and mappings") from None
    if size > MAX_NODES:
        raise ClaimSpecError(f"the value expands to more than {MAX_NODES} items", line=line,
                             hint="pass smaller values")
    return size


def _count(value: Any) -> int:
    if isinstance(value, _PLAIN):
        return 1
    if isinstance(value, list):
        return 1 + sum(_count(item) for item in value)
    if isinstance(value, dict) and all(isinstance(k, _PLAIN) for k in value):
        return 1 + sum(_count(item) for item in value.values())
    raise ClaimSpecError(
        f"cannot read {value!r:.60} in a claim: a {type(value).__module__}."
        f"{type(value).__qualname__} is not a plain value",
        hint="pass text, numbers, true/false, None, or lists and mappings of them")


def _python_values(mapping: Mapping[Any, Any], line: int, builder: Builder, skip: str = "",
                   failed: dict[str, ClaimSpecError] | None = None) -> dict[str, _Value]:
    """:func:`_mapping_values` for a mapping of plain values, every one at ``line``."""
    values: dict[str, _Value] = {}
    for key, raw in mapping.items():
        name = str(key)
        if name == skip:
            continue
        try:
            size = _python_size(raw, line)
        except ClaimSpecError as exc:
            error = exc.located(key=name, line=line)
            if failed is None:
                raise error from None
            failed[name] = error
            continue
        builder.charge(size, line, name)
        values[name] = _Value(raw, line, line, size)
    return values


def _mapping_values(node: MappingNode, builder: Builder, skip: str = "",
                    failed: dict[str, ClaimSpecError] | None = None) -> dict[str, _Value]:
    """Each key of a mapping (as written) with its constructed value, lines and size.

    A value that cannot be built raises, or goes into ``failed`` when that is given.
    """
    values: dict[str, _Value] = {}
    for _, key_node, value_node in builder.pairs(node):
        name = str(key_node.value)
        if name == skip:
            continue
        try:
            raw, size = builder.sized(value_node)
        except ClaimSpecError as exc:
            exc.key = name  # a nested problem is reported against the top key
            if failed is None:
                raise
            failed[name] = exc
            continue
        builder.charge(size, line_of(key_node), name)
        values[name] = _Value(raw, line_of(key_node), line_of(value_node), size)
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
        raise ClaimSpecError("the file has no `claims:` list", line=line_of(root),
                             key="claims", hint=hint)
    if isinstance(node, ScalarNode) and node.tag == NULL_TAG:
        raise ClaimSpecError("claims: the list is empty", line=line_of(node), key="claims",
                             hint=hint)
    if not isinstance(node, SequenceNode) or node.tag != SEQ_TAG:
        if node.tag not in (MAP_TAG, SEQ_TAG) and node.tag not in SCALAR_TAGS:
            raise tag_error(node).located(key="claims")
        raise ClaimSpecError("claims: must be a list of claims", line=line_of(node),
                             key="claims", hint=hint)
    if not node.value:
        raise ClaimSpecError("claims: the list is empty", line=line_of(node), key="claims",
                             hint=hint)
    return list(node.value)


def _parse_value(name: str, spec: KeySpec, raw: Any, line: int,
                 cache: dict[tuple[int, int], Any] | None = None) -> Any:
    """``spec.parse(raw)``, with a failure turned into a located ClaimSpecError.

    With ``cache``, a list or mapping already parsed by the same parser is not parsed
    again (its outcome, value or reason, is reused).
    """
    key = (id(raw), id(spec.parse))
    if cache is None or not isinstance(raw, (list, dict)):
        cache = {}  # parse this value afresh
    if key not in cache:
        try:
            cache[key] = spec.parse(raw)
        except (ValueError, TypeError) as exc:
            cache[key] = exc
    outcome = cache[key]
    if isinstance(outcome, (ValueError, TypeError)):
        raise ClaimSpecError(f"{name}: {outcome}", line=line, key=name,
                             hint=f"expected {spec.expected}")
    return outcome


# ---------------------------------------------------------------------------
# One claim


@dataclass(slots=True)
class _Problems:
    """Every error found in one claim, so that one run reports them all.

    Errors about the id and kind come first, then those of keys in line order, then
    missing keys.
    """

    path: str
    claim_line: int
    found: list[tuple[int, int, ClaimSpecError]] = field(default_factory=list)

    def add(self, error: ClaimSpecError, rank: int = 1) -> None:
        line = error.line if error.line is not None else self.claim_line
        self.found.append((rank, line, error))

    def attempt(self, rank: int, check: Callable[..., _T], *args: Any) -> _T | None:
        """``check(*args)``, or None after recording the ClaimSpecError it raised."""
        try:
            return check(*args)
        except ClaimSpecError as exc:
            self.add(exc, rank)
            return None

    def raise_any(self) -> None:
        """Raise the one error found, or one error that lists all of them."""
        if not self.found:
            return
        errors = [error for _, _, error in sorted(self.found, key=lambda f: f[:2])]
        if len(errors) == 1:
            raise errors[0]
        raise _combined(errors, self.path, self.claim_line)


def _combined(errors: list[ClaimSpecError], path: str, claim_line: int) -> ClaimSpecError:
    """One error listing ``errors``, each at its line, located at the first of them."""
    lines = [f"{len(errors)} problems in this claim:"]
    for error in errors[:_MAX_LISTED]:
        where = f"{path}:{error.line if error.line is not None else claim_line}"
        if error.key is not None:
            where += f": key '{error.key}'"
        lines.append(f"  {where}: {error.message}")
        if error.hint:
            lines.append(f"    fix: {error.hint}")
    if len(errors) > _MAX_LISTED:
        lines.append(f"  ... and {len(errors) - _MAX_LISTED} more")
    first = errors[0]
    return ClaimSpecError("\n".join(lines), line=first.line, key=first.key,
                          hint="fix each problem listed above")


def _claim_or_error(node: Node, index: int, ctx: _Context) -> ClaimSpec | ClaimSpecError:
    """The claim at ``node`` as a spec, or the error that lists its problems, labelled
    with the claim's id or, without a usable one, ``claim[<index>]``."""
    line = line_of(node) if ctx.line is None else ctx.line
    guessed = _guess_id(node) if ctx.line is None else _guess_python_id(node)
    try:
        return _parse_claim(node, ctx)
    except ClaimSpecError as exc:
        return exc.located(path=ctx.path, line=line, claim_id=guessed or f"claim[{index}]")


def _guess_python_id(claim: Any) -> str | None:
    """:func:`_guess_id` for a claim given as a mapping."""
    value = claim.get("id") if isinstance(claim, Mapping) else None
    return value if isinstance(value, str) and value.strip() and not _reserved(value) \
        else None


def _guess_id(node: Node) -> str | None:
    """The claim's id as written, if it is a plain string that may be an id: used to
    label errors (an id with reserved characters would look like a made-up name)."""
    if not isinstance(node, MappingNode):
        return None
    for key_node, value_node in node.value:
        if (isinstance(key_node, ScalarNode) and key_node.value == "id"
                and isinstance(value_node, ScalarNode) and value_node.tag == STR_TAG
                and value_node.value.strip() and not _reserved(value_node.value)):
            return value_node.value
    return None


def _reserved(claim_id: str) -> list[str]:
    return [char for char in _RESERVED_ID_CHARS if char in claim_id]


_NOT_A_CLAIM = "each entry of claims: must be a mapping with id, kind and the kind's keys"


def _claim_values(node: Any, ctx: _Context,
                  failed: dict[str, ClaimSpecError]) -> tuple[dict[str, _Value], int]:
    """A claim's own keys with their values, and its line; raises if it is no mapping."""
    if ctx.line is not None:
        if not isinstance(node, Mapping):
            raise ClaimSpecError(_NOT_A_CLAIM, line=ctx.line,
                                 hint="pass each claim as a mapping (keyword arguments)")
        return _python_values(node, ctx.line, ctx.builder, failed=failed), ctx.line
    if not isinstance(node, MappingNode) or node.tag != MAP_TAG:
        if node.tag not in (MAP_TAG, SEQ_TAG) and node.tag not in SCALAR_TAGS:
            raise tag_error(node)
        raise ClaimSpecError(_NOT_A_CLAIM, line=line_of(node),
                             hint="start each claim with `- id: <name>` and indent its keys")
    return _mapping_values(node, ctx.builder, failed=failed), line_of(node)


def _parse_claim(node: Any, ctx: _Context) -> ClaimSpec:
    failed: dict[str, ClaimSpecError] = {}
    own, line = _claim_values(node, ctx, failed)
    problems = _Problems(ctx.path, line)
    for name in ("id", "kind"):
        if name in failed:
            problems.add(failed[name], 0)
    claim_id = None if "id" in failed else problems.attempt(0, _claim_id, own, ctx)
    found = (None if "kind" in failed
             else problems.attempt(0, _claim_kind, own, ctx.kinds, ctx.common))
    kind, accepted = found if found is not None else (None, dict(ctx.common))
    problems.attempt(1, _check_prompt_source, own)
    merged = _merge(own, ctx.header.defaults, accepted, ctx.builder)
    parsed, suggested = _parse_keys(merged, failed, accepted, kind, problems, ctx)
    problems.attempt(1, _check_each, parsed, own, accepted, kind)
    if kind is not None:  # a key that an unknown key's "did you mean" names is not missing
        present = merged.keys() | failed.keys() | suggested
        problems.attempt(2, _check_required, present, accepted)
    problems.raise_any()  # without a problem, the id and the kind are known
    return _spec(cast(str, claim_id), cast(str, kind), line, parsed, merged, accepted, ctx)


def _parse_keys(merged: dict[str, _Value], failed: dict[str, ClaimSpecError],
                accepted: Mapping[str, KeySpec], kind: str | None, problems: _Problems,
                ctx: _Context) -> tuple[dict[str, Any], set[str]]:
    """The parsed value of each key but ``id`` and ``kind`` (checked already), and the
    keys suggested for unknown ones.  An unknown key, a value that could not be built
    (``failed``) or a bad value is a problem, one per key.  Without a known kind, only
    the keys that every claim has can be checked."""
    parsed: dict[str, Any] = {}
    suggested: set[str] = set()
    listing = sorted(accepted)
    lines = {name: value.key_line for name, value in merged.items()}
    lines.update({name: error.line or problems.claim_line for name, error in failed.items()})
    for name, line in lines.items():
        if name in ("id", "kind"):
            continue
        if name not in accepted and kind is not None:
            suggested.update(closest(name, listing))
            problems.attempt(1, _check_known, name, listing, line, f"{kind} claims accept")
        elif name in failed:
            problems.add(failed[name])
        elif name in accepted:
            value = merged[name]
            try:
                parsed[name] = _parse_value(name, accepted[name], value.raw, value.line,
                                            ctx.parsed)
            except ClaimSpecError as exc:
                problems.add(exc)
    return parsed, suggested


def _claim_id(own: dict[str, _Value], ctx: _Context) -> str:
    """The claim's id, checked and recorded as used."""
    spec = COMMON_KEYS["id"]
    if "id" not in own:
        raise ClaimSpecError("the claim has no id", key="id",
                             hint=f"add `id:` to the claim: {spec.expected}")
    value = own["id"]
    claim_id = _parse_value("id", spec, value.raw, value.line)
    reserved = _reserved(claim_id)
    if reserved:
        chars = " and ".join(f"'{char}'" for char in reserved)
        plain = "".join("_" if char in _RESERVED_ID_CHARS else char for char in claim_id)
        raise ClaimSpecError(
            f"id '{claim_id}' contains {chars}: @, [ and ] are kept for the names "
            "mechcheck makes up (<id>@line<N> for a repeated id, claim[<index>] for a "
            "claim without one, <id>[<checkpoint>])", line=value.line, key="id",
            hint=f"use letters, digits, '_', '-' and '.', e.g. '{plain}'")
    if claim_id in ctx.seen_ids:
        raise ClaimSpecError(
            f"duplicate id '{claim_id}': line {ctx.seen_ids[claim_id]} already uses it",
            line=value.line, key="id", hint="give every claim in the file its own id")
    ctx.seen_ids[claim_id] = value.line
    return claim_id


def _claim_kind(own: dict[str, _Value], kinds: Kinds,
                common: Mapping[str, KeySpec] = COMMON_KEYS) -> tuple[str, dict[str, KeySpec]]:
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
    return kind, {**kinds[kind], **common}


def _check_prompt_source(own: dict[str, _Value]) -> None:
    """``data`` and ``task`` are one choice, the prompts: a claim may not give both."""
    if "data" in own and "task" in own:
        raise ClaimSpecError("the claim has both data: and task:", line=own["task"].key_line,
                             key="task", hint="give one: a file of prompts (data:) or a "
                             "task generator (task:)")


def _merge(own: dict[str, _Value], defaults: dict[str, _Value],
           accepted: Mapping[str, KeySpec], builder: Builder) -> dict[str, _Value]:
    """File-level defaults that this claim accepts, overridden by the claim's own keys.

    A claim that gives ``data`` or ``task`` inherits neither from the file.  Each
    inherited value counts against the file's size budget again.
    """
    skip = _PROMPT_SOURCES if _PROMPT_SOURCES & own.keys() else frozenset()
    inherited = {name: value for name, value in defaults.items()
                 if name in accepted and name not in _FILE_ONLY and name not in skip
                 and name not in own}
    for name, value in inherited.items():
        builder.charge(value.size, value.key_line, name)
    return {**inherited, **own}


def _check_each(parsed: dict[str, Any], own: dict[str, _Value],
                accepted: Mapping[str, KeySpec], kind: str | None) -> None:
    """``each: true`` needs a kind with ``components`` (or ``layers``) to split; a file's
    ``each: true`` default leaves the claims of other kinds alone."""
    if not parsed.get("each") or kind is None or {"components", "layers"} & accepted.keys():
        return
    if "each" not in own:
        parsed["each"] = False
        return
    raise ClaimSpecError(
        f"each: true makes one claim per component, but {kind} claims take no "
        "components: (or layers:)", line=own["each"].key_line, key="each",
        hint="remove each: true, or use a kind with components: such as necessary")


def _check_required(present: AbstractSet[str], accepted: Mapping[str, KeySpec]) -> None:
    missing = [name for name, spec in accepted.items()
               if spec.required and name not in present and name not in ("id", "kind")]
    if not missing:
        return
    first = accepted[missing[0]]
    names = ", ".join(f"'{name}'" for name in missing)
    plural = "s" if len(missing) > 1 else ""
    raise ClaimSpecError(f"missing required key{plural} {names}", key=missing[0],
                         hint=f"add `{missing[0]}:` to the claim (or to the "
                              f"top of the file): expected {first.expected}")


def _spec(claim_id: str, kind: str, line: int, parsed: dict[str, Any],
          merged: dict[str, _Value], accepted: Mapping[str, KeySpec],
          ctx: _Context) -> ClaimSpec:
    """Assemble the ClaimSpec from checked values."""
    common = {name: parsed.get(name, COMMON_KEYS[name].default) for name in _SPEC_FIELDS}
    params = {name: spec.default for name, spec in accepted.items()
              if name not in COMMON_KEYS and spec.default is not None}
    params.update({name: value for name, value in parsed.items() if name not in COMMON_KEYS})
    return ClaimSpec(
        id=claim_id, kind=kind, path=ctx.path, line=line, base_dir=ctx.base_dir,
        correction=ctx.header.correction, params=params,
        key_lines={name: value.key_line for name, value in merged.items()}, **common)
