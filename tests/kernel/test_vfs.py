"""Exact per-cgroup file IO through a running `ceemsnet serve --collectors=vfs`.

A child in a fresh cgroup does a known set of operations on a tmpfs and an
ext4 file system mounted by the test; the exporter's counters must move by
exactly those amounts between a scrape taken while the child waits and one
taken after it is done. Pipe, socket and procfs IO must not show up.
"""

import os
import subprocess
import sys
import tempfile

import pytest

from .helpers import Exporter, require_program

HERE = os.path.dirname(os.path.abspath(__file__))
RW_BYTES, RW_CALLS = 2100, 3


@pytest.fixture(scope="module")
def exporter():
    e = Exporter(collectors="vfs")
    yield e
    e.stop()


def _umount(path):
    subprocess.run(["umount", path], check=False)
    os.rmdir(path)


@pytest.fixture(scope="module")
def tmpfs_dir():
    d = tempfile.mkdtemp(prefix="ceemsnet-tmpfs-")
    subprocess.run([require_program("mount"), "-t", "tmpfs", "-o", "size=16m", "ceemsnet-test", d], check=True)
    yield d
    _umount(d)


@pytest.fixture(scope="module")
def ext4_dir():
    mkfs = require_program("mkfs.ext4")
    img = tempfile.NamedTemporaryFile(prefix="ceemsnet-ext4-", suffix=".img", delete=False)
    img.truncate(32 * 1024 * 1024)
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


def delta(before, after, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def test_exact_file_io_per_fstype(exporter, make_cgroup, spawn, tmpfs_dir, ext4_dir):
    cg = make_cgroup()
    child = spawn([sys.executable, os.path.join(HERE, "fileio.py"), tmpfs_dir, ext4_dir], cg)
    assert child.proc.stdout.readline().strip() == "ready"
    before = exporter.samples()
    out = child.go()
    assert out.strip() == "done"
    after = exporter.samples()
    for fs in ("tmpfs", "ext4"):
        for op in ("read", "write"):
            got = tuple(delta(before, after, f"ceemsnet_vfs_{op}_{k}_total", cgroup=cg.rel, fstype=fs)
                        for k in ("bytes", "calls", "errors"))
            assert got == (RW_BYTES, RW_CALLS, 0), (fs, op)
    # only the two file systems' bytes: the pipe, socket and procfs IO are not there
    for op in ("read", "write"):
        total = sum(v - before.get((n, lab), 0) for (n, lab), v in after.items()
                    if n == f"ceemsnet_vfs_{op}_bytes_total" and ("cgroup", cg.rel) in lab)
        assert total == 2 * RW_BYTES, op
    ops = {op: (delta(before, after, "ceemsnet_vfs_ops_total", cgroup=cg.rel, op=op),
                delta(before, after, "ceemsnet_vfs_op_errors_total", cgroup=cg.rel, op=op))
           for op in ("open", "create", "unlink", "mkdir", "rmdir")}
    from . import fileio
    # fileio.OPENS opens and fileio.CREATES creates per file system: open(O_CREAT)
    # and creat() count a create only when they made the file, mknod() always
    n = 2
    assert ops == {"open": (n * fileio.OPENS, 0), "create": (n * fileio.CREATES, 0), "unlink": (n, n),
                   "mkdir": (2 * n, 0), "rmdir": (2 * n, 0)}


def test_fstype_label_is_bounded(exporter):
    from ceemsnet.fstypes import ALL_NAMES
    seen = {dict(k[1])["fstype"] for k in exporter.samples() if "fstype" in dict(k[1])}
    assert seen <= ALL_NAMES
    assert not seen & {"proc", "sysfs", "pipefs", "sockfs"}  # left out by default


# A loop of system calls in a child: "ready", wait for a line, then N calls of one kind.
_LOOP = """
import os, sys
kind, n = sys.argv[1], int(sys.argv[2])
fd = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT, 0o600) if kind == "write" else -1
print("ready", flush=True)
sys.stdin.readline()
if kind == "write":
    for _ in range(n):
        os.write(fd, b"w")
else:
    for _ in range(n):
        os.getpid()
"""
LOOP_CALLS = 1_000_000
STATS = "/proc/sys/kernel/bpf_stats_enabled"


def test_tracepoint_family_runs_only_for_counted_syscalls(make_cgroup, spawn, tmpfs_dir):
    """Issue 16: the vfs tracepoint programs must not run for system calls they do not count.
    The kernel's run count of every program (bpf_stats_enabled) must stay still, but for
    other processes' IO, while a child in a test cgroup calls getpid() a million times; the
    raw sys_exit program this family had before ran on each of them (run count +1,000,000)."""
    import platform
    import time

    from ceemsnet import CeemsnetError
    from ceemsnet.kernel import KernelBTF, normalize_arch, parse_kernel_version, running_release
    from ceemsnet.loader import select_and_load
    try:
        sel = select_and_load("vfs", parse_kernel_version(running_release()), normalize_arch(platform.machine()),
                              KernelBTF(), forced="tracepoint")
    except CeemsnetError as e:
        pytest.skip(f"the vfs tracepoint family does not load on {os.uname().release} ({e}); "
                    "the host run (6.18) covers it")
    coll, names = sel.loaded.collection, sel.loaded.programs()
    old_stats = open(STATS).read().strip()

    def runs():
        return sum(coll.program_stats(n)[1] for n in names)

    def window(kind):
        child = spawn([sys.executable, "-c", _LOOP, kind, str(LOOP_CALLS), os.path.join(tmpfs_dir, "loop")],
                      make_cgroup())
        assert child.proc.stdout.readline().strip() == "ready"
        r0, t0 = runs(), time.monotonic()
        child.go()
        return runs() - r0, time.monotonic() - t0

    try:
        with open(STATS, "w") as f:
            f.write("1")
        # the control: a write loop runs the programs once per call, and the kernel counts the runs
        wrote, _ = window("write")
        assert wrote >= LOOP_CALLS, f"{wrote} runs for {LOOP_CALLS} write() calls: stats off or not attached"
        moved, took = window("getpid")
        # other processes' reads and writes in a window as long, before and after
        r0 = runs()
        time.sleep(took)
        noise = runs() - r0
    finally:
        with open(STATS, "w") as f:
            f.write(old_stats)
        sel.loaded.close()
    assert moved <= 3 * noise + LOOP_CALLS // 100, \
        f"the vfs programs ran {moved} times during {LOOP_CALLS} getpid() calls (background: {noise})"
