"""mechcheck's module import graph: no cycles.

The graph is read from the source with :mod:`ast` (nothing is imported).  At module
level (the imports that run when a module is imported: not those inside functions or
under ``if TYPE_CHECKING:``) it must have no cycle at all.  With the deferred imports
too, the metrics and the tasks must be in no cycle: a task brings its own metric
through the ``mechcheck_metrics`` hook, and ``metrics`` knows no task.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import mechcheck
from mechcheck.metrics import BUILTIN_METRICS
from mechcheck.plugins import Registry
from mechcheck.tasks.greater_than import GREATER_THAN_PD

PACKAGE = Path(mechcheck.__file__).parent
Graph = dict[str, dict[str, int]]  # module -> {imported module: line}


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module, deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements of a module; without ``deferred``, only those that run when
    it is imported (not in a function, not under ``if TYPE_CHECKING:``)."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif not deferred and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                ast.Lambda)):
            continue
        elif not deferred and isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
        else:
            todo.extend(ast.iter_child_nodes(node))


def import_graph(root: Path = PACKAGE, *, deferred: bool) -> Graph:
    """Which of the package's modules each one imports.

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``;
    imports of the top package itself (``from mechcheck import __version__``) are left
    out, since its ``__init__`` imports lazily.
    """
    modules = _modules(root)

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: Graph = {name: {} for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8")), deferred):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules
                           else base for alias in node.names]
            for target in targets:
                found = resolve(target)
                if found is not None and found not in (name, root.name):
                    graph[name].setdefault(found, node.lineno)
    return graph


def cycles(graph: Graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def _shown(graph: Graph, component: list[str]) -> str:
    return "; ".join(f"{a} -> {b} (line {line})" for a in component
                     for b, line in graph[a].items() if b in component)


def test_no_import_cycle_at_module_level() -> None:
    graph = import_graph(deferred=False)
    assert len(graph) > 40 and "mechcheck.metrics" in graph["mechcheck.tasks.greater_than"]
    found = cycles(graph)
    assert not found, "import cycles: " + " | ".join(_shown(graph, c) for c in found)


def test_metrics_and_tasks_are_in_no_cycle_even_with_deferred_imports() -> None:
    graph = import_graph(deferred=True)
    bad = [c for c in cycles(graph)
           if any(m == "mechcheck.metrics" or m.startswith("mechcheck.tasks") for m in c)]
    assert not bad, "import cycles: " + " | ".join(_shown(graph, c) for c in bad)


def test_the_cycle_finder_finds_a_cycle(tmp_path: Path) -> None:
    """The checks above can fail: a function-level import back is found as a cycle with
    deferred imports, and a module-level one at module level."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.sub import b\n")
    (pkg / "sub" / "b.py").write_text("from typing import TYPE_CHECKING\n"
                                      "if TYPE_CHECKING:\n    from pkg import a\n"
                                      "def f():\n    from .. import a\n")
    (pkg / "c.py").write_text("import pkg.d\n")
    (pkg / "d.py").write_text("from . import c\n")
    assert cycles(import_graph(pkg, deferred=False)) == [["pkg.c", "pkg.d"]]
    assert sorted(cycles(import_graph(pkg, deferred=True))) == [
        ["pkg.a", "pkg.sub.b"], ["pkg.c", "pkg.d"]]


@pytest.mark.parametrize("name", ["greater_than_pd", "logit_diff", "kl"])
def test_every_metric_is_still_registered_by_name(name: str) -> None:
    metrics = Registry.from_plugins().metrics
    assert name in metrics
    assert list(metrics)[: len(BUILTIN_METRICS) + 1] == [
        *(m.name for m in BUILTIN_METRICS), "greater_than_pd"]
    if name == "greater_than_pd":
        assert metrics[name] is GREATER_THAN_PD and metrics[name].higher_is_better
