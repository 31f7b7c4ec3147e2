"""A conformance kit for plugin authors: check an architecture map, intervention or metric.

Each check runs what a plugin registers through mechcheck's own engine (the
:class:`~mechcheck.engine.runner.Runner` and the hook owner
:mod:`mechcheck.engine.hooks`) on a tiny random model, and compares the result with an
independent reference.  A failure raises :class:`AssertionError` whose message names the
check, what was observed and the field to fix.

Example:
    >>> from mechcheck.models.archs import LLAMA
    >>> from mechcheck.testing import build_tiny, check_arch_map
    >>> check_arch_map(LLAMA, lambda: build_tiny("llama", perturb=False)[0])
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch

from mechcheck.addresses import Address
from mechcheck.data import Dataset, tokenize_rows
from mechcheck.engine.hooks import hook_count, hooked
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS, Intervention, Source
from mechcheck.engine.runner import Runner
from mechcheck.errors import MechcheckError, RunError
from mechcheck.metrics import Metric, MetricInputs
from mechcheck.models.adapter import ArchMap, ModelAdapter, Site
from mechcheck.models.loading import LoadedModel, ModelSource
from mechcheck.models.tiny import word_tokenizer
from mechcheck.testing.models import perturb_params

__all__ = ["check_arch_map", "check_intervention", "check_metric"]

ATOL = 1e-5
_IV = {iv.name: iv for iv in BUILTIN_INTERVENTIONS}
_CLEAN_INTO_CLEAN = Intervention(name="clean-into-clean", base_run="clean",
                                 source=Source("clean"),
                                 replace=lambda current, source: source)  # type: ignore[arg-type,return-value]
_WORDS = tuple(f"w{i}" for i in range(24))
# The ArchMap field that places each kind of address (named in failure messages).
_FIELD = {"embed": "embed", "pos_embed": "pos_embed", "ln_final": "ln_final",
          "unembed": "unembed", "resid_pre": "blocks", "resid_post": "blocks",
          "resid_mid": "resid_mid", "attn": "attn_out (or attn)", "head": "attn_out_proj",
          "mlp": "mlp_out (or mlp)", "neuron": "mlp_out_proj"}


def _config(adapter: ModelAdapter) -> Any:
    """The config of the adapter's model."""
    return adapter.model.config  # type: ignore[attr-defined]


def _fail(check: str, what: str, fix: str) -> AssertionError:
    return AssertionError(f"{check}: {what}\n  fix: {fix}")


# -- building the model under test ------------------------------------------------------
def _loaded(arch_map: ArchMap, model: Any, name: str) -> LoadedModel:
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    words = _WORDS[: max(0, min(len(_WORDS), vocab - 2))]
    if len(words) < 8:
        raise _fail(name, f"the model has a vocabulary of {vocab} tokens",
                    "make model_factory build a model with at least 10 tokens")
    model = model.float().eval()
    adapter = ModelAdapter(arch_map, model)
    return LoadedModel(source=ModelSource(kind="folder", name=f"<{arch_map.name} test model>"),
                       model=model, tokenizer=word_tokenizer(words, bos_token="<bos>"),
                       adapter=adapter, device="cpu", dtype="float32")


def _rows(n: int, *, seed: int = 0, length: int = 6) -> list[dict[str, Any]]:
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(n):
        picks = torch.randint(0, 8, (length + 2,), generator=gen).tolist()
        words = [_WORDS[i] for i in picks]
        rows.append({"prompt": " ".join(words[:length]), "answer": words[length],
                     "wrong": words[length + 1],
                     "corrupt": " ".join([words[length + 1], *words[1:length]])})
    return rows


def _dataset(loaded: LoadedModel, n: int, seed: int = 0) -> Dataset:
    return tokenize_rows(_rows(n, seed=seed), loaded.tokenizer, source="<conformance rows>")


def _plain_logits(model: Any, dataset: Dataset) -> torch.Tensor:
    """Last-position logits of ``model`` run prompt by prompt, no hooks, no batching."""
    out = []
    for ids in dataset.prompts:
        with torch.inference_mode():
            out.append(model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1])
    return torch.stack(out).float()


