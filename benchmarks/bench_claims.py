"""Time a file of claims on a GPT-2-small-sized model against plain forward passes.

Builds a random-init GPT-2 (12 layers, 12 heads, d_model 768, d_mlp 3072) from a
config with a word-level tokenizer, saves it (safetensors) with a prompt file and a
claim file in a temporary folder, evaluates the claim file through mechcheck's Python
API, and prints each claim's time divided by one plain batched transformers forward
pass over the same prompts, all measured in the same run::

    python benchmarks/bench_claims.py            # defaults: about 1-2 minutes on 2 cores
    python benchmarks/bench_claims.py --n 64 --repeats 5 --threads 4
    python benchmarks/bench_claims.py --model zoo:smollm2-135m   # any model: source

With ``--model SOURCE`` (any ``model:`` value: a folder, ``hf:``, ``zoo:``, ``gguf:``)
the same claims run on that model instead, with their layers and heads scaled to its
depth and width, on prompts of words that are one token each under its tokenizer.

What is timed:

* ``claim``: ``ClaimResult.duration_s``, which ``mechcheck.evaluate._measure`` takes
  around ``kind.measure(spec, ctx)``: the claim's patched forward passes, its metric
  and its decision rule, *after* the shared clean/corrupt runs were prepared.
* ``shared``: the one-time preparation before any claim is measured
  (``mechcheck.evaluate._prepare``: reading and tokenizing the data, then the clean
  run and the corrupt run, recording every activation and attention pattern the
  file's claims read), timed by wrapping that function from this script.  When it
  cannot be wrapped, the file's wall time minus the claims' durations stands in.
* ``baseline``: one plain ``model(input_ids)`` under ``torch.inference_mode()`` per
  group of equal-length prompts (mechcheck batches prompts by token count without
  padding; the baseline runs exactly the batches mechcheck's runner runs and sums
  them), on the very model object mechcheck loaded.  Its median over all samples is
  the denominator of every ratio.

``torch.set_num_threads`` is fixed (``--threads``, default 1: on a small machine
shared with other jobs, more intra-op threads make wall times swing several-fold) and
printed.  Next to the wall-clock ratios the script prints process-CPU-time ratios
(claims' CPU time via a wrapper around ``mechcheck.evaluate._measure``), which stay
steady when other work competes for the cores.

Each repeat evaluates a fresh copy of the claim file whose ``data:`` is a fresh copy of
the prompt file, so every repeat pays for its own shared runs and caches (per-position
means, patterns); the model stays loaded.  One untimed evaluation and one untimed
baseline pass warm everything up first.  Times are never asserted: the script prints
ratios measured in this run and whether the median claim ratio meets the target.
When it does not (or with ``--profile``) it profiles the slowest claim with cProfile.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

TARGET = 1.2  # median claim time / one plain forward pass

# GPT-2 small (124M with its 50257-token vocabulary; the word vocabulary here is tiny,
# so the unembedding costs next to nothing in both mechcheck and the baseline).
N_LAYER, N_HEAD, N_EMBD = 12, 12, 768
BOS = "<bos>"

# Claims of every built-in kind and intervention.  The model is random, so verdicts
# mean nothing; thresholds are chosen only so that every claim measures without error.
# Layer numbers are GPT-2 small's (12 layers); ``claims_yaml`` scales them to the model.
CLAIMS_YAML = """\
model: {model}
data: {data}
correction: holm
claims:
  - id: heads_{L9}_zero_necessary
    kind: necessary
    components: ["head {L9}.*"]
    ablation: zero
    metric: logit_diff
    min_drop: 0.01
  - id: mlp_{L3}_mean_necessary
    kind: necessary
    components: ["mlp {L3}"]
    ablation: mean
    metric: logprob
    min_drop: 0.01
  - id: heads_{L5}_resample_necessary
    kind: necessary
    components: ["head {L5}.{H1}", "head {L5}.{H7}"]
    ablation: resample
    metric: kl
    min_drop: 0.0001
  - id: mlp_{L7}_mean_last_necessary
    kind: necessary
    components: ["mlp {L7}"]
    ablation: mean
    at: last
    metric: logit_diff
    min_drop: 0.01
  - id: head_{L2}_{H3}_zero_negligible
    kind: negligible
    components: ["head {L2}.{H3}"]
    ablation: zero
    metric: logprob
    margin: 0.5
  - id: late_denoise_sufficient
    kind: sufficient
    components: ["mlp {L10}", "head {L11}.*"]
    metric: logit_diff
    min_recovery: 0.5
  - id: head_{L1}_{H4}_previous_token_attends
    kind: attends
    components: ["head {L1}.{H4}"]
    pattern: previous_token
    min_score: 0.05
