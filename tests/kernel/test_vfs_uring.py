"""io_uring file reads and writes, exact, through a running `ceemsnet serve --collectors=vfs`.

io_uring calls the file's ->read_iter/->write_iter itself, never vfs_read()/vfs_write() nor a read
or write system call; bpf/vfs/vfs_uring.h counts each request at its completion event
(io_uring:io_uring_complete, tp_btf in every family) for the task that submitted it. fio
(ioengine=io_uring) is the child, in a fresh cgroup, exec'd by a shell that waits until it has been
moved there: it writes a file, then a second fio in another fresh cgroup reads it back; the
counters of the target file system must move by fio's own io_bytes and IO count (its JSON).
Buffered on a tmpfs (a label the loader's reads of fio's libraries, on the root file system, never
have), also with registered buffers (READ_FIXED/WRITE_FIXED), registered files and an SQPOLL
thread; O_DIRECT on an ext4 loop mount, where the read job's ext4 reads also hold fio's own
start-up reads: those are exactly the write job's ext4 reads (same binary, same libraries, no read
of the target file), which is the baseline.

A second child drives io_uring itself (the system calls and rings through ctypes, no liburing):
reads and writes on a socket pair and a pipe, which are not file IO (sockets are the net
collector's) and must not show, beside a write of known size to a tmpfs file and a read the file
refuses (EBADF: the file is open for writing only), an error, except with the submission stash,
which sees a request only once io_uring_submit_sqe fires, after that check.
"""

import json
import os
import sys

import pytest

from ceemsnet.planning.catalogue import URING_ALTERNATIVES, _uring_hooks
from ceemsnet.planning.choice import _choose_alternative
from ceemsnet.planning.kernel import parse_kernel_version
from ceemsnet.runtime.btf import KernelBTF

from .accuracy import record
from .helpers import Exporter, delta, exec_in_cgroup
from .helpers import file_counters as counters

SIZE = 2 * 1024 * 1024  # 32 IOs of 64 KiB: enough to show every IO counted, quick in an emulated guest
BS = 64 * 1024


def _uring_state() -> str | None:
    """None when io_uring can be used here, else why not."""
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            if f.read().strip() == "2":
                return "io_uring is disabled on this host (/proc/sys/kernel/io_uring_disabled = 2)"
    except FileNotFoundError:
        pass  # before 6.6 there is no such switch
    return None


@pytest.fixture(scope="module")
def uring_alternative():
    """The alternative this kernel's BTF selects; skip where io_uring cannot be counted here."""
    why = _uring_state()
    if why:
        pytest.skip(why)
    btf = KernelBTF()
    try:
        (hook,) = _uring_hooks("tracepoint", 0, "x86_64")
        alt, reason = _choose_alternative(hook, btf, parse_kernel_version(os.uname().release))
    finally:
        btf.close()
    if alt is None:
        pytest.skip(f"this kernel's io_uring events cannot be used: {reason}")
    assert alt in URING_ALTERNATIVES
    return alt


@pytest.fixture(scope="module")
def exporter(uring_alternative):
    # every file system label, pseudo ones too: were a socket's or a pipe's io_uring IO counted, it
    # would show under sockfs or pipefs
    e = Exporter(collectors="vfs", extra=("--vfs.fstypes=all",))
    yield e
    e.stop()


def run_fio(exporter, make_cgroup, spawn, fio, rw, path, extra):
    """fio with io_uring as the only process of a fresh cgroup (moved there before it execs):
    (fio's JSON job, cgroup, scrape before, scrape after)."""
    argv = [fio, "--name=uring", f"--filename={path}", f"--rw={rw}", f"--size={SIZE}", f"--bs={BS}",
            "--ioengine=io_uring", "--iodepth=8", "--output-format=json", *extra]
    before, after, cg, out = exec_in_cgroup(exporter, make_cgroup, spawn, argv)
    (job,) = json.loads(out[out.index("{"):])["jobs"]
    assert job["error"] == 0, job
    return job, cg, before, after