def _close(got: torch.Tensor, want: torch.Tensor, atol: float) -> float | None:
    """The largest difference when ``got`` and ``want`` differ by more than ``atol``."""
    if got.shape != want.shape:
        return float("inf")
    diff = float((got.float() - want.float()).abs().max())
    return diff if diff > atol else None


# -- check_arch_map --------------------------------------------------------------------
def _grammar(adapter: ModelAdapter) -> list[Address]:
    dims = adapter.dims
    names = ["embed", "ln_final", "unembed"] + (["pos_embed"] if dims.has_pos_embed else [])
    for layer in range(dims.n_layers):
        names += [f"blocks.{layer}.resid_pre", f"blocks.{layer}.resid_post",
                  f"blocks.{layer}.attn", f"blocks.{layer}.mlp",
                  f"blocks.{layer}.attn.head.{dims.n_heads - 1}",
                  f"blocks.{layer}.mlp.neuron.{dims.d_mlp - 1}"]
        if adapter._has_resid_mid:
            names.append(f"blocks.{layer}.resid_mid")
    return [Address.parse(n) for n in names]


def _sites(adapter: ModelAdapter, check: str) -> dict[Address, Site]:
    sites = {}
    for address in _grammar(adapter):
        try:
            adapter.resolve([str(address)])
            sites[address] = adapter.site(address)
        except MechcheckError as exc:
            raise _fail(check, f"{address} does not resolve: {exc.message}",
                        f"point the map's {_FIELD[address.site]} at a module of this "
                        "model (print(model) lists them)") from None
    for layer in range(adapter.dims.n_layers):
        try:
            adapter.attention_module(layer)
        except MechcheckError as exc:
            raise _fail(check, f"layer {layer}'s attention module: {exc.message}",
                        "point attn at the attention module (its output holds the "
                        "pattern)") from None
    return sites


def _widths(adapter: ModelAdapter, address: Address) -> int:
    dims = adapter.dims
    if address.site == "head":
        return dims.n_heads * adapter.d_head
    if address.site == "neuron":
        return dims.d_mlp
    if address.site == "unembed":
        return int(_config(adapter).vocab_size)
    return dims.d_model


def _record(loaded: LoadedModel, sites: Sequence[Site], dataset: Dataset) -> dict[Any, Any]:
    ids = torch.tensor([dataset.prompts[i] for i in dataset.groups[0]])
    with hooked(loaded.adapter, record=sites) as store, torch.inference_mode():
        logits = loaded.model(input_ids=ids, use_cache=False).logits
    return {**store, "logits": logits.float()}


def _check_shapes(loaded: LoadedModel, sites: dict[Address, Site],
                  store: dict[Any, Any], check: str) -> None:
    for address, site in sites.items():
        if site not in store:
            raise _fail(check, f"{address} ({site.module}, {site.when}) was never reached "
                        "in a forward pass", f"point {_FIELD[address.site]} at a module "
                        "that the forward pass calls")
        act, want = store[site], _widths(loaded.adapter, address)
        if act.shape[-1] != want:
            fix = ("point attn_out_proj at the projection that reads the concatenated heads "
                   "(o_proj, c_proj, dense) and check that n_heads and config.head_dim "
                   "give its input width" if address.site == "head" else
                   f"point {_FIELD[address.site]} at a module whose "
                   f"{'input' if site.when == 'pre' else 'output'} is {want} wide")
            raise _fail(check, f"{address} at {site.module} ({site.when}) is "
                        f"{act.shape[-1]} wide; the address needs {want}", fix)
        if not torch.isfinite(act).all():
            raise _fail(check, f"{address} holds NaN or infinite values",
                        "check model_factory's model: its forward pass is not finite")


