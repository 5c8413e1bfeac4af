"""The import graph of the ceemsnet package flows one way: no cycles.

The graph is read from the source with `ast`, not by importing, so a cycle
that happens to work today (because a name is looked up late) still fails.
Two graphs are checked:

- import time: imports at module level (including class bodies and
  if/try blocks, which run on import);
- every import, also those inside functions. A deferred import cannot
  crash at import time, but a cycle through one is still a tangle: two
  modules that each need the other are one module in two files.

A submodule is not given an edge to its parent package: Python loads the
parent first, but the submodule depends only on what it imports by name
(`from . import X` where X is defined in the parent's __init__ is such an
edge, and counted).
"""

from __future__ import annotations

import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "ceemsnet")


def _modules() -> dict[str, str]:
    """{dotted module name: file path} for every .py under ceemsnet/."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(PKG):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        rel = os.path.relpath(dirpath, os.path.dirname(PKG)).split(os.sep)
        for f in filenames:
            if f.endswith(".py"):
                parts = rel if f == "__init__.py" else rel + [f[:-3]]
                out[".".join(parts)] = os.path.join(dirpath, f)
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, deferred: bool = False):
    """(import node, inside a function?) for every import, skipping `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, deferred
        elif isinstance(node, ast.If) and _is_type_checking(node):
            yield from (x for n in node.orelse for x in _imports(ast.Module(body=[n], type_ignores=[]), deferred))
        else:
            inner = deferred or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _imports(node, inner)


def _targets(node, module: str, is_pkg: bool, known) -> set[str]:
    """The ceemsnet modules one import statement in `module` depends on."""
    def nearest(name):  # the module itself, else the package that defines the name
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    if isinstance(node, ast.Import):
        found = {nearest(a.name) for a in node.names}
    else:
        if node.level:
            base = module.split(".") if is_pkg else module.split(".")[:-1]
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module
        found = {nearest(f"{target}.{a.name}") if f"{target}.{a.name}" in known else nearest(target)
                 for a in node.names}
    return {m for m in found if m and m != module}


def import_graph(include_deferred: bool) -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for name, path in mods.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        edges = set()
        for node, deferred in _imports(tree):
            if deferred and not include_deferred:
                continue
            edges |= _targets(node, name, path.endswith("__init__.py"), mods)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None (iterative DFS, three colours)."""
    state = {}  # absent: unvisited, 1: on the stack, 2: done
    for root in sorted(graph):
        if root in state:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        state[root] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
    return None


def test_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a2"}, "a2": set(), "x": {"y"}, "y": {"x"}}) == ["x", "y", "x"]


def test_graph_resolves_relative_and_package_imports():
    g = import_graph(include_deferred=True)
    assert "ceemsnet.store" in g["ceemsnet.report.local"]          # from ..store import ...
    assert "ceemsnet.report.rows" in g["ceemsnet.report.local"]    # from .rows import ...
    assert "ceemsnet.report.local" in g["ceemsnet.report"]         # from . import local (a submodule)
    assert "ceemsnet" in g["ceemsnet.timeparse"]                   # from . import CeemsnetError (a name)
    assert "ceemsnet.report.prometheus" not in import_graph(include_deferred=False)["ceemsnet.report"]


@pytest.mark.parametrize("include_deferred", [False, True], ids=["import-time", "all-imports"])
def test_no_import_cycle(include_deferred):
    cycle = find_cycle(import_graph(include_deferred))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _reaches(graph, start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for m in graph.get(todo.pop(), ()):
            if m not in seen:
                seen.add(m)
                todo.append(m)
    return seen


def test_report_flows_one_way():
    """cli -> report package -> (store, units, timeparse); never back."""
    g = import_graph(include_deferred=True)
    for name in [m for m in g if m == "ceemsnet.report" or m.startswith("ceemsnet.report.")]:
        assert "ceemsnet.cli" not in _reaches(g, name), name
    for low in ("ceemsnet.store", "ceemsnet.units", "ceemsnet.timeparse"):
        assert not {m for m in _reaches(g, low) if m.startswith(("ceemsnet.report", "ceemsnet.cli"))}, low
    # the sources share rows.py; neither needs the other
    assert "ceemsnet.report.prometheus" not in _reaches(g, "ceemsnet.report.local")
    assert "ceemsnet.report.local" not in _reaches(g, "ceemsnet.report.prometheus")
