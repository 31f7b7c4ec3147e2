"""Time a sweep of single-head zero ablations: mechcheck against plain hooks and peers.

One run, one process: GPT-2 small's architecture (12 layers, 12 heads, d_model 768,
1024 positions, random weights from ``--seed`` with perturbed biases and layer-norm
parameters, the full 50,257-token vocabulary) with a word-level tokenizer over
``t0 ... t50256`` (so the prompt ``"t12 t5"`` is the token ids ``[12, 5]``), saved as
safetensors to a temporary folder and loaded by mechcheck as a local model folder.
32 prompts of 16 tokens; every head zero-ablated alone (its slice of the input of the
attention's output projection set to 0 at every position); the metric is the logit
difference answer - wrong at the last position, per prompt::

    python benchmarks/bench_sweep.py                         # about 10-15 minutes on 2 cores
    python benchmarks/bench_sweep.py --layers 2 --prompts 8  # a quick look
    python benchmarks/bench_sweep.py --model zoo:smollm2-135m
    ../peers-venv/bin/python benchmarks/bench_sweep.py       # with the peers installed

Timed, each once, in this order:

* ``plain forward``: one ``model(input_ids)`` with logits at every position.
* ``plain hooks, full logits`` / ``plain hooks, last logits``: the notebook loop, one
  forward pass per head with a forward pre-hook on the output projection that zeroes
  the head's slice; all positions' logits, or the last position's (``logits_to_keep=1``).
* ``mechcheck each:``: a claim file with one ``kind: necessary`` claim over
  ``blocks.*.attn.head.*`` with ``each: true``, evaluated by ``mechcheck.api`` (model
  already loaded; the shared clean run, the sweep and 144 decision rules all count).
  Where ``each:`` is not available yet, this row is skipped.
* ``mechcheck Runner.sweep``: the engine's exact sweep called directly on a fresh
  runner (clean run included); a loop of ``Runner.patched_logits`` where the engine has
  no ``sweep`` yet.
* Peers, when importable (install them in their own environment, never mechcheck's:
  ``pip install transformer-lens nnsight pyvene``): TransformerLens' HookedTransformer
  (built from the HF weights, no weight processing) and TransformerBridge, zeroing the
  head in ``hook_z``; nnsight, one trace per head; pyvene, a ``ZeroIntervention`` on
  ``head_attention_value_output`` per head.  Each runs on its own copy of the model.

Every method's per-prompt ablated logit differences ``[heads, prompts]`` must equal the
plain-hook loop's to ``TOLERANCE``; otherwise the script says which and exits 1.

The FLOP floor (:func:`floor_flops`) counts the matrix multiplications an exact sweep
cannot avoid, from the shapes, and divides them by a matmul rate measured in this run.
Times are printed, never asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

TOLERANCE = 1e-4  # max abs difference of ablated logit differences between methods
TARGET_FLOOR = 1.3  # mechcheck's time / the FLOP floor's time
TARGET_SPEEDUP = 3.0  # mechcheck vs each peer and the plain-hook loop
TARGET_ATTRIBUTION = 3.0  # the attribution scan, in plain forward passes
REFERENCE = "plain hooks, last logits"
GPT2_SMALL = {"layers": 12, "heads": 12, "d_model": 768, "vocab": 50257}
QUICK = {"layers": 2, "heads": 4, "d_model": 32, "vocab": 300, "prompts": 4, "tokens": 8}


# -- the shapes and the FLOP floor -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Shape:
    """What the FLOP count needs: the model's widths and the sweep's size."""

    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    mlp_mats: int  # 2 (GPT-2's fc, proj) or 3 (a gated MLP: gate, up, down)
    vocab: int
    prompts: int
    tokens: int


def floor_flops(s: Shape, layers: Sequence[int]) -> float:
    """FLOPs an exact sweep of every head of ``layers`` must spend (2 per multiply-add).

    Per token: qkv = 2 d (d_q + 2 d_kv), kv = 4 d d_kv, q = 2 d d_q, o = 2 d_q d,
    mlp = 2 d d_mlp m (m = 2, or 3 when gated), unembed = 2 d V, low-rank = 2 d_head d
    (the ablated head's output z_h W_O,h taken off the residual stream).  Attention of a
    query at position t (t keys, causal) costs 4 t d_q; over a prompt of T tokens
    2 T (T + 1) d_q.  With B prompts, N = B T tokens and n layers:

        block  = N (qkv + o + mlp) + B 2 T (T + 1) d_q           (one block, in full)
        final  = N kv + B (q + o + mlp) + B 4 T d_q              (last block: keys and
                                                                  values everywhere, the
                                                                  rest at the last token)
        head at L < n-1:  N (low-rank + mlp) + (n - 2 - L) block + final + B unembed
        head at L = n-1:  B (low-rank + mlp + unembed)
        clean run, once:  (n - 1) block + final + B unembed
        floor = clean + sum over the swept heads

    Embeddings, norms, softmax and activation functions (element-wise) are left out, so
    this is a lower bound.
    """
    d, d_q, d_kv = s.d_model, s.n_heads * s.d_head, s.n_kv_heads * s.d_head
    b, t = s.prompts, s.tokens
    n = b * t
    qkv, kv, q, o = 2 * d * (d_q + 2 * d_kv), 4 * d * d_kv, 2 * d * d_q, 2 * d_q * d
    mlp, unembed, low_rank = 2 * d * s.d_mlp * s.mlp_mats, 2 * d * s.vocab, 2 * s.d_head * d
    block = n * (qkv + o + mlp) + b * 2 * t * (t + 1) * d_q
    final = n * kv + b * (q + o + mlp) + b * 4 * t * d_q
    last = s.n_layers - 1
    total = float((s.n_layers - 1) * block + final + b * unembed)
    for layer in layers:
        if layer < last:
            per = n * (low_rank + mlp) + (last - 1 - layer) * block + final + b * unembed
        else:
            per = b * (low_rank + mlp + unembed)
        total += s.n_heads * per
    return total


def loop_flops(s: Shape, heads: int, *, full_logits: bool) -> float:
    """The plain loop's FLOPs (same accounting): one whole forward pass per head."""
    d, d_q, d_kv = s.d_model, s.n_heads * s.d_head, s.n_kv_heads * s.d_head
    n = s.prompts * s.tokens
    block = (n * (2 * d * (d_q + 2 * d_kv) + 2 * d_q * d + 2 * d * s.d_mlp * s.mlp_mats)
             + s.prompts * 2 * s.tokens * (s.tokens + 1) * d_q)
    unembed = 2 * d * s.vocab * (n if full_logits else s.prompts)
    return float(heads * (s.n_layers * block + unembed))


def matmul_rate(tokens: int, d_model: int, d_mlp: int, *, seconds: float = 0.5) -> float:
    """FLOP/s of a ``[tokens, d_model] x [d_model, d_mlp]`` matmul (best of 3 runs)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(tokens, d_model, generator=gen)
    w = torch.randn(d_model, d_mlp, generator=gen)
    flops = 2.0 * tokens * d_model * d_mlp
    best = 0.0
    with torch.inference_mode():
        torch.mm(a, w)
        for _ in range(3):
            reps, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds / 3:
                torch.mm(a, w)
                reps += 1
            best = max(best, reps * flops / (time.perf_counter() - start))
    return best


# -- the model and the prompts ----------------------------------------------------------
def build_gpt2(folder: Path, *, layers: int, heads: int, d_model: int, vocab: int,
               seed: int) -> Path:
    """Save a random GPT-2 (perturbed biases and norms) and its ``t<i>`` tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from mechcheck.testing.models import perturb_params

    config = GPT2Config(vocab_size=vocab, n_positions=1024, n_embd=d_model, n_layer=layers,
                        n_head=heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    perturb_params(model, seed=seed)
    backend = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(vocab)},
                                         unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def gpt2_rows(prompts: int, tokens: int, vocab: int, seed: int) -> list[dict[str, Any]]:
    """Random token ids 1..vocab-1 (``t0`` is the tokenizer's unknown token)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, size=(prompts, tokens))
    pairs = np.array([rng.choice(np.arange(1, vocab), 2, replace=False) for _ in range(prompts)])
    return [{"prompt": " ".join(f"t{i}" for i in row), "answer": f"t{a}", "wrong": f"t{w}"}
            for row, (a, w) in zip(ids, pairs)]


def word_rows(tokenizer: Any, prompts: int, tokens: int, seed: int) -> list[dict[str, Any]]:
    """Prompts of exactly ``tokens`` tokens from a BPE tokenizer's words (each one token
    with and without a leading space), answers with the space; checked by tokenizing."""
    vocab = tokenizer.get_vocab()

    def one_token(text: str) -> bool:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"]) == 1

    rng = np.random.default_rng(seed)
    words = sorted(w[1:] for w in vocab if w.startswith("Ġ") and w[1:].isalpha() and len(w) > 3)
    single = [str(w) for w in rng.permutation(words)[:3000]
              if one_token(" " + w) and one_token(str(w))]
    rows: list[dict[str, Any]] = []
    while len(rows) < prompts:
        chosen = [str(w) for w in rng.choice(single, tokens + 2, replace=False)]
        answer, wrong = chosen.pop(), chosen.pop()
        text = " ".join(chosen)
        while len(tokenizer(text)["input_ids"]) > tokens and " " in text:
            text = text.rsplit(" ", 1)[0]
        if len(tokenizer(text)["input_ids"]) == tokens:
            rows.append({"prompt": text, "answer": " " + answer, "wrong": " " + wrong})
    return rows


# -- the methods ------------------------------------------------------------------------
@dataclass(slots=True)
class Bench:
    """What every method gets: the model, the prompts as ids, the heads to sweep."""

    model: Any  # the HF model mechcheck loaded
    tokenizer: Any
    folder: Path | None  # the saved model (None for a zoo/GGUF source)
    input_ids: torch.Tensor  # [prompts, tokens]
    answers: torch.Tensor  # [prompts]
    wrongs: torch.Tensor
    heads: list[tuple[int, int]]  # (layer, head), layer-major
    d_head: int
    clean: np.ndarray | None = None  # [prompts] clean logit differences

    def logit_diff(self, last_logits: torch.Tensor) -> np.ndarray:
        rows = torch.arange(len(self.answers))
        values = last_logits[rows, self.answers] - last_logits[rows, self.wrongs]
        return values.double().cpu().numpy()


def out_proj(model: Any, layer: int) -> torch.nn.Module:
    """The attention output projection of ``layer`` (its input holds the heads' z)."""
    if hasattr(model, "transformer"):  # GPT-2
        return model.transformer.h[layer].attn.c_proj
    return model.model.layers[layer].self_attn.o_proj  # Llama family


@contextlib.contextmanager
def zeroed_head(model: Any, layer: int, head: int, d_head: int) -> Iterator[None]:
    """The plain way: a forward pre-hook zeroing the head's slice, removed on exit."""

    def hook(_module: Any, args: tuple) -> tuple:
        x = args[0].clone()
        x[..., head * d_head:(head + 1) * d_head] = 0
        return (x, *args[1:])

    handle = out_proj(model, layer).register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def plain_forward(b: Bench) -> None:
    b.model(b.input_ids, use_cache=False)


def plain_hooks(b: Bench, *, last: bool) -> np.ndarray:
    out = []
    kwargs = {"logits_to_keep": 1} if last else {}
    for layer, head in b.heads:
        with zeroed_head(b.model, layer, head, b.d_head):
            logits = b.model(b.input_ids, use_cache=False, **kwargs).logits
        out.append(b.logit_diff(logits[:, -1]))
    return np.stack(out)


def claim_file(b: Bench, data: Path, folder: Path, source: str) -> Path:
    """A claim file of one per-head necessary claim (``each: true``)."""
    layers = sorted({layer for layer, _ in b.heads})
    components = json.dumps([f"blocks.{la}.attn.head.*" for la in layers])
    text = (f"model: {json.dumps(source)}\ndata: {json.dumps(str(data))}\nclaims:\n"
            f"  - id: heads\n    kind: necessary\n    components: {components}\n"
            "    each: true\n    ablation: zero\n    metric: logit_diff\n"
            "    min_drop: 0.0\n")
    path = folder / "test_sweep.yaml"
    path.write_text(text)
    return path


def warm_up(b: Bench, rows: list[dict[str, Any]], work: Path, source: str,
            session: Any) -> None:
    """One untimed claim on 4 prompts first, so that the timed file pays no imports or
    first-call costs (the model is loaded once, before either)."""
    from mechcheck.api import evaluate_path

    folder = work / "warm-up"
    folder.mkdir()
    data = folder / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:4]))
    one = Bench(**{**{f: getattr(b, f) for f in Bench.__slots__}, "heads": b.heads[:2]})
    evaluate_path(claim_file(one, data, folder, source), session)


