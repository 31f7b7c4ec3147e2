"""``mechcheck sae train``: fit a small sparse autoencoder on one site of a model.

The activations are the model's, read through the engine (a clean run over the
prompts of a data file or a task, recording the site), every position but the first
(the first token is often an attention sink with an outsized norm).  The SAE is
SAELens's "standard" (ReLU, trained with an L1 penalty weighted by the decoder rows'
norms) or "topk" (the k largest pre-activations kept, trained on reconstruction
alone), fitted in float32 on the CPU with Adam from a seeded initialisation:

* ``W_dec`` rows: random directions of unit norm; ``W_enc = W_dec.T``; ``b_enc = 0``;
  ``b_dec = 0`` (SAELens's default initialisation);
* each step a seeded minibatch, loss ``mean ||x - x_hat||^2 / mean ||x - mean||^2``
  (normalised MSE) plus, for L1, ``l1 * mean sum_j f_j ||W_dec[j]||``; for top-k the
  decoder rows are renormalised to unit norm after each step;
* features that stay dead are re-initialised towards badly reconstructed vectors every
  250 steps in the first three quarters of training.

The same seed and inputs give the same file, bit for bit.  The file is one
``.safetensors`` with SAELens's tensor names and the config (site, architecture, k,
training settings) as JSON in its metadata (:func:`mechcheck.sae.save_sae`).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mechcheck.errors import ClaimSpecError, DataError
from mechcheck.sae import SAE, save_sae

__all__ = ["add_sae_parser", "collect_activations", "sae_command", "train_sae"]


def train_sae(acts: torch.Tensor, *, site: str, features: int, k: int | None = None,
              l1: float | None = None, steps: int = 2000, seed: int = 0, lr: float = 1e-3,
              batch_size: int = 256,
              decoder_bias: bool = True) -> tuple[SAE, dict[str, float]]:
    """Fit an SAE to activations ``[n, d]``.

    Args:
        acts: the training vectors (float32 on the CPU is used).
        site: the address the SAE reads, stored in its config.
        features: d_sae.
        k: top-k SAE with this k (exclusive with ``l1``).
        l1: ReLU SAE with this L1 coefficient.
        steps: Adam steps.
        seed: seeds the initialisation and the minibatches.
        lr: Adam's learning rate.
        batch_size: vectors per step.
        decoder_bias: train ``b_dec``; False keeps it at 0 (for activations that are
            sums of non-negative directions, where a learnt bias mixes them).

    Returns:
        The SAE and its fit on all of ``acts``: ``fvu`` (the unexplained share of the
        variance), ``l0`` (mean number of active features), ``dead`` (features never
        active).
    """
    if (k is None) == (l1 is None):
        raise ClaimSpecError("give one of --k (a top-k SAE) and --l1 (a ReLU SAE with an "
                             "L1 penalty)", key="--k", hint="e.g. --k 8, or --l1 0.01")
    if features < 1 or (k is not None and not 1 <= k <= features):
        raise ClaimSpecError(f"--k {k} must lie between 1 and --features {features}",
                             key="--k", hint="choose k below the number of features")
    x = acts.detach().float().cpu().reshape(-1, acts.shape[-1])
    if len(x) < 2:
        raise DataError("fewer than 2 activation vectors to train on", key="--data",
                        hint="give more prompts")
    n, d = x.shape
    g = torch.Generator().manual_seed(seed)
    W_dec = torch.randn(features, d, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    mean = x.mean(dim=0)
    params = {"W_enc": W_dec.t().clone(), "b_enc": torch.zeros(features),
              "W_dec": W_dec.clone(), "b_dec": torch.zeros(d)}
    for name, p in params.items():
        p.requires_grad_(name != "b_dec" or decoder_bias)
    scale = float(((x - mean) ** 2).sum(dim=1).mean().clamp_min(1e-12))
    optim = torch.optim.Adam([p for p in params.values() if p.requires_grad], lr=lr)
    architecture = "topk" if k is not None else "standard"

    def encode(batch: torch.Tensor) -> torch.Tensor:
        pre = (batch - params["b_dec"]) @ params["W_enc"] + params["b_enc"]
        if k is None:
            return pre.relu()
        values, indices = torch.topk(pre, k=k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, values.relu())

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is fastest, and reproducible
    try:
        _fit(params, optim, x, g, encode, steps=steps, batch_size=batch_size, scale=scale,
             l1=l1, unit_decoder=k is not None)
    finally:
        torch.set_num_threads(threads)
    tensors = {name: p.detach().clone() for name, p in params.items()}
    sae = SAE(W_enc=tensors["W_enc"], b_enc=tensors["b_enc"], W_dec=tensors["W_dec"],
              b_dec=tensors["b_dec"], site=site, architecture=architecture, k=k,
              apply_b_dec_to_input=True, source="mechcheck sae train")
    with torch.no_grad():
        f = sae.encode(x)
        residual = ((x - sae.decode(f)) ** 2).sum(dim=1).mean()
        fit = {"fvu": float(residual / scale), "l0": float((f > 0).sum(dim=1).float().mean()),
               "dead": float(int(((f > 0).sum(dim=0) == 0).sum()))}
    return sae, fit


def _fit(params: dict[str, torch.Tensor], optim: torch.optim.Optimizer, x: torch.Tensor,
         g: torch.Generator, encode: Any, *, steps: int, batch_size: int, scale: float,
         l1: float | None, unit_decoder: bool, resample_every: int = 250) -> None:
    """Adam on seeded minibatches of ``x`` (see the module docstring for the loss).

    Every ``resample_every`` steps in the first three quarters of training, features
    that were never active since the last check are re-initialised towards the
    training vectors worst reconstructed (Bricken et al. 2023's resampling, simplified):
    decoder row and encoder column the unit residual direction, ``b_enc`` 0."""
    n = len(x)
    counts = torch.zeros(params["b_enc"].shape[0])
    with torch.enable_grad():
        for step in range(1, steps + 1):
            rows = torch.randint(0, n, (min(batch_size, n),), generator=g)
            batch = x[rows]
            f = encode(batch)
            x_hat = f @ params["W_dec"] + params["b_dec"]
            loss = ((batch - x_hat) ** 2).sum(dim=1).mean() / scale
            if l1 is not None:
                loss = loss + l1 * (f * params["W_dec"].norm(dim=1)).sum(dim=1).mean()
            optim.zero_grad()
            loss.backward()
            optim.step()
            counts += (f.detach() > 0).sum(dim=0)
            if unit_decoder:
                with torch.no_grad():
                    params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True).clamp_min(1e-8)
            if step % resample_every == 0 and step <= 3 * steps // 4:
                _resample(params, optim, x, g, encode, counts == 0)
                counts.zero_()


def _resample(params: dict[str, torch.Tensor], optim: torch.optim.Optimizer, x: torch.Tensor,
              g: torch.Generator, encode: Any, dead: torch.Tensor) -> None:
    """Point the ``dead`` features at the worst-reconstructed of a seeded sample."""
    if not bool(dead.any()):
        return
    with torch.no_grad():
        sample = x[torch.randint(0, len(x), (min(1024, len(x)),), generator=g)]
        residual = sample - (encode(sample) @ params["W_dec"] + params["b_dec"])
        worst = torch.argsort(residual.norm(dim=1), descending=True, stable=True)
        chosen = residual[worst[: int(dead.sum())]]
        directions = chosen / chosen.norm(dim=1, keepdim=True).clamp_min(1e-8)
        index = torch.nonzero(dead).flatten()[: len(directions)]
        params["W_dec"][index] = directions[: len(index)]
        params["W_enc"][:, index] = directions[: len(index)].t()
        params["b_enc"][index] = 0.0
    optim.state.clear()  # fresh moments for every parameter, as at the start


def collect_activations(loaded: Any, rows: Sequence[dict[str, Any]], site: str, *,
                        source: str = "the prompts", skip_first: bool = True) -> torch.Tensor:
    """``[n_positions, d]``: ``site``'s activations on the clean prompts of ``rows``,
    every position but the first when ``skip_first``, read through the engine."""
    from mechcheck.data import tokenize_rows
    from mechcheck.engine.runner import Runner

    (address,) = loaded.adapter.resolve([site])
    if address.site not in ("resid_pre", "resid_mid", "resid_post", "attn", "mlp"):
        raise ClaimSpecError(f"--site {site}: an SAE reads a whole-layer site", key="--site",
                             hint="blocks.L.resid_post, resid_pre, resid_mid, attn or mlp")
    dataset = tokenize_rows(list(rows), loaded.tokenizer, source=source,
                            max_length=loaded.context_length)
    run = Runner(loaded, dataset, batch_size=32).run("clean", record=[address])
    start = 1 if skip_first else 0
    return torch.cat([a[start:].float().cpu() for a in run.activations(address)])


def add_sae_parser(commands: Any) -> None:
    """The ``sae`` command group (``mechcheck sae train ...``)."""
    sae = commands.add_parser("sae", help="sparse autoencoders").add_subparsers(
        dest="sae_command", required=True)
    train = sae.add_parser("train", help="train a small SAE on one site of a model")
    train.add_argument("model", help="a model: zoo:<name>, hf:<repo>, or a folder")
    train.add_argument("--site", required=True, help="e.g. blocks.0.resid_post")
    prompts = train.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--data", help="a .jsonl or .csv file of prompts")
    prompts.add_argument("--task", help="a task generator's name, e.g. ioi")
    train.add_argument("--n", type=int, default=None,
                       help="use the first n rows (with --task: generate n, default 200)")
    train.add_argument("--features", type=int, required=True, help="d_sae")
    kind = train.add_mutually_exclusive_group(required=True)
    kind.add_argument("--k", type=int, help="a top-k SAE with this k")
    kind.add_argument("--l1", type=float, help="a ReLU SAE with this L1 coefficient")
    train.add_argument("--steps", type=int, default=2000)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--batch-size", type=int, default=256)
    train.add_argument("--no-decoder-bias", action="store_true",
                       help="keep b_dec at 0 (activations that are sums of non-negative "
                       "directions, such as the planted zoo models')")
    train.add_argument("--dtype", choices=("float32", "float16", "bfloat16"),
                       default="float32", help="the stored weights' dtype")
    train.add_argument("--out", required=True, help="the .safetensors file to write")


def sae_command(args: argparse.Namespace) -> int:
    """Run ``mechcheck sae train``; prints the fit and the file written."""
    from mechcheck.data import load_rows
    from mechcheck.session import Session

    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ClaimSpecError(f"--out {out}: the file must end in .safetensors", key="--out",
                             hint="e.g. --out sae_l0.safetensors")
    start = time.perf_counter()
    session = Session()
    loaded = session.model(args.model)
    if args.data is not None:
        rows = load_rows(Path(args.data), n=args.n)
        source = args.data
    else:
        task = session.registry.lookup("tasks", args.task, key="--task")
        spec = {"name": args.task, "n": args.n or 200, "seed": args.seed}
        rows = task.rows(loaded.tokenizer, spec)
        source = f"task {args.task}"
    acts = collect_activations(loaded, rows, args.site, source=source)
    sae, fit = train_sae(acts, site=args.site, features=args.features, k=args.k, l1=args.l1,
                         steps=args.steps, seed=args.seed, lr=args.lr,
                         batch_size=args.batch_size,
                         decoder_bias=not args.no_decoder_bias)
    dtype = {"float32": torch.float32, "float16": torch.float16,
             "bfloat16": torch.bfloat16}[args.dtype]
    training = {"model": args.model, "prompts": source, "n_vectors": int(len(acts)),
                "steps": args.steps, "seed": args.seed, "lr": args.lr,
                "batch_size": args.batch_size, "decoder_bias": not args.no_decoder_bias,
                **({"l1": args.l1} if args.l1 else {}), **fit}
    out.parent.mkdir(parents=True, exist_ok=True)
    save_sae(out, sae, dtype=dtype, extra={"training": training})
    print(f"trained a {sae.architecture} SAE ({sae.d_in} -> {sae.d_sae}) on {len(acts)} "
          f"vectors of {args.site} in {time.perf_counter() - start:.1f} s: "
          f"unexplained variance {fit['fvu']:.4f}, L0 {fit['l0']:.2f}, "
          f"{int(fit['dead'])} dead features")
    print(f"written to {out}")
    return 0
