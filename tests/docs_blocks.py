"""The fenced code blocks of README.md and docs/, what each one runs, and a comparison
of the output a page shows with the output a run really gives (tests/test_docs.py).

What runs:

- a YAML block with ``claims:`` and a ``model:`` runs as a claim file next to the data
  files of claims/zoo/; claims without ``xfail`` must pass, those with it fail, and each
  ``# measured X`` comment must be the claim's effect;
- a Python block with a ``def test_...(mechcheck)`` is a test file (named by a first line
  ``# path.py``) run by pytest; a Python block that calls ``evaluate_path`` or
  ``evaluate_file`` is a script, run with the page's other scripts in one namespace;
- the commands of a shell block (every line of ``bash``, the ``$`` lines of ``text`` and
  ``console``) run in a folder holding claims/: pytest and ``mechcheck`` in-process,
  anything else (``sed``) with subprocess. Synopsis lines (``[--option]``, ``PATH``) are
  not commands;
- a ``text`` block that directly follows a runnable block (only blank lines between) is
  its output; so are the lines after a ``$`` command;
- a ``text`` block that starts with a located message (``file.yaml:12: claim 'x' ...``)
  is the output of that claim file under docs/examples/.

Output is compared line by line, word by word: every line shown must occur in the real
output, in order (``...`` stands for any lines); numbers agree to the digits shown.

A page marks a block that does not run with an HTML comment on the line before the
fence, invisible on the rendered page:

- ``<!-- not-run: reason -->``: not executed (a hub model, the whole suite, a workflow);
- ``<!-- load-only: reason -->``: a YAML claim block that mechcheck's loader must accept,
  not run (claim entries shown without their file are read in a file whose top sets
  ``model:``, ``data:`` and ``metric:``);
- ``<!-- quoted-from: path -->``: the block shows a file of this repository: the same
  claims (YAML), or a verbatim part of it (anything else).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")))
EXAMPLES = ROOT / "docs" / "examples"
SHOWN_ROOT = "/home/me/project"  # how the pages write the examples' absolute root
MARKERS = ("not-run", "load-only", "quoted-from")

_FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<name>[a-z-]+)\s*:?\s*(?P<arg>.*?)\s*-->\s*$")
_SHELLS = ("bash", "sh", "shell", "console", "text", "")
_PLACEHOLDER = re.compile(r"\[--|(?<![$\w])[A-Z]{3,}\b")  # a synopsis: [--opt], PATH


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    """One fenced block of a page."""

    doc: Path
    line: int            # the line of the opening fence, 1-based
    lang: str
    text: str
    marker: str | None   # the name of the HTML-comment marker before the fence
    marker_arg: str
    follows_code: bool   # only blank lines separate it from the block before

    @property
    def name(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def blocks(doc: Path) -> list[Block]:
    """Every fenced block of ``doc``, in order."""
    lines = doc.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i, last_end = 0, -10
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, indent = i, len(match["indent"])
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(r"^ *```\s*$", lines[i]):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        before = next((lines[j] for j in range(start - 1, -1, -1) if lines[j].strip()), "")
        marker = _MARKER.match(before)
        between = lines[last_end + 1:start] if last_end >= 0 else ["x"]
        found.append(Block(
            doc=doc, line=start + 1, lang=match["lang"], text="\n".join(body) + "\n",
            marker=marker["name"] if marker else None, marker_arg=marker["arg"] if marker else "",
            follows_code=all(not s.strip() for s in between)))
        last_end = i
        i += 1
    return found


def all_blocks() -> list[Block]:
    return [b for doc in DOCS for b in blocks(doc)]


def output_of(block: Block, page: list[Block]) -> Block | None:
    """The ``text`` block that directly follows ``block`` on its page, if any."""
    index = page.index(block)
    if index + 1 < len(page):
        after = page[index + 1]
        if after.follows_code and after.lang in ("text", "console") and not commands(after):
            return after
    return None


# -- what a block runs -----------------------------------------------------------------
def yaml_claims(block: Block) -> Any:
    """The block's YAML if it states claims (a file with ``claims:`` or a list of claim
    entries), else None."""
    if block.lang not in ("yaml", "yml"):
        return None
    try:
        data = yaml.safe_load(block.text)
    except yaml.YAMLError:
        return None
    if isinstance(data, dict) and isinstance(data.get("claims"), list):
        return data
    if isinstance(data, list) and data and all(isinstance(c, dict) and "id" in c
                                               for c in data):
        return data
    return None


def is_fixture_example(block: Block) -> bool:
    """A Python test file that uses the ``mechcheck`` fixture."""
    found = re.search(r"def test_\w+\(mechcheck\)", block.text)
    return block.lang == "python" and found is not None


def is_python_example(block: Block) -> bool:
    """A Python script that evaluates claims (outside pytest)."""
    if block.lang != "python" or is_fixture_example(block):
        return False
    try:
        compile(block.text, block.name, "exec")
    except SyntaxError:  # a signature such as ``f(path) -> list[ClaimResult]``
        return False
    return re.search(r"evaluate_path\(|evaluate_file\(|evaluate_claims\(", block.text) is not None


def commands(block: Block) -> list[tuple[int, list[str]]]:
    """``(index of the line, argv)`` of each command in a shell block: every line of a
    bash block (``\\`` continues a line; ``#`` starts a comment), the ``$ `` lines of a
    text block. Synopsis lines (``[--option]``, ``PATH``) are left out."""
    if block.lang not in _SHELLS:
        return []
    prompt_only = block.lang in ("text", "console", "")
    found, lines = [], block.text.splitlines()
    i = 0
    while i < len(lines):
        start, line = i, lines[i]
        while line.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            line = line.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        if prompt_only:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not line.strip() or line.lstrip().startswith("#") or _PLACEHOLDER.search(line):
            continue
        found.append((start, shlex.split(line, comments=True)))
    return found


def runs_claims(argv: list[str]) -> bool:
    """A ``mechcheck check`` or a ``pytest`` run over claim files."""
    if argv[:2] == ["mechcheck", "check"]:
        return True
    tool = argv[2:3] if argv[:2] == ["python", "-m"] else argv[:1]
    args = argv[3:] if argv[:2] == ["python", "-m"] else argv[1:]
    return tool == ["pytest"] and any("claims" in a or a.endswith((".yaml", ".yml"))
                                      for a in args if not a.startswith("-"))


def claim_kind(block: Block) -> str | None:
    """What kind of claim-running example the block is, or None."""
    if yaml_claims(block) is not None:
        return "yaml"
    if is_fixture_example(block):
        return "fixture"
    if is_python_example(block):
        return "python"
    if any(runs_claims(argv) for _, argv in commands(block)):
        return "command"
    return None


def command_output(block: Block, index: int) -> str:
    """The lines a text block shows after its ``$`` line ``index``, up to the next one."""
    lines = block.text.splitlines()[index + 1:]
    shown = []
    for line in lines:
        if line.startswith("$ "):
            break
        shown.append(line)
    return "\n".join(shown)


# -- comparing output ------------------------------------------------------------------
_DURATION = re.compile(r"^\(?\d+(\.\d+)?s\)?,?$")
_NUMBER = re.compile(r"^[(\[]?(?P<num>[-+−]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?)(?P<rest>[,)\]%]*)$")


def _parse_number(token: str) -> tuple[float, float, str] | None:
    """``(value, allowed difference, trailing punctuation)`` of a numeric token."""
    match = _NUMBER.match(token)
    if not match:
        return None
    text = match["num"].replace("−", "-")
    mantissa, _, exponent = text.lower().partition("e")
    digits = mantissa.split(".")[1] if "." in mantissa else ""
    unit = 10.0 ** (-len(digits)) * 10.0 ** int(exponent or 0)
    value = float(text)
    return value, unit, token[: match.start("num")] + match["rest"]


def tokens_match(shown: str, real: str) -> bool:
    """Equal words; numbers equal to within one unit of the last digit shown (or a
    relative 5e-4, for p-values printed with many digits); any two durations (``1.92s``)."""
    if shown == real:
        return True
    if _DURATION.match(shown) and _DURATION.match(real):  # run times never repeat
        return True
    a, b = _parse_number(shown), _parse_number(real)
    if a is None or b is None or a[2] != b[2]:
        return False
    allowed = max(a[1], 5e-4 * abs(b[0]))
    if b[0] != 0 and a[0] != 0 and abs(math.log10(abs(b[0]))) > 250:  # near float limits
        allowed = max(allowed, 5e-3 * abs(b[0]))
    return abs(a[0] - b[0]) <= allowed * (1 + 1e-9)


def lines_match(shown: str, real: str) -> bool:
    a, b = shown.split(), real.split()
    return len(a) == len(b) and all(tokens_match(x, y) for x, y in zip(a, b))


def mismatch(shown: str, real: str) -> str | None:
    """None when every line the page shows occurs in the real output, in order, up to
    the precision shown; else a description of the first line that does not.
    A line ``...`` in the page stands for any lines."""
    real_lines = [line for line in real.splitlines() if line.strip()]
    position = 0
    for line in shown.splitlines():
        if not line.strip() or line.strip() in ("...", "…"):
            continue
        for j in range(position, len(real_lines)):
            if lines_match(line, real_lines[j]):
                position = j + 1
                break
        else:
            near = max(real_lines, default="", key=lambda r: _overlap(line, r))
            return (f"the page shows\n    {line}\nbut the run printed no such line "
                    f"(after line {position}); closest:\n    {near}\n"
                    f"--- real output ---\n{real}")
    return None


def _overlap(a: str, b: str) -> int:
    return len(set(a.split()) & set(b.split()))


# -- the example project behind the pages' messages -------------------------------------
def prepare_examples(dest: Path) -> Path:
    """A copy of docs/examples in ``dest``, with the model folders its claim files name
    that are built rather than stored: the tiny random GPT-2 of mechcheck's tests, a
    tiny OPT model (an architecture mechcheck has no map for) and a pickle-only folder."""
    from mechcheck.testing.models import save_tiny

    shutil.copytree(EXAMPLES, dest, dirs_exist_ok=True)
    save_tiny("gpt2", dest / "claims" / "tasks" / "tiny-gpt2", seed=3)
    _save_tiny_opt(dest / "claims" / "ioi" / "tiny-opt")
    pickled = dest / "claims" / "ioi" / "tiny-pickled"
    pickled.mkdir(parents=True, exist_ok=True)
    (pickled / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    (pickled / "pytorch_model.bin").write_bytes(b"")  # refused before it is read
    return dest


def _save_tiny_opt(folder: Path) -> None:
    import torch
    from transformers import OPTConfig, OPTForCausalLM

    from mechcheck.models.tiny import word_tokenizer
    from mechcheck.testing.models import BOS_TOKEN, DEFAULT_WORDS

    tokenizer = word_tokenizer(DEFAULT_WORDS, bos_token=BOS_TOKEN)
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1,
                       ffn_dim=32, num_attention_heads=2, max_position_embeddings=32,
                       word_embed_proj_dim=16, pad_token_id=0, bos_token_id=1,
                       eos_token_id=1)
    OPTForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


_LOCATION = re.compile(r"^(?P<path>[\w./-]+\.ya?ml):(?P<line>\d+)(?P<rest>[: ].*)$")


def message_location(block: Block) -> tuple[str, int, str | None] | None:
    """``(file, line, claim id or None)`` of a block that shows a located message (an
    error or a failure, without a command prompt), else None."""
    if block.lang not in ("text", "") or commands(block) or "$ " in block.text[:2]:
        return None
    match = _LOCATION.match(block.text.splitlines()[0]) if block.text.strip() else None
    if match is None:
        return None
    claim = re.match(r"^:? ?claim '([^']+)'", match["rest"])
    return match["path"], int(match["line"]), claim[1] if claim else None


def example_roots() -> list[Path]:
    """The example projects: docs/examples itself (its claims/ folder) and each other
    folder in it (such as plugins/, whose *.py files are the plugins its claims use)."""
    return [EXAMPLES, *sorted(d for d in EXAMPLES.iterdir() if d.is_dir() and d.name != "claims")]


def example_root(file: Path) -> Path:
    """The example project that holds ``file``."""
    return next(r for r in reversed(example_roots()) if r in file.parents)


def example_file(shown_path: str) -> tuple[Path, str] | None:
    """``(project, path relative to it)`` of the example claim file that a message
    names, or None if there is none."""
    found = [root for root in example_roots() if (root / shown_path).is_file()]
    return (found[0], shown_path) if len(found) == 1 else None


# -- running the examples -------------------------------------------------------------
EXAMPLE_FILES = sorted(EXAMPLES.rglob("test_*.yaml"))


def copy_claims(folder: Path) -> Path:
    """The repository's claims/ in ``folder``: copies of the claim files (an example may
    edit them) and links to the data files, so that every example's runs of the same
    data share one clean and corrupt run in a session."""
    for source in (ROOT / "claims").rglob("*"):
        target = folder / source.relative_to(ROOT)
        if source.name == "conftest.py" or "__pycache__" in source.parts:
            continue  # the suite's xdist default: the examples run in this process
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif source.suffix in (".jsonl", ".csv"):
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return folder


@contextlib.contextmanager
def cwd(folder: Path) -> Iterator[None]:
    old = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


class ExampleRuns:
    """The claim files of docs/examples, copied and evaluated once each, with the
    plugins of their folder (its *.py files); messages show the root as the pages do."""

    def __init__(self, dest: Path, session: Any) -> None:
        self.dest = dest
        self.sessions: dict[Path, Any] = {dest: session}
        self.done: dict[tuple[Path, str], list[Any]] = {}

    def results(self, root: Path, path: str) -> list[Any]:
        if not self.done:  # all at once, grouped by model: the session keeps one model
            for file in sorted(EXAMPLE_FILES, key=model_of):
                project = example_root(file)
                self._evaluate(project, file.relative_to(project).as_posix())
        return self._evaluate(root, path)

    def _evaluate(self, root: Path, path: str) -> list[Any]:
        import mechcheck

        here = self.dest / root.relative_to(EXAMPLES)
        if (here, path) not in self.done:
            if here not in self.sessions:
                self.sessions[here] = mechcheck.Session(device="cpu", plugins=plugins_in(here))
            with cwd(here):
                found = mechcheck.evaluate_path(path, self.sessions[here])
            shown = str(here).rstrip("/")
            self.done[(here, path)] = [
                dataclasses.replace(r, message=r.message.replace(shown, SHOWN_ROOT))
                for r in found]
        return self.done[(here, path)]


def model_of(file: Path) -> tuple[str, str]:
    try:
        top = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        top = None
    model = top.get("model") if isinstance(top, dict) else None
    return (str(model or ""), str(file))


def plugins_in(folder: Path) -> list[Any]:
    modules = []
    for file in sorted(folder.glob("*.py")):
        spec = importlib.util.spec_from_file_location(f"docs_example_{file.stem}", file)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        modules.append(module)
    return modules


def matching_result(results: list[Any], path: str, line: int, claim: str | None) -> Any:
    """The result whose message starts at ``path:line`` (for ``claim``), or None."""
    for r in results:
        first = r.message.splitlines()[0] if r.message else ""
        located = first.startswith((f"{path}:{line}:", f"{path}:{line} "))
        if located and (claim is None or f"claim '{claim}'" in first):
            return r
    return None
