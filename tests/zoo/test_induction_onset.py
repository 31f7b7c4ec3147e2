"""The checkpoint suite of zoo:induction-2l shows the phase change: each claim fails on
every checkpoint before its onset and passes on every one from it on."""

from __future__ import annotations

from pathlib import Path

from mechcheck.api import evaluate_path
from mechcheck.report.html import onsets
from mechcheck.report.io import matrix
from mechcheck.session import Session
from mechcheck.spec.loader import load_claim_file

SUITE = Path(__file__).resolve().parents[2] / "claims" / "zoo" / "test_induction_checkpoints.yaml"


def test_matrix_has_the_pass_fail_boundary() -> None:
    session = Session(device="cpu")
    parsed = load_claim_file(SUITE, session.registry.kind_keys())
    order = list(parsed.checkpoints)
    results = evaluate_path(SUITE, session)
    table = matrix(results)
    assert list(table.columns) == order
    first = {c.id: c.xfail_before for c in parsed.claims}
    assert first["layer_1_necessary"] == "step350"
    for (_, claim), verdicts in table.iterrows():
        boundary = order.index(first[claim])
        assert set(verdicts.iloc[:boundary]) == {"fail"}, claim
        assert set(verdicts.iloc[boundary:]) == {"pass"}, claim
    found = {claim: onset for (_, claim), (onset, lost) in onsets(results).items()}
    assert found == first