def _check_stream(loaded: LoadedModel, sites: dict[Address, Site], store: dict[Any, Any],
                  check: str) -> None:
    """The residual stream is the sum of what the sublayers write into it."""
    adapter = loaded.adapter

    def act(name: str) -> torch.Tensor:
        return store[sites[Address.parse(name)]].float()

    embed = act("embed") + (act("pos_embed") if adapter.dims.has_pos_embed else 0)
    sums = [("blocks.0.resid_pre", embed, "embed (+ pos_embed)", "embed")]
    for layer in range(adapter.dims.n_layers):
        pre, post = f"blocks.{layer}.resid_pre", f"blocks.{layer}.resid_post"
        attn, mlp = act(f"blocks.{layer}.attn"), act(f"blocks.{layer}.mlp")
        if adapter._has_resid_mid:
            mid = f"blocks.{layer}.resid_mid"
            sums += [(mid, act(pre) + attn, f"{pre} + attn", "attn_out"),
                     (post, act(mid) + mlp, f"{mid} + mlp", "mlp_out")]
        else:
            sums.append((post, act(pre) + attn + mlp, f"{pre} + attn + mlp",
                         "attn_out, mlp_out or resid_mid_unless"))
    for target, total, label, field in sums:
        diff = _close(act(target), total, 1e-4 * (1 + float(total.abs().max())))
        if diff is not None:
            raise _fail(check, f"{target} differs from {label} by {diff:.3g}: the "
                        "addresses do not add up to the residual stream",
                        f"check {field}: attn and mlp must be what the block adds to the "
                        "residual stream (after any post-norm), resid_mid the stream "
                        "between them")


def _check_ends(loaded: LoadedModel, store: dict[Any, Any], check: str) -> None:
    adapter, dims = loaded.adapter, loaded.adapter.dims
    last = store[adapter.site(Address("resid_post", dims.n_layers - 1))]
    ln_in = store[Site(adapter.site(Address("ln_final")).module, "pre")]
    if _close(ln_in, last, ATOL) is not None:
        raise _fail(check, "ln_final does not read the last block's output",
                    "point ln_final at the final norm, applied after the last block")
    if getattr(_config(adapter), "final_logit_softcapping", None):
        return  # the logits are a soft-capped unembedding
    unembed = store[adapter.site(Address("unembed"))]
    diff = _close(unembed[:, -1], store["logits"][:, -1], ATOL)
    if diff is not None:
        raise _fail(check, f"unembed differs from the model's logits by {diff:.3g}",
                    "point unembed at the module that outputs the logits (lm_head)")


def _edited_reference(loaded: LoadedModel, address: Address, dataset: Dataset) -> torch.Tensor:
    """Logits of a copy whose projection no longer reads ``address``'s input columns."""
    edited = copy.deepcopy(loaded.model)
    module = edited.get_submodule(loaded.adapter.site(address).module)
    cols = loaded.adapter.columns(address)
    with torch.no_grad():
        if type(module).__name__ == "Conv1D":  # GPT-2 stores [in, out]
            module.weight[cols, :] = 0
        else:  # nn.Linear stores [out, in]
            module.weight[:, cols] = 0
    return _plain_logits(edited, dataset)


def _check_weight_edits(loaded: LoadedModel, check: str) -> None:
    dims = loaded.adapter.dims
    dataset = _dataset(loaded, 4)
    runner = Runner(loaded, dataset)
    layer = min(1, dims.n_layers - 1)
    for address in (Address("head", layer, dims.n_heads - 1), Address("neuron", 0, 3)):
        got = runner.patched_logits([(address, _IV["zero"])])
        want = _edited_reference(loaded, address, dataset)
        diff = _close(got, want, ATOL)
        field = _FIELD[address.site]
        if diff is not None:
            raise _fail(check, f"zero-ablating {address} differs by {diff:.3g} from zeroing "
                        f"its input columns in {loaded.adapter.site(address).module}",
                        f"check {field} and the head width (config.head_dim)")
        if _close(got, runner.logits("clean"), 1e-6) is None:
            raise _fail(check, f"zero-ablating {address} changes nothing",
                        f"point {field} at a projection that the forward pass uses")


