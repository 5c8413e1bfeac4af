"""The oldest Python ceemsnet runs on, checked rather than hoped: RHEL 9's python3 is 3.9.

pyproject.toml's `requires-python` names the minimum; the RPM's `Requires: python3 >= ...`
says the same. vermin (pyproject's test extra) reads every module of ceemsnet/ and must
find nothing newer: with --eval-annotations, so that even annotations would be valid where
evaluated. vermin cannot see everything, and these tests show where: a method whose
receiver it cannot type (`s.removeprefix`, 3.9), and PEP 604 unions (`int | None`, 3.10),
which it either misses or, with its union-types heuristic, reports in annotations that
`from __future__ import annotations` leaves unevaluated. A syntax-tree check of our own
covers those: a union where Python evaluates it, and the methods of METHODS.
"""

import ast
import glob
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from ..programs import ROOT

# methods vermin does not see on a receiver it cannot type, and the Python that added them
METHODS = {"removeprefix": (3, 9), "removesuffix": (3, 9), "is_relative_to": (3, 9), "with_stem": (3, 9),
           "bit_count": (3, 10)}
needs_vermin = pytest.mark.skipif(importlib.util.find_spec("vermin") is None,
                                  reason="vermin is not installed (make setup installs it: pyproject.toml's "
                                         "test extra)")


def minimum() -> tuple[int, int]:
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        m = re.search(r'^requires-python = ">=(\d+)\.(\d+)"$', f.read(), re.M)
    assert m, "pyproject.toml: requires-python = \">=3.N\""
    return int(m.group(1)), int(m.group(2))


def vermin(*paths, target=None, extra=()):
    """(exit status, output) of vermin --violations against `target` (default: the minimum)."""
    major, minor = target or minimum()
    p = subprocess.run([sys.executable, "-c", "import sys; from vermin import main; sys.exit(main())",
                        f"--target={major}.{minor}-", "--violations", "--no-tips", "--eval-annotations",
                        "--no-parse-comments", *extra, *paths], capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def newer_than(tree: ast.AST, target: tuple[int, int]) -> list[str]:
    """What vermin misses and would fail on `target`: a PEP 604 union Python evaluates (in a module
    without `from __future__ import annotations`, an annotation; anywhere, isinstance's or
    issubclass's second argument), and the methods of METHODS newer than `target`."""
    out = []
    lazy = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and any(a.name == "annotations" for a in n.names)
               for n in ast.walk(tree))
    union = target < (3, 10)

    def has_union(node):
        return node is not None and any(isinstance(x, ast.BinOp) and isinstance(x.op, ast.BitOr) for x in ast.walk(node))

    for n in ast.walk(tree):
        if union and not lazy:
            notes = []
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = n.args
                notes = [x.annotation for x in a.posonlyargs + a.args + a.kwonlyargs + [a.vararg, a.kwarg] if x]
                notes.append(n.returns)
            elif isinstance(n, ast.AnnAssign):
                notes = [n.annotation]
            if any(has_union(x) for x in notes):
                out.append(f"line {n.lineno}: union type `X | Y` in an annotation, evaluated without "
                           "`from __future__ import annotations` (3.10)")
        if (union and isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("isinstance", "issubclass")
                and len(n.args) == 2 and has_union(n.args[1])):
            out.append(f"line {n.lineno}: {n.func.id}() of a union type `X | Y` (3.10)")
        if isinstance(n, ast.Attribute) and n.attr in METHODS and METHODS[n.attr] > target:
            out.append(f"line {n.lineno}: .{n.attr} ({'.'.join(map(str, METHODS[n.attr]))})")
    return out


def test_the_rpm_asks_for_the_same_python():
    major, minor = minimum()
    with open(os.path.join(ROOT, "packaging", "rpm", "ceemsnet.spec.in")) as f:
        spec = f.read()
    assert re.findall(r"^Requires:\s+python3 >= (\S+)$", spec, re.M) == [f"{major}.{minor}"]


@needs_vermin
def test_vermin_finds_nothing_newer_than_the_minimum():
    rc, out = vermin(os.path.join(ROOT, "ceemsnet"))
    assert rc == 0 and "Target versions not met" not in out, out
    found = re.search(r"^Minimum required versions: (.*)$", out, re.M)
    assert found, out
    got = max(tuple(int(x) for x in v.split(".")) for v in found.group(1).replace("~", "").split(", ")
              if v[0].isdigit())
    assert got <= minimum(), out


def test_the_syntax_tree_check_finds_nothing_newer_than_the_minimum():
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "ceemsnet", "**", "*.py"), recursive=True)):
        with open(path) as f:
            bad = newer_than(ast.parse(f.read(), path), minimum())
        if bad:
            found[os.path.relpath(path, ROOT)] = bad
    assert not found, found


# the checks can fail: what each must catch, and what vermin alone misses
SNIPPETS = {
    "match": ("def f(x):\n    match x:\n        case 1:\n            return 2\n", "pattern matching"),
    "tomllib": ("import tomllib\n", "'tomllib' module"),
    "typing": ("from __future__ import annotations\nfrom typing import Self, TypeAlias\n", "'typing.Self'"),
    "zip": ("def f(a, b):\n    return zip(a, b, strict=True)\n", "zip(strict)"),
    "dataclass": ("import dataclasses\n@dataclasses.dataclass(slots=True)\nclass A:\n    x: int\n",
                  "dataclass(slots)"),
    "except_star": ("try:\n    pass\nexcept* ValueError:\n    pass\n", "except*"),
}


@needs_vermin
@pytest.mark.parametrize("name", sorted(SNIPPETS))
def test_vermin_catches_what_39_lacks(tmp_path, name):
    text, needle = SNIPPETS[name]
    (tmp_path / f"{name}.py").write_text(text)
    rc, out = vermin(str(tmp_path / f"{name}.py"), target=(3, 9))
    assert rc != 0 and needle in out and "Target versions not met" in out, out


@needs_vermin
def test_vermin_evaluates_annotations_but_misses_what_the_tree_check_catches(tmp_path):
    # builtin generics in annotations: found with --eval-annotations, against 3.8
    (tmp_path / "generics.py").write_text("def f(x: dict[str, int]) -> list[int]:\n    return []\n")
    rc, out = vermin(str(tmp_path / "generics.py"), target=(3, 8))
    assert rc != 0 and "builtin generic type annotation" in out, out
    # an evaluated union and a method on an untyped receiver: vermin sees neither against 3.8 ...
    text = ("def f(x: int | None, s) -> str:\n    if isinstance(x, int | str):\n        pass\n"
            "    return s.removeprefix('a')\n")
    (tmp_path / "missed.py").write_text(text)
    rc, out = vermin(str(tmp_path / "missed.py"), target=(3, 8))
    assert rc == 0 and "Target versions not met" not in out, out
    # ... the syntax-tree check sees all three
    bad = newer_than(ast.parse(text), (3, 8))
    assert len(bad) == 3 and "annotation" in bad[0] and "isinstance" in bad[1] and ".removeprefix (3.9)" in bad[2], bad
    # and leaves alone unions that `from __future__ import annotations` keeps unevaluated
    assert newer_than(ast.parse("from __future__ import annotations\ndef f(x: int | None) -> str | None:\n"
                                "    return None\n"), (3, 9)) == []
