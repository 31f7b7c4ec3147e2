"""The greater-than task (Hanna et al., arXiv 2305.00586) and its probability difference.

A prompt reads "The {noun} lasted from the year {XX}{YY} to the year {XX}": a model that
knows how years work puts its next-token mass on two-digit endings greater than ``YY``.
``YY`` runs over 02..98, each value equally often; the corrupt prompt is the same with
``YY`` = 01, which leaves nearly every ending "greater".

How a year is written depends on the tokenizer, which must give every two-digit number
"00".."99" one token of its own:

- ``joined`` (byte-level BPE such as GPT-2's): " 1732" must split into " 17" + "32";
- ``spaced`` (word-level tokenizers, whose words are whole whitespace-separated
  strings): the year is written "17 32", which splits into "17" + "32".

``joined`` is used when it works, else ``spaced``; :func:`year_format` raises a
ValueError naming what is missing when neither works.  Either way the predicted token is
the bare two-digit token ("32"), whose ids :func:`year_token_ids` returns.

Tokenizers that split numbers into single digits (Llama-2's, SmolLM2's: " 1732" is
" " + "1" + "7" + "3" + "2") have no two-digit tokens; for them the format is
``digits``.  The prompt is written as in ``joined`` and ends with the century's digits,
so the next token is the **tens digit** of the end year, and the metric
(:func:`digit_probability_difference`) compares tens digits: the mass on digits above
the start's tens digit ``T`` minus the mass on digits below it.

The digit equal to ``T`` is the difficulty: the end years it begins (T0..T9) lie on both
sides of the start ``TU`` unless ``U`` = 9, and which side is decided only by the next
token but one, which a next-token metric cannot see.  The rule: a tens digit counts on
the side where **all** the end years it begins lie, and a digit whose years lie on both
sides is left out of both sums.  So the equal digit is left out, except when the start
year ends in 9, where every year T0..T9 is at most the start and the equal digit is
subtracted, as ``y <= YY`` is in the two-digit metric.  The ``digits`` task draws only
such start years, ``YY`` in 09, 19, ..., 89 (each equally often), so that no digit is
left out and the digit metric equals Hanna et al.'s probability difference over whole
two-token endings exactly, whatever the model's units digit would be: ``p(d)`` for
``d > T`` is the probability of an ending above ``YY``, for ``d <= T`` of one at or
below it.  (With ``YY`` anywhere in 02..98 instead, SmolLM2-135M puts about 57 % of its
mass on the equal digit, the same decade, which no rule for that digit can score from
one token.)  The corrupt prompt is the same with ``YY`` = 01, as in the other formats.
"""

from __future__ import annotations

import random
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from mechcheck.errors import DataError
from mechcheck.metrics import Metric, MetricInputs
from mechcheck.tasks import Task

__all__ = [
    "CENTURIES",
    "DIGIT_YY",
    "GREATER_THAN",
    "GREATER_THAN_PD",
    "NOUNS",
    "digit_probability_difference",
    "digit_token_ids",
    "greater_than_pd",
    "greater_than_rows",
    "probability_difference",
    "year_format",
    "year_token_ids",
]

CENTURIES: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17)
"""The ``XX`` values used by default, as in Hanna et al."""

NOUNS: tuple[str, ...] = (
    "war", "siege", "reign", "famine", "drought", "plague", "voyage", "journey",
    "expedition", "campaign", "rebellion", "revolt", "dynasty", "empire", "truce",
    "alliance", "treaty", "crusade", "occupation", "conflict", "struggle", "marriage",
    "monarchy", "pilgrimage", "project", "trial", "exile", "feud", "blockade", "boom",
)  # fmt: skip
"""Things that last for years; those that are one token are used."""

_TEMPLATE = "The {noun} lasted from the year {start} to the year {century:02d}"
_TEMPLATE_WORDS = ("The", " lasted", " from", " the", " year", " to")
_YEARS = tuple(f"{y:02d}" for y in range(100))
_DIGITS = tuple(str(d) for d in range(10))

