"""The tuned lens (mechcheck.tuned_lens, ``mechcheck lens train``, ``lens: tuned``) on a
tiny GPT-2 with perturbed biases and norms, checked by hand: the translator file is read
with safetensors directly, the residual vectors come from ``output_hidden_states``, the
final norm and unembedding are the HF modules, and the KL from the model's own final
distribution is computed over every position of the rows the file says it did *not*
train on.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.conftest import word_rows
from tests.test_decodes import hand_ids

CLAIMS = """\
model: {model}
data: rows.jsonl
claims:
  - id: early
    kind: decodes
    components: ["blocks.0.resid_pre", "blocks.0.resid_post"]
    metric: logprob
    min_score: -10
  - id: early_tuned
    kind: decodes
    components: ["blocks.0.resid_pre", "blocks.0.resid_post"]
    metric: logprob
    min_score: -10
    lens: tuned
    translator: lens.safetensors
  - id: other_site
    kind: decodes
    components: ["blocks.1.resid_post"]
    min_score: -10
    lens: tuned
    translator: lens.safetensors
  - id: other_rows
    kind: decodes
    n: 20
    components: ["blocks.0.resid_post"]
    min_score: -10
    lens: tuned
    translator: lens.safetensors
  - id: not_a_lens
    kind: decodes
    components: ["blocks.0.resid_post"]
    min_score: -10
    lens: tuned
    translator: rows.jsonl
  - id: stray_translator
    kind: decodes
    components: ["blocks.0.resid_post"]
    min_score: -10
    translator: lens.safetensors