def mechcheck_each(b: Bench, session: Any, path: Path) -> np.ndarray:
    """Evaluate the ``each:`` claim file; per-prompt patched values per head."""
    from mechcheck.addresses import Address
    from mechcheck.api import evaluate_path

    results = evaluate_path(path, session)
    by_head: dict[tuple[int, int], np.ndarray] = {}
    for r in results:
        if r.verdict == "error" or not r.per_prompt or len(r.components) != 1:
            raise RuntimeError(f"claim {r.id}: {r.verdict} {r.message}")
        address = Address.parse(r.components[0])
        by_head[(int(address.layer), int(address.index))] = np.asarray(  # type: ignore[arg-type]
            r.per_prompt["patched"], dtype=float)
    missing = [h for h in b.heads if h not in by_head]
    if missing:
        raise RuntimeError(f"no result for heads {missing[:3]}...")
    return np.stack([by_head[h] for h in b.heads])


def mechcheck_sweep(b: Bench, loaded: Any, rows: list[dict[str, Any]], zero: Any,
                    ) -> np.ndarray:
    """``Runner.sweep`` on a fresh runner (a ``patched_logits`` loop before it lands)."""
    from mechcheck.addresses import Address
    from mechcheck.data import tokenize_rows
    from mechcheck.engine import runner as runner_module

    runner = runner_module.Runner(loaded, tokenize_rows(rows, loaded.tokenizer))
    targets = [((Address.parse(f"blocks.{la}.attn.head.{h}"), zero),) for la, h in b.heads]
    if hasattr(runner, "sweep"):
        from mechcheck.engine.runs import PatchRequest

        runner.prepare(runner_module.Needs())
        logits = runner.sweep([PatchRequest(targets=t) for t in targets])
    else:
        logits = [runner.patched_logits(list(t)) for t in targets]
    return np.stack([b.logit_diff(x) for x in logits])


