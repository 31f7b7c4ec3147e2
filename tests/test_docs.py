"""Every example in README.md and docs/ that runs a claim is run here, on the zoo
models, and the output a page shows is compared with what the run really prints.

A block that runs claims (a YAML block with ``claims:``, a Python test that uses the
``mechcheck`` fixture, a script that calls ``evaluate_path``/``evaluate_file``, a
``mechcheck check`` or ``pytest claims`` command) is run unless the page marks it
``<!-- not-run: reason -->``, ``<!-- load-only: reason -->`` or
``<!-- quoted-from: path -->`` (see tests/docs_blocks.py). A claim-running block that
can be neither run nor is marked fails :func:`test_every_claim_example_is_run_or_marked`.
"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.docs_blocks import (
    EXAMPLE_FILES,
    MARKERS,
    ROOT,
    Block,
    ExampleRuns,
    all_blocks,
    blocks,
    claim_kind,
    command_output,
    commands,
    copy_claims,
    cwd,
    example_file,
    example_root,
    matching_result,
    message_location,
    mismatch,
    output_of,
    prepare_examples,
    runs_claims,
    tokens_match,
    yaml_claims,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

BLOCKS = all_blocks()
CLAIM_BLOCKS = [b for b in BLOCKS if claim_kind(b) is not None]


def _unmarked(kind: str) -> list[Block]:
    return [b for b in CLAIM_BLOCKS if claim_kind(b) == kind and b.marker is None]


def _pages(kind: str) -> list[Path]:
    return sorted({b.doc for b in _unmarked(kind)})


def _ids(items: list[Any]) -> list[str]:
    return [i.name if isinstance(i, Block) else str(i.relative_to(ROOT)) for i in items]


@pytest.fixture(scope="module")
def session() -> Any:
    import mechcheck

    return mechcheck.Session(device="cpu")


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a copy of claims/, where the examples' relative paths resolve."""
    return copy_claims(tmp_path_factory.mktemp("docs-project"))