def _check_identities(loaded: LoadedModel, check: str) -> None:
    dims, adapter = loaded.adapter.dims, loaded.adapter
    names = ["embed", "blocks.0.resid_pre", "blocks.0.attn", "blocks.0.mlp",
             f"blocks.{dims.n_layers - 1}.resid_post", "blocks.0.attn.head.0",
             "blocks.0.mlp.neuron.0"] + (["blocks.0.resid_mid"] if adapter._has_resid_mid else [])
    runner = Runner(loaded, _dataset(loaded, 4))
    clean = runner.logits("clean")
    for name in names:
        diff = _close(runner.patched_logits([(Address.parse(name), _CLEAN_INTO_CLEAN)]),
                      clean, ATOL)
        if diff is not None:
            raise _fail(check, f"patching clean activations into the clean run at {name} "
                        f"changes the logits by {diff:.3g}",
                        f"check {_FIELD[Address.parse(name).site]}: a hook there must see "
                        "the activation itself (a tensor, or a tuple whose first item is it)")
    one = Runner(loaded, _dataset(loaded, 1))
    heads = [Address("head", 0, h) for h in range(dims.n_heads)]
    targets = [(a, _IV["mean"]) for a in [*heads, Address("mlp", 0), Address("attn", 0)]]
    diff = _close(one.patched_logits(targets), one.logits("clean"), ATOL)
    if diff is not None:
        raise _fail(check, f"mean ablation over a one-prompt dataset changes the logits by "
                    f"{diff:.3g}", "check that the recorded and the patched sites agree "
                    "(pre/post direction of each field)")


def _check_patterns(loaded: LoadedModel, check: str) -> None:
    """Each layer's attention module returns causal patterns, one per query head."""
    dims = loaded.adapter.dims
    runner = Runner(loaded, _dataset(loaded, 2))
    for layer in range(dims.n_layers):
        try:
            patterns = runner.pattern(layer, dims.n_heads - 1)
        except (MechcheckError, IndexError) as exc:
            reason = exc.message if isinstance(exc, MechcheckError) else str(exc)
            raise _fail(check, f"no attention pattern for head {layer}.{dims.n_heads - 1}: "
                        f"{reason}", "point attn at the attention module, whose output is "
                        "(attn_output, attn_weights) under eager attention") from None
        pattern = patterns[0]
        length = pattern.shape[-1]
        rows = pattern.sum(-1)
        future = pattern.triu(diagonal=1).abs().max() if length > 1 else 0.0
        if (pattern.shape[-2] != length or _close(rows, torch.ones_like(rows), 1e-4)
                is not None or float(future) > 1e-6):
            raise _fail(check, f"layer {layer}'s attention weights are not causal patterns "
                        f"over the prompt (shape {tuple(pattern.shape)})",
                        "point attn at the attention module of the block")


def _check_head_inputs(loaded: LoadedModel, check: str) -> None:
    """Where the map declares q/k/v: each is ``d_head`` wide, and zeroing a head's keys
    makes its pattern uniform over the keys it may attend to (q . 0 = 0 for every key;
    rotary embeddings and key norms keep 0 at 0), which only its own key columns do."""
    arch, adapter = loaded.adapter.arch, loaded.adapter
    if arch.qkv is None and None in (arch.q, arch.k, arch.v):
        return
    dims = adapter.dims
    zero = Intervention(name="zero", base_run="clean", source=None,
                        replace=lambda current, source: torch.zeros_like(current))
    runner = Runner(loaded, _dataset(loaded, 2))
    for head in sorted({0, dims.n_heads - 1}):
        inputs = [Address(w, 0, head) for w in ("q", "k", "v")]
        pattern = Address("pattern", 0, head)
        try:
            run = runner.run("clean", [(Address("k", 0, head), zero)],
                             record=[*inputs, pattern])
        except MechcheckError as exc:
            raise _fail(check, f"head 0.{head}'s q/k/v: {exc.message}",
                        "point q/k/v (or qkv) at the projections' modules") from None
        for address in inputs:
            width = run.activations(address)[0].shape[-1]
            if width != adapter.d_head:
                raise _fail(check, f"{address} is {width} wide, not d_head = {adapter.d_head}",
                            "check qkv_layout and n_kv_heads (grouped-query attention)")
        got = run.activations(pattern)[0]
        # uniform over the keys the head may see (causal, within any sliding window)
        allowed = (runner.run("clean", record=[pattern]).activations(pattern)[0] > 0).float()
        uniform = allowed / allowed.sum(-1, keepdim=True)
        if _close(got, uniform.to(got.dtype), 1e-4) is not None:
            raise _fail(check, f"zeroing blocks.0.attn.head.{head}.k did not make the head's "
                        "pattern uniform: the columns are not that head's keys",
                        "check k (or qkv and qkv_layout) and n_kv_heads")


