"""SAE features (mechcheck.sae, the SAE addresses, the engine's SAE site), checked on
tiny gpt2, neox and llama models with perturbed biases and norms against plain torch
written here: the SAE's encoder by its formula, and the model run with a forward hook
of our own on block 0 that subtracts or replaces ``f_F W_dec[F]``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mechcheck.addresses import Address
from mechcheck.data import tokenize_rows
from mechcheck.engine.interventions import BUILTIN_INTERVENTIONS
from mechcheck.engine.runner import Runner
from mechcheck.errors import AddressError, DataError, MechcheckError
from mechcheck.sae import SAE, load_sae, save_sae, site_of_hook
from tests.conftest import word_rows

ARCHS = ("gpt2", "neox", "llama")
LAYER = 0
SITE = f"blocks.{LAYER}.resid_post"
IVS = {iv.name: iv for iv in BUILTIN_INTERVENTIONS}


def random_sae(d_in: int, d_sae: int = 48, *, seed: int = 0, **kwargs: Any) -> SAE:
    g = torch.Generator().manual_seed(seed)
    return SAE(W_enc=0.4 * torch.randn(d_in, d_sae, generator=g),
               b_enc=0.2 * torch.randn(d_sae, generator=g),
               W_dec=0.4 * torch.randn(d_sae, d_in, generator=g),
               b_dec=0.2 * torch.randn(d_in, generator=g), site=SITE, **kwargs)


def hand_encode(sae: SAE, x: torch.Tensor) -> torch.Tensor:
    """relu((x - b_dec) @ W_enc + b_enc), float64 (SAELens's standard encoder)."""
    x = x.double() - sae.b_dec.double()
    return torch.relu(x @ sae.W_enc.double() + sae.b_enc.double())


def hand_ids(tokenizer: Any, prompt: str) -> list[int]:
    vocab = tokenizer.get_vocab()
    return [tokenizer.bos_token_id, *(vocab[w] for w in prompt.split())]


def block(model: Any, layer: int) -> Any:
    inner = model.transformer.h if hasattr(model, "transformer") else (
        model.gpt_neox.layers if hasattr(model, "gpt_neox") else model.model.layers)
    return inner[layer]


def hand_logits(model: Any, ids: list[int],
                edit: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
    """Last-position logits with ``edit`` applied to block 0's output ``[pos, d]``."""
    def hook(module: Any, args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        new = edit(hidden[0]).to(hidden.dtype).unsqueeze(0)  # type: ignore[misc]
        return (new, *output[1:]) if isinstance(output, tuple) else new

    handle = block(model, LAYER).register_forward_hook(hook) if edit else None
    try:
        with torch.no_grad():
            return model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    finally:
        if handle is not None:
            handle.remove()


def hand_hidden(model: Any, ids: list[int]) -> torch.Tensor:
    seen: list[torch.Tensor] = []
    hand_logits(model, ids, lambda h: seen.append(h.detach().clone()) or h)
    return seen[0]


@pytest.fixture
def with_sae(tiny_loaded: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """``make(arch, sae=None)`` -> (loaded, sae, runner, rows): the SAE named ``s``."""
    touched: list[Any] = []

    def make(arch: str, sae: SAE | None = None, n: int = 6) -> tuple[Any, SAE, Runner, list]:
        loaded = tiny_loaded(arch)
        sae = sae or random_sae(loaded.adapter.dims.d_model)
        loaded.adapter.saes = {"s": sae}
        touched.append(loaded.adapter)
        rows = word_rows(n, seed=3)
        runner = Runner(loaded, tokenize_rows(rows, loaded.tokenizer), batch_size=4)
        return loaded, sae, runner, rows

    yield make
    for adapter in touched:
        adapter.saes = {}


def active_feature(sae: SAE, hidden: list[torch.Tensor]) -> int:
    """A feature active on many positions (so that ablating it does something)."""
    counts = sum((hand_encode(sae, h) > 0).sum(dim=0) for h in hidden)
    return int(torch.argmax(counts))


# -- (1) nothing changed: the output is the model's ---------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_identity_patch_leaves_logits_and_records_the_code(arch: str, with_sae: Any) -> None:
    loaded, sae, runner, rows = with_sae(arch)
    adapter = loaded.adapter
    features = adapter.resolve([f"{SITE}.sae.s.*"])
    error = adapter.resolve([f"{SITE}.sae.s.error"])[0]
    assert len(features) == sae.d_sae
    keep = lambda current, rows: current  # noqa: E731 - a patch that changes nothing
    patched = runner.run("clean", [(a, keep) for a in (*features[:5], error)],
                         record=[features[7], error, Address.parse(SITE)])
    plain = runner.logits("clean")
    assert torch.equal(patched.logits, plain)  # x + 0 written back: bit for bit
    reference = [hand_logits(loaded.model, hand_ids(loaded.tokenizer, r["prompt"]))
                 for r in rows]
    assert torch.allclose(plain.double(), torch.stack(reference), atol=1e-4)
    for row, r in enumerate(rows):
        x = hand_hidden(loaded.model, hand_ids(loaded.tokenizer, r["prompt"])).double()
        f = hand_encode(sae, x)
        assert torch.allclose(patched.activations(features[7])[row][:, 0].double(), f[:, 7],
                              atol=1e-4)
        x_hat = f @ sae.W_dec.double() + sae.b_dec.double()
        assert torch.allclose(patched.activations(error)[row].double(), x - x_hat, atol=1e-4)
        assert torch.allclose(patched.activations(SITE)[row].double(), x, atol=1e-5)


# -- (2) ablations and patches equal the hand-written hook ---------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_feature_ablations_match_a_hand_hook(arch: str, with_sae: Any) -> None:
    loaded, sae, runner, rows = with_sae(arch)
    tok, model = loaded.tokenizer, loaded.model
    ids = [hand_ids(tok, r["prompt"]) for r in rows]
    corrupt = [hand_ids(tok, r["corrupt"]) for r in rows]
    hidden = [hand_hidden(model, i).double() for i in ids]
    feature = active_feature(sae, hidden)
    w = sae.W_dec[feature].double()
    address = loaded.adapter.resolve([f"{SITE}.sae.s.{feature}"])
    plain = runner.logits("clean").double()

    # zero: x - f_F(x) W_dec[F]
    zero = runner.patched_logits([(address[0], IVS["zero"])]).double()
    hand = torch.stack([hand_logits(model, i, lambda h: h - hand_encode(sae, h)[:, feature:
                                    feature + 1] * w) for i in ids])
    assert torch.allclose(zero, hand, atol=1e-4)
    assert (zero - plain).abs().max() > 1e-3  # the feature matters: the check can fail

    # mean: f_F replaced by its mean over the prompts at each position
    longest = max(len(h) for h in hidden)
    means = torch.zeros(longest, dtype=torch.float64)
    for pos in range(longest):
        means[pos] = torch.stack([hand_encode(sae, h)[pos, feature] for h in hidden
                                  if len(h) > pos]).mean()
    mean = runner.patched_logits([(address[0], IVS["mean"])]).double()
    hand = torch.stack([hand_logits(model, i, lambda h: h + (
        means[: len(h)] - hand_encode(sae, h)[:, feature]).unsqueeze(1) * w) for i in ids])
    assert torch.allclose(mean, hand, atol=1e-4)

    # resample: f_F from the row's corrupt prompt
    resample = runner.patched_logits([(address[0], IVS["resample"])]).double()
    expected = []
    for i, c in zip(ids, corrupt):
        f_corrupt = hand_encode(sae, hand_hidden(model, c).double())[:, feature]
        expected.append(hand_logits(model, i, lambda h, fc=f_corrupt: h + (
            fc - hand_encode(sae, h)[:, feature]).unsqueeze(1) * w))
    assert torch.allclose(resample, torch.stack(expected), atol=1e-4)

    # denoise (kind sufficient): the corrupt run with f_F from the clean prompt
    denoise = runner.patched_logits([(address[0], IVS["denoise"])]).double()
    expected = []
    for i, c in zip(ids, corrupt):
        f_clean = hand_encode(sae, hand_hidden(model, i).double())[:, feature]
        expected.append(hand_logits(model, c, lambda h, fc=f_clean: h + (
            fc - hand_encode(sae, h)[:, feature]).unsqueeze(1) * w))
    assert torch.allclose(denoise, torch.stack(expected), atol=1e-4)

    # at: last only, zero
    last = runner.patched_logits([(address[0], IVS["zero"])], at=["last"]).double()

    def at_last(h: torch.Tensor) -> torch.Tensor:
        out = h.clone()
        out[-1] = h[-1] - hand_encode(sae, h)[-1, feature] * w
        return out

    assert torch.allclose(last, torch.stack([hand_logits(model, i, at_last) for i in ids]),
                          atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_error_term_ablation_leaves_the_reconstruction(arch: str, with_sae: Any) -> None:
    loaded, sae, runner, rows = with_sae(arch)
    error = loaded.adapter.resolve([f"{SITE}.sae.s.error"])
    zero = runner.patched_logits([(error[0], IVS["zero"])]).double()
    ids = [hand_ids(loaded.tokenizer, r["prompt"]) for r in rows]

    def reconstruction(h: torch.Tensor) -> torch.Tensor:
        return hand_encode(sae, h) @ sae.W_dec.double() + sae.b_dec.double()

    hand = torch.stack([hand_logits(loaded.model, i, reconstruction) for i in ids])
    assert torch.allclose(zero, hand, atol=1e-4)
    assert (zero - runner.logits("clean").double()).abs().max() > 1e-3


def test_topk_and_jumprelu_encoders_follow_their_definitions() -> None:
    base = random_sae(16, 24, seed=1)
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(2))
    pre = (x.double() - base.b_dec.double()) @ base.W_enc.double() + base.b_enc.double()
    topk = random_sae(16, 24, seed=1, architecture="topk", k=3)
    f = topk.encode(x).double()
    for row in range(5):
        chosen = set(torch.argsort(pre[row], descending=True)[:3].tolist())
        assert set(torch.nonzero(f[row]).flatten().tolist()) <= chosen
        for j in chosen:
            assert f[row, j].item() == pytest.approx(max(pre[row, j].item(), 0.0), abs=1e-5)
    threshold = torch.full((24,), 0.3)
    jump = random_sae(16, 24, seed=1, architecture="jumprelu", threshold=threshold)
    expected = torch.where(pre > 0.3, pre, torch.zeros_like(pre))
    assert torch.allclose(jump.encode(x).double(), expected, atol=1e-5)
    # no-op patch: split then merge gives x back exactly
    z = topk.split(x)
    assert torch.equal(topk.merge(x, z, z.clone()), x)


# -- addresses --------------------------------------------------------------------------
def test_sae_addresses_parse_print_and_sort() -> None:
    feature = Address.parse("blocks.3.resid_post.sae.res3.17")
    assert (feature.site, feature.layer, feature.index, feature.sae, feature.sae_site) == (
        "feature", 3, 17, "res3", "resid_post")
    assert str(feature) == "blocks.3.resid_post.sae.res3.17"
    error = Address.parse(" blocks.3.mlp.sae.m.error ")
    assert (error.site, error.index, error.sae_site, str(error)) == (
        "sae_error", None, "mlp", "blocks.3.mlp.sae.m.error")
    assert Address.parse("blocks.2.attn.sae.a.*").is_pattern
    order = ["blocks.3.resid_pre", "blocks.3.mlp", "blocks.3.mlp.sae.m.2",
             "blocks.3.mlp.sae.m.error", "blocks.3.mlp.neuron.0", "blocks.3.resid_post",
             "blocks.3.resid_post.sae.res3.2", "blocks.3.resid_post.sae.res3.10",
             "blocks.3.resid_post.sae.res3.error", "blocks.4.resid_pre"]
    shuffled = [order[i] for i in np.random.default_rng(0).permutation(len(order))]
    assert [str(a) for a in sorted(Address.parse(t) for t in shuffled)] == order
    for bad, said in [("blocks.3.resid_post.sae.s.x", "is not an SAE address"),
                      ("blocks.3.resid_post.sae.9s.1", "is not an SAE address"),
                      ("blocks.3.head.sae.s.1", "is not an SAE address")]:
        with pytest.raises(AddressError, match=said):
            Address.parse(bad)


def test_sae_address_errors_against_the_model(with_sae: Any) -> None:
    loaded, sae, _, _ = with_sae("gpt2")
    adapter = loaded.adapter
    with pytest.raises(AddressError, match="no SAE named 'x'") as info:
        adapter.resolve(["blocks.0.resid_post.sae.x.1"])
    assert "the file's saes: s" in str(info.value.hint)
    with pytest.raises(AddressError, match="reads blocks.0.resid_post, not blocks.1.mlp") as info:
        adapter.resolve(["blocks.1.mlp.sae.s.1"])
    assert "blocks.0.resid_post.sae.s.1" in str(info.value.hint)
    with pytest.raises(AddressError, match="has 48 features"):
        adapter.resolve(["blocks.0.resid_post.sae.s.48"])
    with pytest.raises(AddressError, match="names the layer"):
        adapter.resolve(["blocks.*.resid_post.sae.s.1"])
    with pytest.raises(AddressError, match="does not exist in this model"):
        adapter.resolve(["blocks.7.resid_post.sae.s.1"])
    adapter.saes = {}
    with pytest.raises(AddressError, match="no SAE named 's'") as info:
        adapter.resolve(["blocks.0.resid_post.sae.s.1"])
    assert "has no saes:" in str(info.value.hint)


# -- (5) loading ------------------------------------------------------------------------
def saelens_folder(folder: Path, sae: SAE, **cfg: Any) -> Path:
    """A folder in SAELens's saved layout, written by hand (safetensors + cfg.json)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec,
               "b_dec": sae.b_dec}, str(folder / "sae_weights.safetensors"))
    config = {"architecture": "standard", "d_in": sae.d_in, "d_sae": sae.d_sae,
              "dtype": "float32", "device": "cpu", "apply_b_dec_to_input": True,
              "normalize_activations": "none", "reshape_activations": "none",
              "metadata": {"hook_name": "blocks.0.hook_resid_post", "model_name": "tiny"},
              **cfg}
    (folder / "cfg.json").write_text(json.dumps(config))
    return folder


def test_load_saelens_folder_and_own_file(tmp_path: Path) -> None:
    sae = random_sae(32, seed=4)
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    folder = saelens_folder(tmp_path / "lens", sae)
    loaded = load_sae(folder)
    assert (loaded.site, loaded.d_in, loaded.d_sae, loaded.architecture) == (
        Address.parse("blocks.0.resid_post"), 32, 48, "standard")
    assert torch.allclose(loaded.encode(x).double(), hand_encode(sae, x), atol=1e-5)
    # older SAELens: hook_point at the top level, activation_fn topk with kwargs
    older = saelens_folder(tmp_path / "old", sae, metadata={}, hook_point="blocks.0.hook_mlp_out",
                           activation_fn="topk", activation_fn_kwargs={"k": 4},
                           apply_b_dec_to_input=False)
    read = load_sae(older)
    assert (str(read.site), read.architecture, read.k, read.apply_b_dec_to_input) == (
        "blocks.0.mlp", "topk", 4, False)
    assert int((read.encode(x) > 0).sum(dim=-1).max()) <= 4
    own = save_sae(tmp_path / "own.safetensors", sae, dtype=torch.float16)
    back = load_sae(own)
    assert back.site == sae.site and back.architecture == "standard"
    assert torch.allclose(back.W_enc, sae.W_enc, atol=1e-3)
    assert back.W_enc.dtype == torch.float32
    assert site_of_hook("blocks.2.hook_attn_out") == Address("attn", 2)
    assert site_of_hook("blocks.2.hook_resid_pre") == Address("resid_pre", 2)
    assert site_of_hook("blocks.2.resid_mid") == Address("resid_mid", 2)


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    sae = random_sae(32, seed=4)
    cases: list[tuple[Path, str]] = []
    cases.append((tmp_path / "nothing.safetensors", "no SAE at"))
    pickled = tmp_path / "sae.pt"
    torch.save({"W_enc": sae.W_enc}, pickled)
    cases.append((pickled, "is a pickle file"))
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save({}, folder / "sae.pt")
    cases.append((folder, "pickle is refused"))
    cases.append((saelens_folder(tmp_path / "hook", sae, metadata={"hook_name":
                  "blocks.0.attn.hook_z"}), "hook point 'blocks.0.attn.hook_z'"))
    cases.append((saelens_folder(tmp_path / "norm", sae, normalize_activations="layer_norm"),
                  "normalize_activations 'layer_norm'"))
    cases.append((saelens_folder(tmp_path / "gated", sae, architecture="gated"),
                  "architecture 'gated'"))
    cases.append((saelens_folder(tmp_path / "dsae", sae, d_sae=7), "the config says d_sae 7"))
    nocfg = saelens_folder(tmp_path / "nocfg", sae)
    (nocfg / "cfg.json").unlink()
    cases.append((nocfg, "has no cfg.json"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    cases.append((junk, "is not a safetensors file"))
    from safetensors.torch import save_file

    bare = tmp_path / "bare.safetensors"
    save_file({"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec,
               "b_dec": sae.b_dec}, str(bare))
    cases.append((bare, "holds no config"))
    short = tmp_path / "short.safetensors"
    save_file({"W_enc": sae.W_enc, "b_enc": sae.b_enc, "W_dec": sae.W_dec[:, :5].contiguous(),
               "b_dec": sae.b_dec}, str(short), metadata={"config": json.dumps(
                   {"hook_name": "blocks.0.resid_post"})})
    cases.append((short, "W_dec has shape [48, 5], expected [48, 32]"))
    missing = tmp_path / "missing.safetensors"
    save_file({"W_enc": sae.W_enc}, str(missing), metadata={"config": "{}"})
    cases.append((missing, "has no b_enc, W_dec, b_dec"))
    for path, said in cases:
        with pytest.raises(DataError, match=said.replace("[", r"\[").replace("]", r"\]")
                           ) as info:
            load_sae(path)
        assert info.value.key == "saes" and info.value.hint, path


# -- a claim file with saes: ------------------------------------------------------------
CLAIMS = """\
model: {model}
data: rows.jsonl
saes:
  s: {sae}
claims:
  - id: feature_matters
    kind: necessary
    components: ["blocks.0.resid_post.sae.s.{feature}"]
    ablation: zero
    metric: logprob
    min_drop: -1000
  - id: unknown_name
    kind: necessary
    components: ["blocks.0.resid_post.sae.t.{feature}"]
    ablation: zero
    metric: logprob
    min_drop: 0
"""


def test_claim_file_with_saes(tmp_path: Path, tiny_folder: Callable[..., Path],
                              tiny_loaded: Callable[..., Any]) -> None:
    from mechcheck.api import evaluate_path

    loaded = tiny_loaded("gpt2")
    sae = random_sae(loaded.adapter.dims.d_model)
    rows = word_rows(6, seed=3)
    (tmp_path / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    save_sae(tmp_path / "s.safetensors", sae)
    ids = [hand_ids(loaded.tokenizer, r["prompt"]) for r in rows]
    feature = active_feature(sae, [hand_hidden(loaded.model, i).double() for i in ids])
    path = tmp_path / "test_sae_claims.yaml"
    path.write_text(CLAIMS.format(model=tiny_folder("gpt2"), sae="s.safetensors",
                                  feature=feature))
    results = {r.id: r for r in evaluate_path(path)}
    matters = results["feature_matters"]
    assert matters.verdict == "pass", matters.message
    # the effect: mean drop of log p(answer) when f_F W_dec[F] is removed, by hand
    answers = [loaded.tokenizer.get_vocab()[r["answer"]] for r in rows]
    w = sae.W_dec[feature].double()
    drops = []
    for i, a in zip(ids, answers):
        clean = torch.log_softmax(hand_logits(loaded.model, i), -1)[a]
        cut = torch.log_softmax(hand_logits(loaded.model, i, lambda h: h - hand_encode(
            sae, h)[:, feature:feature + 1] * w), -1)[a]
        drops.append(float(clean - cut))
    assert matters.effect == pytest.approx(np.mean(drops), abs=1e-4)
    unknown = results["unknown_name"]
    assert unknown.verdict == "error"
    assert "no SAE named 't'" in unknown.message and "saes: s" in unknown.message
    assert "claim 'unknown_name', key 'components'" in unknown.message
    assert "Traceback" not in unknown.message

    # wrong width and a missing file: located at saes:
    save_sae(tmp_path / "wide.safetensors", random_sae(loaded.adapter.dims.d_model + 1))
    for sae_path, said in [("wide.safetensors", "reads vectors of width 33"),
                           ("gone.safetensors", "no SAE at")]:
        path.write_text(CLAIMS.format(model=tiny_folder("gpt2"), sae=sae_path, feature=0))
        result = {r.id: r for r in evaluate_path(path)}["feature_matters"]
        assert result.verdict == "error" and said in result.message, result.message
        assert "key 'saes'" in result.message and ":3:" in result.message, result.message
        assert "Traceback" not in result.message


def test_saes_key_is_checked_by_the_loader(tmp_path: Path) -> None:
    from mechcheck.spec.schema import as_saes

    assert as_saes({"a": "x.safetensors"}) == {"a": "x.safetensors"}
    for bad, said in [({"9a": "x"}, "is not a name"), ({"a": 3}, "must be text"),
                      ([], "got"), ({}, "got")]:
        with pytest.raises(ValueError, match=said):
            as_saes(bad)


def test_errors_are_mechcheck_errors() -> None:
    assert issubclass(DataError, MechcheckError)


# -- (6) SAEs saved by SAELens itself --------------------------------------------------
FIXTURE = Path(__file__).with_name("sae_lens_fixture")


def test_loads_what_sae_lens_saved() -> None:
    """Folders written by SAELens 6.54's ``save_model`` (tests/sae_lens_fixture/make.py)
    encode and decode as SAELens itself did."""
    from safetensors.torch import load_file

    expected = load_file(str(FIXTURE / "expected.safetensors"))
    x = expected["x"]
    sites = {"standard": "blocks.0.resid_post", "topk": "blocks.1.mlp",
             "jumprelu": "blocks.0.resid_post"}
    for name, site in sites.items():
        sae = load_sae(FIXTURE / name)
        assert (sae.architecture, str(sae.site), sae.d_in, sae.d_sae) == (name, site, 32, 48)
        f = sae.encode(x)
        assert torch.allclose(f, expected[f"{name}.f"], atol=1e-5), name
        assert torch.allclose(sae.decode(f), expected[f"{name}.x_hat"], atol=1e-5), name
        assert int((f > 0).sum()) > 0, name
    assert load_sae(FIXTURE / "topk").k == 5
    assert int((load_sae(FIXTURE / "topk").encode(x) > 0).sum(dim=-1).max()) <= 5


def test_sae_lens_save_model_round_trip(tmp_path: Path) -> None:
    """With sae-lens importable: a freshly saved SAELens SAE loads and encodes alike."""
    sae_lens = pytest.importorskip("sae_lens")
    from sae_lens.saes.sae import SAEMetadata
    from sae_lens.saes.standard_sae import StandardSAEConfig

    theirs = sae_lens.StandardSAE(StandardSAEConfig(
        d_in=32, d_sae=40, metadata=SAEMetadata(hook_name="blocks.0.hook_resid_pre")))
    with torch.no_grad():
        for param in theirs.parameters():
            param.add_(0.2 * torch.randn_like(param))
    theirs.save_model(tmp_path / "sae")
    x = torch.randn(4, 32)
    ours = load_sae(tmp_path / "sae")
    assert str(ours.site) == "blocks.0.resid_pre"
    with torch.no_grad():
        assert torch.allclose(ours.encode(x), theirs.encode(x), atol=1e-5)
