"""Opens and creates counted once on every file system (issue 24): NFSv4, whose ->atomic_open
opens and creates files inside the file system (finish_open(), never vfs_open()), and overlayfs,
whose opens and creates call the same VFS functions again on the file system below it.

The NFS test bed (tests/kernel/nfs.py) is a kernel nfsd exporting a tmpfs, mounted with -t nfs4
over 127.0.0.1; it runs where the kernel has nfsd (the VM guests; this host's kernel has none and
skips, saying so). A child in a fresh cgroup does fileio.py's known operations there, and the
exporter, counting only NFS (--vfs.fstypes=nfs4: the mount type stands for its label, "nfs"),
must move by exactly those amounts.
"""

import os
import subprocess
import sys
import tempfile

import pytest

from . import fileio
from .accuracy import record
from .helpers import HOOK, Exporter, require_program
from .nfs import NfsUnavailable, nfs4_mount
from .helpers import delta
from .test_vfs import RW_BYTES, RW_CALLS, record_ops

HERE = os.path.dirname(os.path.abspath(__file__))
OPS = ("open", "create", "unlink", "mkdir", "rmdir")


@pytest.fixture(scope="module")
def nfs_dir():
    try:
        with nfs4_mount() as d:
            yield d
    except NfsUnavailable as e:
        pytest.skip(f"no NFSv4 test bed here: {e}")


def _ops(before, after, cg):
    return {op: (delta(before, after, "ceemsnet_vfs_ops_total", cgroup=cg.rel, op=op),
                 delta(before, after, "ceemsnet_vfs_op_errors_total", cgroup=cg.rel, op=op)) for op in OPS}


def test_exact_file_io_on_nfs4(nfs_dir, make_cgroup, spawn):
    """fileio.py on NFSv4: bytes, opens, creates, unlink, mkdir, rmdir and an unlink error, exact.
    Before issue 24 the fexit and kretprobe families counted 0 of its creates by open(O_CREAT) and
    creat() and 1 open of 4 there: NFS opens those in nfs_atomic_open() -> finish_open()."""
    # only NFS is counted (and the tracepoint family's directory operations, whose file system it
    # cannot know: "unknown"), so every op below is one the child made on the NFS mount
    exporter = Exporter(["--vfs.fstypes=nfs4,unknown"], collectors="vfs")
    try:
        cg = make_cgroup()
        child = spawn([sys.executable, os.path.join(HERE, "fileio.py"), nfs_dir], cg)
        assert child.proc.stdout.readline().strip() == "ready"
        before = exporter.samples()
        assert child.go(timeout=300).strip() == "done"
        after = exporter.samples()
    finally:
        exporter.stop()
    assert delta(before, after, "ceemsnet_map_update_failures_total", map="vfs_stats") == 0
    want = (RW_BYTES, RW_CALLS, 0)
    for op in ("read", "write"):
        got = tuple(delta(before, after, f"ceemsnet_vfs_{op}_{k}_total", cgroup=cg.rel, fstype="nfs")
                    for k in ("bytes", "calls", "errors"))
        for i, k in enumerate(("bytes", "calls", "errors")):
            record("fileio.py on NFSv4 (kernel nfsd exporting a tmpfs over 127.0.0.1)", "fileio.py's known operations",
                   f"ceemsnet_vfs_{op}_{k}_total{{fstype=nfs}}", want[i], got[i], k, samples=after, subsystem="vfs")
        assert got == want, op
    ops = _ops(before, after, cg)
    want_ops = {"open": (fileio.OPENS, 0), "create": (fileio.CREATES, 0), "unlink": (1, 1), "mkdir": (2, 0),
                "rmdir": (2, 0)}
    record_ops("fileio.py on NFSv4: opens, creates (open(O_CREAT), creat(), mknod()), mkdir, rmdir, unlink",
               "fileio.py's known operations", want_ops, ops, after)
    assert ops == want_ops


