"""The import graph of the ceemsnet package flows one way: down the layers, no cycles.

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
    assert "ceemsnet.serving.store" in g["ceemsnet.report.local"]   # from ceemsnet.serving.store import ...
    assert "ceemsnet.report.rows" in g["ceemsnet.report.local"]     # from ceemsnet.report.rows import ...
    assert "ceemsnet.report.local" in g["ceemsnet.report"]          # from ceemsnet.report import local (a submodule)
    assert "ceemsnet" in g["ceemsnet.common.timeparse"]             # from ceemsnet import CeemsnetError (a name)
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


# The layers, top first. A module may import its own layer's package and any
# lower layer, never a higher one; layers on one floor (pinned state and
# attribution) do not import each other. DESIGN.md "Architecture" and
# docs/architecture.md describe each.
LAYERS = (
    ("ceemsnet.cli",),
    ("ceemsnet.commands",),
    ("ceemsnet.report",),
    ("ceemsnet.serving",),
    ("ceemsnet.collectors",),
    ("ceemsnet.pinned", "ceemsnet.attribution"),
    ("ceemsnet.planning",),
    ("ceemsnet.runtime",),
    ("ceemsnet.common",),
    ("ceemsnet",),
)


def layer_of(module: str) -> tuple[int, str]:
    """(floor, layer) of a module: floor 0 is the top."""
    best = None
    for floor, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (floor, name)
    assert best is not None, module
    return best


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for mod, targets in sorted(graph.items()):
        floor, layer = layer_of(mod)
        for t in sorted(targets):
            tfloor, tlayer = layer_of(t)
            if tfloor < floor or (tfloor == floor and tlayer != layer):
                out.append(f"{mod} ({layer}) imports {t} ({tlayer})")
    return out


def test_every_module_has_a_layer():
    """A new subpackage must be placed in LAYERS before it can hold code; the root
    package holds only the error type and the version."""
    for mod in import_graph(include_deferred=True):
        floor, layer = layer_of(mod)
        if layer == "ceemsnet":
            assert mod == "ceemsnet", f"{mod} sits in no layer: put it in a subpackage named in LAYERS"


def test_layer_check_finds_an_arrow_back_up():
    assert layer_violations({"ceemsnet.runtime.maps": {"ceemsnet.planning.catalogue"}}) == [
        "ceemsnet.runtime.maps (ceemsnet.runtime) imports ceemsnet.planning.catalogue (ceemsnet.planning)"]
    assert layer_violations({"ceemsnet.pinned.ledger": {"ceemsnet.attribution.cgroups"}})  # same floor, other layer
    assert not layer_violations({"ceemsnet.collectors.net": {"ceemsnet.collectors.base", "ceemsnet.runtime.libbpf"}})


@pytest.mark.parametrize("include_deferred", [False, True], ids=["import-time", "all-imports"])
def test_imports_go_down_the_layers(include_deferred):
    bad = layer_violations(import_graph(include_deferred))
    assert not bad, "imports against the layer order:\n  " + "\n  ".join(bad)


def test_report_flows_one_way():
    """report's sources share rows.py; neither needs the other."""
    g = import_graph(include_deferred=True)
    assert "ceemsnet.report.prometheus" not in _reaches(g, "ceemsnet.report.local")
    assert "ceemsnet.report.local" not in _reaches(g, "ceemsnet.report.prometheus")


def deferred_imports_without_reason() -> list[str]:
    """Imports inside functions whose line, or the line above, carries no comment saying why."""
    out = []
    for name, path in sorted(_modules().items()):
        with open(path) as f:
            lines = f.read().splitlines()
        for node, deferred in _imports(ast.parse("\n".join(lines), path)):
            if not deferred:
                continue
            here, above = lines[node.lineno - 1], lines[node.lineno - 2] if node.lineno > 1 else ""
            if "#" not in here and not above.strip().startswith("#"):
                out.append(f"{os.path.relpath(path, os.path.dirname(PKG))}:{node.lineno}: {here.strip()}")
    return out


def test_imports_sit_at_the_top_unless_a_comment_says_why():
    """A module's first lines say what it depends on; an import inside a function
    (start-up cost, an optional dependency) carries a one-line reason."""
    bad = deferred_imports_without_reason()
    assert not bad, "imports inside functions with no comment saying why:\n  " + "\n  ".join(bad)
