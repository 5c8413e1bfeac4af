"""sendfile(), splice() and copy_file_range() counted as file IO, exactly, in every family.

The kernel moves their bytes through the files' ->splice_read/->splice_write or
->copy_file_range, never vfs_read()/vfs_write(): before bpf/vfs/vfs_splice.h, a job that
copied its data with `cp` (copy_file_range) or served it with sendfile() showed none of it.
A child in a fresh cgroup moves known bytes on a tmpfs mounted by the test (tests/kernel/
splicer.py); the exporter's tmpfs counters must move by exactly those bytes, calls and errors.
"""

import os
import sys

from .helpers import Exporter, delta

HERE = os.path.dirname(os.path.abspath(__file__))
CALLS = ("sendfile", "splice", "copy_file_range")


def test_sendfile_splice_copy_file_range_exact(make_cgroup, spawn, tmpfs_dir):
    from . import splicer
    e = Exporter(collectors="vfs")
    try:
        hooked = {dict(k[1])["function"] for k in e.samples() if k[0] == "ceemsnet_hook_info"}
        assert set(CALLS) <= hooked, f"not hooked: {sorted(set(CALLS) - hooked)}"
        cg = make_cgroup()
        child = spawn([sys.executable, os.path.join(HERE, "splicer.py"), tmpfs_dir], cg)
        assert child.proc.stdout.readline().strip() == "ready"
        before = e.samples()
        assert child.go().strip() == "done"
        after = e.samples()
    finally:
        e.stop()
    got = tuple(delta(before, after, f"ceemsnet_vfs_{op}_{k}_total", cgroup=cg.rel, fstype="tmpfs")
                for op in ("read", "write") for k in ("bytes", "calls", "errors"))
    assert got == splicer.EXPECTED
    # nothing on any other file system: the socket and the pipe are not file IO
    for op in ("read", "write"):
        others = {dict(lab)["fstype"]: v - before.get((n, lab), 0) for (n, lab), v in after.items()
                  if n == f"ceemsnet_vfs_{op}_bytes_total" and ("cgroup", cg.rel) in lab
                  and dict(lab)["fstype"] != "tmpfs"}
        assert not any(others.values()), (op, others)