def hf_config_folder(b: Bench, work: Path) -> tuple[str, Any]:
    """A folder with the model's config and tokenizer (TransformerBridge reads the
    architecture there), and the tokenizer loaded back from it."""
    from transformers import AutoTokenizer

    folder = work / "config-only"
    b.model.config.save_pretrained(folder)
    b.tokenizer.save_pretrained(folder)
    return str(folder), AutoTokenizer.from_pretrained(folder)


# Each peer: setup (wrap or convert the model: timed apart) returns the sweep to time.
Sweep = Callable[[], np.ndarray]


def tl_hooked(b: Bench, work: Path) -> Sweep:
    """TransformerLens' HookedTransformer from the HF weights, zeroing ``hook_z``."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained import weight_conversions as wc

    hf = b.model.config
    if hf.model_type == "gpt2":
        cfg = HookedTransformerConfig(
            n_layers=hf.n_layer, d_model=hf.n_embd, n_ctx=hf.n_positions,
            d_head=hf.n_embd // hf.n_head, n_heads=hf.n_head,
            d_mlp=hf.n_inner or 4 * hf.n_embd, d_vocab=hf.vocab_size, act_fn="gelu_new",
            normalization_type="LN", eps=hf.layer_norm_epsilon, default_prepend_bos=False,
            original_architecture="GPT2LMHeadModel")
        state = wc.convert_gpt2_weights(b.model, cfg)
    else:
        d_head = hf.hidden_size // hf.num_attention_heads
        cfg = HookedTransformerConfig(
            n_layers=hf.num_hidden_layers, d_model=hf.hidden_size, n_ctx=2048,
            d_head=d_head, n_heads=hf.num_attention_heads,
            n_key_value_heads=hf.num_key_value_heads, d_mlp=hf.intermediate_size,
            d_vocab=hf.vocab_size, act_fn="silu", normalization_type="RMS",
            eps=hf.rms_norm_eps, gated_mlp=True, final_rms=True,
            positional_embedding_type="rotary", rotary_dim=d_head,
            rotary_base=_rope_theta(hf), default_prepend_bos=False,
            original_architecture="LlamaForCausalLM")
        state = wc.convert_llama_weights(b.model, cfg)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict(state, fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False,
                                      refactor_factored_attn_matrices=False)
    model.eval()
    return lambda: _tl_loop(b, model)


def _rope_theta(hf: Any) -> float:
    theta = getattr(hf, "rope_theta", None)
    if theta is None:
        theta = (getattr(hf, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def _tl_loop(b: Bench, model: Any) -> np.ndarray:
    out = []
    for layer, head in b.heads:
        def zero(z: torch.Tensor, hook: Any, head: int = head) -> torch.Tensor:
            z[:, :, head, :] = 0.0
            return z
        logits = model.run_with_hooks(b.input_ids, return_type="logits",
                                      fwd_hooks=[(f"blocks.{layer}.attn.hook_z", zero)])
        out.append(b.logit_diff(logits[:, -1]))
    return np.stack(out)


def tl_bridge(b: Bench, work: Path) -> Sweep:
    """TransformerLens' TransformerBridge around a copy of the HF model, ``hook_z``."""
    from transformer_lens.model_bridge import TransformerBridge

    folder, tokenizer = hf_config_folder(b, work)
    bridge = TransformerBridge.boot_transformers(folder, hf_model=copy.deepcopy(b.model),
                                                 tokenizer=tokenizer, device="cpu")
    bridge.eval()
    return lambda: _tl_loop(b, bridge)


