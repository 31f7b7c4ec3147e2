"""``mechcheck sae train`` (mechcheck.sae_train): seeded training of a small SAE on a
model's activations, checked on zoo:planted-feature-read, whose blocks.0.resid_post is
by construction 8 x (a token direction + a position direction + one of FA / FB / none),
coordinates 0-74: a top-k SAE with k = 3 should find many of those unit directions.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from mechcheck.cli import main
from mechcheck.data import load_rows
from mechcheck.errors import ClaimSpecError
from mechcheck.sae import load_sae
from mechcheck.sae_train import collect_activations, train_sae
from tests.conftest import word_rows

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def planted_acts() -> torch.Tensor:
    from mechcheck.session import Session

    loaded = Session().model("zoo:planted-feature-read")
    rows = load_rows(ROOT / "claims/zoo/planted_feature.jsonl")
    return collect_activations(loaded, rows, "blocks.0.resid_post")


def test_activations_are_the_models(planted_acts: torch.Tensor) -> None:
    """Every vector is 8 x three one-hot coordinates among 0-74 (the construction)."""
    assert planted_acts.shape[1] == 128
    big = planted_acts > 4
    assert bool((big.sum(dim=1) == 3).all())
    assert torch.allclose(planted_acts[big], torch.full_like(planted_acts[big], 8.0), atol=1e-3)
    assert float(planted_acts[:, 75:].abs().max()) < 1e-3


def test_topk_sae_recovers_planted_directions(planted_acts: torch.Tensor) -> None:
    sae, fit = train_sae(planted_acts, site="blocks.0.resid_post", features=96, k=3,
                         steps=2000, lr=1e-2, seed=0, decoder_bias=False)
    assert sae.architecture == "topk" and sae.k == 3 and sae.d_sae == 96
    assert fit["fvu"] < 0.01 and fit["l0"] <= 3.0
    unit = sae.W_dec / sae.W_dec.norm(dim=1, keepdim=True)
    best = unit[:, :75].max(dim=0).values  # cosine of the nearest decoder row, per direction
    assert int((best > 0.9).sum()) >= 30  # measured 38 of the 75
    assert float(best[72]) > 0.75  # FA: measured 0.90
    # a random decoder finds none of them
    noise = torch.randn(96, 128, generator=torch.Generator().manual_seed(0))
    assert float((noise / noise.norm(dim=1, keepdim=True))[:, :75].max()) < 0.6
    # and the reconstruction, measured here: fraction of variance unexplained
    with torch.no_grad():
        x_hat = sae.decode(sae.encode(planted_acts))
    centred = planted_acts - planted_acts.mean(dim=0)
    fvu = float(((planted_acts - x_hat) ** 2).sum() / (centred ** 2).sum())
    assert fvu == pytest.approx(fit["fvu"], rel=1e-3, abs=1e-6)


def test_relu_l1_sae_trades_sparsity_for_reconstruction(planted_acts: torch.Tensor) -> None:
    fits = [train_sae(planted_acts, site="blocks.0.resid_post", features=96, l1=l1,
                      steps=600, lr=1e-2, seed=0)[1] for l1 in (0.001, 0.05)]
    assert fits[1]["l0"] < fits[0]["l0"]
    assert fits[0]["fvu"] < fits[1]["fvu"]
    assert fits[0]["fvu"] < 0.1


def test_same_seed_same_file(planted_acts: torch.Tensor, tmp_path: Path) -> None:
    from mechcheck.sae import save_sae

    files = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        sae, _ = train_sae(planted_acts, site="blocks.0.resid_post", features=32, k=3,
                           steps=300, seed=seed, lr=1e-2)
        files.append(save_sae(tmp_path / f"{name}.safetensors", sae).read_bytes())
    assert files[0] == files[1]
    assert files[0] != files[2]


def test_bad_settings_are_named(planted_acts: torch.Tensor) -> None:
    for kwargs, said in [({"k": 3, "l1": 0.1}, "give one of --k"), ({}, "give one of --k"),
                         ({"k": 200}, "--k 200 must lie between 1 and --features 96")]:
        with pytest.raises(ClaimSpecError, match=said):
            train_sae(planted_acts, site="blocks.0.resid_post", features=96, steps=1, **kwargs)


def test_command_writes_a_loadable_file(tmp_path: Path, tiny_folder: Callable[..., Path],
                                        capsys: Any) -> None:
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in word_rows(12, seed=1)))
    out = tmp_path / "sae.safetensors"
    args = ["sae", "train", str(tiny_folder("gpt2")), "--site", "blocks.1.resid_pre",
            "--data", str(data), "--features", "40", "--k", "4", "--steps", "50",
            "--seed", "2", "--dtype", "float16", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "trained a topk SAE (32 -> 40)" in printed and str(out) in printed
    sae = load_sae(out)
    assert (str(sae.site), sae.d_in, sae.d_sae, sae.k) == ("blocks.1.resid_pre", 32, 40, 4)
    training = sae.config["training"]
    assert training["steps"] == 50 and training["seed"] == 2 and training["n_vectors"] > 50
    first = out.read_bytes()
    assert main(args) == 0  # the same command again: the same bytes
    assert out.read_bytes() == first

    bad = [(["--site", "blocks.9.resid_post"], "blocks.9.resid_post does not exist"),
           (["--site", "blocks.0.attn.head.1"], "an SAE reads a whole-layer site"),
           (["--out", str(tmp_path / "sae.pt")], "must end in .safetensors")]
    for change, said in bad:
        changed = list(args)
        for i in range(0, len(change), 2):
            changed[changed.index(change[i]) + 1] = change[i + 1]
        assert main(changed) == 2
        assert said in capsys.readouterr().err


def test_shipped_zoo_sae_and_data() -> None:
    from tests.test_activates import after_a_rows

    sae = load_sae(ROOT / "claims/zoo/sae_planted_feature.safetensors")
    assert (str(sae.site), sae.d_in, sae.d_sae, sae.k) == ("blocks.0.resid_post", 128, 96, 3)
    shipped = [json.loads(line) for line in
               (ROOT / "claims/zoo/planted_feature_sae.jsonl").read_text().splitlines()]
    assert shipped == after_a_rows(60, seed=1)