def _measured_comments(text: str) -> dict[str, list[str]]:
    """``# measured X`` comments of a YAML claim block, by the id of their claim."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^\s*- (?:&\S+\s+)?id:\s*(\S+)", line)
        if match:
            current = match[1]
        value = re.search(r"#.*\bmeasured\s+([-−]?[\d.]+)", line)
        if value and current:
            found.setdefault(current, []).append(value[1].rstrip("."))
    return found


def _check_verdicts(results: list[Any], name: str) -> None:
    """Claims without xfail pass; claims with xfail fail (as pytest's strict xfail);
    the members a ``screen: attribution`` left out are skipped."""
    for r in results:
        if r.verdict == "skip" and r.reason == "screened out":
            continue
        wanted = "fail" if r.xfail else "pass"
        assert r.verdict == wanted, (
            f"{name}: claim {r.id} is {r.verdict}, not {wanted}:\n{r.message}")


def _check_measured(text: str, results: list[Any], name: str) -> None:
    by_id = {r.id: r for r in results}
    for claim_id, values in _measured_comments(text).items():
        for shown in values:
            effect = by_id[claim_id].effect
            assert tokens_match(shown, f"{effect:.6g}"), (
                f"{name}: claim {claim_id} says 'measured {shown}', the run measured {effect:.4g}")


def test_readme_failure_is_real_output(tmp_path: Path, session: Any) -> None:
    """README's failure example: claims/zoo/test_induction.yaml with the claim's
    threshold raised to the one the message shows."""
    import mechcheck

    block = next(b for b in blocks(ROOT / "README.md") if _is_readme_failure(b))
    first = block.text.splitlines()[0]
    match = re.match(r"^(\S+):(\d+) claim '(\w+)'", first)
    threshold = re.search(r"expected\s+\S+ drop > (\S+)", block.text)
    assert match and threshold, first
    copy_claims(tmp_path)
    claim_file = tmp_path / match[1]
    lines = claim_file.read_text(encoding="utf-8").splitlines(keepends=True)
    start = int(match[2]) - 1
    assert lines[start].strip() == f"- id: {match[3]}"
    end = next(i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("- id:"))
    for i in range(start, end):
        lines[i] = re.sub(r"min_drop: \S+", f"min_drop: {threshold[1]}", lines[i])
    claim_file.write_text("".join(lines), encoding="utf-8")
    with cwd(tmp_path):
        results = mechcheck.evaluate_path(match[1], session)
    result = next(r for r in results if r.id == match[3])
    problem = mismatch(block.text, result.message)
    assert problem is None, f"{block.name}: {problem}"


# -- YAML claim blocks ------------------------------------------------------------------
@pytest.mark.parametrize("block", _unmarked("yaml"), ids=_ids(_unmarked("yaml")))
def test_yaml_example_runs_as_shown(block: Block, project: Path, session: Any) -> None:
    """A claim file shown on a page runs on the zoo (data files as in claims/zoo/) with
    the verdicts it implies, and its 'measured' comments are what is measured."""
    import mechcheck

    data = yaml_claims(block)
    assert isinstance(data, dict) and "model" in data, (
        f"{block.name}: a claim fragment cannot run as-is; complete it (model:, data:) "
        "or mark it <!-- not-run: reason -->, <!-- load-only: reason --> or "
        "<!-- quoted-from: path -->")
    path = project / "claims" / "zoo" / f"test_doc_{block.doc.stem}_{block.line}.yaml"
    path.write_text(block.text, encoding="utf-8")
    results = mechcheck.evaluate_path(path, session)
    assert results, block.name
    _check_verdicts(results, block.name)
    _check_measured(block.text, results, block.name)


# The top of the file that a fragment (claim entries shown without their file) is read in:
# the keys such entries inherit. A claim's own keys win, as always.
FRAGMENT_TOP = "model: hf:gpt2\ndata: data.jsonl\nmetric: logit_diff\n"


def _as_claim_file(block: Block) -> str:
    data = yaml_claims(block)
    if isinstance(data, list):  # a list of claim entries, shown inside a file
        return FRAGMENT_TOP + "claims:\n" + textwrap.indent(textwrap.dedent(block.text), "  ")
    top = yaml.safe_load(FRAGMENT_TOP)
    if "task" in data:
        top.pop("data")
    missing = "".join(f"{k}: {v}\n" for k, v in top.items() if k not in data)
    return missing + block.text  # a part of a file: the keys it does not set


LOAD_ONLY = [b for b in CLAIM_BLOCKS if b.marker == "load-only" and yaml_claims(b) is not None]


@pytest.mark.parametrize("block", LOAD_ONLY, ids=_ids(LOAD_ONLY))
def test_load_only_example_is_accepted_by_the_loader(block: Block, tmp_path: Path) -> None:
    from mechcheck.plugins import Registry
    from mechcheck.spec.loader import load_claim_file

    path = tmp_path / "test_block.yaml"
    path.write_text(_as_claim_file(block), encoding="utf-8")
    parsed = load_claim_file(path, Registry.from_plugins().kind_keys())
    assert parsed.error is None, f"{block.name}: {parsed.error}"
    errors = [c for c in parsed.claims if isinstance(c, Exception)]
    assert not errors, f"{block.name}: " + "\n".join(str(e) for e in errors)


QUOTED = [b for b in BLOCKS if b.marker == "quoted-from"]


@pytest.mark.parametrize("block", QUOTED, ids=_ids(QUOTED))
def test_quoted_example_equals_its_file(block: Block) -> None:
    """A block marked quoted-from shows that file: the same claims (YAML) or a verbatim
    part of it (anything else)."""
    source = ROOT / block.marker_arg
    assert source.is_file(), f"{block.name}: quoted-from names {block.marker_arg}, not a file"
    text = source.read_text(encoding="utf-8")
    shown = yaml_claims(block)
    if shown is None:
        assert block.text in text, f"{block.name}: the block is not a part of {block.marker_arg}"
        return
    real = yaml.safe_load(text)
    by_id = {c["id"]: c for c in real["claims"]}
    claims = shown if isinstance(shown, list) else shown["claims"]
    for claim in claims:
        assert claim == by_id.get(claim["id"]), f"{block.name}: {claim['id']} differs"
    if isinstance(shown, dict):
        for key, value in shown.items():
            assert key == "claims" or real.get(key) == value, f"{block.name}: top key {key}"


# -- Python tests that use the mechcheck fixture ----------------------------------------
def _fixture_file(block: Block, index: int) -> str:
    first = block.text.splitlines()[0]
    named = re.match(r"^#\s*(\S+\.py)\b", first)
    return named[1] if named else f"test_doc_{block.doc.stem}_{index}.py"


def _expected_failures(block: Block) -> dict[str, str]:
    """Test name -> the failure text a following output block shows for it."""
    page = blocks(block.doc)
    shown = output_of(block, page)
    if shown is None:
        return {}
    failed = re.findall(r"claim '(\w+)' failed", shown.text)
    tests = re.findall(r"^def (test_\w+)\(mechcheck\):(.*?)(?=^def |\Z)", block.text, re.M | re.S)
    return {name: shown.text for name, body in tests if any(f"'{c}'" in body or f'"{c}"' in body
                                                          for c in failed)}


@pytest.mark.parametrize("page", _pages("fixture"), ids=_ids(_pages("fixture")))
def test_fixture_examples_run_as_shown(page: Path, pytester: pytest.Pytester) -> None:
    """The page's Python test files pass (or fail with the message the page shows) when
    run by pytest next to the zoo's data files; one pytest run per page."""
    copy_claims(pytester.path)
    examples = [b for b in _unmarked("fixture") if b.doc == page]
    files = {}
    for index, block in enumerate(examples):
        name = _fixture_file(block, index)
        target = pytester.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(block.text, encoding="utf-8")
        files[name] = block
    result = pytester.runpytest("-p", "no:cacheprovider", "-rA", *files)
    reports = [r for r in result.reprec.getreports("pytest_runtest_logreport")
               if r.when == "call" or r.outcome != "passed"]
    for name, block in files.items():
        failures = _expected_failures(block)
        ran = [r for r in reports if r.nodeid.startswith(name + "::")]
        assert ran, f"{block.name}: no test ran from {name}\n{result.stdout.str()}"
        for report in ran:
            test = report.nodeid.split("::")[-1]
            text = str(report.longrepr) if report.longrepr else ""
            if test in failures:
                assert report.outcome == "failed", f"{block.name}: {test} did not fail"
                problem = mismatch(failures[test], text)
                assert problem is None, f"{block.name}: {test}: {problem}"
            elif report.outcome == "skipped":
                assert "skip_if_unavailable" in block.text, f"{block.name}: {test} skipped: {text}"
            else:
                assert report.outcome == "passed", f"{block.name}: {test}: {text}"


# -- Python scripts that evaluate claims ------------------------------------------------
@pytest.mark.parametrize("page", _pages("python"), ids=_ids(_pages("python")))
def test_python_examples_run_as_shown(page: Path, tmp_path: Path) -> None:
    """The page's scripts run in order, in one namespace, from a folder that holds
    claims/; what they print matches the output block after each."""
    copy_claims(tmp_path)
    page_blocks = blocks(page)
    namespace: dict[str, Any] = {"__name__": "__docs__"}
    with cwd(tmp_path):
        for block in _unmarked("python"):
            if block.doc != page:
                continue
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                exec(compile(block.text, block.name, "exec"), namespace)
            shown = output_of(block, page_blocks)
            if shown is not None:
                problem = mismatch(shown.text, printed.getvalue())
                assert problem is None, f"{block.name}: {problem}"


# -- commands ---------------------------------------------------------------------------
def _run_command(argv: list[str], folder: Path, pytester: pytest.Pytester) -> tuple[int, str]:
    """Run one command of a page in ``folder``: pytest and mechcheck in this process,
    anything else (sed, cp ...) with bash."""
    from mechcheck.cli import main

    if argv[:2] == ["python", "-m"]:
        argv = argv[2:]
    if argv[0] == "pytest":
        result = pytester.runpytest("-p", "no:cacheprovider", *argv[1:])
        return int(result.ret), result.stdout.str() + result.stderr.str()
    if argv[0] == "mechcheck":
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv[1:])
            except SystemExit as exc:
                code = int(exc.code or 0)
        return code, out.getvalue() + err.getvalue()
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, check=False)
    return done.returncode, done.stdout + done.stderr