def nnsight_loop(b: Bench, work: Path) -> Sweep:
    """nnsight: one trace per head, zeroing the head's slice of the projection input."""
    from nnsight import LanguageModel

    lm = LanguageModel(copy.deepcopy(b.model), tokenizer=b.tokenizer)
    gpt2 = hasattr(b.model, "transformer")

    def sweep() -> np.ndarray:
        out = []
        for layer, head in b.heads:
            proj = (lm.transformer.h[layer].attn.c_proj if gpt2
                    else lm.model.layers[layer].self_attn.o_proj)
            with lm.trace(b.input_ids):
                proj.input[:, :, head * b.d_head:(head + 1) * b.d_head] = 0
                logits = lm.lm_head.output[:, -1].save()
            out.append(b.logit_diff(getattr(logits, "value", logits)))
        return np.stack(out)

    return sweep


def pyvene_loop(b: Bench, work: Path) -> Sweep:
    """pyvene: a ``ZeroIntervention`` on the head's value output, one run per head
    (one ``IntervenableModel`` per layer, built inside the sweep)."""
    import pyvene as pv

    model = copy.deepcopy(b.model)
    n, t = b.input_ids.shape

    def sweep() -> np.ndarray:
        out = []
        current: int | None = None
        im: Any = None
        for layer, head in b.heads:
            if layer != current:
                config = pv.IntervenableConfig(
                    representations=[pv.RepresentationConfig(
                        layer, "head_attention_value_output", "h.pos",
                        max_number_of_units=1)],
                    intervention_types=pv.ZeroIntervention)
                im, current = pv.IntervenableModel(config, model), layer
                im.disable_model_gradients()
            locations = [[[[head]] * n, [list(range(t))] * n]]  # [intervention][h, pos]
            _, patched = im({"input_ids": b.input_ids}, unit_locations={"base": locations})
            out.append(b.logit_diff(patched.logits[:, -1]))
        return np.stack(out)

    return sweep


