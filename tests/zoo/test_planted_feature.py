"""The planted-feature zoo models: both solve their task with the same logits, both
write the answer's group into ``blocks.0.resid_post`` at the last position, and erasing
that feature there breaks the read model only.  Expected numbers are worked out here
from the construction (the LayerNorm statistics of a few one-hot entries), not taken
from the recipe's code path."""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mechcheck import zoo
from mechcheck.addresses import Address
from mechcheck.api import evaluate_path
from mechcheck.models.archs import BUILTIN_ARCHS
from mechcheck.models.loading import LoadedModel, eager_attention, load_model
from mechcheck.zoo import planted_feature as pf
from tests.docs_blocks import blocks, mismatch, output_of

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "claims" / "zoo" / "planted_feature.jsonl"
DOC = ROOT / "docs" / "zoo" / "planted-feature.md"
ROWS = [json.loads(line) for line in DATA.read_text().splitlines()]
VARIANTS = ("read", "unread")
FEATURE = [72, 73]  # FA, FB
TOKEN = list(range(40))

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def ln_std(*entries: float, d_model: int = 128, eps: float = 1e-5) -> float:
    """The standard deviation a LayerNorm divides by, for an input whose nonzero
    entries are ``entries`` (the rest of ``d_model`` zero)."""
    mean = sum(entries) / d_model
    return math.sqrt(sum(e * e for e in entries) / d_model - mean * mean + eps)


# logit(yes) - logit(no) = unembed scale 1 * answer entry 64 / ln_f's std, where the last
# position holds token, position, feature (8 each) and answer (64)
CLEAN_LD = 64 / ln_std(8, 8, 8, 64)
# the feature block replaced by its mean over the (balanced) rows: FA = FB = 4
MEAN_LD_UNREAD = 64 / ln_std(8, 8, 4, 4, 64)
# ... or by zero
ZERO_LD_UNREAD = 64 / ln_std(8, 8, 64)


@pytest.fixture(scope="module")
def models() -> dict[str, LoadedModel]:
    """Both shipped models, loaded from ``zoo:`` the way claim files load them."""
    torch.set_num_threads(2)
    return {v: load_model(f"zoo:{pf.NAMES[v]}", archs=BUILTIN_ARCHS, device="cpu")
            for v in VARIANTS}


def _by_length(rows: list[dict[str, Any]]) -> Iterator[list[int]]:
    """Row indices grouped by prompt length (one batch each, no padding)."""
    lengths: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        lengths.setdefault(len(str(row["prompt"]).split()), []).append(i)
    yield from lengths.values()


