"""Task generators: datasets made on the fly for a model's tokenizer.

A claim (or file) may say ``task: {name: ioi, n: 200, seed: 0, ...}`` instead of
``data:``.  The named :class:`Task` generates rows with the same columns a data file
has (prompt, answer, wrong, corrupt, positions, plus e.g. ``template``), for whatever
tokenizer the model has, and offers a Hypothesis strategy of rows for property tests.
Tasks are registered through the ``mechcheck_tasks`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mechcheck.errors import DataError

__all__ = ["Task", "single_token_words"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """A named row generator.

    Attributes:
        name: the name claim files use (``task: {name: ioi}``).
        generate: ``generate(tokenizer, *, n, seed, **params) -> list of row dicts``.
        strategy: ``strategy(tokenizer, **params) ->`` a Hypothesis strategy of rows,
            or None.
        params: the extra parameters ``generate`` accepts, with their meaning.
        description: one line for docs.
    """

    name: str
    generate: Callable[..., list[dict[str, Any]]]
    strategy: Callable[..., Any] | None = None
    params: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    def rows(self, tokenizer: Any, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Generate rows for a claim's ``task:`` mapping (validated here)."""
        extra = {k: v for k, v in spec.items() if k not in ("name", "n", "seed")}
        unknown = sorted(set(extra) - set(self.params))
        if unknown:
            accepted = ", ".join(["n", "seed", *sorted(self.params)])
            raise DataError(f"task {self.name} has no parameter {', '.join(unknown)}",
                            key="task", hint=f"task {self.name} accepts: {accepted}")
        return self.generate(tokenizer, n=int(spec.get("n", 100)),
                             seed=int(spec.get("seed", 0)), **extra)


def single_token_words(tokenizer: Any, candidates: Iterable[str], *,
                       prefix: str = " ") -> list[str]:
    """The candidates that are one token under ``tokenizer`` when written after
    ``prefix`` (GPT-2 style BPE marks a word start with a space); returned with the
    prefix stripped, in input order, without duplicates."""
    out: list[str] = []
    for word in candidates:
        ids = tokenizer(prefix + word, add_special_tokens=False)["input_ids"]
        if len(ids) == 1 and word not in out:
            out.append(word)
    return out