MODES = {  # mode -> (fio options, file system fixture)
    "buffered": ((), "tmpfs_dir"),
    "fixedbufs": (("--fixedbufs=1",), "tmpfs_dir"),
    "registerfiles": (("--registerfiles=1",), "tmpfs_dir"),
    "sqthread_poll": (("--sqthread_poll=1",), "tmpfs_dir"),
    "direct": (("--direct=1",), "ext4_dir"),
}


@pytest.mark.parametrize("mode", list(MODES))
def test_fio_write_then_read_exact(mode, request, exporter, make_cgroup, spawn, fio, uring_alternative):
    opts, fixture = MODES[mode]
    d = request.getfixturevalue(fixture)
    fs = "tmpfs" if fixture == "tmpfs_dir" else "ext4"
    path = os.path.join(d, f"uring-{mode}")
    try:
        wjob, wcg, wb, wa = run_fio(exporter, make_cgroup, spawn, fio, "write", path, opts)
        rjob, rcg, rb, ra = run_fio(exporter, make_cgroup, spawn, fio, "read", path, opts)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    w, r = counters(wb, wa, wcg, fs), counters(rb, ra, rcg, fs)
    # the loader's reads at exec (fio's libraries) where the target shares their file system's label
    base = w["read"] if fs != "tmpfs" else (0, 0, 0)
    want_w = {"write": (wjob["write"]["io_bytes"], wjob["write"]["total_ios"], 0), "read": base}
    want_r = {"read": (rjob["read"]["io_bytes"] + base[0], rjob["read"]["total_ios"] + base[1], 0),
              "write": (0, 0, 0)}
    assert wjob["write"]["io_bytes"] == rjob["read"]["io_bytes"] == SIZE
    workload = f"fio ioengine=io_uring {mode} on {fs}: write then read {SIZE // 1048576} MiB in {BS // 1024} KiB IOs"
    for job, op, got, want in (("write", "write", w, want_w), ("read", "read", r, want_r)):
        for i, k in enumerate(("bytes", "calls", "errors")):
            record(f"{workload} ({job} job)", "fio's JSON io_bytes and total_ios",
                   f"ceemsnet_vfs_{op}_{k}_total{{fstype={fs}}}", want[op][i], got[op][i], k,
                   samples=ra, subsystem="vfs")
    assert w == want_w, (mode, uring_alternative.label)
    assert r == want_r, (mode, uring_alternative.label, base)
    assert delta(wb, ra, "ceemsnet_map_update_failures_total", map="vfs_stats") == 0


