"""The VM matrix (tests/vm/matrix.py) says which objects each run loads:
check it against what `ceemsnet probe` really chooses on the running kernel,
so the object-coverage list cannot drift from what runs."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from .helpers import HOOK, ROOT, VM

_spec = importlib.util.spec_from_file_location("vm_matrix", os.path.join(ROOT, "tests", "vm", "matrix.py"))
matrix = sys.modules["vm_matrix"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)


def probe(hook: str) -> dict:
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "probe", "--json", f"--hook={hook}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_probe_chooses_the_objects_the_matrix_lists():
    run = matrix.BY_KERNEL.get(VM or "host")
    assert run is not None, f"CEEMSNET_VM={VM} is not a run of tests/vm/matrix.py"
    if run.kernel == "host" and not os.uname().release.startswith(matrix.HOST_SERIES + "."):
        pytest.skip(f"the matrix records this machine's {matrix.HOST_SERIES} kernel; this is {os.uname().release}")
    report = probe(HOOK)
    assert report["btf_checked"] is True
    family = report["subsystems"]["net"]["family"]
    assert family in run.objects, f"{run.kernel}: probe chose {family}, the matrix lists {list(run.objects)}"
    chosen = tuple(report["subsystems"][s]["object"] for s in ("net", "vfs"))
    assert chosen == run.objects[family], (run.kernel, family)
    # the chosen objects serve every hooked function this kernel has: nothing is skipped for a
    # signature mismatch (the wrong era), only for functions the kernel does not have
    for sub in ("net", "vfs"):
        hooks = [h for h in report["hooks"] if h["subsystem"] == sub]
        assert any(h["status"] == "ok" for h in hooks), sub
        for h in hooks:
            assert h["status"] == "ok" or "not in this kernel's BTF" in h["reason"], h
