"""bpf/README.md and the kernel tables of docs/kernels.md (and README.md's glance at them) name the
objects the catalogue has, as it has them."""

import os
import re

import pytest
from packaging.version import Version

from ceemsnet.planning.catalogue import CATALOGUE

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNELS_DOC = os.path.join(ROOT, "docs", "kernels.md")
BY_NAME = {o.file[:-len(".bpf.o")]: o for o in CATALOGUE}
# an object name in backticks, with brace alternatives: `net-kretprobe-4.18-{x86,arm64}`
NAME = re.compile(r"`((?:net|vfs|skb|rdma)-[a-z_]+(?:-[0-9.]+)?(?:-[a-z0-9{},]+)*)`")


def tables(path):
    """Every markdown table in the file: (header cells, [row cells...])."""
    out, cur = [], None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("|"):
                cur = None
                continue
            cells = [c.strip() for c in line.strip("|").split("|")]
            if cur is None:
                cur = (cells, [])
                out.append(cur)
            elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur[1].append(cells)
    return out


def names_in(cell):
    found = []
    for m in NAME.finditer(cell):
        stem, brace, alts = re.match(r"([^{]*)(\{([^}]*)\})?", m.group(1)).groups()
        found += [stem + a for a in alts.split(",")] if brace else [stem]
    return found


def test_parsers_see_names():
    # the test would pass vacuously if the parsing saw nothing
    assert names_in("`net-kretprobe-4.18-{x86,arm64}`, `skb-root`") == \
        ["net-kretprobe-4.18-x86", "net-kretprobe-4.18-arm64", "skb-root"]
    assert len(tables(os.path.join(ROOT, "bpf", "README.md"))) >= 5


def test_every_object_named_in_bpf_readme_is_catalogued():
    named = [n for _, rows in tables(os.path.join(ROOT, "bpf", "README.md")) for r in rows for c in r
             for n in names_in(c)]
    assert named
    unknown = sorted(set(named) - set(BY_NAME))
    assert not unknown, f"bpf/README.md names objects the catalogue lacks: {unknown}"


def objects_table():
    for header, rows in tables(os.path.join(ROOT, "bpf", "README.md")):
        if header[:2] == ["object", "family"]:
            return header, rows
    pytest.fail("bpf/README.md has no objects table (| object | family | ... |)")


def era(o):
    """An object's kernels as bpf/README.md's objects table writes them: `>= 5.19, < 7.1`."""
    return f">= {o.since}" + (f", < {o.until}" if o.until else "")


def test_objects_table_matches_catalogue():
    header, rows = objects_table()
    col = {h: i for i, h in enumerate(header)}
    seen = {}
    for r in rows:
        (name,) = names_in(r[col["object"]])
        seen[name] = r
        o = BY_NAME.get(name)
        assert o, f"bpf/README.md lists {name}, which is not in the catalogue"
        assert r[col["family"]] == o.family, name
        assert r[col["kernels"]] == era(o), name
        assert tuple(a.strip() for a in r[col["arch"]].split(",")) == o.arches, name
        assert r[col["defines"]].replace("`", "").split() == list(o.defines), name
    missing = sorted(set(BY_NAME) - set(seen))
    assert not missing, f"catalogued objects missing from bpf/README.md's objects table: {missing}"


def row_range(first_cell):
    """Kernel range of a kernel table's row: (low, high) with high None for open."""
    m = re.match(r"([0-9.]+)\s*-\s*([0-9.]+)", first_cell)
    if m:
        return Version(m.group(1)), Version(m.group(2))
    m = re.match(r"([0-9.]+)(\+| and later)", first_cell)
    if m:
        return Version(m.group(1)), None
    return None


def kernel_tables(path):
    """The tables of a file whose rows are kernels and whose columns include x86_64."""
    return [(h, rows) for h, rows in tables(path) if h[0] == "kernel" and "x86_64" in h]


def check_kernel_tables(path):
    """Every `family `object`` a kernel table names is a catalogue object of that family, for
    that column's arch and that row's kernels; the number of names checked."""
    checked = 0
    doc = os.path.relpath(path, ROOT)
    for header, rows in kernel_tables(path):
        for r in rows:
            rng = row_range(r[0])
            for i, cell in enumerate(r[1:], start=1):
                for m in re.finditer(r"(\w+) `([^`]+)`", cell):
                    word, name = m.groups()
                    o = BY_NAME.get(name)
                    assert o, f"{doc} names {name}, which is not in the catalogue"
                    assert word == o.family, (name, word)
                    assert header[i] in o.arches, (name, header[i])
                    if rng:
                        low, high = rng
                        assert o.until is None or o.until > low, (r[0], name)
                        assert high is None or o.since <= high, (r[0], name)
                    checked += 1
    return checked


def test_kernel_tables_agree():
    assert check_kernel_tables(KERNELS_DOC) >= 10, "docs/kernels.md's kernel tables were not found"


def test_readme_kernel_glance_agrees():
    # the README's table at a glance names families; an object it names is checked the same way
    assert kernel_tables(os.path.join(ROOT, "README.md")), "README.md has no kernels table at a glance"
    check_kernel_tables(os.path.join(ROOT, "README.md"))