# A child that drives io_uring through its system calls (ctypes): io_uring_setup, the rings mmap'ed,
# one SQE at a time, io_uring_enter(to_submit=1, min_complete=1, GETEVENTS). It prints "ready",
# waits for a line, runs, prints the results as JSON.
CHILD = r'''
import ctypes, json, mmap, os, socket, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SETUP, ENTER = 425, 426                      # io_uring_setup, io_uring_enter: every arch
OP_READ, OP_WRITE = 22, 23
params = ctypes.create_string_buffer(120)   # struct io_uring_params
fd = libc.syscall(SETUP, 8, params)
if fd < 0:
    sys.exit(f"io_uring_setup: {os.strerror(ctypes.get_errno())}")
sq_entries, cq_entries = struct.unpack_from("II", params, 0)
sq_head, sq_tail, sq_mask, _, _, _, sq_array = struct.unpack_from("7I", params, 40)
cq_head, cq_tail, cq_mask, _, _, cqes = struct.unpack_from("6I", params, 80)
sq = mmap.mmap(fd, sq_array + 4 * sq_entries, offset=0)
cq = mmap.mmap(fd, cqes + 16 * cq_entries, offset=0x8000000)
sqes = mmap.mmap(fd, 64 * sq_entries, offset=0x10000000)
bufs = []

def one(op, target, data=None, n=0):
    buf = ctypes.create_string_buffer(data if data is not None else n)
    bufs.append(buf)
    tail = struct.unpack_from("I", sq, sq_tail)[0]
    i = tail & struct.unpack_from("I", sq, sq_mask)[0]
    sqes[64 * i:64 * i + 64] = struct.pack("BBHiQQIIQHHi16x", op, 0, 0, target, 2**64 - 1,
                                            ctypes.addressof(buf), len(data) if data is not None else n, 0, 7, 0, 0, 0)
    struct.pack_into("I", sq, sq_array + 4 * i, i)
    struct.pack_into("I", sq, sq_tail, tail + 1)
    if libc.syscall(ENTER, fd, 1, 1, 1, None, 0) < 0:
        sys.exit(f"io_uring_enter: {os.strerror(ctypes.get_errno())}")
    head = struct.unpack_from("I", cq, cq_head)[0]
    assert struct.unpack_from("I", cq, cq_tail)[0] != head
    j = head & struct.unpack_from("I", cq, cq_mask)[0]
    _, res, _ = struct.unpack_from("QiI", cq, cqes + 16 * j)
    struct.pack_into("I", cq, cq_head, head + 1)
    return res

print("ready", flush=True)
sys.stdin.readline()
out = {}
a, b = socket.socketpair()
out["socket_write"] = one(OP_WRITE, a.fileno(), b"s" * 3000)
out["socket_read"] = one(OP_READ, b.fileno(), n=3000)
pr, pw = os.pipe()
out["pipe_write"] = one(OP_WRITE, pw, b"p" * 500)
out["pipe_read"] = one(OP_READ, pr, n=500)
f = os.open(os.path.join(sys.argv[1], "uring-child"), os.O_WRONLY | os.O_CREAT, 0o600)
out["file_write"] = one(OP_WRITE, f, b"f" * 1234)
out["file_read_wronly"] = one(OP_READ, f, n=100)  # a file opened for writing: EBADF
os.close(f)
print(json.dumps(out), flush=True)
'''


def test_sockets_and_pipes_are_not_file_io(exporter, make_cgroup, spawn, tmpfs_dir, uring_alternative):
    cg = make_cgroup()
    child = spawn([sys.executable, "-c", CHILD, tmpfs_dir], cg)
    try:
        assert child.proc.stdout.readline().strip() == "ready"
        before = exporter.samples()
        res = json.loads(child.go(timeout=120).strip().splitlines()[-1])
        after = exporter.samples()
    finally:
        if os.path.exists(os.path.join(tmpfs_dir, "uring-child")):
            os.unlink(os.path.join(tmpfs_dir, "uring-child"))
    assert res == {"socket_write": 3000, "socket_read": 3000, "pipe_write": 500, "pipe_read": 500,
                   "file_write": 1234, "file_read_wronly": -9}, res
    got = counters(before, after, cg, "tmpfs")
    # the file's write and its refused read; the socket's and the pipe's 3,500 B nowhere
    record("io_uring WRITE 1,234 B to a tmpfs file, READ of it refused (EBADF), 3,500 B over a socket "
           "pair and a pipe", "the child's own CQEs", "ceemsnet_vfs_write_bytes_total{fstype=tmpfs}", 1234,
           got["write"][0], "bytes", samples=after, subsystem="vfs")
    # the submission stash sees a request only once io_uring_submit_sqe fires, after its prep: a read
    # refused there (EBADF) completes with no stashed entry and is not counted (5.10.162+, 5.14-5.17)
    refused = 0 if uring_alternative.label == "submission stash" else 1
    assert got == {"write": (1234, 1, 0), "read": (0, 0, refused)}, (got, uring_alternative.label)
    # no series of this cgroup on sockfs or pipefs (the exporter counts every label here, pseudo file
    # systems included: --vfs.fstypes=all), although 3,500 B went through each kind in both directions
    seen = {dict(lab).get("fstype") for (n, lab), v in after.items()
            if n.startswith("ceemsnet_vfs_") and ("cgroup", cg.rel) in lab and v}
    assert not seen & {"sockfs", "pipefs"}, seen
