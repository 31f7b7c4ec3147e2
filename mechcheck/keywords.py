"""``-k EXPR`` for ``mechcheck check``: select claims by name, as ``pytest -k`` does.

An expression is made of words, ``and``, ``or``, ``not`` and parentheses.  A word
matches a claim when it is a case-insensitive substring of one of the claim's names:
its item name (``id`` or ``id[checkpoint]``), its file name, the folders between the
given path and the file, and ``xfail`` for a claim expected to fail.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mechcheck.errors import MechcheckError

__all__ = ["Keyword"]

_TOKEN = re.compile(r"\s*(\(|\)|[\w:+\-.\[\]\\/@<>]+)")
_WORDS = ("and", "or", "not")

Matcher = Callable[[frozenset[str]], bool]


@dataclass(frozen=True, slots=True)
class Keyword:
    """A parsed ``-k`` expression; call :meth:`matches` with a claim's names."""

    text: str
    _test: Matcher

    @classmethod
    def parse(cls, text: str, *, option: str = "-k") -> Keyword:
        """Parse ``text``; an empty expression selects everything.

        Raises:
            MechcheckError: the expression is malformed (key ``option``).
        """
        tokens = _tokens(text, option)
        if not tokens:
            return cls(text, lambda names: True)
        parser = _Parser(tokens, text, option)
        test = parser.expression()
        if parser.pos != len(tokens):
            parser.fail(f"unexpected {tokens[parser.pos]!r}")
        return cls(text, test)

    def matches(self, names: Iterable[str]) -> bool:
        """Whether a claim with these names is selected."""
        return self._test(frozenset(n.lower() for n in names))


def _tokens(text: str, option: str) -> list[str]:
    tokens, pos = [], 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        found = _TOKEN.match(text, pos)
        if found is None:
            raise MechcheckError(f"{option} {text!r}: unexpected character "
                                 f"{text[pos:].lstrip()[0]!r}", key=option,
                                 hint="use words, and, or, not and parentheses, "
                                 "e.g. -k 'heads and not negligible'")
        tokens.append(found.group(1))
        pos = found.end()
    return tokens


class _Parser:
    """expression := term ('or' term)*; term := factor ('and' factor)*;
    factor := 'not' factor | '(' expression ')' | word."""

    def __init__(self, tokens: list[str], text: str, option: str) -> None:
        self.tokens, self.text, self.option, self.pos = tokens, text, option, 0

    def fail(self, what: str) -> None:
        raise MechcheckError(f"{self.option} {self.text!r}: {what}", key=self.option,
                             hint="use words, and, or, not and parentheses, "
                             "e.g. -k 'heads and not negligible'")

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            self.fail("the expression ends too early")
        self.pos += 1
        return str(token)

    def expression(self) -> Matcher:
        parts = [self.term()]
        while self.peek() == "or":
            self.pos += 1
            parts.append(self.term())
        return parts[0] if len(parts) == 1 else (lambda n: any(p(n) for p in parts))

    def term(self) -> Matcher:
        parts = [self.factor()]
        while self.peek() == "and":
            self.pos += 1
            parts.append(self.factor())
        return parts[0] if len(parts) == 1 else (lambda n: all(p(n) for p in parts))

    def factor(self) -> Matcher:
        token = self.take()
        if token == "not":
            inner = self.factor()
            return lambda n: not inner(n)
        if token == "(":
            inner = self.expression()
            if self.take() != ")":
                self.fail("a '(' is not closed")
            return inner
        if token == ")" or token in _WORDS:
            self.fail(f"expected a word, got {token!r}")
        word = token.lower()
        return lambda names: any(word in name for name in names)