# On overlayfs: open(O_CREAT) of a new name, creat() of a new name, open of a file only in the
# lower layer for writing (a copy-up: overlayfs creates the upper copy itself), open of an upper
# file, a write and a read through overlayfs, mknod() of a regular file.
_OVERLAY_JOB = """
import os, stat, sys
d = sys.argv[1]
print("ready", flush=True)
sys.stdin.readline()
fd = os.open(os.path.join(d, "new"), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
assert os.write(fd, b"o" * 300) == 300
os.close(fd)
os.close(os.open(os.path.join(d, "made"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
fd = os.open(os.path.join(d, "lower"), os.O_RDWR)
assert len(os.read(fd, 200)) == 200
os.close(fd)
os.close(os.open(os.path.join(d, "new"), os.O_RDONLY))
os.mknod(os.path.join(d, "node"), 0o600 | stat.S_IFREG)
print("done", flush=True)
"""
OVERLAY_OPENS, OVERLAY_CREATES = 4, 3


@pytest.fixture
def overlay_dir():
    """An overlayfs over two directories of a tmpfs of its own; the lower layer holds `lower`
    (200 bytes), made here, outside any test cgroup."""
    mount, umount = require_program("mount"), require_program("umount")
    base = tempfile.mkdtemp(prefix="ceemsnet-ovl-")
    mounted = []
    try:
        subprocess.run([mount, "-t", "tmpfs", "-o", "size=16m", "ceemsnet-ovl", base], check=True)
        mounted.append(base)
        lower, upper, work, merged = (os.path.join(base, d) for d in ("lower", "upper", "work", "merged"))
        for d in (lower, upper, work, merged):
            os.mkdir(d)
        with open(os.path.join(lower, "lower"), "wb") as f:
            f.write(b"l" * 200)
        p = subprocess.run([mount, "-t", "overlay", "-o", f"lowerdir={lower},upperdir={upper},workdir={work}",
                            "ceemsnet-ovl", merged], capture_output=True, text=True)
        if p.returncode != 0:
            pytest.skip(f"cannot mount an overlayfs on {os.uname().release}: {p.stderr.strip()}")
        mounted.append(merged)
        yield merged
    finally:
        for m in reversed(mounted):
            subprocess.run([umount, m], check=False)
        os.rmdir(base)


def test_overlayfs_open_and_create_count_once(make_cgroup, spawn, overlay_dir):
    """One user-visible open is one open, and one create one create, on overlayfs too: overlayfs
    opens the real file below with a vfs_open() of its own (6.8+; a backing file, FMODE_NOACCOUNT,
    not counted), and creates it there with vfs_create() under its mounter's credentials (not
    counted: the user's create is the open's). The bytes count once, for overlayfs: overlayfs
    moves them below with vfs_iter_read()/vfs_iter_write(), which no hook counts."""
    exporter = Exporter(["--vfs.fstypes=all"], collectors="vfs")
    try:
        cg = make_cgroup()
        child = spawn([sys.executable, "-c", _OVERLAY_JOB, overlay_dir], cg)
        assert child.proc.stdout.readline().strip() == "ready"
        before = exporter.samples()
        assert child.go().strip() == "done"
        after = exporter.samples()
    finally:
        exporter.stop()
    ops = _ops(before, after, cg)
    got = {op: ops[op] for op in ("open", "create")}
    want = {"open": (OVERLAY_OPENS, 0), "create": (OVERLAY_CREATES, 0)}
    record_ops("overlayfs (upper and lower on a tmpfs): 4 opens, of which 2 create, 1 copies up; 1 mknod",
               "the job's calls", want, got, after)
    for op, fs, n in (("write", "overlay", 300), ("read", "overlay", 200), ("write", "tmpfs", 0),
                      ("read", "tmpfs", 0)):
        counted = delta(before, after, f"ceemsnet_vfs_{op}_bytes_total", cgroup=cg.rel, fstype=fs)
        record("overlayfs (upper and lower on a tmpfs): a 300 B write and a 200 B read", "the job's calls",
               f"ceemsnet_vfs_{op}_bytes_total{{fstype={fs}}}", n, counted, samples=after, subsystem="vfs")
        assert counted == n, (op, fs, HOOK)
    assert got == want, HOOK