COMMAND_BLOCKS = _unmarked("command")


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=_ids(COMMAND_BLOCKS))
def test_command_example_runs_as_shown(block: Block, pytester: pytest.Pytester) -> None:
    """The block's commands run in order in a folder that holds claims/. A command
    shown with a ``$`` prompt prints what the page shows after it; a pytest run of claims
    exits with 0 unless the page shows its failure."""
    copy_claims(pytester.path)
    page = blocks(block.doc)
    following = output_of(block, page)
    for _, argv in commands(block):
        folders = [a for a in argv[1:] if runs_claims(argv) and (pytester.path / a).is_dir()]
        assert not folders, (
            f"{block.name}: `{' '.join(argv)}` runs every claim file under {folders[0]}, "
            "which takes minutes: name claim files, or mark the block <!-- not-run: reason -->")
    for index, argv in commands(block):
        code, printed = _run_command(argv, pytester.path, pytester)
        if block.lang in ("text", "console"):
            shown = command_output(block, index)
        else:
            last = index == commands(block)[-1][0]
            shown = following.text if following is not None and last else ""
        problem = mismatch(shown, printed)
        assert problem is None, f"{block.name}: `{' '.join(argv)}`: {problem}"
        if runs_claims(argv):  # 1: some claim did not pass, as the page may show
            allowed = (0, 1) if shown.strip() else (0,)
            assert code in allowed, (
                f"{block.name}: `{' '.join(argv)}` exited with {code}:\n{printed}")


