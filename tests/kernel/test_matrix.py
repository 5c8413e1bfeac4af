"""The VM matrix (tests/vm/matrix.py) says which objects each run loads:
check it against what really runs on this kernel, so the object-coverage
list cannot drift: `ceemsnet probe` chooses the listed family and eras,
BTF-verified, and a running exporter attaches exactly the listed objects."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from .helpers import HOOK, NET_SLOTS, ROOT, VM, Exporter

_spec = importlib.util.spec_from_file_location("vm_matrix", os.path.join(ROOT, "tests", "vm", "matrix.py"))
matrix = sys.modules["vm_matrix"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)


def probe(hook: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "probe", "--json", f"--hook={hook}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


@pytest.fixture(scope="module")
def run():
    # the run (7-voluntary boots the 7 kernel with preempt=voluntary): CEEMSNET_VM_RUN
    name = os.environ.get("CEEMSNET_VM_RUN") or VM or "host"
    run = matrix.BY_KERNEL.get(name)
    assert run is not None, f"CEEMSNET_VM_RUN={name} is not a run of tests/vm/matrix.py"
    if run.kernel == "host" and not os.uname().release.startswith(matrix.HOST_SERIES + "."):
        pytest.skip(f"the matrix records this machine's {matrix.HOST_SERIES} kernel; this is {os.uname().release}")
    return run


PASS = os.environ.get("CEEMSNET_TEST_PASS")  # set by tests/vm/matrix.py and the Makefile's host passes
VFS_ONLY = (PASS or "").endswith(":vfs")


def expected(run, family: str) -> tuple[str, ...]:
    key = PASS or matrix.pass_key(family, hash_layout=NET_SLOTS == "0")
    assert key in run.objects, f"{run.kernel}: this pass ({key}) is not in the matrix, which lists {list(run.objects)}"
    return run.objects[key]


def test_probe_chooses_the_listed_family_and_eras_btf_verified(run):
    if VFS_ONLY:
        pytest.skip(f"probe --hook={HOOK} refuses the whole command where net cannot use {HOOK}; "
                    "the exporter check below covers this pass (vfs only, planned against BTF)")
    report = probe(HOOK)
    assert report["btf_checked"] is True
    subs = ("vfs",) if VFS_ONLY else ("net", "vfs")
    family = report["subsystems"][subs[0]]["family"]
    want = expected(run, family)
    by_sub = {s: report["subsystems"][s]["object"] for s in ("net", "vfs")}
    if VFS_ONLY:
        assert not by_sub["net"], f"{run.kernel}: {family} serves net here; the matrix says it does not"
    else:
        # the era's object; which layout (-slots twin or not) the exporter loads is checked below
        assert matrix.hash_twin(by_sub["net"]) == matrix.hash_twin(want[0]), (run.kernel, family, by_sub)
    assert matrix.hash_twin(by_sub["vfs"]) == matrix.hash_twin(want[1]), (run.kernel, family, by_sub)
    # nothing of the chosen objects is skipped for a signature mismatch (a wrong era), only
    # functions this kernel does not have
    for sub in subs:
        hooks = [h for h in report["hooks"] if h["subsystem"] == sub]
        assert any(h["status"] == "ok" for h in hooks), sub
        for h in hooks:
            assert h["status"] == "ok" or "not in this kernel's BTF" in h["reason"], h


def test_serve_attaches_exactly_the_listed_objects(run):
    subs = ("vfs",) if VFS_ONLY else ("net", "vfs")
    e = Exporter(collectors=",".join(subs))
    try:
        samples = e.samples()
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    info = [dict(k[1]) for k in samples if k[0] == "ceemsnet_hook_info"]
    family = {i["hook"] for i in info if i["subsystem"] == subs[0]}
    assert len(family) == 1, family
    want = dict(zip(("net", "vfs"), expected(run, family.pop())))
    got = {s: sorted({i["object"] for i in info if i["subsystem"] == s}) for s in subs}
    assert got == {s: [want[s]] for s in subs}, (run.kernel, got)
