"""benchmarks/bench_sweep.py: its methods agree, its check can fail, its FLOP floor.

The benchmark runs in-process on ``--quick`` (a 2-layer GPT-2, 4 prompts of 8 tokens):
seconds.  No time is asserted; the peers (TransformerLens, nnsight, pyvene) are not
installed in mechcheck's environment, so they are reported as not run here.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_sweep",
                                                  ROOT / "benchmarks" / "bench_sweep.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_sweep"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _table_rows(out: str) -> dict[str, list[str]]:
    """method -> its cells, from the printed table (the line after 'method  seconds')."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"method\s+seconds", line))
    rows: dict[str, list[str]] = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        name, cells = line[:36].strip(), line[36:].split()
        rows[name] = cells
    return rows


def test_quick_run_agrees_and_prints_the_table(bench: ModuleType,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    assert bench.main(["--quick"]) == 0
    assert torch.get_num_threads() == threads  # restored for the rest of the session
    out = capsys.readouterr().out
    assert "all methods agree" in out
    # every method that ran was compared, and matched to the tolerance
    compared = re.findall(r"^  (.+?)\s+max abs diff (\S+)\s+(ok|DISAGREES)$", out, re.M)
    names = {name for name, _, _ in compared}
    assert "plain hooks, full logits" in names
    assert any(name.startswith("mechcheck") for name in names)
    assert all(verdict == "ok" and float(diff) <= 1e-4 for _, diff, verdict in compared)
    rows = _table_rows(out)
    for name in ("plain forward (full logits)", "plain hooks, full logits",
                 "plain hooks, last logits", "FLOP floor (shapes / matmul rate)"):
        assert name in rows, name
    assert rows["plain hooks, last logits"][1] == "1.00x"  # the reference of the ratios
    assert float(rows["FLOP floor (shapes / matmul rate)"][0]) > 0
    # the peers are not part of mechcheck's environment: named, not run
    assert re.search(r"^nnsight\s+not run: nnsight is not installed", out, re.M) or \
        "nnsight" in rows


def test_a_method_that_disagrees_fails_the_run(bench: ModuleType,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    plain = bench.plain_hooks

    def off_by_a_little(b: object, *, last: bool) -> np.ndarray:
        values = plain(b, last=last)
        if not last:  # only the full-logits loop is wrong, by 1e-3 on one head
            values[1, 0] += 1e-3
        return values

    monkeypatch.setattr(bench, "plain_hooks", off_by_a_little)
    assert bench.main(["--quick", "--skip", "mechcheck", "attribution"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"plain hooks, full logits\s+max abs diff 1\.00e-03\s+DISAGREES", out)
    assert "METHODS DISAGREE" in out


def test_plain_hook_loop_matches_a_hand_written_ablation(bench: ModuleType) -> None:
    """The reference itself: zeroing head h's slice of c_proj's input equals running
    the attention by hand without that head (tiny GPT-2, perturbed biases and norms)."""
    from mechcheck.testing.models import build_tiny

    model, _ = build_tiny("gpt2", seed=4)
    model.eval()
    ids = torch.randint(2, 40, (3, 7), generator=torch.Generator().manual_seed(0))
    b = bench.Bench(model=model, tokenizer=None, folder=None, input_ids=ids,
                    answers=torch.tensor([3, 4, 5]), wrongs=torch.tensor([6, 7, 8]),
                    heads=[(1, 2)], d_head=8)
    with torch.inference_mode():
        got = bench.plain_hooks(b, last=True)[0]
        want = _by_hand(model, ids, layer=1, head=2)
    rows = torch.arange(3)
    want_ld = (want[rows, b.answers] - want[rows, b.wrongs]).double().numpy()
    np.testing.assert_allclose(got, want_ld, atol=1e-5)


def _by_hand(model: torch.nn.Module, ids: torch.Tensor, *, layer: int, head: int,
             ) -> torch.Tensor:
    """GPT-2's forward written out, with one head's output left out: last logits."""
    tr = model.transformer
    x = tr.wte(ids) + tr.wpe(torch.arange(ids.shape[1]))
    t = ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    for i, block in enumerate(tr.h):
        a = block.attn
        n_heads, d = a.num_heads, x.shape[-1]
        q, k, v = (block.ln_1(x) @ a.c_attn.weight + a.c_attn.bias).split(d, dim=-1)
        q, k, v = (m.view(*m.shape[:2], n_heads, -1).transpose(1, 2) for m in (q, k, v))
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        z = scores.masked_fill(~causal, float("-inf")).softmax(-1) @ v  # [b, h, t, dh]
        if i == layer:
            z[:, head] = 0.0
        z = z.transpose(1, 2).reshape(*x.shape)
        x = x + z @ a.c_proj.weight + a.c_proj.bias
        h = block.ln_2(x) @ block.mlp.c_fc.weight + block.mlp.c_fc.bias
        x = x + block.mlp.act(h) @ block.mlp.c_proj.weight + block.mlp.c_proj.bias
    return model.lm_head(tr.ln_f(x))[:, -1]


def test_floor_counts_the_matmuls_of_an_exact_sweep(bench: ModuleType) -> None:
    """A second count: list each matmul ([rows, k] x [k, cols]) of the sweep and sum."""
    s = bench.Shape(n_layers=3, n_heads=4, n_kv_heads=2, d_model=16, d_head=4, d_mlp=24,
                    mlp_mats=3, vocab=50, prompts=2, tokens=5)
    d, dq, dkv, n, b, t = 16, 16, 8, 10, 2, 5

    def mm(rows: int, k: int, cols: int) -> int:
        return 2 * rows * k * cols

    def block(rows: int) -> int:  # one block over `rows` tokens (queries)
        return (mm(rows, d, dq) + 2 * mm(rows, d, dkv) + mm(rows, dq, d)
                + 3 * mm(rows, d, s.d_mlp))

    attention = sum(2 * mm(1, s.d_head, k) * s.n_heads for k in range(1, t + 1)) * b
    last_attention = 2 * mm(1, s.d_head, t) * s.n_heads * b
    final = 2 * mm(n, d, dkv) + mm(b, d, dq) + mm(b, dq, d) + 3 * mm(b, d, s.d_mlp) \
        + last_attention
    unembed = mm(b, d, s.vocab)
    clean = 2 * (block(n) + attention) + final + unembed
    head_0 = mm(n, s.d_head, d) + 3 * mm(n, d, s.d_mlp) + (block(n) + attention) \
        + final + unembed  # layer 0 of 3: its MLP, block 1 in full, block 2's final part
    head_1 = mm(n, s.d_head, d) + 3 * mm(n, d, s.d_mlp) + final + unembed
    head_2 = mm(b, s.d_head, d) + 3 * mm(b, d, s.d_mlp) + unembed  # the last layer
    want = clean + s.n_heads * (head_0 + head_1 + head_2)
    assert bench.floor_flops(s, [0, 1, 2]) == pytest.approx(want, rel=1e-12)
    assert bench.floor_flops(s, [2]) == pytest.approx(clean + s.n_heads * head_2, rel=1e-12)
    # below the plain loop, which runs every block in full for every head
    assert bench.floor_flops(s, [0, 1, 2]) < bench.loop_flops(s, 12, full_logits=False)


def test_a_bad_model_is_a_message_not_a_traceback(bench: ModuleType,
                                                  capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path) -> None:
    assert bench.main(["--quick", "--model", str(tmp_path / "no-such-model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bench_sweep: ")
    assert "no-such-model" in err
    assert "Traceback" not in err