PEERS: dict[str, tuple[str, Callable[[Bench, Path], Sweep]]] = {
    "TransformerLens HookedTransformer": ("transformer_lens", tl_hooked),
    "TransformerLens TransformerBridge": ("transformer_lens", tl_bridge),
    "nnsight": ("nnsight", nnsight_loop),
    "pyvene": ("pyvene", pyvene_loop),
}


def attribution(b: Bench, loaded: Any, rows: list[dict[str, Any]], zero: Any,
                metric: Any) -> tuple[float, np.ndarray] | None:
    """Time ``attribution_scores`` for every head (None when it is not there)."""
    try:
        from mechcheck.engine.attribution import attribution_scores
    except ImportError:
        return None
    from mechcheck.addresses import Address
    from mechcheck.data import tokenize_rows
    from mechcheck.engine.runner import Runner

    runner = Runner(loaded, tokenize_rows(rows, loaded.tokenizer))
    addresses = [Address.parse(f"blocks.{la}.attn.head.{h}") for la, h in b.heads]
    start = time.perf_counter()
    scores = attribution_scores(runner, addresses, zero, metric)
    return time.perf_counter() - start, np.asarray(scores)


# -- running and reporting --------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    with torch.inference_mode():
        value = fn()
    return time.perf_counter() - start, value


