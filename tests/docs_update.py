"""Rewrite the output blocks of the docs from real runs, after a change of behaviour:

    python -m tests.docs_update            # rewrite in place, print what changed
    python -m tests.docs_update --check    # only list the blocks that differ

It rewrites the located messages (the output of the claim files under docs/examples),
and what the pages' Python scripts and fixture tests print. Command examples
(``$ pytest ...``) show excerpts; tests/test_docs.py checks them, and they are edited by
hand. Read the diff before you commit it: a changed message may need changed prose.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys

os.environ.setdefault("MECHCHECK_DISABLE_PLUGIN_AUTOLOAD", "1")  # as tests/conftest.py
import tempfile
from pathlib import Path

from tests.docs_blocks import (
    ROOT,
    Block,
    ExampleRuns,
    all_blocks,
    blocks,
    copy_claims,
    cwd,
    example_file,
    is_fixture_example,
    is_python_example,
    matching_result,
    message_location,
    output_of,
    prepare_examples,
)


def _message_updates(work: Path) -> dict[Block, str]:
    import mechcheck

    runs = ExampleRuns(prepare_examples(work / "examples"), mechcheck.Session(device="cpu"))
    found = {}
    for block in all_blocks():
        location = message_location(block)
        if location is None or block.marker is not None or block.doc.name == "README.md":
            continue
        path, line, claim = location
        source = example_file(path)
        result = None if source is None else matching_result(
            runs.results(*source), path, line, claim)
        if result is None:
            print(f"{block.name}: no example gives this message; edit it by hand")
            continue
        found[block] = result.message + "\n"
    return found


def _script_updates(work: Path) -> dict[Block, str]:
    found = {}
    for page in sorted({b.doc for b in all_blocks() if is_python_example(b)}):
        folder = copy_claims(Path(tempfile.mkdtemp(dir=work)))
        namespace: dict[str, object] = {"__name__": "__docs__"}
        page_blocks = blocks(page)
        with cwd(folder):
            for block in page_blocks:
                if block.marker is not None or not is_python_example(block):
                    continue
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(compile(block.text, block.name, "exec"), namespace)
                shown = output_of(block, page_blocks)
                if shown is not None:
                    found[shown] = printed.getvalue()
    return found


def _fixture_updates(work: Path) -> dict[Block, str]:
    """Failure output of fixture examples: the message of the test that fails."""
    found = {}
    for block in all_blocks():
        shown = output_of(block, blocks(block.doc)) if is_fixture_example(block) else None
        first = block.text.splitlines()[0]
        if shown is None or block.marker is not None or not first.startswith("# "):
            continue
        folder = copy_claims(Path(tempfile.mkdtemp(dir=work)))
        name = first[2:].split()[0]
        (folder / name).write_text(block.text, encoding="utf-8")
        done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", name],
                              cwd=folder, capture_output=True, text=True, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        lines = done.stdout.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith(f"{name}:")), None)
        if start is None:
            print(f"{block.name}: the test printed no message; edit its output by hand")
            continue
        end = next((i for i in range(start, len(lines))
                    if lines[i].startswith(("===", "___"))), len(lines))
        found[shown] = "\n".join(lines[start:end]).rstrip() + "\n"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only list what differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        updates = {**_message_updates(work), **_script_updates(work), **_fixture_updates(work)}
    changed = {b: new for b, new in updates.items() if new != b.text}
    for doc in sorted({b.doc for b in changed}):
        text = doc.read_text(encoding="utf-8")
        for block, new in changed.items():
            if block.doc == doc:
                print(f"{block.name}: differs")
                text = text.replace("```text\n" + block.text, "```text\n" + new, 1)
        if not args.check:
            doc.write_text(text, encoding="utf-8")
    return 1 if changed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