DIGIT_YY: tuple[int, ...] = tuple(10 * t + 9 for t in range(9))
"""The ``YY`` values of the ``digits`` format, 09, 19, ..., 89: start years ending in 9,
so that every tens digit of the end year is wholly greater or wholly not (see above)."""
_FORMATS: weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], str]] = (
    weakref.WeakKeyDictionary())
_IDS: weakref.WeakKeyDictionary[Any, torch.Tensor] = weakref.WeakKeyDictionary()
_DIGIT_IDS: weakref.WeakKeyDictionary[Any, torch.Tensor] = weakref.WeakKeyDictionary()


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _is_token(tokenizer: Any, text: str) -> bool:
    """``text`` is exactly one token, and not the unknown token."""
    ids = _encode(tokenizer, text)
    return len(ids) == 1 and ids[0] != getattr(tokenizer, "unk_token_id", None)


def _own_tokens(tokenizer: Any, texts: Sequence[str]) -> tuple[list[str], list[int]]:
    """The texts that are not one token each, and (when there are none) every text's id."""
    missing = [t for t in texts if not _is_token(tokenizer, t)]
    return missing, [] if missing else [_encode(tokenizer, t)[0] for t in texts]


def year_token_ids(tokenizer: Any) -> torch.Tensor:
    """The token ids of "00".."99" (index ``y`` holds the id of ``y``), cached per tokenizer.

    Raises:
        ValueError: some two-digit number is not one token of its own.
    """
    cached = _IDS.get(tokenizer)
    if cached is not None:
        return cached
    missing, ids = _own_tokens(tokenizer, _YEARS)
    if missing or len(set(ids)) != len(_YEARS):
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            "greater_than needs every two-digit number 00..99 to be one token of its own; "
            f"{len(missing) or 'some'} are not under this tokenizer"
            + (f" ({shown})" if missing else " (several share one id)"))
    _IDS[tokenizer] = torch.tensor(ids, dtype=torch.long)
    return _IDS[tokenizer]


def digit_token_ids(tokenizer: Any) -> torch.Tensor:
    """The token ids of the digits "0".."9" (index ``d`` holds the id of ``d``), cached per
    tokenizer, for tokenizers that split numbers into single digits.

    Raises:
        ValueError: some digit is not one token of its own, or some two-digit number
            "00".."99" does not tokenize as its two digits.
    """
    cached = _DIGIT_IDS.get(tokenizer)
    if cached is not None:
        return cached
    missing, ids = _own_tokens(tokenizer, _DIGITS)
    if missing or len(set(ids)) != len(_DIGITS):
        raise ValueError("greater_than on digit tokens needs each digit 0..9 to be one token "
                         "of its own; " + (f"not under this tokenizer: {', '.join(missing)}"
                                           if missing else "several share one id"))
    joined = [y for y in _YEARS if _encode(tokenizer, y) != [ids[int(y[0])], ids[int(y[1])]]]
    if joined:
        raise ValueError("greater_than on digit tokens needs every two-digit number to "
                         f"split into its digits; {len(joined)} do not (e.g. {joined[0]!r} "
                         f"gives {tokenizer.convert_ids_to_tokens(_encode(tokenizer, joined[0]))})")
    _DIGIT_IDS[tokenizer] = torch.tensor(ids, dtype=torch.long)
    return _DIGIT_IDS[tokenizer]


def _splits_digits(tokenizer: Any) -> bool:
    try:
        digit_token_ids(tokenizer)
    except ValueError:
        return False
    return True


