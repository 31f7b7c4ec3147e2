# The task plugin of docs/plugins.md (quoted there).
# mechcheck_lab_tasks.py
import random

import mechcheck
from mechcheck.tasks import Task
from mechcheck.tasks.vocab import word_pool


def alternation_rows(tokenizer, *, n, seed, repeats=3):
    """Prompts "a b a b a" whose answer is " b"; the corrupt prompt alternates a with c."""
    words = word_pool(tokenizer)
    if len(words) < 3:
        raise ValueError(f"alternation needs 3 single-token words, this tokenizer has "
                         f"{len(words)}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, c = rng.sample(words, 3)
        rows.append({
            "prompt": " ".join([a, b] * repeats + [a]),
            "answer": " " + b,
            "wrong": " " + c,
            "corrupt": " ".join([a, c] * repeats + [a]),
            "positions": {"B1": -2 * repeats, "END": -1},
        })
    return rows


def alternation_strategy(tokenizer, *, repeats=3):
    from hypothesis import strategies as st

    return st.integers(min_value=0, max_value=2**32 - 1).map(
        lambda seed: alternation_rows(tokenizer, n=1, seed=seed, repeats=repeats)[0])


@mechcheck.hookimpl
def mechcheck_tasks():
    return [Task(name="alternation", generate=alternation_rows,
                 strategy=alternation_strategy,
                 params={"repeats": "how many times the pair is shown (default 3)"},
                 description="'a b a b a' -> ' b'")]
