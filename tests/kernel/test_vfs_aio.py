"""AIO (io_submit, libaio) file reads and writes, exact, through a running `ceemsnet serve --collectors=vfs`.

fs/aio.c never calls vfs_read()/vfs_write(); bpf/vfs/vfs_aio.h counts each request for the task
that submitted it, whatever context completes it (O_DIRECT: the block layer's, not the job's).
fio (ioengine=libaio, iodepth 8) is the child, in a fresh cgroup: it writes a file, then a second
fio in another fresh cgroup reads it back; the counters of the target file system must move by
fio's own io_bytes and IO count (its JSON). Buffered on a tmpfs (a label the loader's reads of
fio's libraries, on the root file system, never have); O_DIRECT on an ext4 loop mount, where the
read job's ext4 reads also hold fio's own start-up reads: those are exactly the write job's ext4
reads (same binary, same libraries, no read of the target file), which is the baseline.

A second child drives the system calls itself (no libaio) to count what fio does not use:
IOCB_CMD_PWRITEV/PREADV, a short read, a request aio_read() refuses (EBADF: an error with fexit
and kretprobe; the tracepoint family sees no refused request) and a write that fails inside the
file system (past RLIMIT_FSIZE: EFBIG from ->write_iter, reported at completion, an error everywhere).
"""

import json
import os
import sys

import pytest

from .accuracy import record
from .helpers import Exporter, delta, exec_in_cgroup
from .helpers import file_counters as counted

SIZE = 2 * 1024 * 1024  # 512 IOs of 4 KiB: enough to show every IO counted, quick in an emulated guest


@pytest.fixture(scope="module")
def exporter():
    e = Exporter(collectors="vfs")
    yield e
    e.stop()


def aio_hook(samples) -> str:
    """The family that hooks AIO here (ceemsnet_hook_info); fails if nothing serves it."""
    fams = {dict(k[1])["hook"] for k in samples if k[0] == "ceemsnet_hook_info"
            and dict(k[1]).get("function") in ("aio_read", "aio_write", "aio_complete_rw")}
    assert len(fams) == 1, f"AIO is not hooked (or by several families): {fams}"
    return fams.pop()


def fio_job(exporter, make_cgroup, spawn, fio, path, rw, bs, direct):
    """One fio libaio job in its own cgroup: (before, after, cgroup, (io_bytes, total_ios))."""
    argv = [fio, "--name=aio", "--ioengine=libaio", "--iodepth=8", f"--rw={rw}", f"--bs={bs}", f"--size={SIZE}",
            f"--filename={path}", f"--direct={int(direct)}", "--output-format=json"]
    before, after, cg, out = exec_in_cgroup(exporter, make_cgroup, spawn, argv)
    job = json.loads(out[out.index("{"):])["jobs"][0]
    assert job["error"] == 0, job
    side = job["read" if rw == "read" else "write"]
    assert side["io_bytes"] == SIZE, side  # fio moved what it was told to, else the test proves little
    return before, after, cg, (side["io_bytes"], side["total_ios"])


CASES = [("buffered", "4k"), ("buffered", "64k"), ("direct", "4k"), ("direct", "64k")]


@pytest.mark.parametrize("mode,bs", CASES, ids=[f"{m}-{b}" for m, b in CASES])
def test_fio_libaio_exact(exporter, make_cgroup, spawn, fio, tmpfs_dir, ext4_dir, mode, bs):
    direct = mode == "direct"
    fs, d = ("ext4", ext4_dir) if direct else ("tmpfs", tmpfs_dir)
    path = os.path.join(d, f"aio-{mode}-{bs}")
    try:
        wb, wa, wcg, (wbytes, wios) = fio_job(exporter, make_cgroup, spawn, fio, path, "write", bs, direct)
        rb, ra, rcg, (rbytes, rios) = fio_job(exporter, make_cgroup, spawn, fio, path, "read", bs, direct)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    hook = aio_hook(ra)
    w, r = counted(wb, wa, wcg, fs), counted(rb, ra, rcg, fs)
    # the write job's reads of this file system are fio's own start-up reads (tmpfs: none)
    base = w["read"]
    want = {"write job": {"write": (wbytes, wios, 0), "read": base},
            "read job": {"read": (rbytes + base[0], rios + base[1], 0), "write": (0, 0, 0)}}
    got = {"write job": w, "read job": r}
    workload = f"fio libaio iodepth 8, {mode}, bs {bs}, {SIZE >> 20} MiB write then read, on {fs}"
    for job in want:
        for op, vals in want[job].items():
            for i, k in enumerate(("bytes", "calls", "errors")):
                record(workload, f"fio's io_bytes and total_ios ({job})", f"ceemsnet_vfs_{op}_{k}_total{{fstype={fs}}}",
                       vals[i], got[job][op][i], k, samples=ra, subsystem="vfs")
    assert w["write"] == want["write job"]["write"], (hook, w)
    assert r["read"] == want["read job"]["read"], (hook, r, base)
    assert r["write"] == (0, 0, 0), (hook, r)
    if not direct:
        assert base == (0, 0, 0), (hook, w)  # nothing else of fio's is on this tmpfs
    # nothing lost to a full map
    assert delta(rb, ra, "ceemsnet_map_update_failures_total", map="vfs_stats") == 0