"""


def claims_yaml(model: str, data: str, *, n_layers: int = N_LAYER,
                n_heads: int = N_HEAD) -> str:
    """The claim file, its layer ``l`` of GPT-2 small's 12 mapped to ``n_layers``."""
    def layer(i: int) -> int:
        return min(n_layers - 1, round(i * (n_layers - 1) / (N_LAYER - 1)))

    return CLAIMS_YAML.format(model=model, data=data,
                              **{f"L{i}": layer(i) for i in range(N_LAYER)},
                              **{f"H{h}": h % n_heads for h in range(N_HEAD)})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=32, help="number of prompts (default 32)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed evaluations of the claim file (default 3)")
    p.add_argument("--min-words", type=int, default=16,
                   help="fewest words per prompt (default 16; one token per word + <bos>)")
    p.add_argument("--max-words", type=int, default=20, help="most words per prompt (default 20)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch.set_num_threads value (default 1: on a small shared machine "
                   "more threads make wall times swing widely)")
    p.add_argument("--seed", type=int, default=0, help="seeds the weights and the prompts")
    p.add_argument("--profile", action="store_true",
                   help="profile the slowest claim even when the target is met")
    p.add_argument("--model", default=None, metavar="SOURCE",
                   help="run the claims on this model (a model: value such as "
                   "zoo:smollm2-135m) instead of a random GPT-2-small-sized one")
    p.add_argument("--workdir", type=Path, default=None,
                   help="write the model, data and claim files here and keep them "
                   "(default: a temporary folder, deleted afterwards)")
    args = p.parse_args(argv)
    if args.n < 2 or args.repeats < 1 or not 1 <= args.min_words <= args.max_words:
        p.error("need --n >= 2, --repeats >= 1 and 1 <= --min-words <= --max-words")
    return args


# -- inputs ----------------------------------------------------------------------------