def shape_of(model: Any, prompts: int, tokens: int) -> Shape:
    c = model.config
    if c.model_type == "gpt2":
        return Shape(c.n_layer, c.n_head, c.n_head, c.n_embd, c.n_embd // c.n_head,
                     c.n_inner or 4 * c.n_embd, 2, c.vocab_size, prompts, tokens)
    d_head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return Shape(c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads,
                 c.hidden_size, d_head, c.intermediate_size, 3, c.vocab_size, prompts, tokens)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None,
                   help="a model: value (e.g. zoo:smollm2-135m); default the built GPT-2")
    p.add_argument("--prompts", type=int, default=None, help="prompts (default 32)")
    p.add_argument("--tokens", type=int, default=None, help="tokens per prompt (default 16)")
    p.add_argument("--layers", type=int, default=None,
                   help="the built GPT-2's depth (default 12); with --model, sweep the "
                   "heads of its first LAYERS layers only")
    p.add_argument("--quick", action="store_true",
                   help="a tiny GPT-2 (2 layers, 4 heads, d_model 32, 300 tokens), "
                   "4 prompts of 8 tokens: seconds, for the test")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", action="store_true",
                   help="also print the table as Markdown (for benchmarks/README.md)")
    p.add_argument("--skip", nargs="*", default=[], metavar="METHOD",
                   help="methods to leave out (words of their names, e.g. pyvene full)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every method agrees with the plain-hook loop."""
    args = parse_args(argv)
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    from mechcheck.errors import MechcheckError

    try:
        with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
            return _run(args, Path(tmp))
    except MechcheckError as exc:  # a model or data problem: say it, no traceback
        print(f"bench_sweep: {exc}", file=sys.stderr)
        return 2
    finally:
        torch.set_num_threads(threads)


def _run(args: argparse.Namespace, work: Path) -> int:
    from mechcheck.session import Session

    size = dict(QUICK) if args.quick else {**GPT2_SMALL, "prompts": 32, "tokens": 16}
    prompts = args.prompts or size["prompts"]
    tokens = args.tokens or size["tokens"]
    session = Session(device="cpu")
    if args.model is None:
        layers = args.layers or size["layers"]
        folder = build_gpt2(work / "model", layers=layers, heads=size["heads"],
                            d_model=size["d_model"], vocab=size["vocab"], seed=args.seed)
        source: str = str(folder)
        loaded = session.model(source)
        rows = gpt2_rows(prompts, tokens, size["vocab"], args.seed)
        swept = list(range(layers))
    else:
        folder, source = None, args.model
        loaded = session.model(source)
        rows = word_rows(loaded.tokenizer, prompts, tokens, args.seed)
        n_layers = shape_of(loaded.model, prompts, tokens).n_layers
        swept = list(range(min(args.layers or n_layers, n_layers)))
    from mechcheck.data import tokenize_rows

    dataset = tokenize_rows(rows, loaded.tokenizer)
    lengths = {len(p) for p in dataset.prompts}
    if len(lengths) != 1:
        print(f"prompts tokenize to different lengths {sorted(lengths)}", file=sys.stderr)
        return 2
    (tokens,) = lengths
    model = loaded.model.eval()
    shape = shape_of(model, prompts, tokens)
    b = Bench(model=model, tokenizer=loaded.tokenizer, folder=folder,
              input_ids=torch.tensor(dataset.prompts), answers=torch.tensor(dataset.answers),
              wrongs=torch.tensor(dataset.wrongs),
              heads=[(la, h) for la in swept for h in range(shape.n_heads)],
              d_head=shape.d_head)
    with torch.inference_mode():
        b.clean = b.logit_diff(model(b.input_ids, use_cache=False).logits[:, -1])
    data = work / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    zero = session.registry.lookup("interventions", "zero", key="ablation")
    metric = session.registry.lookup("metrics", "logit_diff", key="metric")
    print(f"{source if args.model else 'GPT-2 small architecture (random, perturbed)'}: "
          f"{shape.n_layers} layers x {shape.n_heads} heads (kv {shape.n_kv_heads}), "
          f"d_model {shape.d_model}, vocab {shape.vocab}; {prompts} prompts x {tokens} "
          f"tokens; {len(b.heads)} single-head zero ablations; torch threads "
          f"{torch.get_num_threads()}")

    times: dict[str, float] = {}
    effects: dict[str, np.ndarray] = {}
    notes: dict[str, str] = {}

    def skipped(name: str) -> bool:
        return any(word.lower() in name.lower() for word in args.skip)

    def attempt(name: str, fn: Callable[[], Any]) -> None:
        if skipped(name):
            return
        print(f"  running {name} ...", flush=True)
        try:
            seconds, value = timed(fn)
        except Exception as exc:  # noqa: BLE001 - a peer's failure is reported, not fatal
            text = str(exc) if name.startswith("mechcheck") else str(exc).splitlines()[0][:150]
            notes[name] = f"failed: {type(exc).__name__}: {text}"
            print(f"  {name}: {notes[name]}", flush=True)
            return
        times[name] = seconds
        if isinstance(value, np.ndarray):
            effects[name] = value

    timed(lambda: plain_forward(b))  # warm-up
    attempt("plain forward (full logits)", lambda: plain_forward(b))
    attempt("plain forward (last logits)",
            lambda: b.model(b.input_ids, use_cache=False, logits_to_keep=1))
    attempt("plain hooks, full logits", lambda: plain_hooks(b, last=False))
    attempt(REFERENCE, lambda: plain_hooks(b, last=True))
    if "each" in session.registry.common_keys():
        path = claim_file(b, data, work, source)
        warm_up(b, rows, work, source, session)
        attempt("mechcheck each:", lambda: mechcheck_each(b, session, path))
    else:
        notes["mechcheck each:"] = "not run: this mechcheck has no each: key yet"
    sweep_name = "mechcheck Runner.sweep" if hasattr(
        __import__("mechcheck.engine.runner", fromlist=["Runner"]).Runner, "sweep") \
        else "mechcheck patched_logits loop"
    attempt(sweep_name, lambda: mechcheck_sweep(b, loaded, rows, zero))
    for name, (module, fn) in PEERS.items():
        if importlib.util.find_spec(module) is None:
            notes[name] = f"not run: {module} is not installed here"
            continue
        if skipped(name):
            continue
        try:
            setup, sweep = timed(lambda fn=fn: fn(b, work))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - a peer's failure is reported, not fatal
            notes[name] = f"failed to set up: {type(exc).__name__}: {str(exc)[:150]}"
            continue
        notes[name] = f"(setup, not in the row: {setup:.3g} s)"
        attempt(name, sweep)
    scan = None
    if skipped("attribution"):
        notes["attribution"] = "skipped (--skip)"
    else:
        try:
            scan = attribution(b, loaded, rows, zero, metric)
        except Exception as exc:  # noqa: BLE001 - reported; the exact rows still count
            notes["attribution"] = f"failed: {type(exc).__name__}: {exc}"

    rate = matmul_rate(prompts * tokens, shape.d_model, shape.d_mlp)
    floor = floor_flops(shape, swept) / rate
    code = report(b, shape, swept, times, effects, notes, floor, rate, scan)
    if args.markdown:
        markdown(times, floor)
    return code


def markdown(times: dict[str, float], floor: float) -> None:
    """The table again, as Markdown."""
    base = times.get(REFERENCE)
    ours = next((n for n in ("mechcheck each:", "mechcheck Runner.sweep") if n in times),
                None)
    print("\n| method | seconds | / plain loop | / FLOP floor | mechcheck faster |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in [*times.items(), ("FLOP floor", floor)]:
        rel = f"{seconds / base:.2f}x" if base else "-"
        speed = f"{seconds / times[ours]:.2f}x" if ours and name != ours else "-"
        print(f"| {name} | {seconds:.3g} | {rel} | {seconds / floor:.2f}x | {speed} |")


def report(b: Bench, shape: Shape, swept: list[int], times: dict[str, float],
           effects: dict[str, np.ndarray], notes: dict[str, str], floor: float,
           rate: float, scan: tuple[float, np.ndarray] | None) -> int:
    """Print the agreement check and the table; 1 if any method disagrees."""
    ok = True
    if REFERENCE not in effects:
        print(f"\nthe reference ({REFERENCE}) did not run: nothing to compare with")
        return 1
    ref = effects[REFERENCE]
    print(f"\nagreement with {REFERENCE} (per-prompt ablated logit differences, "
          f"{ref.shape[0]} heads x {ref.shape[1]} prompts, tolerance {TOLERANCE:g}):")
    for name, values in effects.items():
        if name == REFERENCE:
            continue
        diff = float(np.max(np.abs(values - ref))) if values.shape == ref.shape else np.inf
        good = diff <= TOLERANCE
        ok &= good
        print(f"  {name:<36} max abs diff {diff:.2e}  {'ok' if good else 'DISAGREES'}")
    ours = next((n for n in ("mechcheck each:", "mechcheck Runner.sweep",
                             "mechcheck patched_logits loop") if n in times), None)
    base = times.get(REFERENCE)
    giga = [floor_flops(shape, swept) / 1e9,
            loop_flops(shape, len(b.heads), full_logits=False) / 1e9,
            loop_flops(shape, len(b.heads), full_logits=True) / 1e9]
    print(f"\nmatmul rate {rate / 1e9:.1f} GFLOP/s; FLOP floor {giga[0]:.4g} GFLOP = "
          f"{floor:.4g} s; plain loop {giga[1]:.4g} GFLOP (last logits), {giga[2]:.4g} "
          f"GFLOP (full logits); floor / plain loop (last logits) {giga[0] / giga[1]:.3f}")
    print(f"\n{'method':<36} {'seconds':>9} {'/ plain loop':>13} {'/ floor':>9} "
          f"{'mechcheck faster':>17}")
    for name, seconds in times.items():
        rel = f"{seconds / base:.2f}x" if base else "-"
        speed = f"{seconds / times[ours]:.2f}x" if ours and name != ours else "-"
        print(f"{name:<36} {seconds:>9.4g} {rel:>13} {seconds / floor:>8.2f}x {speed:>17}")
    print(f"{'FLOP floor (shapes / matmul rate)':<36} {floor:>9.4g} "
          f"{(f'{floor / base:.2f}x' if base else '-'):>13} {1.0:>8.2f}x")
    for name, why in notes.items():
        print(f"{name:<36} {why}")
    forward = times.get("plain forward (full logits)") or times.get("plain forward (last logits)")
    if scan is not None and forward:
        seconds, scores = scan
        exact = np.mean((effects[ours] if ours in effects else ref) - b.clean, axis=1)
        est = np.asarray(scores).mean(axis=0)
        last = times.get("plain forward (last logits)", forward)
        print(f"\nattribution scan ({len(b.heads)} heads): {seconds:.3g} s = "
              f"{seconds / forward:.2f} plain forwards with full logits, "
              f"{seconds / last:.2f} with last logits (<= {TARGET_ATTRIBUTION:g} plain "
              f"forwards: {'met' if seconds / forward <= TARGET_ATTRIBUTION else 'NOT met'}); "
              f"Spearman vs exact {spearman(est, exact):.3f}")
    elif scan is None and "attribution" not in notes:
        print("\nattribution scan: not run (mechcheck.engine.attribution is not there yet)")
    if ours and base:
        peers = [n for n in times if n in PEERS or n.startswith("plain hooks")]
        def met(good: bool) -> str:
            return "met" if good else "NOT met"

        at_floor = times[ours] / floor
        print(f"\ntargets ({ours}):\n  / FLOP floor {at_floor:.2f}x (<= {TARGET_FLOOR:g}: "
              f"{met(at_floor <= TARGET_FLOOR)})")
        for n in peers:
            speed = times[n] / times[ours]
            print(f"  faster than {n}: {speed:.2f}x (>= {TARGET_SPEEDUP:g}: "
                  f"{met(speed >= TARGET_SPEEDUP)})")
    broken = [n for n, why in notes.items() if n.startswith("mechcheck") and
              why.startswith("failed")]
    if broken:
        print(f"\nMECHCHECK FAILED: {', '.join(broken)} (see above)")
        return 1
    if not ok:
        print("\nMETHODS DISAGREE: some per-head effects differ by more than "
              f"{TOLERANCE:g} (see above)")
        return 1
    print("\nall methods agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
