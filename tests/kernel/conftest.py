"""Kernel tests: root, a real kernel, real cgroups, real traffic on loopback.

Only fixtures and hooks live here; the objects they hand out (Cgroup, Child,
Exporter, ...) are in helpers.py, which tests import. Everything a test
creates (cgroups, processes, the exporter) is removed or stopped by PID in
teardown, also when the test fails.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from ceemsnet.attribution.cgroups import find_cgroup2_root

from . import accuracy
from .helpers import ROOT, Cgroup, Child, Exporter, require_program


def pytest_collection_modifyitems(config, items):
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="kernel tests need root (BPF load, cgroup creation)")
        for item in items:
            if "tests/kernel" in str(item.fspath):
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    """The ground-truth comparisons the tests recorded (tests/kernel/accuracy.py), one line each:
    the way a VM's records reach the host (make accuracy)."""
    accuracy.terminal_summary(terminalreporter)


@pytest.fixture(scope="session")
def cgroup2_root():
    try:
        return find_cgroup2_root()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"no cgroup2 mount: {e}")


@pytest.fixture
def make_cgroup(cgroup2_root):
    """Factory of fresh cgroups directly below the cgroup2 root; all removed after."""
    made = []

    def make(prefix="ceemsnet-test"):
        cg = Cgroup(cgroup2_root, f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        made.append(cg)
        return cg

    yield make
    for cg in reversed(made):
        cg.remove()


@pytest.fixture
def slurm_tree(cgroup2_root):
    """A SLURM-shaped cgroup2 tree: system.slice/slurmstepd.scope/job_<j>/{step_0,step_1,step_batch};
    yields (job id, {step: Cgroup}). Only the directories made here are removed."""
    job = str(random.randint(10**8, 10**9))
    made = []

    def mk(rel):
        d = Cgroup(cgroup2_root, rel, exist_ok=True)
        if d.created:
            made.append(d.path)
        return d

    mk("system.slice")
    mk("system.slice/slurmstepd.scope")
    mk(f"system.slice/slurmstepd.scope/job_{job}")
    steps = {s: mk(f"system.slice/slurmstepd.scope/job_{job}/{s}") for s in ("step_0", "step_1", "step_batch")}
    yield job, steps
    for path in reversed(made):
        for _ in range(50):
            try:
                os.rmdir(path)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)


@pytest.fixture
def spawn():
    children = []

    def start(argv, cgroup):
        c = Child(argv, cgroup)
        children.append(c)
        return c

    yield start
    for c in children:
        c.stop()


@pytest.fixture
def pin_path():
    """A fresh pin directory, detached (and checked gone) after the test."""
    path = f"/sys/fs/bpf/ceemsnet-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    yield path
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "detach", f"--bpf.pin-path={path}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(path)


@pytest.fixture(scope="module")
def exporter():
    e = Exporter()
    yield e
    e.stop()


def _umount(path):
    subprocess.run(["umount", path], check=False)
    os.rmdir(path)


@pytest.fixture(scope="module")
def tmpfs_dir():
    """A tmpfs mounted for the module's tests (its own fstype label: nothing else of a job's lands there)."""
    d = tempfile.mkdtemp(prefix="ceemsnet-tmpfs-")
    subprocess.run([require_program("mount"), "-t", "tmpfs", "-o", "size=64m", "ceemsnet-test", d], check=True)
    yield d
    _umount(d)


@pytest.fixture(scope="module")
def ext4_dir():
    """An ext4 image loop-mounted for the module's tests (it takes O_DIRECT, which tmpfs does not)."""
    mkfs = require_program("mkfs.ext4")
    img = tempfile.NamedTemporaryFile(prefix="ceemsnet-ext4-", suffix=".img", delete=False)
    img.truncate(64 * 1024 * 1024)
    img.close()
    d = tempfile.mkdtemp(prefix="ceemsnet-ext4-")
    try:
        subprocess.run([mkfs, "-q", "-F", img.name], check=True, capture_output=True)
        subprocess.run([require_program("modprobe"), "-q", "loop"], check=False, capture_output=True)
        p = subprocess.run([require_program("mount"), "-o", "loop", img.name, d], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot loop-mount an ext4 image on {os.uname().release}: {p.stderr.strip()}")
        yield d
        _umount(d)
        d = None
    finally:
        if d:
            os.rmdir(d)
        os.unlink(img.name)


@pytest.fixture(scope="module")
def fio():
    """fio's path; the test skips where it is not installed."""
    path = shutil.which("fio")
    if not path:
        pytest.skip("fio is not installed (packaging/apt-packages.txt: fio)")
    return path
