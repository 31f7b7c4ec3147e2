"""Shared fixtures: tiny random models of every supported architecture, saved to disk
and loaded the way claim files load them, and a check that no test leaves a hook."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

# No test may reach the network: hub lookups fail at once instead of timing out.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# tests/ checks mechcheck as shipped: the example plugins that CI installs (plugins/*)
# are not loaded from their entry points here, so messages that list registered names
# stay as the docs show them.  A test that wants a plugin registers it itself.
os.environ.setdefault("MECHCHECK_DISABLE_PLUGIN_AUTOLOAD", "1")

ROOT = Path(__file__).resolve().parents[1]
_WATCHED: list[Any] = []


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """``pytest tests/`` (a folder, or several files) runs on one pytest-xdist worker
    per core (``-n 0``: in this process), each worker on its share of the cores
    (mechcheck.workers); one test file runs in this process."""
    from mechcheck.workers import default_workers

    args = [config.invocation_params.dir / a.split("::", 1)[0] for a in config.args]
    default_workers(config, units=sum(1 << 20 if p.is_dir() else 1 for p in args))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, the tests marked slow (minutes each) start first, so that the
    run does not end waiting on one of them."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_folder(arch, **kw)``: a saved tiny model (built once per arguments)."""
    from mechcheck.testing.models import save_tiny

    made: dict[tuple, Path] = {}

    def make(arch: str = "gpt2", **kwargs: Any) -> Path:
        key = (arch, tuple(sorted(kwargs.items())))
        if key not in made:
            folder = tmp_path_factory.mktemp(f"tiny-{arch}")
            made[key] = save_tiny(arch, folder, seed=kwargs.pop("seed", 3), **kwargs)
        return made[key]

    return make


@pytest.fixture(scope="session")
def tiny_loaded(tiny_folder: Callable[..., Path]) -> Callable[..., Any]:
    """``tiny_loaded(arch)``: a LoadedModel as the session would load it."""
    from mechcheck.models.archs import BUILTIN_ARCHS
    from mechcheck.models.loading import load_model

    cache: dict[str, Any] = {}

    def load(arch: str = "gpt2") -> Any:
        if arch not in cache:
            cache[arch] = load_model(str(tiny_folder(arch)), archs=BUILTIN_ARCHS, device="cpu")
            _WATCHED.append(cache[arch].model)
        return cache[arch]

    return load


def word_rows(n: int, *, seed: int = 0, lengths: tuple[int, ...] = (6, 8),
              corrupt: bool = True) -> list[dict[str, Any]]:
    """Rows of random vocabulary words: prompt, answer, wrong, corrupt, positions."""
    from mechcheck.testing.models import DEFAULT_WORDS

    rng = random.Random(seed)
    words = list(DEFAULT_WORDS)
    rows = []
    for _ in range(n):
        length = rng.choice(lengths)
        prompt = rng.sample(words, length)
        other = list(prompt)
        other[1] = rng.choice([w for w in words if w not in prompt])
        answer, wrong = rng.sample(words, 2)
        row = {"prompt": " ".join(prompt), "answer": answer, "wrong": wrong,
               "positions": {"S": 2, "END": length}}  # +1 for the tokenizer's <bos>
        if corrupt:
            row["corrupt"] = " ".join(other)
        rows.append(row)
    return rows


@pytest.fixture(scope="session", autouse=True)
def _import_everything_once(tiny_loaded: Callable[..., Any]) -> None:
    """Run the whole pipeline once in this process before any pytester run.

    pytester's in-process runs restore ``sys.modules`` afterwards, so a module first
    imported inside one (torch registers operators on import) would be imported twice.
    """
    import tempfile

    import pandas as pd

    from mechcheck.addresses import Address
    from mechcheck.data import load_rows, tokenize_rows
    from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS
    from mechcheck.engine.runner import Runner
    from mechcheck.report.io import results_frame
    from mechcheck.session import Session

    with tempfile.TemporaryDirectory() as folder:
        rows = word_rows(2)
        Path(folder, "d.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        pd.DataFrame(rows).to_csv(Path(folder, "d.csv"), index=False)
        load_rows(Path(folder, "d.jsonl"))
        load_rows(Path(folder, "d.csv"))
    results_frame([])
    loaded = tiny_loaded("gpt2")
    runner = Runner(loaded, tokenize_rows(word_rows(2), loaded.tokenizer))
    runner.patched_logits([(Address("head", 0, 0), BUILTIN_INTERVENTIONS[0])])
    runner.pattern(0, 0)
    Session()


def checkpointed_project(root: Path, steps: tuple[str, ...]) -> str:
    """Tiny GPT-2 checkpoints ``root/model/<step>`` (different seeds), 12 rows in
    ``root/d.jsonl``; returns a claim file over them (a passing and a failing claim)."""
    from mechcheck.testing.models import save_tiny

    for i, step in enumerate(steps):
        save_tiny("gpt2", root / "model" / step, seed=10 + i)
    root.joinpath("d.jsonl").write_text("\n".join(json.dumps(r) for r in word_rows(12)))
    return f"""\
model: model
data: d.jsonl
checkpoints: [{", ".join(steps)}]
claims:
  - id: first
    kind: attends
    components: ["head 0.0"]
    pattern: first_token
    min_score: 0.0
  - id: never
    kind: attends
    components: ["head 0.0"]
    pattern: previous_token
    min_score: 0.99
"""


@pytest.fixture(autouse=True)
def _no_hook_left_behind() -> Any:
    """Every test must leave the shared models without the hooks it installed."""
    from mechcheck.engine.hooks import hook_count

    before = [hook_count(m) for m in _WATCHED]
    yield
    after = [hook_count(m) for m in _WATCHED[: len(before)]]
    assert after == before, "a test left torch hooks installed on a shared model"


def assert_located_errors(results: dict[str, Any], expected: dict[str, tuple[str, str]]) -> None:
    """Each claim of ``expected`` (id -> (key, text)) is an error located at that claim
    and key whose message holds ``text`` and no traceback."""
    for claim_id, (key, text) in expected.items():
        result = results[claim_id]
        assert result.verdict == "error", (claim_id, result.verdict, result.message)
        assert f"claim '{claim_id}', key '{key}'" in result.message, result.message
        assert text in result.message, result.message
        assert "Traceback" not in result.message


def parsed(kind: Any, **raw: Any) -> dict[str, Any]:
    """A kind's params as the loader makes them from ``raw`` claim keys: each key
    parsed, defaults filled in (``claim_context`` takes params as they are)."""
    params = {}
    for name, spec in kind.keys.items():
        if name in raw:
            params[name] = spec.parse(raw[name])
        elif spec.default is not None:
            params[name] = spec.default
    return params


def claim_context(loaded: Any, rows: list[dict[str, Any]], *, kind: str = "necessary",
                  batch_size: int = 128, **params: Any) -> Any:
    """A ClaimContext for a claim of ``kind`` with ``params`` on ``loaded`` over
    ``rows`` (no claim file: the session's runner is this one)."""
    from mechcheck.data import tokenize_rows
    from mechcheck.engine.context import ClaimContext
    from mechcheck.engine.runner import Runner
    from mechcheck.session import Session
    from mechcheck.spec.schema import ClaimSpec

    session = Session(batch_size=batch_size)
    runner = Runner(loaded, tokenize_rows(rows, loaded.tokenizer), batch_size=batch_size)
    session.runner = lambda claim: runner  # type: ignore[method-assign]
    spec = ClaimSpec(id="c", kind=kind, path="test_c.yaml", line=1, base_dir=".",
                     model=None, params=params)
    return ClaimContext(session, spec)