def _check_attn_norm(loaded: LoadedModel, check: str) -> None:
    """Where the map declares ``attn_norm`` (edge circuits use it): a head's q, k and v
    are the projections of that norm applied to the layer's input, resid_pre."""
    adapter = loaded.adapter
    arch = adapter.arch
    if arch.attn_norm is None or (arch.qkv is None and None in (arch.q, arch.k, arch.v)):
        return
    runner = Runner(loaded, _dataset(loaded, 2))
    layer = adapter.dims.n_layers - 1
    inputs = [Address(w, layer, 0) for w in ("q", "k", "v")]
    run = runner.run("clean", record=[Address("resid_pre", layer), *inputs])
    try:
        norm = adapter.module(f"{arch.blocks}.{layer}.{arch.attn_norm}")
    except AttributeError:
        raise _fail(check, f"attn_norm {arch.attn_norm!r} is not a module of block {layer}",
                    "name the block-relative norm that attention reads (ln_1, "
                    "input_layernorm)") from None
    resid = run.activations(Address("resid_pre", layer))[0]
    with torch.inference_mode():
        normed = norm(resid.unsqueeze(0))
        for address in inputs:
            module = adapter.module(adapter.site(address).module)
            expected = module(normed)[0][..., adapter.columns(address)]
            if _close(run.activations(address)[0], expected, 1e-4) is not None:
                raise _fail(check, f"{address} is not the projection of "
                            f"{arch.attn_norm}(resid_pre)",
                            "attn_norm must name the norm whose output attention projects")