# The second child: raw io_setup/io_submit/io_getevents, x86_64 and arm64 numbers.
RAW = r'''
import ctypes, os, resource, signal, struct, sys
NR = {"x86_64": (206, 207, 209, 208), "aarch64": (0, 1, 2, 4)}[os.uname().machine]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
PREAD, PWRITE, PREADV, PWRITEV = 0, 1, 7, 8

def sys_(n, *a):
    r = libc.syscall(ctypes.c_long(n), *[ctypes.c_long(x) for x in a])
    return r if r >= 0 else -ctypes.get_errno()

ctx = ctypes.c_ulong(0)
assert sys_(NR[0], 8, ctypes.addressof(ctx)) == 0
keep = []

def iocb(op, fd, buf, nbytes, off):
    b = ctypes.create_string_buffer(struct.pack("<QIIHhIQQqQII", 0, 0, 0, op, 0, fd, buf, nbytes, off, 0, 0, 0))
    keep.append(b)
    return b

def submit(cb):
    ptrs = (ctypes.c_void_p * 1)(ctypes.addressof(cb))
    return sys_(NR[2], ctx.value, 1, ctypes.addressof(ptrs))

def reap(cb):
    ev = ctypes.create_string_buffer(32)
    assert sys_(NR[3], ctx.value, 1, 1, ctypes.addressof(ev), 0) == 1
    data, obj, res, res2 = struct.unpack("<QQqq", ev.raw)
    assert obj == ctypes.addressof(cb)
    return res

def iov(*bufs):
    a = (ctypes.c_ulong * (2 * len(bufs)))()
    for i, b in enumerate(bufs):
        a[2 * i], a[2 * i + 1] = ctypes.addressof(b), len(b)
    keep.append(a)
    return ctypes.addressof(a)

tmpfs = sys.argv[1]
print("ready", flush=True)
sys.stdin.readline()
fd = os.open(os.path.join(tmpfs, "raw"), os.O_RDWR | os.O_CREAT, 0o600)
w1, w2 = ctypes.create_string_buffer(b"a" * 3000, 3000), ctypes.create_string_buffer(b"b" * 1000, 1000)
cb = iocb(PWRITEV, fd, iov(w1, w2), 2, 0)
assert submit(cb) == 1 and reap(cb) == 4000
r1, r2 = ctypes.create_string_buffer(2000), ctypes.create_string_buffer(2000)
cb = iocb(PREADV, fd, iov(r1, r2), 2, 0)
assert submit(cb) == 1 and reap(cb) == 4000
r3 = ctypes.create_string_buffer(100)
cb = iocb(PREAD, fd, ctypes.addressof(r3), 100, 3950)
assert submit(cb) == 1 and reap(cb) == 50          # a short read: 50 bytes
wo = os.open(os.path.join(tmpfs, "raw"), os.O_WRONLY)
cb = iocb(PREAD, wo, ctypes.addressof(r3), 100, 0)
assert submit(cb) == -9                            # EBADF: refused by aio_read(), nothing completes
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
cb = iocb(PWRITE, fd, ctypes.addressof(w2), 100, 2 << 20)
assert submit(cb) == 1 and reap(cb) == -27         # EFBIG from ->write_iter, reported at completion
os.unlink(os.path.join(tmpfs, "raw"))
print("done")
'''


def test_raw_aio_vectored_short_and_errors(exporter, make_cgroup, spawn, tmpfs_dir):
    before, after, cg, out = exec_in_cgroup(exporter, make_cgroup, spawn, [sys.executable, "-c", RAW, tmpfs_dir],
                                           timeout=60)
    assert out.split()[-1] == "done", out
    hook = aio_hook(after)
    t = counted(before, after, cg, "tmpfs")
    refused = 0 if hook == "tracepoint" else 1  # the tracepoint family sees no refused request
    want = {"write": (4000, 1, 1), "read": (4050, 2, refused)}
    for op in want:
        for i, k in enumerate(("bytes", "calls", "errors")):
            record("raw io_submit: PWRITEV 4,000 B, PREADV 4,000 B, a 50 B short PREAD, a refused PREAD (EBADF), "
                   "a PWRITE past RLIMIT_FSIZE (EFBIG)",
                   "the system calls' own results", f"ceemsnet_vfs_{op}_{k}_total{{fstype=tmpfs}}", want[op][i],
                   t[op][i], k, samples=after, subsystem="vfs")
    assert t == want, (hook, t)
