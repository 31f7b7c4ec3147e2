"""The corpus under ``cases/`` holds claim files (``test_*.yaml``) and conftest files that
only the harness may run, each in a pytester directory of its own: never collect them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

collect_ignore = ["cases"]

_WARM = """\
model: zoo:planted-prevtoken
data: {data}
metric: logit_diff
claims:
  - id: attends
    kind: attends
    components: ["head 0.0"]
    pattern: previous_token
    min_score: 0.5
  - id: necessary
    kind: necessary
    components: ["head 0.0"]
    ablation: mean
    min_drop: 1
    test: {test}
  - id: negligible
    kind: negligible
    components: ["head 0.1"]
    ablation: zero
    margin: 0.01
  - id: sufficient
    kind: sufficient
    components: ["head 0.0"]
    at: last
    min_recovery: 0.5
  - id: broken
    kind: attends
    components: ["head 9.0"]
    min_score: 2
"""


@pytest.fixture(scope="session")
def warm_modules(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Run pytest once in this process, outside pytester, over claims of every kind.

    pytester's in-process runs remove afterwards every module first imported inside
    them, so without this each case would import scipy.stats, the zoo, the report
    writers and hypothesis (whose pytest plugin imports itself at the summary) again:
    seconds per case instead of a fraction.
    """
    from tests.hostile.harness import ROOT

    folder = tmp_path_factory.mktemp("hostile-warm-up")
    rows = [line for line in (ROOT / "claims" / "zoo" / "planted.jsonl").read_text().splitlines()
            if json.loads(line)["positions"]["END"] == 6][:12]
    folder.joinpath("d.jsonl").write_text("\n".join(rows) + "\n")
    records = [json.loads(r) for r in rows]
    lines = ["prompt,answer,wrong,corrupt"] + [
        f"{r['prompt']},{r['answer']},{r['wrong']},{r['corrupt']}" for r in records]
    folder.joinpath("d.csv").write_text("\n".join(lines) + "\n")
    for name, data, test in (("a", "d.jsonl", "t"), ("b", "d.csv", "bootstrap"),
                             ("c", "d.jsonl", "wilcoxon"), ("d", "d.csv", "permutation")):
        folder.joinpath(f"test_{name}.yaml").write_text(_WARM.format(data=data, test=test))
    folder.joinpath("test_e.yaml").write_text("claims: [")
    pytest.main([str(folder), "-q", "-p", "no:cacheprovider", "-rA", "--rootdir", str(folder),
                 "--mechcheck-n-resamples", "99",
                 "--mechcheck-report", str(folder / "r.json")])
    Path(folder / "r.json").unlink(missing_ok=True)