# -- the example project behind the pages' messages ------------------------------------
@pytest.fixture(scope="module")
def examples(tmp_path_factory: pytest.TempPathFactory, session: Any) -> ExampleRuns:
    return ExampleRuns(prepare_examples(tmp_path_factory.mktemp("examples")), session)


def _is_readme_failure(block: Block) -> bool:
    """README's failure example: checked by test_readme_failure_is_real_output."""
    return block.doc.name == "README.md" and "failed:" in block.text


MESSAGES = [b for b in BLOCKS if message_location(b) is not None and b.marker is None
            and not _is_readme_failure(b)]


@pytest.mark.parametrize("block", MESSAGES, ids=_ids(MESSAGES))
def test_message_is_real_output(block: Block, examples: ExampleRuns) -> None:
    """A failure or error message on a page is what its claim file in docs/examples
    really gives, location included."""
    location = message_location(block)
    assert location is not None
    path, line, claim = location
    found = example_file(path)
    assert found is not None, (
        f"{block.name}: the message names {path}, which is not a claim file under "
        "docs/examples/: add the file that gives it, or mark the block <!-- not-run: reason -->")
    results = examples.results(*found)
    result = matching_result(results, path, line, claim)
    assert result is not None, (f"{block.name}: {path} gives no message at line {line}"
                                + (f" for claim '{claim}'" if claim else "") + "; it gives:\n"
                                + "\n".join(r.message for r in results if r.message))
    problem = mismatch(block.text, result.message)
    assert problem is None, f"{block.name}: {problem}"


def _shown_claims() -> set[tuple[str, str | None]]:
    return {(loc[0], loc[2]) for b in MESSAGES if (loc := message_location(b)) is not None}


@pytest.mark.parametrize("file", EXAMPLE_FILES, ids=_ids(EXAMPLE_FILES))
def test_example_claims_are_shown_or_hold(file: Path, examples: ExampleRuns) -> None:
    """Every claim of an example file either gives a message a page shows, or holds as
    its comments say (a control beside the mistakes)."""
    root = example_root(file)
    path = file.relative_to(root).as_posix()
    shown = _shown_claims()
    results = examples.results(root, path)
    unshown = [r for r in results if (path, r.id) not in shown and (path, None) not in shown
               and not (r.id.startswith("claim[") or "@line" in r.id)]
    _check_verdicts(unshown, path)
    _check_measured(file.read_text(encoding="utf-8"), unshown, path)


# -- the guard --------------------------------------------------------------------------
def test_every_claim_example_is_run_or_marked() -> None:
    """No claim-running block escapes: each is run by a test above or carries a marker
    with a reason, and no marker is misspelt."""
    problems = []
    for block in BLOCKS:
        if block.marker is not None and block.marker not in MARKERS:
            problems.append(f"{block.name}: unknown marker '{block.marker}' "
                            f"(use {', '.join(MARKERS)})")
        elif block.marker is not None and not block.marker_arg:
            problems.append(f"{block.name}: the marker '{block.marker}' needs a reason or path")
    for block in CLAIM_BLOCKS:
        if block.marker is None and claim_kind(block) == "yaml":
            data = yaml_claims(block)
            if not (isinstance(data, dict) and "model" in data):
                problems.append(f"{block.name}: a claim fragment that cannot run as-is is "
                                "not marked")
    assert not problems, "\n".join(problems)
    assert len(CLAIM_BLOCKS) >= 20  # the pages are found and read