def _good_digit_years(tokenizer: Any, centuries: Sequence[int]) -> set[tuple[int, int]]:
    """The (XX, YY) pairs, YY in :data:`DIGIT_YY` or 01, whose year " XXYY" tokenizes as
    " XX" + the two digits of YY, where " XX" ends with the two digits of XX."""
    ids = digit_token_ids(tokenizer).tolist()
    good = set()
    for xx in centuries:
        head = _encode(tokenizer, f" {xx:02d}")
        if head[-2:] != [ids[xx // 10], ids[xx % 10]]:
            continue
        for yy in (1, *DIGIT_YY):
            if _encode(tokenizer, f" {xx:02d}{yy:02d}") == head + [ids[yy // 10], ids[yy % 10]]:
                good.add((xx, yy))
    return good


def _digits_format(tokenizer: Any, centuries: Sequence[int]) -> str:
    good = _good_digit_years(tokenizer, centuries)
    if not any((xx, 1) in good and (xx, yy) in good for xx in centuries for yy in DIGIT_YY):
        xx = centuries[0]
        text = f" {xx:02d}{DIGIT_YY[0]:02d}"
        tokens = tokenizer.convert_ids_to_tokens(_encode(tokenizer, text))
        raise ValueError(f"greater_than on digit tokens needs ' XXYY' to split into ' XX' + "
                         f"the two digits of YY; e.g. {text!r} gives {tokens}")
    return "digits"


def _split_failures(tokenizer: Any, centuries: Sequence[int], sep: str) -> list[str]:
    """Years that do not split into " XX" + "YY" when written ``f" {XX}{sep}{YY}"``."""
    good = _good_years(tokenizer, centuries, sep)
    failures = []
    for xx in centuries:
        for yy in range(100):
            if (xx, yy) not in good:
                text = f" {xx:02d}{sep}{yy:02d}"
                tokens = tokenizer.convert_ids_to_tokens(_encode(tokenizer, text))
                failures.append(f"{text!r} gives {tokens}")
    return failures


def _good_years(tokenizer: Any, centuries: Sequence[int], sep: str) -> set[tuple[int, int]]:
    """The (XX, YY) pairs whose year splits into " XX" + "YY" when written with ``sep``."""
    ids = year_token_ids(tokenizer).tolist()
    good = set()
    for xx in centuries:
        head = _encode(tokenizer, f" {xx:02d}")
        for yy in range(100):
            if _encode(tokenizer, f" {xx:02d}{sep}{yy:02d}") == head + [ids[yy]]:
                good.add((xx, yy))
    return good


def year_format(tokenizer: Any, centuries: Sequence[int] = CENTURIES) -> str:
    """``"joined"`` or ``"spaced"``: how to write a year so it splits into " XX" + "YY";
    ``"digits"`` for tokenizers without two-digit tokens that split numbers into single
    digits (" 1739" into " 17" + "3" + "9").

    Raises:
        ValueError: a two-digit number or a century is not one token (and the tokenizer
            does not split numbers into digits), or no way of writing a year splits it as
            the format needs; the message names what fails.
    """
    key = tuple(centuries)
    known = _FORMATS.setdefault(tokenizer, {})
    if key in known:
        return known[key]
    try:
        year_token_ids(tokenizer)
    except ValueError:
        if not _splits_digits(tokenizer):
            raise
        known[key] = _digits_format(tokenizer, centuries)
        return known[key]
    bad = [f"' {xx:02d}'" for xx in centuries if not _is_token(tokenizer, f" {xx:02d}")]
    if bad:
        raise ValueError(f"greater_than needs each century to be one token after a space; "
                         f"not one token under this tokenizer: {', '.join(bad)}")
    # Like Hanna et al., years that do not split are left out (GPT-2 merges some of
    # them); the task needs enough usable endings on both sides of every YY.
    joined = _good_years(tokenizer, centuries, "")
    spaced = _good_years(tokenizer, centuries, " ")
    best, fmt = (joined, "joined") if len(joined) >= len(spaced) else (spaced, "spaced")
    if len({yy for _, yy in best if 2 <= yy <= 98}) < 50 or not any(yy == 1 for _, yy in best):
        failures = _split_failures(tokenizer, centuries, "")
        raise ValueError(
            f"greater_than needs ' XXYY' to split into ' XX' + 'YY' (or, for word-level "
            f"tokenizers, ' XX YY' into ' XX' + 'YY') for most years; {len(failures)} "
            f"years do not, e.g. {failures[0]}")
    known[key] = fmt
    return known[key]


def _check_template(tokenizer: Any, nouns: Sequence[str]) -> None:
    missing = [w.strip() for w in _TEMPLATE_WORDS if not _is_token(tokenizer, w)]
    if missing:
        raise ValueError("greater_than prompts need these words to be one known token "
                         f"each: {', '.join(missing)}")
    if not nouns:
        raise ValueError("greater_than needs at least one noun that is one token after a "
                         f"space; none of {', '.join(NOUNS[:5])} ... is")


def _usable_nouns(tokenizer: Any, nouns: Iterable[str]) -> list[str]:
    return [w for w in dict.fromkeys(nouns) if _is_token(tokenizer, " " + w)]


def _balanced_yy(rng: random.Random, n: int) -> list[int]:
    """``n`` values of 02..98, each used floor(n/97) or ceil(n/97) times, shuffled."""
    out: list[int] = []
    while len(out) < n:
        block = list(range(2, 99))
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def _balanced_digit_yy(rng: random.Random, n: int) -> list[int]:
    """``n`` values of :data:`DIGIT_YY`, each used floor(n/9) or ceil(n/9) times, shuffled."""
    out: list[int] = []
    while len(out) < n:
        block = list(DIGIT_YY)
        rng.shuffle(block)
        out.extend(block)
    return out[:n]


def _digit_row(tokenizer: Any, noun: str, xx: int, yy: int) -> dict[str, Any]:
    """One ``digits`` row; checks that the positions hold the digits they should."""
    prompt, corrupt = (_TEMPLATE.format(noun=noun, start=f"{xx:02d}{y:02d}", century=xx)
                       for y in (yy, 1))
    ids = list(tokenizer(prompt)["input_ids"])
    head = list(tokenizer(prompt[:prompt.index(" to the year")])["input_ids"])
    digit = digit_token_ids(tokenizer).tolist()
    tens, units, end = len(head) - 2, len(head) - 1, len(ids) - 1
    if (ids[:len(head)] != head or tens < 0 or ids[tens] != digit[yy // 10]
            or ids[units] != digit[yy % 10] or ids[-2:] != [digit[xx // 10], digit[xx % 10]]
            or len(tokenizer(corrupt)["input_ids"]) != len(ids)):
        raise ValueError(f"greater_than cannot find the YY and END tokens of {prompt!r}: "
                         f"it tokenizes as {tokenizer.convert_ids_to_tokens(ids)}")
    return {
        "prompt": prompt,
        "answer": str(yy // 10 + 1),
        "wrong": str(yy // 10),
        "corrupt": corrupt,
        "yy": yy,
        "positions": {"YY": tens, "YY+1": units, "END": end},
    }


def _row(tokenizer: Any, fmt: str, noun: str, xx: int, yy: int) -> dict[str, Any]:
    """One row; checks that the YY and END positions hold the tokens they should."""
    if fmt == "digits":
        return _digit_row(tokenizer, noun, xx, yy)
    sep = "" if fmt == "joined" else " "
    prompt, corrupt = (_TEMPLATE.format(noun=noun, start=f"{xx:02d}{sep}{y:02d}", century=xx)
                       for y in (yy, 1))
    ids = list(tokenizer(prompt)["input_ids"])
    end, yy_pos = len(ids) - 1, len(ids) - 5
    century = _encode(tokenizer, f" {xx:02d}")
    if yy_pos < 0 or ids[yy_pos] != int(year_token_ids(tokenizer)[yy]) or [ids[end]] != century:
        raise ValueError(f"greater_than cannot find the YY and END tokens of {prompt!r}: "
                         f"it tokenizes as {tokenizer.convert_ids_to_tokens(ids)}")
    return {
        "prompt": prompt,
        "answer": f"{yy + 1:02d}",
        "wrong": f"{yy - 1:02d}",
        "corrupt": corrupt,
        "yy": yy,
        "positions": {"YY": yy_pos, "END": end},
    }


def _setup(tokenizer: Any, centuries: Sequence[int],
           nouns: Sequence[str]) -> tuple[str, list[int], list[str]]:
    centuries = [int(c) for c in centuries]
    if not centuries or any(not 10 <= c <= 99 for c in centuries):
        raise ValueError(f"greater_than centuries must be two-digit numbers, got {centuries}")
    usable = _usable_nouns(tokenizer, nouns)
    _check_template(tokenizer, usable)
    return year_format(tokenizer, centuries), centuries, usable


def greater_than_rows(tokenizer: Any, *, n: int, seed: int,
                      centuries: Sequence[int] = CENTURIES,
                      nouns: Sequence[str] = NOUNS) -> list[dict[str, Any]]:
    """``n`` greater-than rows for ``tokenizer``.

    Columns: ``prompt``; ``answer``, the two-digit token of ``YY + 1`` (the smallest
    ending that is greater, always valid since ``YY <= 98``); ``wrong``, that of
    ``YY - 1`` (the largest ending that is not); ``corrupt``, the prompt with ``YY = 01``;
    ``yy``, the int ``YY``; ``positions``, ``{"YY": index of the YY token, "END": last}``
    (indices count the tokenizer's special tokens, as :func:`mechcheck.data.tokenize_rows`
    tokenizes prompts).  ``YY`` is balanced over 02..98; the noun and ``XX`` are drawn
    uniformly.

    In the ``digits`` format (tokenizers that split numbers into digits), ``YY`` is
    balanced over :data:`DIGIT_YY` (09, 19, ..., 89); ``answer`` is the tens digit
    ``T + 1`` and ``wrong`` the tens digit ``T`` of the start (``YY = T9``), and
    ``positions`` are ``YY`` (the start's tens digit), ``YY+1`` (its units digit) and
    ``END``.

    Args:
        tokenizer: the model's tokenizer.
        n: number of rows.
        seed: seeds the row generator.
        centuries: the ``XX`` values to draw from (default 11..17).
        nouns: candidate nouns; those that are one token after a space are used.

    Raises:
        ValueError: the tokenizer lacks a token the prompts need (the message names it).
    """
    fmt, centuries, usable = _setup(tokenizer, centuries, nouns)
    rng = random.Random(seed)
    if fmt == "digits":
        good = _good_digit_years(tokenizer, centuries)
        draws = _balanced_digit_yy(rng, 4 * n)
    else:
        good = _good_years(tokenizer, centuries, "" if fmt == "joined" else " ")
        draws = _balanced_yy(rng, 4 * n)
    rows = []
    for yy in draws:
        options = [xx for xx in centuries if (xx, yy) in good and (xx, 1) in good]
        if options:
            rows.append(_row(tokenizer, fmt, rng.choice(usable), rng.choice(options), yy))
        if len(rows) == n:
            break
    return rows


def _strategy(tokenizer: Any, *, centuries: Sequence[int] = CENTURIES,
              nouns: Sequence[str] = NOUNS) -> Any:
    from hypothesis import strategies as st

    fmt, centuries, usable = _setup(tokenizer, centuries, nouns)
    if fmt == "digits":
        good = _good_digit_years(tokenizer, centuries)
        pairs = [(xx, yy) for xx in centuries for yy in DIGIT_YY
                 if (xx, yy) in good and (xx, 1) in good]
        return st.builds(lambda noun, pair: _row(tokenizer, fmt, noun, *pair),
                         st.sampled_from(usable), st.sampled_from(pairs))
    return st.builds(lambda noun, xx, yy: _row(tokenizer, fmt, noun, xx, yy),
                     st.sampled_from(usable), st.sampled_from(centuries),
                     st.integers(min_value=2, max_value=98))


def probability_difference(logits: torch.Tensor, yy: torch.Tensor,
                           year_ids: torch.Tensor) -> torch.Tensor:
    """Per row, ``sum_{y > YY} p(y) - sum_{y <= YY} p(y)`` over the 100 endings.

    Args:
        logits: next-token logits ``[n, vocab]``.
        yy: ``YY`` per row ``[n]``.
        year_ids: token id of each ending 00..99 ``[100]``.

    Returns:
        ``[n]`` values in [-1, 1]; ``y = YY`` counts as not greater.
    """
    probs = torch.softmax(logits.float(), dim=-1)[:, year_ids.to(logits.device)]
    endings = torch.arange(100, device=logits.device)
    greater = endings.unsqueeze(0) > yy.to(logits.device).unsqueeze(1)
    return torch.where(greater, probs, -probs).sum(dim=-1)


def digit_probability_difference(logits: torch.Tensor, yy: torch.Tensor,
                                 digit_ids: torch.Tensor) -> torch.Tensor:
    """Per row, the mass on tens digits above ``T = YY // 10`` minus that on digits below.

    The digit ``T`` itself is left out of both sums, except when ``YY`` ends in 9: then
    every end year T0..T9 is at most ``YY`` and ``p(T)`` is subtracted (see the module
    docstring).  For ``YY`` in :data:`DIGIT_YY` this is
    ``sum_{d > T} p(d) - sum_{d <= T} p(d)``.

    Args:
        logits: next-token logits ``[n, vocab]``.
        yy: ``YY`` per row ``[n]``.
        digit_ids: token id of each digit 0..9 ``[10]``.

    Returns:
        ``[n]`` values in [-1, 1].
    """
    probs = torch.softmax(logits.float(), dim=-1)[:, digit_ids.to(logits.device)]
    digits = torch.arange(10, device=logits.device).unsqueeze(0)
    yy = yy.to(logits.device).unsqueeze(1)
    tens, units = yy // 10, yy % 10
    above = digits > tens
    below = (digits < tens) | ((digits == tens) & (units == 9))
    return (probs * (above.float() - below.float())).sum(dim=-1)


def greater_than_pd(logits: torch.Tensor, inputs: MetricInputs) -> torch.Tensor:
    """The ``greater_than_pd`` metric: :func:`probability_difference` of each row.

    ``p`` is the softmax over the whole vocabulary, read at the 100 two-digit tokens;
    the boundary is pinned: ``y = YY`` counts as **not** greater (it is subtracted),
    unlike ACDC's implementation, which leaves it out.  ``YY`` comes from the data's
    ``yy`` column and the token ids from the model's tokenizer (cached per tokenizer).
    A tokenizer without two-digit tokens that splits numbers into single digits gets
    :func:`digit_probability_difference` over the ten digit tokens instead.

    Raises:
        DataError: the data has no ``yy`` column, or the tokenizer has neither a token
            for every two-digit number nor one for every digit.
    """
    if "yy" not in inputs.columns or any(v is None for v in inputs.columns["yy"]):
        raise DataError("metric greater_than_pd needs a 'yy' column (the start year's last "
                        "two digits) in every row", key="metric",
                        hint="use task: {name: greater_than}, or add yy to every row")
    if inputs.tokenizer is None:
        raise DataError("metric greater_than_pd needs the model's tokenizer", key="metric")
    yy = torch.tensor([int(v) for v in inputs.columns["yy"]], dtype=torch.long)
    try:
        year_ids = year_token_ids(inputs.tokenizer)
    except ValueError as exc:
        if _splits_digits(inputs.tokenizer):
            return digit_probability_difference(logits, yy, digit_token_ids(inputs.tokenizer))
        raise DataError(str(exc), key="metric", hint="greater_than_pd suits tokenizers "
                        "with a token for every two-digit number, or that split numbers "
                        "into single digits") from None
    return probability_difference(logits, yy, year_ids)


GREATER_THAN = Task(
    name="greater_than", generate=greater_than_rows, strategy=_strategy,
    params={"centuries": "the XX values (two-digit ints) to draw from; default 11..17",
            "nouns": "candidate nouns; those that are one token after a space are used"},
    description="'The war lasted from the year 1732 to the year 17': is the next ending "
    "greater than 32? (Hanna et al. 2023)")


GREATER_THAN_PD = Metric(
    name="greater_than_pd", fn=greater_than_pd,
    description="greater-than probability difference: p(ending > YY) - "
    "p(ending <= YY) over the 100 two-digit tokens, or over the tens digits for "
    "tokenizers that split numbers into digits (needs a yy column)")
"""The metric of the greater-than task, registered with the built-in metrics."""