def build_model(folder: Path, *, seed: int, max_words: int) -> tuple[int, int]:
    """Save a random-init GPT-2-small-sized model and its tokenizer; return (params, vocab)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from mechcheck.models.tiny import word_tokenizer
    from mechcheck.testing.models import DEFAULT_WORDS

    tokenizer = word_tokenizer(DEFAULT_WORDS, bos_token=BOS)
    config = GPT2Config(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD,
                        vocab_size=len(tokenizer), n_positions=max(64, max_words + 1),
                        bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.bos_token_id)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(folder)  # safetensors
    tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters()), len(tokenizer)


def write_rows(path: Path, *, n: int, min_words: int, max_words: int, seed: int,
               words: list[str] | None = None, spaced: bool = False) -> None:
    """JSONL rows: prompt, answer, wrong, and a corrupt prompt with as many tokens.

    ``words`` are one token each (default: the word-level tokenizer's); ``spaced``
    writes answers with a leading space, as BPE tokenizers mark a word start.
    """
    from mechcheck.testing.models import DEFAULT_WORDS

    rng = random.Random(seed)
    words = list(words or DEFAULT_WORDS)
    space = " " if spaced else ""
    with path.open("w", encoding="utf-8") as f:
        for _ in range(n):
            answer, wrong = rng.sample(words, 2)
            # the prompt ends with its answer word, the corrupt prompt with another word:
            # with tied embeddings even a random model then gives the answer a higher
            # logit on the clean prompt, so sufficient's clean-corrupt gap is stable
            prompt = [rng.choice(words) for _ in range(rng.randint(min_words, max_words) - 1)]
            prompt.append(answer)
            corrupt = list(prompt)
            for i in {len(prompt) - 1, *rng.sample(range(len(prompt)), k=len(prompt) // 4)}:
                corrupt[i] = rng.choice([w for w in words if w not in (prompt[i], answer)])
            f.write(json.dumps({"prompt": space + " ".join(prompt), "answer": space + answer,
                                "wrong": space + wrong,
                                "corrupt": space + " ".join(corrupt)}) + "\n")


def write_claims(folder: Path, name: str, data: Path, *, model: str = "model",
                 n_layers: int = N_LAYER, n_heads: int = N_HEAD) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(claims_yaml(model, data.name, n_layers=n_layers, n_heads=n_heads),
                    encoding="utf-8")
    return path


def model_value(spec: str) -> str:
    """``spec`` with a relative folder or file made absolute (claim files live elsewhere)."""
    from mechcheck.models.loading import parse_source

    return str(parse_source(spec))


# -- timing ------------------------------------------------------------------------------


class Timed:
    """Wraps a module-level function of ``mechcheck.evaluate`` to time each call.

    ``evaluate_claims`` looks these functions up at call time, so the wrapper sees
    every call; each call appends ``(key, wall seconds, process CPU seconds)``.
    """

    def __init__(self, name: str, key: Callable[..., Any]) -> None:
        import mechcheck.evaluate as ev

        self.module, self.name = ev, name
        self.original: Callable[..., Any] | None = getattr(ev, name, None)
        self.calls: list[tuple[Any, float, float]] = []
        if self.original is None:
            return
        original = self.original

        def timed(*args: Any, **kwargs: Any) -> Any:
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.calls.append((key(*args, **kwargs), time.perf_counter() - wall,
                                   time.process_time() - cpu))

        setattr(ev, name, timed)

    @property
    def active(self) -> bool:
        return self.original is not None

    def restore(self) -> None:
        if self.original is not None:
            setattr(self.module, self.name, self.original)


def baseline_forward(model: Any, batches: list[torch.Tensor]) -> tuple[float, float]:
    """Wall and process CPU seconds for one plain forward per batch, summed."""
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        for input_ids in batches:
            model(input_ids)
    return time.perf_counter() - wall, time.process_time() - cpu


def top_functions(profile: cProfile.Profile, key: str, limit: int = 15) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats(key).print_stats(limit)
    text = out.getvalue()
    # keep the table, drop pstats' preamble of file names
    start = text.find("   ncalls")
    return text[start:] if start >= 0 else text


# -- main ----------------------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"benchmark cannot run: {message}", file=sys.stderr)
    return 2


def _first_error(results: list[Any]) -> str | None:
    bad = [r for r in results if r.verdict == "error"]
    return f"claim {bad[0].id} errors: {bad[0].message}" if bad else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or 1
    torch.set_num_threads(threads)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            folder = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="mechcheck-bench-")))
        else:
            folder = args.workdir.resolve()
            folder.mkdir(parents=True, exist_ok=True)
        prepare = Timed("_prepare", lambda specs, ctx: None)
        stack.callback(prepare.restore)
        measure = Timed("_measure", lambda spec, ctx: spec.id)
        stack.callback(measure.restore)
        return _run(args, folder, threads, started, prepare, measure)


def _run(args: argparse.Namespace, folder: Path, threads: int, started: float,
         prepare: Timed, measure: Timed) -> int:
    import transformers

    from mechcheck.evaluate import evaluate_claims, evaluate_file
    from mechcheck.session import Session
    from mechcheck.spec.loader import load_claim_file
    from mechcheck.spec.schema import ClaimSpec

    session = Session(device="cpu")
    words: list[str] | None = None
    if args.model is None:
        n_params, vocab = build_model(folder / "model", seed=args.seed,
                                      max_words=args.max_words)
        model_spec, dims, spaced = "model", (N_LAYER, N_HEAD), False
        described = (f"GPT2LMHeadModel from GPT2Config: {N_LAYER} layers, {N_HEAD} heads, "
                     f"d_model {N_EMBD}, d_mlp {4 * N_EMBD}, vocab {vocab} words -> "
                     f"{n_params / 1e6:.1f}M parameters (random init, seed {args.seed})")
    else:
        from mechcheck.errors import MechcheckError
        from mechcheck.tasks.vocab import word_pool

        model_spec = model_value(args.model)
        try:
            loaded = session.model(model_spec, str(folder))
        except MechcheckError as exc:
            return _fail(f"--model {args.model}: {exc}")
        words, spaced = word_pool(loaded.tokenizer, limit=200), True
        if len(words) < 10:
            return _fail(f"--model {args.model}: its tokenizer has fewer than 10 "
                         "lowercase words of one token")
        adapter, config = loaded.adapter, loaded.model.config
        dims = (adapter.dims.n_layers, adapter.dims.n_heads)
        n_params = sum(p.numel() for p in loaded.model.parameters())
        described = (f"{args.model}: {type(loaded.model).__name__}, {dims[0]} layers, "
                     f"{dims[1]} heads, d_model {adapter.dims.d_model}, vocab "
                     f"{config.vocab_size} -> {n_params / 1e6:.1f}M parameters (pretrained)")
    # identical prompt files, one per evaluation, so that each gets a fresh runner
    names = ["warmup", *(f"repeat{r}" for r in range(args.repeats))]
    files = {}
    for name in names:
        data = folder / f"data_{name}.jsonl"
        write_rows(data, n=args.n, min_words=args.min_words, max_words=args.max_words,
                   seed=args.seed, words=words, spaced=spaced)
        files[name] = write_claims(folder, f"claims_{name}", data, model=model_spec,
                                   n_layers=dims[0], n_heads=dims[1])

    kinds = session.registry.kind_keys()
    parsed = {name: load_claim_file(path, kinds) for name, path in files.items()}
    bad = [c for f in parsed.values() for c in (f.error, *f.claims)
           if c is not None and not isinstance(c, ClaimSpec)]
    if bad:
        return _fail(f"the claim file does not load: {bad[0]}")

    # warm-up: loads the model, imports scipy, runs every code path once
    t0 = time.perf_counter()
    warm = evaluate_file(parsed["warmup"], session)
    warm_s = time.perf_counter() - t0
    if error := _first_error(warm):
        return _fail(error)
    spec0 = next(c for c in parsed["warmup"].claims if isinstance(c, ClaimSpec))
    runner = session.runner(spec0)  # the warm-up's runner: same prompts, same batches
    model = runner.loaded.model
    prompts = runner.dataset.prompts
    batches = [torch.tensor([prompts[int(i)] for i in rows], dtype=torch.long)
               for rows in runner.batches]
    lengths = sorted({len(p) for p in prompts})
    baseline_forward(model, batches)  # warm-up

    # baseline samples bracket every timed evaluation: repeats + 1 samples
    baselines = [baseline_forward(model, batches)]
    ids = [r.id for r in warm]
    kind_of = {r.id: r.kind for r in warm}
    verdict_of = {r.id: r.verdict for r in warm}
    claim_wall: dict[str, list[float]] = {cid: [] for cid in ids}
    claim_cpu: dict[str, list[float]] = {cid: [] for cid in ids}
    shared_wall: list[float] = []
    shared_cpu: list[float] = []
    file_wall: list[float] = []
    for name in names[1:]:
        prepare.calls.clear()
        measure.calls.clear()
        t0 = time.perf_counter()
        results = evaluate_file(parsed[name], session)
        wall = time.perf_counter() - t0
        if error := _first_error(results):
            return _fail(error)
        for r in results:
            claim_wall[r.id].append(r.duration_s)
        for cid, _, cpu in measure.calls:
            claim_cpu[cid].append(cpu)
        if prepare.calls:
            shared_wall.append(sum(w for _, w, _ in prepare.calls))
            shared_cpu.append(sum(c for _, _, c in prepare.calls))
        else:  # evaluate._prepare is gone: everything outside the claims stands in
            shared_wall.append(wall - sum(r.duration_s for r in results))
        file_wall.append(wall)
        baselines.append(baseline_forward(model, batches))

    med = statistics.median
    base_wall = med(w for w, _ in baselines)
    base_cpu = med(c for _, c in baselines)
    ratio = {cid: med(claim_wall[cid]) / base_wall for cid in ids}
    cpu_ratio = ({cid: med(claim_cpu[cid]) / base_cpu for cid in ids}
                 if all(claim_cpu.values()) else None)
    median_ratio = med(ratio.values())
    patched = [ratio[cid] for cid in ids if kind_of[cid] != "attends"]
    met = median_ratio <= TARGET

    print("mechcheck claim benchmark")
    print(f"  torch {torch.__version__}, transformers {transformers.__version__}, cpu, "
          f"float32, torch.set_num_threads({threads}) -> {torch.get_num_threads()} "
          f"threads ({os.cpu_count()} CPUs)")
    print(f"  model: {described}")
    span = f"{lengths[0]}" if len(lengths) == 1 else f"{lengths[0]}-{lengths[-1]}"
    word_span = (f"{args.min_words}" if args.min_words == args.max_words
             else f"{args.min_words}-{args.max_words}")
    bos = "" if args.model else "<bos> + "
    print(f"  prompts: {len(prompts)} of {span} tokens ({bos}{word_span} words) in "
          f"{len(batches)} equal-length group(s), one batch each: sizes "
          f"{[len(b) for b in batches]}")
    print(f"  claims: {len(ids)}; timed evaluations: {args.repeats} after 1 warm-up "
          f"({warm_s:.1f} s, model load included)")
    print(f"  baseline = one plain model(input_ids) per group, summed: median "
          f"{base_wall * 1e3:.0f} ms wall over {len(baselines)} samples "
          f"(min {min(w for w, _ in baselines) * 1e3:.0f}, "
          f"max {max(w for w, _ in baselines) * 1e3:.0f}); {base_cpu * 1e3:.0f} ms CPU")
    print()
    width = max(len(cid) for cid in ids)
    print(f"  {'claim':<{width}}  {'kind':<10}  {'verdict':<7}  {'wall ms':>8}  "
          f"{'/ baseline':>10}  {'CPU / CPU':>9}")
    for cid in ids:
        cpu = f"{cpu_ratio[cid]:.2f}x" if cpu_ratio else "-"
        print(f"  {cid:<{width}}  {kind_of[cid]:<10}  {verdict_of[cid]:<7}  "
              f"{med(claim_wall[cid]) * 1e3:>8.0f}  {ratio[cid]:>9.2f}x  {cpu:>9}")
    print()
    print(f"  median claim time / baseline (duration_s, wall): {median_ratio:.2f}x")
    if cpu_ratio:
        print(f"  same, process CPU time / baseline CPU time:      "
              f"{med(cpu_ratio.values()):.2f}x")
    if patched:
        print(f"  median over the {len(patched)} claims that run a patched pass: "
              f"{med(patched):.2f}x (max {max(patched):.2f}x)")
    print(f"  shared clean/corrupt runs, once per file / baseline: "
          f"{med(shared_wall) / base_wall:.2f}x"
          + (f" (CPU {med(shared_cpu) / base_cpu:.2f}x)" if shared_cpu else
             " (file wall time minus claim durations)"))
    whole = med(file_wall) / base_wall
    print(f"  whole evaluate_file / baseline: {whole:.2f}x "
          f"(= {whole / len(ids):.2f}x per claim with the shared runs spread over them)")
    print(f"  TARGET median claim / baseline <= {TARGET}x: "
          f"{'met' if met else 'NOT MET'} ({median_ratio:.2f}x)")

    if args.profile or not met:
        prepare.restore()
        measure.restore()
        by = cpu_ratio or ratio
        worst = max(ids, key=by.__getitem__)
        spec = next(c for c in parsed[names[-1]].claims
                    if isinstance(c, ClaimSpec) and c.id == worst)
        # the last evaluation's runner is cached: only this claim's measurement runs
        profile = cProfile.Profile()
        profile.enable()
        evaluate_claims([spec], session)
        profile.disable()
        print()
        print(f"cProfile of the slowest claim, {worst} (shared runs cached), "
              "top 15 by own time:")
        print(top_functions(profile, "tottime"))
        print("top 15 by cumulative time:")
        print(top_functions(profile, "cumulative"))
    print(f"(benchmark took {time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
