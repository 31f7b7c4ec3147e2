"""mechcheck.workers: a claim file on one xdist worker, the cores shared out; and the
claims suite's own default of one worker per core (claims/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from mechcheck import workers
from mechcheck.errors import MechcheckError

pytest.importorskip("xdist")
ROOT = Path(__file__).resolve().parent.parent


def _config(dist: str = "load", workercount: int | None = None) -> Any:
    config = SimpleNamespace(option=SimpleNamespace(dist=dist, loadscopereorder=True),
                             getoption=lambda name, default=None: dist)
    if workercount is not None:
        config.workerinput = {"workercount": workercount}
    return config


def test_a_claim_file_is_one_unit_of_work_and_a_python_test_is_its_own() -> None:
    config = _config()
    config.getvalue = lambda name: ["popen", "popen"] if name == "tx" else None
    sched = workers.scheduler(config, None)
    assert sched._split_scope("claims/zoo/test_a.yaml::head[blocks.0.attn.head.1]") == \
        "claims/zoo/test_a.yaml"
    assert sched._split_scope("claims/x/test_b.yml::c[step5]") == "claims/x/test_b.yml"
    assert sched._split_scope("tests/test_c.py::test_d[1]") == "tests/test_c.py::test_d[1]"
    assert workers.scheduler(_config("loadfile"), None) is None
    assert workers.scheduler(_config("worksteal"), None) is None


@pytest.fixture
def threads(monkeypatch: pytest.MonkeyPatch) -> Any:
    before = torch.get_num_threads()
    for name in workers.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(before)


def test_each_worker_takes_its_share_of_the_cores(
        threads: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "cores", lambda: 8)
    assert workers.share_cores(_config(workercount=2)) == 4
    assert torch.get_num_threads() == 4
    assert workers.share_cores(_config(workercount=16)) == 1
    assert torch.get_num_threads() == 1
    assert workers.share_cores(_config()) is None  # not a worker: torch's own choice
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert workers.share_cores(_config(workercount=2)) is None
    monkeypatch.setenv("MECHCHECK_THREADS", "3")
    assert workers.share_cores(_config()) == 3
    assert torch.get_num_threads() == 3


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_a_bad_thread_count_is_named(threads: None, monkeypatch: pytest.MonkeyPatch,
                                     value: str) -> None:
    monkeypatch.setenv("MECHCHECK_THREADS", value)
    with pytest.raises(MechcheckError, match="MECHCHECK_THREADS") as info:
        workers.share_cores(_config())
    assert info.value.key == "MECHCHECK_THREADS" and "at least 1" in (info.value.hint or "")


def test_a_bad_thread_count_is_a_usage_error(pytester: pytest.Pytester,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHCHECK_THREADS", "many")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*MECHCHECK_THREADS='many' is not a number of threads*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


CLAIM = """\
model: zoo:induction-2l
data: data.jsonl
claims:
  - id: prev_{i}
    kind: attends
    components: ["head 0.1"]
    pattern: previous_token
    min_score: 0.0
"""


def test_the_claims_suite_runs_one_worker_per_core(pytester: pytest.Pytester) -> None:
    if workers.cores() < 2:
        pytest.fail("this test needs 2 cores (CI has 2)")
    shutil.copy(ROOT / "claims" / "conftest.py", pytester.path / "conftest.py")
    shutil.copy(ROOT / "claims" / "zoo" / "induction.jsonl", pytester.path / "data.jsonl")
    for i in range(2):
        pytester.makefile(".yaml", **{f"test_claims_{i}": CLAIM.format(i=i)})
    spread = pytester.runpytest_subprocess("-p", "no:cacheprovider", ".")
    spread.assert_outcomes(passed=2)
    spread.stdout.fnmatch_lines(["*2 workers*"])
    one = pytester.runpytest("-p", "no:cacheprovider", "test_claims_0.yaml")
    one.assert_outcomes(passed=1)
    assert "workers" not in one.stdout.str()
    serial = pytester.runpytest("-p", "no:cacheprovider", "-n", "0", ".")
    serial.assert_outcomes(passed=2)
    assert "workers" not in serial.stdout.str()
