"""Writes SAEs saved by SAELens itself, with SAELens's own encodings of fixed inputs,
for tests/test_sae.py::test_loads_what_sae_lens_saved.

Run with sae-lens installed (a scratch venv, not mechcheck's: it pins its own
transformer-lens and datasets; SAELENS_VENV below is any new folder), from the
repository root:

    python -m venv SAELENS_VENV && SAELENS_VENV/bin/pip install sae-lens
    SAELENS_VENV/bin/python tests/sae_lens_fixture/make.py

Each folder is what ``sae.save_model(folder)`` writes (sae_weights.safetensors and
cfg.json); expected.safetensors holds the inputs ``x`` and, per SAE, SAELens's
``encode(x)`` and ``decode(encode(x))``.
"""

from __future__ import annotations

from pathlib import Path

import sae_lens
import torch
from sae_lens import JumpReLUSAE, StandardSAE, TopKSAE
from sae_lens.saes.jumprelu_sae import JumpReLUSAEConfig
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.standard_sae import StandardSAEConfig
from sae_lens.saes.topk_sae import TopKSAEConfig
from safetensors.torch import save_file

HERE = Path(__file__).parent
D_IN, D_SAE = 32, 48  # the width of mechcheck's tiny test models


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(6, D_IN)
    expected = {"x": x}
    metadata = {"hook_name": "blocks.0.hook_resid_post", "model_name": "tiny"}
    saes = {
        "standard": StandardSAE(StandardSAEConfig(d_in=D_IN, d_sae=D_SAE,
                                                  metadata=SAEMetadata(**metadata))),
        "topk": TopKSAE(TopKSAEConfig(d_in=D_IN, d_sae=D_SAE, k=5,
                                      metadata=SAEMetadata(**{**metadata, "hook_name":
                                                              "blocks.1.hook_mlp_out"}))),
        "jumprelu": JumpReLUSAE(JumpReLUSAEConfig(d_in=D_IN, d_sae=D_SAE,
                                                  metadata=SAEMetadata(**metadata))),
    }
    for name, sae in saes.items():
        with torch.no_grad():  # weights away from their initial symmetries
            for param in sae.parameters():
                param.add_(0.2 * torch.randn_like(param))
            if name == "jumprelu":
                sae.threshold.copy_(0.3 * torch.rand(D_SAE))
            f = sae.encode(x)
            expected[f"{name}.f"] = f
            expected[f"{name}.x_hat"] = sae.decode(f)
        sae.save_model(HERE / name)
    save_file({k: v.contiguous() for k, v in expected.items()},
              str(HERE / "expected.safetensors"),
              metadata={"sae_lens_version": sae_lens.__version__})
    print(f"written with sae-lens {sae_lens.__version__}")


if __name__ == "__main__":
    main()