def _check_cleanup(loaded: LoadedModel, check: str) -> None:
    def explode(current: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
        raise KeyError("raised on purpose by the conformance kit")

    before = hook_count(loaded.model)
    runner = Runner(loaded, _dataset(loaded, 2))
    bad = Intervention(name="explode", base_run="clean", source=None, replace=explode)
    try:
        runner.patched_logits([(Address("head", 0, 0), bad), (Address("mlp", 0), bad)])
    except RunError:
        pass
    else:
        raise _fail(check, "an intervention that raises did not fail the patched run",
                    "the head or MLP site is never called in the forward pass")
    if hook_count(loaded.model) != before:
        raise _fail(check, f"{hook_count(loaded.model) - before} hook(s) left on the model "
                    "after a patch raised", "report this as a mechcheck bug")


def check_arch_map(arch_map: ArchMap, model_factory: Callable[[], Any], *,
                   seed: int = 0) -> None:
    """Check an :class:`ArchMap` against weight-edit references on a tiny random model.

    ``model_factory()`` builds a small random ``transformers`` model of the architecture
    (a few layers, ``d_model`` about 32, vocabulary of at least 10).  The kit perturbs its
    biases and norm weights (seeded) and checks, through mechcheck's engine, that:

    - every address of the grammar resolves to a module the forward pass calls, with the
      address's width (``n_heads * d_head`` for a head, ``d_mlp`` for a neuron);
    - the stream adds up: ``resid_pre(0) = embed (+ pos_embed)``, ``resid_mid = resid_pre +
      attn``, ``resid_post = resid_mid + mlp`` (``resid_pre + attn + mlp`` when parallel),
      ``ln_final`` reads the last block's output and ``unembed`` gives the logits;
    - zero-ablating a head (a neuron) equals zeroing its input columns of the output
      projection and running the plain model;
    - patching clean into clean, and mean ablation over one prompt, change nothing;
    - every layer's ``attn`` module gives causal attention patterns (eager attention);
    - where the map declares the heads' inputs (``q``/``k``/``v`` or ``qkv``), each is
      ``d_head`` wide and zeroing a head's keys makes its pattern uniform;
    - where it declares ``attn_norm``, q/k/v are the projections of that norm of
      resid_pre (edge circuits recompute them so);
    - a patch that raises leaves no hook behind.

    Args:
        arch_map: the map under test.
        model_factory: builds the model; called once.
        seed: seeds the perturbation.

    Raises:
        AssertionError: a check failed; the message names it and the field to fix.
    """
    __tracebackhide__ = True
    check = f"check_arch_map({arch_map.name})"
    model = model_factory()
    model_type = getattr(model.config, "model_type", None)
    if model_type not in arch_map.model_types:
        raise _fail(check, f"the factory's model has model_type {model_type!r}, which the "
                    f"map does not cover ({', '.join(arch_map.model_types)})",
                    f"add {model_type!r} to model_types, or build a model the map covers")
    perturb_params(model, seed=seed)
    loaded = _loaded(arch_map, model, check)
    sites = _sites(loaded.adapter, check)
    extra = [Site(loaded.adapter.site(Address("ln_final")).module, "pre")]
    store = _record(loaded, [*set(sites.values()), *extra], _dataset(loaded, 3))
    _check_shapes(loaded, sites, store, check)
    _check_stream(loaded, sites, store, check)
    _check_ends(loaded, store, check)
    _check_weight_edits(loaded, check)
    _check_identities(loaded, check)
    _check_patterns(loaded, check)
    _check_head_inputs(loaded, check)
    _check_attn_norm(loaded, check)
    _check_cleanup(loaded, check)


# -- check_intervention ----------------------------------------------------------------

def _check_replace_call(intervention: Intervention, check: str, seed: int) -> None:
    """The replacement function on its own: shape, finiteness, no in-place edits."""
    gen = torch.Generator().manual_seed(seed)
    current = torch.randn(3, 5, 8, generator=gen)
    source = None if intervention.source is None else torch.randn(3, 5, 8, generator=gen)
    kept_current, kept_source = current.clone(), None if source is None else source.clone()
    out = intervention.replace(current, source)
    if not isinstance(out, torch.Tensor) or out.shape != current.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise _fail(check, f"replace returned {shape} for an activation of shape "
                    f"{tuple(current.shape)}", "return a tensor of the current activation's "
                    "shape [batch, pos, width]")
    if not torch.isfinite(out).all():
        raise _fail(check, "replace returned NaN or infinite values",
                    "return finite values for finite activations")
    changed_source = source is not None and kept_source is not None and not torch.equal(
        source, kept_source)
    if not torch.equal(current, kept_current) or changed_source:
        raise _fail(check, "replace changed its arguments in place",
                    "build a new tensor (e.g. current * 0.5, not current.mul_(0.5)): the "
                    "arguments are recordings that other claims read")
    if not torch.equal(intervention.replace(current, source), out):
        raise _fail(check, "replace gave different values for the same arguments",
                    "make it deterministic (seed any randomness from the arguments)")


def check_intervention(intervention: Intervention, *,
                       model_factory: Callable[[], Any] | None = None,
                       arch_map: ArchMap | None = None,
                       addresses: Sequence[str] = ("blocks.0.attn.head.1", "blocks.1.mlp",
                                                   "blocks.0.resid_post"),
                       seed: int = 0) -> None:
    """Check an :class:`~mechcheck.engine.interventions.Intervention`'s contract.

    Its ``base_run`` must be ``"clean"`` or ``"corrupt"`` and its ``source`` a
    :class:`~mechcheck.engine.interventions.Source` or None; its ``replace`` must return a
    finite tensor of the activation's shape without changing its arguments, the same
    for the same arguments.  Run through the engine on a tiny random model (GPT-2 with
    perturbed biases unless ``model_factory`` and ``arch_map`` are given), the patched
    logits must be finite, and patching at no position (``at: []``) must leave the run
    unchanged.

    Raises:
        AssertionError: a check failed; the message says what and how to fix it.
    """
    __tracebackhide__ = True
    check = f"check_intervention({intervention.name})"
    if intervention.base_run not in ("clean", "corrupt"):
        raise _fail(check, f"base_run is {intervention.base_run!r}",
                    "set base_run to 'clean' or 'corrupt'")
    if intervention.source is not None and not isinstance(intervention.source, Source):
        raise _fail(check, f"source is {intervention.source!r}",
                    "set source to None or a mechcheck.interventions.Source")
    _check_replace_call(intervention, check, seed)
    if model_factory is None or arch_map is None:
        from mechcheck.models.archs import GPT2
        from mechcheck.testing.models import build_tiny

        arch_map, model_factory = GPT2, lambda: build_tiny("gpt2", seed=seed)[0]
    loaded = _loaded(arch_map, model_factory(), check)
    runner = Runner(loaded, _dataset(loaded, 4, seed))
    for name in addresses:
        targets = [(a, intervention) for a in loaded.adapter.resolve([name])]
        logits = runner.patched_logits(targets)
        if not torch.isfinite(logits).all():
            raise _fail(check, f"on {name} the patched logits are not finite",
                        "return replacements of the activations' scale")
        base = runner.logits(intervention.base_run)
        diff = _close(runner.patched_logits(targets, at=[]), base, ATOL)
        if diff is not None:
            raise _fail(check, f"on {name} with no position selected the logits change "
                        f"by {diff:.3g}", "report this as a mechcheck bug")


# -- check_metric ----------------------------------------------------------------------
def _metric_inputs(n: int, vocab: int, seed: int, *, columns: Any = None,
                   tokenizer: Any = None) -> tuple[torch.Tensor, MetricInputs]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, vocab, generator=gen) * 3
    inputs = MetricInputs(answers=torch.randint(0, vocab, (n,), generator=gen),
                          wrongs=torch.randint(0, vocab, (n,), generator=gen),
                          clean_logits=torch.randn(n, vocab, generator=gen) * 3,
                          columns=dict(columns or {}), tokenizer=tokenizer)
    return logits, inputs


