"""The README's first example stays true to the claim file it shortens."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLAIMS = ROOT / "claims" / "zoo" / "test_induction.yaml"


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_shortened_claim_file_matches_the_real_one() -> None:
    shown = yaml.safe_load(_yaml_blocks(README)[0])
    real = yaml.safe_load(CLAIMS.read_text(encoding="utf-8"))
    assert {k: v for k, v in shown.items() if k != "claims"} == {
        k: v for k, v in real.items() if k != "claims"}
    by_id = {c["id"]: c for c in real["claims"]}
    for claim in shown["claims"]:
        assert claim == by_id[claim["id"]], claim["id"]


def test_failure_example_points_at_the_claim() -> None:
    match = re.search(r"claims/zoo/test_induction.yaml:(\d+) claim '(\w+)'", README)
    assert match is not None
    line = CLAIMS.read_text(encoding="utf-8").splitlines()[int(match[1]) - 1]
    assert line.strip() == f"- id: {match[2]}"
