"""YAML nodes to plain values, for the claim-file loader (:mod:`mechcheck.spec.loader`).

:class:`Builder` constructs values from the nodes of PyYAML's safe composer itself:
only plain YAML tags, no duplicate keys, no recursive aliases, and a size guard that
counts aliases and ``<<`` merges as if they were written out, while building each
shared node (and resolving each mapping's merges) only once, so the work stays linear
in the size of the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mechcheck.errors import ClaimSpecError

__all__ = [
    "MAP_TAG",
    "MAX_FILE_CHARS",
    "MAX_FILE_NODES",
    "MAX_NODES",
    "MERGE_TAG",
    "NULL_TAG",
    "SCALAR_TAGS",
    "SEQ_TAG",
    "STR_TAG",
    "Builder",
    "FileTooLarge",
    "compose",
    "line_of",
    "tag_error",
]

TAG = "tag:yaml.org,2002:"
MAP_TAG = TAG + "map"
SEQ_TAG = TAG + "seq"
STR_TAG = TAG + "str"
NULL_TAG = TAG + "null"
MERGE_TAG = TAG + "merge"
VALUE_TAG = TAG + "value"
SCALAR_TAGS = frozenset(
    TAG + name for name in ("null", "bool", "int", "float", "binary", "timestamp", "str")
)
# Aliases and merge keys can make a tiny file expand to a huge value ("billion laughs",
# "merge bombs"): counted as written out, one value may hold at most MAX_NODES items
# and the whole file (each claim counting every value it uses) MAX_FILE_NODES.
MAX_NODES = 100_000
MAX_FILE_NODES = 1_000_000
# PyYAML's pure-Python composer reads about 100 kB a second: a longer file is refused
# before it is read (claim files are written by hand; the largest shipped is 6 kB).
MAX_FILE_CHARS = 1_000_000
# Explicit tags such as ``!!int abc`` or ``!!timestamp x`` make PyYAML's scalar
# constructors raise any of these.
_SCALAR_ERRORS = (yaml.YAMLError, ValueError, TypeError, KeyError, AttributeError,
                  OverflowError, IndexError)


class FileTooLarge(Exception):
    """The whole file expands past ``MAX_FILE_NODES``: one error for the file."""

    def __init__(self, error: ClaimSpecError) -> None:
        super().__init__(error.message)
        self.error = error


def line_of(node: Node) -> int:
    """The 1-based line where ``node`` starts."""
    return node.start_mark.line + 1


def _show_tag(tag: str) -> str:
    return "!!" + tag[len(TAG):] if tag.startswith(TAG) else tag


def compose(text: str) -> Node | None:
    """The single YAML document in ``text`` as a node tree (nothing constructed).

    Raises:
        ClaimSpecError: the text is not one valid YAML document, is nested too deeply,
            or is longer than ``MAX_FILE_CHARS``.
    """
    if len(text) > MAX_FILE_CHARS:
        raise ClaimSpecError(
            f"the claim file is {len(text):,} characters long, more than the limit of "
            f"{MAX_FILE_CHARS:,}", line=1,
            hint="split it into several claim files (each file is collected on its own)")
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
class Builder:
    """Constructs plain Python values from safe YAML nodes, checking as it goes.

    Only the standard scalar tags, ``!!seq`` and ``!!map`` are accepted; duplicate keys
    in a mapping and recursive aliases are errors.  Values shared through aliases are
    built once, as PyYAML does, and each mapping's ``<<`` merges are resolved once, so
    the work is linear in the size of the file.  Sizes are counted as if every alias and
    merge were written out, and checked against ``MAX_NODES`` (one value) and
    ``MAX_FILE_NODES`` (the whole file, see :meth:`charge`).
    """

    memo: dict[int, tuple[Any, int]] = field(default_factory=dict)
    merged: dict[int, tuple[list[tuple[Any, Node, Node]], int]] = field(default_factory=dict)
    active: set[int] = field(default_factory=set)
    merging: set[int] = field(default_factory=set)
    total: int = 0
    scalars: SafeConstructor = field(default_factory=SafeConstructor)

    def value(self, node: Node) -> Any:
        """The plain value of ``node``; raises ClaimSpecError with the line at fault."""
        return self.sized(node)[0]

    def sized(self, node: Node) -> tuple[Any, int]:
        """``(value, number of items it expands to)`` of ``node``."""
        try:
            return self._build(node)
        except RecursionError:
            raise ClaimSpecError("the value is nested too deeply", line=line_of(node),
                                 hint="flatten the nesting of lists and mappings") from None

    def charge(self, size: int, line: int, key: str) -> None:
        """Count ``size`` items against the whole file's budget.

        Raises:
            FileTooLarge: the file's values, counted each time a claim uses them,
                expand to more than ``MAX_FILE_NODES`` items.
        """
        self.total += size
        if self.total > MAX_FILE_NODES:
            raise FileTooLarge(ClaimSpecError(
                f"the claim file expands to more than {MAX_FILE_NODES} items (counting "
                f"every use of an alias, a merge and a file-level default)", line=line,
                key=key, hint="claim files should not use aliases or merges to build huge "
                "values; write the values out, or split the file"))

    def pairs(self, node: MappingNode) -> list[tuple[Any, Node, Node]]:
        """``(key, key node, value node)`` of a mapping, ``<<`` merges applied.

        Raises:
            ClaimSpecError: a key is repeated, is not a scalar, or a merge is malformed,
                recursive or too large.
        """
        return self._pairs(node)[0]

    def _pairs(self, node: MappingNode) -> tuple[list[tuple[Any, Node, Node]], int]:
        """The pairs and the number of entries a written-out expansion would copy."""
        if id(node) in self.merged:
            return self.merged[id(node)]
        if id(node) in self.merging:
            raise ClaimSpecError("a merge ('<<') refers to the mapping that contains it",
                                 line=line_of(node), key="<<", hint="remove the recursive alias")
        self.merging.add(id(node))
        try:
            found = self._pairs_new(node)
        finally:
            self.merging.discard(id(node))
        if found[1] > MAX_NODES:
            raise ClaimSpecError(
                f"the merge keys ('<<') of this mapping expand to more than {MAX_NODES} "
                "entries", line=line_of(node), key="<<",
                hint="claim files should not use merges to build huge mappings: merge "
                "each anchored mapping once")
        self.merged[id(node)] = found
        return found

    def _pairs_new(self, node: MappingNode) -> tuple[list[tuple[Any, Node, Node]], int]:
        own: dict[Any, tuple[Node, Node]] = {}
        merged: dict[Any, tuple[Node, Node]] = {}
        work = 0
        for key_node, value_node in node.value:
            if key_node.tag == MERGE_TAG:
                sources, count = self._merge_sources(value_node)
                merged.update(sources)
                work += count
                continue
            key = self._key(key_node)
            if key in own:
                raise ClaimSpecError(
                    f"duplicate key '{key_node.value}' (line {line_of(own[key][0])} "
                    f"already sets it)", line=line_of(key_node), key=str(key_node.value),
                    hint="write each key once per mapping; YAML would keep only the last")
            own[key] = (key_node, value_node)
            work += 1
        both = {**merged, **own}
        return [(key, kn, vn) for key, (kn, vn) in both.items()], work

    def _key(self, node: Node) -> Any:
        if not isinstance(node, ScalarNode):
            raise ClaimSpecError("a mapping key must be a plain name, not a list or mapping",
                                 line=line_of(node), hint="write keys as plain words")
        return self._scalar(node)

    def _merge_sources(self, node: Node) -> tuple[dict[Any, tuple[Node, Node]], int]:
        sources = node.value if isinstance(node, SequenceNode) else [node]
        result: dict[Any, tuple[Node, Node]] = {}
        work = 0
        for source in reversed(sources):  # earlier sources win: apply them last
            if not isinstance(source, MappingNode) or source.tag != MAP_TAG:
                raise ClaimSpecError("'<<' must merge a mapping or a list of mappings",
                                     line=line_of(node), key="<<",
                                     hint="merge an anchored mapping: <<: *name")
            pairs, count = self._pairs(source)
            result.update({k: (kn, vn) for k, kn, vn in pairs})
            work += count
        return result, work

    def _build(self, node: Node) -> tuple[Any, int]:
        """``(value, number of nodes it expands to)``, memoised per node."""
        if id(node) in self.memo:
            return self.memo[id(node)]
        if id(node) in self.active:
            raise ClaimSpecError("an alias refers to the mapping or list that contains it",
                                 line=line_of(node), hint="remove the recursive alias")
        self.active.add(id(node))
        try:
            built = self._build_new(node)
        finally:
            self.active.discard(id(node))
        if built[1] > MAX_NODES:
            raise ClaimSpecError(
                f"the value expands to more than {MAX_NODES} items", line=line_of(node),
                hint="claim files should not use aliases to build huge values")
        self.memo[id(node)] = built
        return built

    def _build_new(self, node: Node) -> tuple[Any, int]:
        if isinstance(node, ScalarNode):
            return self._scalar(node), 1
        if isinstance(node, SequenceNode) and node.tag == SEQ_TAG:
            items = [self._build(child) for child in node.value]
            return [value for value, _ in items], 1 + sum(size for _, size in items)
        if isinstance(node, MappingNode) and node.tag == MAP_TAG:
            pairs, work = self._pairs(node)
            result: dict[Any, Any] = {}
            size = 1 + work - len(pairs)  # entries that merges copied, then overrode
            for key, _, value_node in pairs:
                result[key], count = self._build(value_node)
                size += count
            return result, size
        raise tag_error(node)

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag == VALUE_TAG:  # a plain "=": PyYAML's safe loader has no constructor
            return node.value
        if node.tag not in SCALAR_TAGS:
            raise tag_error(node)
        try:
            return SafeConstructor.yaml_constructors[node.tag](self.scalars, node)
        except _SCALAR_ERRORS as exc:
            raise ClaimSpecError(
                f"cannot read {node.value!r} as {_show_tag(node.tag)}: {exc}",
                line=line_of(node), hint="fix the value or remove the explicit tag") from None


def tag_error(node: Node) -> ClaimSpecError:
    return ClaimSpecError(
        f"the YAML tag {_show_tag(node.tag)} is not allowed: claim files hold plain "
        f"values only, and are never run as code", line=line_of(node),
        hint="remove the tag (anything starting with '!')")