def _row(inputs: MetricInputs, i: int) -> MetricInputs:
    assert inputs.wrongs is not None
    return MetricInputs(answers=inputs.answers[i:i + 1], wrongs=inputs.wrongs[i:i + 1],
                        clean_logits=inputs.clean_logits[i:i + 1],
                        columns={k: v[i:i + 1] for k, v in inputs.columns.items()},
                        tokenizer=inputs.tokenizer)


def check_metric(metric: Metric, *, n: int = 6, vocab: int = 50, seed: int = 0,
                 columns: Any = None, tokenizer: Any = None) -> None:
    """Check a :class:`~mechcheck.metrics.Metric`'s contract on random logits.

    The metric must return one finite value per prompt (``[n]``), leave the logits
    unchanged, give the same values for the same inputs, and treat prompts independently:
    each prompt's value is the one it gets alone.

    Args:
        metric: the metric under test.
        n: prompts; vocab: vocabulary size of the random logits.
        seed: seeds the random logits and token ids.
        columns: extra data columns the metric reads (one value per prompt).
        tokenizer: a tokenizer, for metrics that read one.

    Raises:
        AssertionError: a check failed; the message says what and how to fix it.
    """
    __tracebackhide__ = True
    check = f"check_metric({metric.name})"
    logits, inputs = _metric_inputs(n, vocab, seed, columns=columns, tokenizer=tokenizer)
    kept = logits.clone()
    values = metric(logits, inputs)
    if not isinstance(values, torch.Tensor) or tuple(values.shape) != (n,):
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values)
        raise _fail(check, f"returned {shape} for {n} prompts",
                    f"return one value per prompt, a tensor of shape [{n}]")
    if not torch.isfinite(values).all():
        raise _fail(check, "returned NaN or infinite values on finite logits",
                    "keep the values finite (e.g. log_softmax instead of log(softmax))")
    if not torch.equal(logits, kept):
        raise _fail(check, "changed the logits in place", "compute on a copy")
    if not torch.equal(metric(logits, inputs), values):
        raise _fail(check, "gave different values for the same inputs",
                    "make the metric deterministic")
    alone = torch.cat([metric(logits[i:i + 1], _row(inputs, i)).reshape(-1)
                       for i in range(n)])
    if not torch.allclose(alone, values, atol=1e-5):
        raise _fail(check, "a prompt's value depends on the other prompts of the batch "
                    f"(alone {alone.tolist()}, batched {values.tolist()})",
                    "compute each prompt's value from its own row only")
