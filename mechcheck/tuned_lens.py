"""The tuned lens (Belrose et al. 2023): one affine translator per residual site.

The logit lens reads a residual vector ``h`` as if it were already in the basis the
unembedding reads at the end; early in the model it is not, and the lens is biased
there.  The tuned lens learns, per site, ``T(h) = A h + b`` (``A`` starting at the
identity, ``b`` at zero) so that the lens of ``T(h)`` matches the model's own final
next-token distribution: it minimises ``KL(p_final || p_lens(T(h)))`` averaged over the
positions of the training prompts.

:func:`train_translator` fits the translators of a ``decodes`` claim's sites on its own
prompts, split by a seeded draw into training rows and held-out rows (every position
of a training row is a training example); :func:`write_translator` stores them in a
``.safetensors`` file whose metadata names the model, the sites, the seed, the rows
trained on and a digest of the data; :func:`load_translator` reads it back for a claim
(``lens: tuned``), which then decides on the held-out rows only.  The command is
``mechcheck lens train CLAIMFILE --claim ID --out FILE``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mechcheck.addresses import Address
from mechcheck.errors import ClaimSpecError, DataError

if TYPE_CHECKING:
    from mechcheck.engine.context import ClaimContext

__all__ = ["FORMAT", "Translator", "held_out_kl", "load_translator", "split_rows",
           "train_translator", "write_translator"]

FORMAT = "mechcheck-tuned-lens/1"


@dataclass(frozen=True, slots=True, kw_only=True)
class Translator:
    """Affine maps per site (``weight`` ``[d, d]``, ``bias`` ``[d]``) and where they
    came from."""

    maps: dict[str, tuple[torch.Tensor, torch.Tensor]]
    train_rows: tuple[int, ...]
    meta: dict[str, Any]

    def apply(self, site: Address | str, h: torch.Tensor) -> torch.Tensor:
        """``T(h) = h A^T + b`` for ``h`` ``[..., d]`` (in ``h``'s dtype)."""
        weight, bias = self.maps[str(site)]
        return (h.double() @ weight.double().T + bias.double()).to(h.dtype)


def data_digest(ctx: ClaimContext) -> str:
    """A digest of the claim's tokenized prompts and answers: a translator trained on
    other rows must not be evaluated as if these were held out."""
    ds = ctx.dataset
    text = json.dumps([list(map(list, ds.prompts)), [int(a) for a in ds.answers]])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def model_key(ctx: ClaimContext) -> dict[str, Any]:
    """What identifies the model a translator belongs to."""
    dims = ctx.model.adapter.dims
    return {"model": str(ctx.claim.model), "d_model": int(dims.d_model),
            "n_layers": int(dims.n_layers)}


def split_rows(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``n`` rows: (training rows, held-out rows), each sorted; the
    held-out share is ``holdout`` (rounded, at least 2 rows held out and 1 trained)."""
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout must lie strictly between 0 and 1, got {holdout!r}")
    n_held = max(2, int(round(n * holdout)))
    if n - n_held < 1:
        raise ValueError(f"{n} rows leave none to train on with holdout {holdout:g}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_held:]), np.sort(order[:n_held])


class _Head:
    """The model's final norm and unembedding as differentiable float32 tensors (read
    through ``ctx.lens``: the norm as an affine map, checked against the module)."""

    def __init__(self, ctx: ClaimContext, vocab: int) -> None:
        norm = ctx.lens.norm
        self.centered, self.eps = norm.centered, norm.eps
        self.weight, self.bias = norm.weight.float(), norm.bias.float()
        tokens = torch.arange(vocab)
        self.unembed = ctx.lens.directions(tokens).float()
        self.unembed_bias = ctx.lens.unembed_bias(tokens).float()

    def logprobs(self, x: torch.Tensor) -> torch.Tensor:
        if self.centered:
            x = x - x.mean(dim=-1, keepdim=True)
        x = x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        logits = (x * self.weight + self.bias) @ self.unembed.T + self.unembed_bias
        return torch.log_softmax(logits, dim=-1)


def _examples(ctx: ClaimContext, site: Address, rows: Sequence[int] | np.ndarray,
              final: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Every position of ``rows``: the site's vectors ``[m, d]`` and the model's final
    log-probabilities there ``[m, vocab]``."""
    acts = ctx.activations("clean", site)
    x = torch.cat([acts[int(r)].float().cpu() for r in rows])
    target = torch.cat([torch.log_softmax(final[int(r)].float().cpu(), dim=-1) for r in rows])
    return x, target


def _kl(target: torch.Tensor, logprobs: torch.Tensor) -> torch.Tensor:
    return (target.exp() * (target - logprobs)).sum(dim=-1).mean()


def train_translator(ctx: ClaimContext, sites: Sequence[Address], *, steps: int = 250,
                     seed: int = 0, holdout: float = 0.5, lr: float = 1e-3,
                     ) -> Translator:
    """Fit one translator per site on the training rows of a seeded split (Adam, full
    batch, ``steps`` steps, from the identity); returns them with their metadata
    (``kl_logit`` / ``kl_tuned``: the held-out KL of each lens, per site)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    train, held = split_rows(len(ctx.dataset), holdout, seed)
    final = ctx.run("clean", positions="all").all_logits
    assert final is not None
    head = _Head(ctx, int(final[0].shape[-1]))
    torch.manual_seed(seed)
    maps: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for site in sites:
        x, target = _examples(ctx, site, train, final)
        d = x.shape[-1]
        delta = torch.zeros(d, d, requires_grad=True)  # A = I + delta
        bias = torch.zeros(d, requires_grad=True)
        optimiser = torch.optim.Adam([delta, bias], lr=lr)
        for _ in range(steps):
            optimiser.zero_grad()
            translated = x + x @ delta.T + bias
            loss = _kl(target, head.logprobs(translated))
            loss.backward()
            optimiser.step()
        maps[str(site)] = ((torch.eye(d) + delta).detach(), bias.detach().clone())
    translator = Translator(maps=maps, train_rows=tuple(int(r) for r in train), meta={})
    kl = held_out_kl(ctx, translator, held, final=final, head=head)
    meta = {**model_key(ctx), "format": FORMAT, "sites": [str(s) for s in sites],
            "seed": seed, "steps": steps, "lr": lr, "holdout": holdout,
            "train_rows": [int(r) for r in train], "n_rows": len(ctx.dataset),
            "data": data_digest(ctx), "kl_logit": kl["logit"], "kl_tuned": kl["tuned"]}
    return Translator(maps=maps, train_rows=translator.train_rows, meta=meta)


def held_out_kl(ctx: ClaimContext, translator: Translator,
                rows: Sequence[int] | np.ndarray, *,
                final: list[torch.Tensor] | None = None,
                head: _Head | None = None) -> dict[str, dict[str, float]]:
    """Per site, the mean KL from the model's final distribution, over every position of
    ``rows``, of the logit lens (``logit``) and of the tuned lens (``tuned``)."""
    if final is None:
        final = ctx.run("clean", positions="all").all_logits
        assert final is not None
    head = head or _Head(ctx, int(final[0].shape[-1]))
    out: dict[str, dict[str, float]] = {"logit": {}, "tuned": {}}
    with torch.no_grad():
        for name in translator.maps:
            x, target = _examples(ctx, Address.parse(name), rows, final)
            out["logit"][name] = float(_kl(target, head.logprobs(x)))
            out["tuned"][name] = float(_kl(target, head.logprobs(
                translator.apply(name, x.double()).float())))
    return out


def write_translator(translator: Translator, path: str | Path) -> Path:
    """Store ``translator`` as ``.safetensors`` (``SITE.weight``, ``SITE.bias``) with
    its metadata (JSON values as strings)."""
    from safetensors.torch import save_file

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (weight, bias) in translator.maps.items():
        tensors[f"{name}.weight"] = weight.float().contiguous()
        tensors[f"{name}.bias"] = bias.float().contiguous()
    save_file(tensors, str(out), metadata={k: json.dumps(v) for k, v in translator.meta.items()})
    return out


def load_translator(path: str | Path, ctx: ClaimContext,
                    sites: Sequence[Address]) -> Translator:
    """The translator file at ``path`` for the claim's model, data and ``sites``.

    Raises:
        DataError: no such file, not a tuned-lens file, or trained on other data.
        ClaimSpecError: trained for another model, or lacking one of ``sites``.
    """
    from safetensors import safe_open

    path = Path(path)
    retrain = ("retrain it: mechcheck lens train CLAIMFILE --claim "
               f"{ctx.claim.id} --out {path.name}")
    if not path.is_file():
        raise DataError(f"translator: no file {path}", key="translator", hint=retrain)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
            tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
        meta = {k: json.loads(v) for k, v in raw.items()}
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same error
        raise DataError(f"translator: {path.name} is not a readable .safetensors file "
                        f"({type(exc).__name__})", key="translator", hint=retrain) from None
    if meta.get("format") != FORMAT:
        raise DataError(f"translator: {path.name} is not a tuned-lens file written by "
                        "mechcheck lens train", key="translator", hint=retrain)
    expected = model_key(ctx)
    differ = [k for k, v in expected.items() if meta.get(k) != v]
    if differ:
        found = ", ".join(f"{k} {meta.get(k)!r} (this claim: {expected[k]!r})" for k in differ)
        raise ClaimSpecError(f"translator: {path.name} was trained for another model: "
                             f"{found}", key="translator", hint=retrain)
    if meta.get("data") != data_digest(ctx) or meta.get("n_rows") != len(ctx.dataset):
        raise DataError(f"translator: {path.name} was trained on other prompts than this "
                        "claim's, so its held-out rows are not known", key="translator",
                        hint=retrain)
    maps = {}
    for site in sites:
        name = str(site)
        if f"{name}.weight" not in tensors:
            raise ClaimSpecError(f"translator: {path.name} has no map for {name} (it has "
                                 f"{', '.join(meta.get('sites', []))})", key="translator",
                                 hint="retrain it for this claim's sites: " + retrain)
        maps[name] = (tensors[f"{name}.weight"], tensors[f"{name}.bias"])
    return Translator(maps=maps, train_rows=tuple(int(r) for r in meta["train_rows"]),
                      meta=meta)


def train_command(claim_file: str | Path, claim_id: str, out: str | Path, *,
                  steps: int = 250, seed: int = 0, holdout: float = 0.5,
                  lr: float = 1e-3) -> tuple[Path, dict[str, Any]]:
    """``mechcheck lens train``: train the translators of claim ``claim_id`` (kind
    ``decodes``) of ``claim_file`` on its prompts; write them to ``out``."""
    from mechcheck.engine.context import ClaimContext
    from mechcheck.kinds.lens import lens_sites
    from mechcheck.plugins import Registry, get_plugin_manager
    from mechcheck.session import Session
    from mechcheck.spec.loader import load_claim_file
    from mechcheck.spec.schema import ClaimSpec

    session = Session(registry=Registry.from_plugins(get_plugin_manager()))
    loaded = load_claim_file(claim_file, session.registry.kind_keys(),
                             common=session.registry.common_keys())
    if loaded.error is not None:
        raise loaded.error
    specs = {c.id: c for c in loaded.claims if isinstance(c, ClaimSpec)}
    if claim_id not in specs:
        for c in loaded.claims:
            if not isinstance(c, ClaimSpec) and c.claim_id == claim_id:
                raise c
        raise ClaimSpecError(f"{claim_file}: no claim '{claim_id}' (claims: "
                             f"{', '.join(specs) or 'none'})", hint="give --claim one of them")
    spec = specs[claim_id]
    if spec.kind != "decodes":
        raise ClaimSpecError(f"claim '{claim_id}' is kind {spec.kind}; the tuned lens is "
                             "trained for kind decodes", hint="name a decodes claim")
    ctx = ClaimContext(session, spec)
    decided, curve = lens_sites(ctx)
    try:
        translator = train_translator(ctx, sorted(dict.fromkeys([*decided, *curve])),
                                      steps=steps, seed=seed, holdout=holdout, lr=lr)
    except ValueError as exc:
        raise ClaimSpecError(str(exc), hint="check --holdout and --steps") from None
    return write_translator(translator, out), translator.meta


def add_lens_parser(commands: Any) -> None:
    """The ``mechcheck lens`` subcommands (added to the command line's subparsers)."""
    lens = commands.add_parser("lens", help="the tuned lens of decodes claims").add_subparsers(
        dest="lens_command", required=True)
    train = lens.add_parser("train", help="train a decodes claim's tuned-lens translators on "
                            "its own prompts (a seeded held-out split)")
    train.add_argument("claim_file", help="the claim file")
    train.add_argument("--claim", required=True, help="the id of a kind: decodes claim")
    train.add_argument("--out", required=True, help="the .safetensors file to write")
    train.add_argument("--steps", type=int, default=250, help="Adam steps (default 250)")
    train.add_argument("--seed", type=int, default=0, help="the split's and fit's seed")
    train.add_argument("--holdout", type=float, default=0.5,
                       help="the share of rows held out, never trained on (default 0.5)")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam's step size")


def lens_command(args: Any) -> int:
    """Run ``mechcheck lens train``; print the held-out KL of each lens per site."""
    out, meta = train_command(args.claim_file, args.claim, args.out, steps=args.steps,
                              seed=args.seed, holdout=args.holdout, lr=args.lr)
    held = meta["n_rows"] - len(meta["train_rows"])
    print(f"trained {len(meta['sites'])} translator(s) on {len(meta['train_rows'])} rows; "
          f"held-out KL from the final distribution over {held} rows:")
    for site in meta["sites"]:
        print(f"  {site}: logit lens {meta['kl_logit'][site]:.4f}, tuned lens "
              f"{meta['kl_tuned'][site]:.4f}")
    print(f"wrote {out}")
    return 0