"""

N_ROWS = 40


def kl(target: torch.Tensor, logits: torch.Tensor) -> list[float]:
    """KL(target || logits) at each position."""
    p = torch.log_softmax(target.double(), -1)
    q = torch.log_softmax(logits.double(), -1)
    return (p.exp() * (p - q)).sum(-1).tolist()


def hand_lens_all(model: Any, ids: list[int], index: int,
                  translator: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[
                      torch.Tensor, torch.Tensor]:
    """(lens logits at every position of hidden_states[index], the model's logits)."""
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), output_hidden_states=True)
        h = out.hidden_states[index][0]
        if translator is not None:
            weight, bias = translator
            h = h @ weight.T + bias
        lens = model.lm_head(model.transformer.ln_f(h))
    return lens, out.logits[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory,
            tiny_folder: Callable[..., Path]) -> tuple[Path, dict[str, Any]]:
    from mechcheck.cli import main

    folder = tmp_path_factory.mktemp("tuned")
    rows = word_rows(N_ROWS, seed=4)
    (folder / "rows.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (folder / "test_tuned.yaml").write_text(CLAIMS.format(model=tiny_folder("gpt2")))
    code = main(["lens", "train", str(folder / "test_tuned.yaml"), "--claim", "early",
                 "--out", str(folder / "lens.safetensors"), "--steps", "150",
                 "--seed", "3", "--lr", "0.003"])
    assert code == 0
    return folder, {"rows": rows}


def test_training_lowers_held_out_kl_below_the_logit_lens(
        trained: tuple[Path, dict[str, Any]], tiny_loaded: Callable[..., Any]) -> None:
    from safetensors import safe_open

    folder, info = trained
    with safe_open(str(folder / "lens.safetensors"), framework="pt") as handle:
        meta = {k: json.loads(v) for k, v in handle.metadata().items()}
        maps = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    assert meta["sites"] == ["blocks.0.resid_pre", "blocks.0.resid_post"]
    assert meta["seed"] == 3 and meta["n_rows"] == N_ROWS
    train = set(meta["train_rows"])
    held = [r for r in range(N_ROWS) if r not in train]
    assert len(held) == N_ROWS // 2 and len(train) == N_ROWS - len(held)

    reference = copy.deepcopy(tiny_loaded("gpt2").model)
    tok = tiny_loaded("gpt2").tokenizer
    for name, index in (("blocks.0.resid_pre", 0), ("blocks.0.resid_post", 1)):
        weight, bias = maps[f"{name}.weight"].double(), maps[f"{name}.bias"].double()
        assert not torch.allclose(weight, torch.eye(weight.shape[0], dtype=weight.dtype))
        logit_kl, tuned_kl = [], []
        for r in held:
            ids = hand_ids(tok, info["rows"][r]["prompt"])
            lens, final = hand_lens_all(reference, ids, index, None)
            tuned, _ = hand_lens_all(reference, ids, index, (weight.float(), bias.float()))
            logit_kl.extend(kl(final, lens))
            tuned_kl.extend(kl(final, tuned))
        # the same numbers as the file reports (the mean over every held-out position),
        # and the tuned lens is closer on rows it never saw
        assert np.mean(logit_kl) == pytest.approx(meta["kl_logit"][name], rel=1e-3, abs=1e-6)
        assert np.mean(tuned_kl) == pytest.approx(meta["kl_tuned"][name], rel=1e-3, abs=1e-6)
        assert np.mean(tuned_kl) < 0.8 * np.mean(logit_kl), (name, logit_kl, tuned_kl)


def test_a_tuned_claim_reads_the_file_on_held_out_rows(
        trained: tuple[Path, dict[str, Any]], tiny_loaded: Callable[..., Any]) -> None:
    from safetensors import safe_open

    from mechcheck.api import evaluate_path

    folder, info = trained
    results = {r.id: r for r in evaluate_path(folder / "test_tuned.yaml")}
    with safe_open(str(folder / "lens.safetensors"), framework="pt") as handle:
        meta = {k: json.loads(v) for k, v in handle.metadata().items()}
        weight = handle.get_tensor("blocks.0.resid_pre.weight")
        bias = handle.get_tensor("blocks.0.resid_pre.bias")
    held = [r for r in range(N_ROWS) if r not in set(meta["train_rows"])]
    reference = copy.deepcopy(tiny_loaded("gpt2").model)
    tok = tiny_loaded("gpt2").tokenizer
    vocab = tok.get_vocab()
    expected = []
    for r in held:
        ids = hand_ids(tok, info["rows"][r]["prompt"])
        tuned, _ = hand_lens_all(reference, ids, 0, (weight, bias))
        expected.append(float(torch.log_softmax(tuned[-1].double(), -1)[
            vocab[info["rows"][r]["answer"]]]))
    tuned_result = results["early_tuned"]
    assert tuned_result.verdict in ("pass", "fail"), tuned_result.message
    criteria = {c["name"]: c for c in tuned_result.criteria}
    assert criteria["blocks.0.resid_pre"]["n"] == len(held)
    assert criteria["blocks.0.resid_pre"]["effect"] == pytest.approx(np.mean(expected),
                                                                     abs=1e-4)
    plain = {c["name"]: c for c in results["early"].criteria}
    assert plain["blocks.0.resid_pre"]["n"] == N_ROWS
    assert "tuned lens (lens.safetensors)" in tuned_result.intervention
    assert "40 held-out" not in tuned_result.intervention
    assert f"{len(held)} held-out rows" in tuned_result.intervention

    errors = {
        "other_site": ("translator", "has no map for blocks.1.resid_post"),
        "other_rows": ("translator", "was trained on other prompts"),
        "not_a_lens": ("translator", "not a readable .safetensors file"),
        "stray_translator": ("translator", "translator: is read by lens: tuned only"),
    }
    for claim_id, (key, text) in errors.items():
        result = results[claim_id]
        assert result.verdict == "error", (claim_id, result.verdict, result.message)
        assert f"claim '{claim_id}', key '{key}'" in result.message, result.message
        assert text in result.message, result.message
        assert "Traceback" not in result.message


def test_a_translator_for_another_model_is_refused(
        trained: tuple[Path, dict[str, Any]], tiny_folder: Callable[..., Path]) -> None:
    from mechcheck.api import evaluate_path

    folder, _ = trained
    path = folder / "test_other_model.yaml"
    path.write_text(CLAIMS.format(model=tiny_folder("gpt2", seed=11)))
    result = {r.id: r for r in evaluate_path(path)}["early_tuned"]
    assert result.verdict == "error", result.message
    assert "claim 'early_tuned', key 'translator'" in result.message
    assert "was trained for another model: model" in result.message
    assert "mechcheck lens train" in result.message


def test_split_is_seeded_and_disjoint() -> None:
    from mechcheck.tuned_lens import split_rows

    train, held = split_rows(11, 0.5, seed=2)
    again = split_rows(11, 0.5, seed=2)
    assert train.tolist() == again[0].tolist() and held.tolist() == again[1].tolist()
    assert sorted([*train, *held]) == list(range(11)) and len(held) == 6
    assert split_rows(11, 0.5, seed=3)[1].tolist() != held.tolist()
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        split_rows(10, 1.0, seed=0)


def test_train_command_errors(trained: tuple[Path, dict[str, Any]],
                              capsys: pytest.CaptureFixture[str]) -> None:
    from mechcheck.cli import main

    folder, _ = trained
    claims = str(folder / "test_tuned.yaml")
    out = str(folder / "never.safetensors")
    assert main(["lens", "train", claims, "--claim", "nope", "--out", out]) == 2
    assert "no claim 'nope' (claims: early, early_tuned" in capsys.readouterr().err
    assert main(["lens", "train", claims, "--claim", "early", "--out", out,
                 "--holdout", "1.5"]) == 2
    assert "holdout must lie strictly between 0 and 1" in capsys.readouterr().err
    assert not Path(out).exists()
