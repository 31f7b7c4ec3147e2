"""The indirect-object identification (IOI) task of Wang et al. (arXiv 2211.00593).

A prompt names two people, mentions one of them (the subject, S) again, and ends where
the other one (the indirect object, IO) is the natural next word::

    When Mary and John went to the store, John gave a drink to   ->  " Mary"

Each of the :data:`TEMPLATES` is written in BABA form (S, IO, S) and also used in ABBA
form (IO, S, S).  ``corrupt`` is the paper's p_ABC prompt: the same template and filler
with three names unrelated to the prompt's (IO, first S and second S each replaced by a
different random name), with the same token count.  ``positions`` names the tokens IO,
S1, S1+1, S2 and END (the last prompt token), found by tokenizing, so they count a BOS
token the tokenizer may prepend.  ``template`` (e.g. ``"baba-3"``) groups rows for
per-template mean ablation (``mean_by: template``); ``order`` (``abba`` when the indirect
object comes first, else ``baba``) is the label a probe of "which name is the IO" reads.

Byte-level BPE tokenizers (GPT-2) read the prompts as ordinary text; names, places and
objects are kept only when they are one token after a space.  A word-level tokenizer
splits on whitespace only, so for it punctuation is written as separate words
(``"store , John"``); templates with words the tokenizer does not know are dropped.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mechcheck.tasks import Task, single_token_words

__all__ = [
    "IOI",
    "NAMES",
    "OBJECTS",
    "ORDERS",
    "PLACES",
    "TEMPLATES",
    "IOIPools",
    "ioi_pools",
    "ioi_row",
    "ioi_rows",
    "ioi_strategy",
    "ioi_vocabulary",
]

NAMES: tuple[str, ...] = (
    "Mary", "John", "Alice", "Bob", "Tom", "Sarah", "James", "Emma", "David", "Anna",
    "Michael", "Laura", "Robert", "Lisa", "William", "Kate", "Richard", "Jane", "Thomas",
    "Susan", "Charles", "Helen", "Daniel", "Karen", "Paul", "Nancy", "Mark", "Linda",
    "George", "Emily", "Steven", "Rachel", "Edward", "Amy", "Peter", "Julia", "Kevin",
    "Grace", "Brian", "Sophie", "Jason", "Hannah", "Frank", "Lucy", "Eric", "Claire",
    "Adam", "Rose", "Henry", "Ruth", "Jack", "Amanda", "Ryan", "Megan", "Andrew",
    "Jessica", "Simon", "Ellen", "Sam", "Diana", "Martin", "Kelly", "Patrick", "Nicole",
    "Scott", "Rebecca", "Matthew", "Victoria", "Joseph", "Olivia", "Harry", "Jennifer",
    "Tony", "Angela", "Chris", "Monica", "Larry", "Carol", "Jerry", "Sandra", "Dennis",
    "Teresa", "Greg", "Heather", "Carl", "Luke", "Maria", "Ben", "Kim", "Joe", "Jenny",
    "Dan", "Anne", "Ian", "Elizabeth", "Victor", "Diane", "Roger", "Kathy", "Oscar",
)  # fmt: skip
PLACES: tuple[str, ...] = (
    "store", "garden", "school", "park", "office", "house", "station", "market", "beach",
    "library", "restaurant", "hospital", "church", "museum", "lake", "farm",
)  # fmt: skip
OBJECTS: tuple[str, ...] = (
    "drink", "book", "ball", "key", "ring", "bone", "snack", "letter", "gift", "cake",
    "hat", "pen", "bag", "cup", "basket", "coin",
)  # fmt: skip

# BABA form: {N1} is the subject, {N2} the indirect object, {S2} the subject again.
TEMPLATES: tuple[str, ...] = (
    "When {N1} and {N2} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "Then, {N1} and {N2} went to the {PLACE}. {S2} gave the {OBJECT} to",
    "After {N1} and {N2} arrived at the {PLACE}, {S2} handed a {OBJECT} to",
    "While {N1} and {N2} were working at the {PLACE}, {S2} passed the {OBJECT} to",
    "Then, {N1} and {N2} had a long talk at the {PLACE}. Afterwards {S2} said to",
    "When {N1} and {N2} found a {OBJECT} at the {PLACE}, {S2} decided to give it to",
    "Friends {N1} and {N2} walked to the {PLACE}. {S2} showed the {OBJECT} to",
    "The {PLACE} was quiet when {N1} and {N2} arrived, so {S2} brought a {OBJECT} to",
    "Then, {N1} and {N2} were thinking about going to the {PLACE}. {S2} wanted to give "
    "a {OBJECT} to",
    "Yesterday {N1} and {N2} had lunch at the {PLACE}, and {S2} sent a {OBJECT} to",
    "As {N1} and {N2} left the {PLACE}, {S2} threw the {OBJECT} to",
    "Later, {N1} and {N2} met at the {PLACE}. {S2} offered a {OBJECT} to",
    "When {N1} and {N2} came back from the {PLACE}, {S2} lent the {OBJECT} to",
    "After the party, {N1} and {N2} stayed at the {PLACE}. {S2} left a {OBJECT} for",
    "Once {N1} and {N2} reached the {PLACE}, {S2} was happy to give a {OBJECT} to",
)
ORDERS: tuple[str, ...] = ("both", "abba", "baba")
MIN_NAMES = 8
_SLOT = re.compile(r"(\{[A-Z0-9]+\})")
_NAME_SLOTS = ("{N1}", "{N2}", "{S2}")
_MAX_TRIES = 100


@dataclass(frozen=True, slots=True)
class IOIPools:
    """What one tokenizer allows: words that are single tokens, usable templates.

    Attributes:
        names: names that are one token after a space.
        places: places that are one token after a space.
        objects: objects that are one token after a space.
        templates: ``(index into TEMPLATES, template)`` pairs the tokenizer can write.
        spaced: punctuation is written as separate words (word-level tokenizers).
        name_ids: the token id of each name (after a space).
    """

    names: tuple[str, ...]
    places: tuple[str, ...]
    objects: tuple[str, ...]
    templates: tuple[tuple[int, str], ...]
    spaced: bool
    name_ids: dict[str, int]


def _spaced(text: str) -> str:
    """Punctuation as separate words: ``"store, John"`` -> ``"store , John"``."""
    return re.sub(r"\s*([,.])", r" \1", text)


def _render(template: str, fill: dict[str, str], spaced: bool) -> list[tuple[str, str]]:
    """``(slot or "", text)`` pieces of a filled template, in order."""
    pieces = []
    for part in _SLOT.split(template):
        if _SLOT.fullmatch(part):
            pieces.append((part, fill[part]))
        elif part:
            pieces.append(("", _spaced(part) if spaced else part))
    return pieces


def ioi_vocabulary() -> list[str]:
    """Every word a word-level tokenizer needs for this task, punctuation as words.

    Returns:
        Template words in order of first use, then names, places and objects; no
        duplicates.
    """
    literal = [_spaced(part) for template in TEMPLATES for part in _SLOT.split(template)
               if not _SLOT.fullmatch(part)]
    words = [w for text in literal for w in text.split()]
    return list(dict.fromkeys([*words, *NAMES, *PLACES, *OBJECTS]))


def _unk_count(tokenizer: Any, text: str) -> int:
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return 0
    return sum(1 for i in tokenizer(text, add_special_tokens=False)["input_ids"] if i == unk)


def _single_tokens(tokenizer: Any, words: Sequence[str]) -> tuple[str, ...]:
    """Words that are one known token after a space (the unknown token does not count)."""
    return tuple(w for w in single_token_words(tokenizer, words)
                 if _unk_count(tokenizer, " " + w) == 0)


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise ValueError(f"order={order!r}, but must be one of {', '.join(ORDERS)}")


def _select_templates(templates: Sequence[int] | int | None) -> list[tuple[int, str]]:
    if templates is None:
        return list(enumerate(TEMPLATES))
    chosen = [templates] if isinstance(templates, int) else list(templates)
    bad = [t for t in chosen if isinstance(t, bool) or not isinstance(t, int)
           or not 0 <= t < len(TEMPLATES)]
    if bad or not chosen:
        raise ValueError(f"templates={templates!r}, but must be a non-empty list of "
                         f"template indices from 0 to {len(TEMPLATES) - 1}")
    return [(t, TEMPLATES[t]) for t in dict.fromkeys(chosen)]


def _text(pieces: list[tuple[str, str]]) -> str:
    return "".join(text for _, text in pieces)


def _usable(tokenizer: Any, chosen: list[tuple[int, str]],
            fill: dict[str, str]) -> tuple[tuple[tuple[int, str], ...], bool]:
    """The templates the tokenizer writes without unknown tokens, and whether
    punctuation must be spaced out (when that leaves fewer unknown tokens)."""
    counts = {spaced: [_unk_count(tokenizer, _text(_render(t, fill, spaced)))
                       for _, t in chosen] for spaced in (False, True)}
    spaced = sum(counts[True]) < sum(counts[False])
    usable = tuple(c for c, unknown in zip(chosen, counts[spaced], strict=True) if unknown == 0)
    return usable, spaced


def ioi_pools(tokenizer: Any, *, templates: Sequence[int] | int | None = None) -> IOIPools:
    """Names, places, objects and templates usable with ``tokenizer``.

    Args:
        tokenizer: a Hugging Face tokenizer.
        templates: indices into :data:`TEMPLATES` to use; all when None.

    Returns:
        The pools, checked to be large enough.

    Raises:
        ValueError: fewer than :data:`MIN_NAMES` names (or fewer than two places or
            objects) are single tokens, or no chosen template can be written without
            unknown tokens, or ``templates`` is malformed.
    """
    names = _single_tokens(tokenizer, NAMES)
    if len(names) < MIN_NAMES:
        raise ValueError(
            f"the ioi task needs at least {MIN_NAMES} names that are one token after a "
            f"space; this tokenizer has {len(names)} ({', '.join(names) or 'none'}) of "
            f"the {len(NAMES)} in mechcheck.tasks.ioi.NAMES")
    places, objects = _single_tokens(tokenizer, PLACES), _single_tokens(tokenizer, OBJECTS)
    if len(places) < 2 or len(objects) < 2:
        raise ValueError(f"the ioi task needs at least 2 places and 2 objects that are one "
                         f"token after a space; this tokenizer has {len(places)} places "
                         f"and {len(objects)} objects")
    chosen = _select_templates(templates)
    fill = {"{N1}": names[0], "{N2}": names[1], "{S2}": names[0], "{PLACE}": places[0],
            "{OBJECT}": objects[0]}
    usable, spaced = _usable(tokenizer, chosen, fill)
    if not usable:
        raise ValueError("every ioi template has words this tokenizer does not know "
                         "(they become its unknown token); a word-level vocabulary "
                         "needs mechcheck.tasks.ioi.ioi_vocabulary()")
    name_ids = {n: tokenizer(" " + n, add_special_tokens=False)["input_ids"][0] for n in names}
    return IOIPools(names=names, places=places, objects=objects, templates=usable,
                    spaced=spaced, name_ids=name_ids)


def _locate(tokenizer: Any, pieces: list[tuple[str, str]]) -> dict[str, int]:
    """Token index of each name slot: the length of the tokenized prefix ending with
    that name, minus one (so a BOS token the tokenizer adds is counted)."""
    text, where = "", {}
    for slot, piece in pieces:
        text += piece
        if slot in _NAME_SLOTS:
            where[slot] = len(tokenizer(text)["input_ids"]) - 1
    return where


def _fills(rng: random.Random, pools: IOIPools,
           form: str) -> tuple[dict[str, str], dict[str, str], str, str]:
    """Slot fillers of the clean and ABC-corrupt prompts, the IO and the S name."""
    io, s, a, b, c = rng.sample(pools.names, 5)
    io_slot, s1_slot = ("{N1}", "{N2}") if form == "abba" else ("{N2}", "{N1}")
    common = {"{PLACE}": rng.choice(pools.places), "{OBJECT}": rng.choice(pools.objects)}
    clean = {io_slot: io, s1_slot: s, "{S2}": s, **common}
    corrupt = {io_slot: a, "{S2}": b, s1_slot: c, **common}
    return clean, corrupt, io, s


def _try_row(rng: random.Random, tokenizer: Any, pools: IOIPools,
             order: str) -> dict[str, Any] | None:
    """One row, or None when the tokenizer breaks an assumption (then resample)."""
    index, template = rng.choice(pools.templates)
    form = rng.choice(("abba", "baba")) if order == "both" else order
    clean, corrupt, io, s = _fills(rng, pools, form)
    pieces = _render(template, clean, pools.spaced)
    prompt, where = _text(pieces), _locate(tokenizer, pieces)
    ids = tokenizer(prompt)["input_ids"]
    io_slot, s1_slot = ("{N1}", "{N2}") if form == "abba" else ("{N2}", "{N1}")
    expected = {io_slot: io, s1_slot: s, "{S2}": s}
    if any(where[k] >= len(ids) or ids[where[k]] != pools.name_ids[v]
           for k, v in expected.items()):
        return None
    corrupt_text = _text(_render(template, corrupt, pools.spaced))
    if len(tokenizer(corrupt_text)["input_ids"]) != len(ids):
        return None
    positions = {"IO": where[io_slot], "S1": where[s1_slot], "S1+1": where[s1_slot] + 1,
                 "S2": where["{S2}"], "END": len(ids) - 1}
    return {"prompt": prompt, "answer": " " + io, "wrong": " " + s, "corrupt": corrupt_text,
            "positions": positions, "template": f"{form}-{index}", "order": form}


def ioi_row(rng: random.Random, tokenizer: Any, pools: IOIPools, *,
            order: str = "both") -> dict[str, Any]:
    """One IOI row drawn with ``rng`` from ``pools`` (see :func:`ioi_pools`).

    Raises:
        ValueError: no valid row after many draws (the tokenizer merges names with
            their neighbours, or the corrupt prompt never has the prompt's length).
    """
    _check_order(order)
    for _ in range(_MAX_TRIES):
        row = _try_row(rng, tokenizer, pools, order)
        if row is not None:
            return row
    raise ValueError(f"no ioi row in {_MAX_TRIES} draws had every name as its own token "
                     "and a corrupt prompt of the prompt's token count under this tokenizer")


def ioi_rows(tokenizer: Any, *, n: int, seed: int, order: str = "both",
             templates: Sequence[int] | int | None = None) -> list[dict[str, Any]]:
    """``n`` IOI rows for ``tokenizer``, the same for the same seed.

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        n: number of rows.
        seed: seeds the row generator.
        order: ``both`` (ABBA or BABA at random per row), ``abba`` or ``baba``.
        templates: indices into :data:`TEMPLATES`; all when None.

    Returns:
        Rows with ``prompt``, ``answer`` (" " + IO), ``wrong`` (" " + S), ``corrupt``
        (ABC), ``positions`` (IO, S1, S1+1, S2, END) and ``template``.

    Raises:
        ValueError: a bad ``order`` or ``templates``, or a tokenizer with too few
            single-token names (see :func:`ioi_pools`).
    """
    _check_order(order)
    pools = ioi_pools(tokenizer, templates=templates)
    rng = random.Random(seed)
    return [ioi_row(rng, tokenizer, pools, order=order) for _ in range(n)]


def ioi_strategy(tokenizer: Any, *, order: str = "both",
                 templates: Sequence[int] | int | None = None) -> Any:
    """A Hypothesis strategy of IOI rows for ``tokenizer`` (shrinks towards seed 0)."""
    from hypothesis import strategies as st

    _check_order(order)
    pools = ioi_pools(tokenizer, templates=templates)
    return st.randoms(use_true_random=False).map(
        lambda rng: ioi_row(rng, tokenizer, pools, order=order))


IOI = Task(
    name="ioi", generate=ioi_rows, strategy=ioi_strategy,
    params={"order": "both (default), abba or baba: which name comes first",
            "templates": "a list of template indices (0-14) to use; all by default"},
    description="indirect-object identification (Wang et al. 2022): the answer is the "
    "name that occurs once, with ABC corrupt prompts",
)