@contextmanager
def replaced(loaded: LoadedModel, address: str,
             edit: Callable[[torch.Tensor], None]) -> Iterator[None]:
    """Within the block, ``edit(hidden)`` changes ``address``'s activation in place."""
    site = loaded.adapter.site(Address.parse(address))
    assert site.when == "post", site

    def hook(module: Any, args: Any, output: Any) -> None:
        edit(output[0] if isinstance(output, tuple) else output)

    handle = loaded.adapter.module(site.module).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def run(loaded: LoadedModel, rows: list[dict[str, Any]], *, column: str = "prompt",
        edit: Callable[[torch.Tensor, list[int]], None] | None = None,
        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the logit difference answer - wrong at the last position, the argmax over
    {yes, no} (as a token id), and ``blocks.0.resid_post`` at END.  ``edit(hidden,
    rows)`` changes that activation of the batch ``rows`` first."""
    tok = loaded.tokenizer
    n = len(rows)
    diff, best, resid = torch.zeros(n), torch.zeros(n, dtype=torch.long), torch.zeros(n, 128)
    yes, no = tok.convert_tokens_to_ids(["yes", "no"])
    for batch in _by_length(rows):
        ids = torch.tensor([tok(str(rows[i][column]))["input_ids"] for i in batch])
        if edit is None:
            out = loaded.model(ids, output_hidden_states=True)
        else:
            with replaced(loaded, "blocks.0.resid_post", lambda h, b=batch: edit(h, b)):
                out = loaded.model(ids, output_hidden_states=True)
        logits = out.logits[:, -1]
        for k, i in enumerate(batch):
            answer, wrong = tok.convert_tokens_to_ids([rows[i]["answer"], rows[i]["wrong"]])
            diff[i] = logits[k, answer] - logits[k, wrong]
            best[i] = yes if logits[k, yes] > logits[k, no] else no
            resid[i] = out.hidden_states[1][k, rows[i]["positions"]["END"]]
    return diff, best, resid


def _mean_at(loaded: LoadedModel, position: str, dims: list[int]) -> torch.Tensor:
    """The mean over the rows of ``blocks.0.resid_post[dims]`` at ``position``."""
    total = torch.zeros(len(dims), dtype=torch.float64)

    def record(hidden: torch.Tensor, batch: list[int]) -> None:
        nonlocal total
        for k, i in enumerate(batch):
            total += hidden[k, ROWS[i]["positions"][position], dims].double()

    run(loaded, ROWS, edit=record)
    return (total / len(ROWS)).float()


def _setting(position: str, dims: list[int], value: torch.Tensor) -> Callable[..., None]:
    def edit(hidden: torch.Tensor, batch: list[int]) -> None:
        for k, i in enumerate(batch):
            hidden[k, ROWS[i]["positions"][position], dims] = value

    return edit


# -- the task ---------------------------------------------------------------------------
def test_vocabulary_and_groups() -> None:
    tok = pf.make_tokenizer()
    vocab = tok.get_vocab()
    assert [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])][:4] == [
        "<unk>", "<bos>", "yes", "no"]
    assert len(vocab) == 36 and len(set(pf.WORDS)) == 32
    assert pf.GROUP_A == pf.WORDS[:16] and pf.GROUP_B == pf.WORDS[16:]
    assert tok("cat vase")["input_ids"] == [1, 4, 35]


def test_shipped_data_file_is_the_seeded_rows(tmp_path: Path) -> None:
    written = pf.write_rows(tmp_path / "rows.jsonl", n=200, seed=0)
    assert written.read_text() == DATA.read_text()
    assert pf.feature_rows(n=7, seed=3) == pf.feature_rows(n=7, seed=3)
    assert pf.feature_rows(n=7, seed=3) != pf.feature_rows(n=7, seed=4)


def test_rows_follow_the_task() -> None:
    tok = pf.make_tokenizer()
    first_b = pf.WORDS.index("cup")
    assert first_b == 16
    assert sum(r["group_prev"] == "A" for r in ROWS) == 100 and len(ROWS) == 200
    assert 0 < sum(r["group_last"] == "A" for r in ROWS) < 200
    for row in ROWS:
        words, corrupt = row["prompt"].split(), row["corrupt"].split()
        group = "A" if pf.WORDS.index(words[-2]) < first_b else "B"
        assert 4 <= len(words) <= 12 and set(words) <= set(pf.WORDS)
        assert all(a != b for a, b in zip(words, words[1:], strict=False))
        assert all(a != b for a, b in zip(corrupt, corrupt[1:], strict=False))
        assert row["group_prev"] == group and row["prev_word"] == words[-2]
        assert row["group_last"] == ("A" if pf.WORDS.index(words[-1]) < first_b else "B")
        assert (row["answer"], row["wrong"]) == (("yes", "no") if group == "A" else ("no", "yes"))
        assert corrupt[:-2] == words[:-2] and corrupt[-1] == words[-1]
        assert (pf.WORDS.index(corrupt[-2]) < first_b) != (group == "A")
        ids = tok(row["prompt"])["input_ids"]
        positions = row["positions"]
        assert positions["END"] == len(ids) - 1 and positions["PREV"] == len(ids) - 2
        assert tok.convert_ids_to_tokens(ids[positions["PREV"]]) == words[-2]


# -- the weights -------------------------------------------------------------------------
def test_components_outside_the_circuit_are_exactly_zero() -> None:
    for variant in VARIANTS:
        model = pf.make_model(variant)
        for block in model.transformer.h:
            assert not block.attn.c_attn.weight.view(128, 3, 2, 64)[:, :, 1].any()  # head x.1
            assert not block.attn.c_proj.weight[64:].any()
            assert not block.attn.c_attn.bias.any() and not block.attn.c_proj.bias.any()
            assert not any(p.any() for p in block.mlp.parameters())
        assert torch.equal(model.transformer.ln_f.weight, torch.ones(128))
        assert not model.transformer.ln_f.bias.any()
        read_by_unembed = model.lm_head.weight.abs().sum(dim=0).nonzero().flatten().tolist()
        assert read_by_unembed == [75, 76]  # the answer block only


def test_variants_differ_only_in_head_1_0() -> None:
    read, unread = (pf.make_model(v).state_dict() for v in VARIANTS)
    differ = {k for k in read if not torch.equal(read[k], unread[k])}
    assert differ == {"transformer.h.1.attn.c_attn.weight"}  # its q, k and v
    v_read = read["transformer.h.1.attn.c_attn.weight"][:, 256:320]
    v_unread = unread["transformer.h.1.attn.c_attn.weight"][:, 256:320]
    assert v_read[FEATURE].any() and not v_read[TOKEN].any()
    assert v_unread[TOKEN].any() and not unread["transformer.h.1.attn.c_attn.weight"][FEATURE].any()


def test_build_is_deterministic_and_matches_the_shipped_weights(tmp_path: Path) -> None:
    for variant in VARIANTS:
        name = pf.NAMES[variant]
        first = load_file(zoo.build(name, tmp_path / f"{name}-a") / "model.safetensors")
        second = load_file(pf.build(tmp_path / f"{name}-b", variant=variant)
                           / "model.safetensors")
        shipped = load_file(zoo.WEIGHTS / name / "model.safetensors")
        assert first.keys() == second.keys() == shipped.keys()
        assert "lm_head.weight" in first  # untied from the embedding
        for key in first:
            assert torch.equal(first[key], second[key]), key
            assert torch.equal(first[key], shipped[key]), (name, key)
        tokenizer = json.loads((tmp_path / f"{name}-a" / "tokenizer.json").read_text())
        assert tokenizer == json.loads((zoo.WEIGHTS / name / "tokenizer.json").read_text())


def test_cli_builds_into_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mechcheck.cli import main

    out = tmp_path / "built"
    assert main(["zoo", "build", pf.NAME_READ, "--out", str(out), "--quiet"]) == 0
    assert f"built zoo:{pf.NAME_READ} into {out}" in capsys.readouterr().out
    built = load_file(out / "model.safetensors")
    shipped = load_file(zoo.WEIGHTS / pf.NAME_READ / "model.safetensors")
    assert all(torch.equal(built[k], shipped[k]) for k in shipped)


def test_registered_beside_a_one_model_recipe(tmp_path: Path) -> None:
    from mechcheck.zoo import planted

    assert {pf.NAME_READ, pf.NAME_UNREAD} <= set(zoo.names())
    assert zoo.resolve(pf.NAME_UNREAD) == zoo.WEIGHTS / pf.NAME_UNREAD
    assert zoo.checkpoints(pf.NAME_READ) == []
    rebuilt = load_file(zoo.build(planted.NAME, tmp_path / "prevtoken") / "model.safetensors")
    shipped = load_file(zoo.WEIGHTS / planted.NAME / "model.safetensors")
    assert all(torch.equal(rebuilt[k], shipped[k]) for k in shipped)


# -- behaviour ---------------------------------------------------------------------------
def test_both_solve_the_task_with_equal_logits(models: dict[str, LoadedModel]) -> None:
    answers = torch.tensor([models["read"].tokenizer.convert_tokens_to_ids(r["answer"])
                            for r in ROWS])
    found = {v: run(m, ROWS) for v, m in models.items()}
    assert CLEAN_LD == pytest.approx(11.1364, abs=1e-4)
    for diff, best, _ in found.values():
        assert torch.equal(best, answers)  # accuracy 1
        assert torch.allclose(diff, torch.full_like(diff, CLEAN_LD), atol=1e-4)
    tok = models["read"].tokenizer
    for batch in _by_length(ROWS):  # every logit at every position
        ids = torch.tensor([tok(ROWS[i]["prompt"])["input_ids"] for i in batch])
        with torch.no_grad():
            logits = [m.model(ids).logits for m in models.values()]
        assert float((logits[0] - logits[1]).abs().max()) < 2e-6


def test_corrupt_flips_the_answer(models: dict[str, LoadedModel]) -> None:
    wrongs = torch.tensor([models["read"].tokenizer.convert_tokens_to_ids(r["wrong"])
                           for r in ROWS])
    for loaded in models.values():
        diff, best, _ = run(loaded, ROWS, column="corrupt")
        assert torch.equal(best, wrongs)
        assert torch.allclose(diff, torch.full_like(diff, -CLEAN_LD), atol=1e-4)


@torch.no_grad()
def test_attention_patterns(models: dict[str, LoadedModel]) -> None:
    ids = models["read"].tokenizer(ROWS[0]["prompt"], return_tensors="pt")["input_ids"]
    n = ids.shape[1]
    previous = torch.diag(torch.ones(n - 1), -1)
    previous[0, 0] = 1.0
    for variant, loaded in models.items():
        with eager_attention(loaded.model):
            layers = loaded.model(ids, output_attentions=True).attentions
        assert torch.allclose(layers[0][0, 0], previous, atol=1e-6)
        wanted = torch.eye(n) if variant == "read" else previous
        assert torch.allclose(layers[1][0, 0], wanted, atol=1e-6), variant


def test_feature_at_end_encodes_the_group_in_both(models: dict[str, LoadedModel]) -> None:
    sign = torch.tensor([1.0 if r["group_prev"] == "A" else -1.0 for r in ROWS])
    resid = {v: run(m, ROWS)[2] for v, m in models.items()}
    assert torch.equal(resid["read"], resid["unread"])  # layer 0 is the same, bit for bit
    fa_minus_fb = resid["read"][:, 72] - resid["read"][:, 73]
    assert torch.allclose(fa_minus_fb, 8.0 * sign, atol=1e-5)
    # a least-squares probe on the whole residual decodes group_prev perfectly
    x = torch.cat([resid["read"], torch.ones(len(ROWS), 1)], dim=1).double()
    w = torch.linalg.pinv(x) @ sign.double()
    assert torch.equal(torch.sign(x @ w).float(), sign)


@pytest.mark.parametrize("how", ["mean", "zero"])
def test_erasing_the_feature_at_end_breaks_only_the_read_model(
        models: dict[str, LoadedModel], how: str) -> None:
    """Read: the logit difference falls to 0.  Unread: it stays, but for ln_f's std,
    which the feature's entries are part of (+0.38% for the mean, +0.64% for zero)."""
    unread_ld = {"mean": MEAN_LD_UNREAD, "zero": ZERO_LD_UNREAD}[how]
    assert unread_ld / CLEAN_LD - 1 == pytest.approx({"mean": 0.0038, "zero": 0.0064}[how],
                                                     abs=1e-4)
    for variant, loaded in models.items():
        value = _mean_at(loaded, "END", FEATURE) if how == "mean" else torch.zeros(2)
        if how == "mean":
            assert torch.allclose(value, torch.tensor([4.0, 4.0]), atol=1e-5)
        diff, _, resid = run(loaded, ROWS, edit=_setting("END", FEATURE, value))
        assert torch.equal(resid[:, FEATURE], value.expand(len(ROWS), 2))
        if variant == "read":
            assert float(diff.abs().max()) < 1e-4, variant
        else:
            assert torch.allclose(diff, torch.full_like(diff, unread_ld), atol=1e-4), variant


def test_erasing_the_token_at_prev_breaks_only_the_unread_model(
        models: dict[str, LoadedModel]) -> None:
    """After layer 0 the read model has the group at END already; the unread model's
    head 1.0 reads the word at PREV, whose mean over the balanced rows has no group."""
    for variant, loaded in models.items():
        value = _mean_at(loaded, "PREV", TOKEN)
        assert float(value[4:20].sum()) == pytest.approx(4.0, abs=1e-5)  # half are group A
        diff, _, _ = run(loaded, ROWS, edit=_setting("PREV", TOKEN, value))
        if variant == "read":
            assert torch.allclose(diff, torch.full_like(diff, CLEAN_LD), atol=1e-4)
        else:
            assert float(diff.abs().max()) < 1e-4


# -- claims ------------------------------------------------------------------------------
CLAIMS = """\
model: {model}
data: planted_feature.jsonl
metric: logit_diff
claims:
  - id: head_0_0_at_end_necessary
    kind: necessary
    components: ["head 0.0"]
    ablation: mean
    at: END
    min_drop: 5.0
  - id: head_1_0_necessary
    kind: necessary
    components: ["head 1.0"]
    ablation: zero
    min_drop: 5.0
  - id: head_0_0_necessary
    kind: necessary
    components: ["head 0.0"]
    ablation: mean
    min_drop: 5.0
  - id: others_negligible
    kind: negligible
    components: ["head 0.1", "head 1.1", "mlp 0", "mlp 1"]
    ablation: zero
    margin: 0.001
"""


def test_claims_tell_the_two_apart(tmp_path: Path) -> None:
    """Head 0.0's output at END is the feature and nothing else: necessary for the read
    model only (mechcheck's mean is per token index, over rows that are not balanced
    there, so the drop is a little under the clean 11.136)."""
    (tmp_path / DATA.name).symlink_to(DATA)
    effects = {}
    for variant in VARIANTS:
        path = tmp_path / f"test_{variant}.yaml"
        path.write_text(CLAIMS.format(model=f"zoo:{pf.NAMES[variant]}"))
        effects[variant] = {r.id: (r.verdict, r.effect) for r in evaluate_path(path)}
    read, unread = effects["read"], effects["unread"]
    assert read["head_0_0_at_end_necessary"][0] == "pass"
    assert read["head_0_0_at_end_necessary"][1] > 10.5
    assert unread["head_0_0_at_end_necessary"][0] == "fail"
    assert unread["head_0_0_at_end_necessary"][1] == pytest.approx(
        CLEAN_LD - MEAN_LD_UNREAD, abs=0.01)
    # at every position: for the unread model, the feature changes blocks.1.ln_1's
    # variance at PREV, and with it the value head 1.0 reads there
    assert read["head_0_0_necessary"][0] == "pass"
    assert unread["head_0_0_necessary"][0] == "fail"
    assert unread["head_0_0_necessary"][1] == pytest.approx(-0.44, abs=0.005)
    for found in (read, unread):
        assert found["head_1_0_necessary"][0] == "pass"
        assert found["head_1_0_necessary"][1] == pytest.approx(CLEAN_LD, abs=1e-4)
        assert found["others_negligible"] == ("pass", 0.0)


# -- the docs page -----------------------------------------------------------------------
def test_doc_python_examples_run_as_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Python blocks of docs/zoo/planted-feature.md run, in order, from a folder that
    holds claims/zoo/planted_feature.jsonl, and print what the page shows after them."""
    (tmp_path / "claims" / "zoo").mkdir(parents=True)
    (tmp_path / "claims" / "zoo" / DATA.name).symlink_to(DATA)
    monkeypatch.chdir(tmp_path)
    page = blocks(DOC)
    python = [b for b in page if b.lang == "python"]
    assert python, DOC
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    for block in python:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(block.text, block.name, "exec"), namespace)
        shown = output_of(block, page)
        assert shown is not None, f"{block.name}: show its output in a text block after it"
        problem = mismatch(shown.text, printed.getvalue())
        assert problem is None, f"{block.name}: {problem}"
