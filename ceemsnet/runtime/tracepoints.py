"""Classic (perf) tracepoints: attach a program to one trace event, such as
syscalls:sys_exit_write, without relying on tracefs being mounted.

libbpf's own attach for `SEC("tp/...")` reads the event's id from
/sys/kernel/tracing (or debugfs) and fails when tracefs is not mounted
there, which is the case on some nodes (and on this project's development
host). The id lives in tracefs only, so where no tracefs is mounted one is
mounted on a private temporary directory just long enough to read the ids
(tracefs has one instance: this changes nothing the rest of the system
sees) and unmounted again. The perf event is then opened here and handed
to libbpf, which makes it a BPF perf link (5.15+: pinnable) and owns it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import tempfile

from ceemsnet.runtime import libbpf

TRACEFS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 8
PERF_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5; later fields zero
NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}


def _read_ids(root: str, events: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    out = {}
    for cat, name in events:
        try:
            with open(os.path.join(root, "events", cat, name, "id")) as f:
                out[(cat, name)] = int(f.read())
        except FileNotFoundError:
            pass
    return out


def event_ids(events: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """{(category, name): trace event id} for those of `events` this kernel has."""
    for d in TRACEFS:
        if os.path.isdir(os.path.join(d, "events")):
            return _read_ids(d, events)
    d = tempfile.mkdtemp(prefix="ceemsnet-tracefs-")
    c = libbpf.libc()
    try:
        if c.mount(b"nodev", d.encode(), b"tracefs", 0, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"no tracefs mounted and mounting one failed: {os.strerror(err)} "
                               "(trace event ids live in tracefs)")
        try:
            return _read_ids(d, events)
        finally:
            c.umount2(d.encode(), 0)
    finally:
        os.rmdir(d)


def perf_event_open(event_id: int) -> int:
    """A perf event fd for one trace event, on CPU 0 for every task (how libbpf opens them:
    a tracepoint event runs its BPF program on every CPU whichever CPU it was opened on)."""
    attr = ctypes.create_string_buffer(PERF_ATTR_SIZE)
    # type, size, config, sample_period; wakeup_events at offset 48
    struct.pack_into("=IIQQ", attr, 0, PERF_TYPE_TRACEPOINT, PERF_ATTR_SIZE, event_id, 1)
    struct.pack_into("=I", attr, 48, 1)
    c = libbpf.libc()
    c.syscall.restype = ctypes.c_long
    nr = NR_PERF_EVENT_OPEN[os.uname().machine]
    fd = c.syscall(ctypes.c_long(nr), attr, ctypes.c_long(-1), ctypes.c_long(0), ctypes.c_long(-1),
                   ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if fd < 0:
        err = ctypes.get_errno() or errno.EINVAL
        raise OSError(err, f"perf_event_open(tracepoint {event_id}): {os.strerror(err)}")
    return fd


def attach(prog_ptr: int, event_id: int) -> int:
    """A libbpf link of the program on the trace event; it owns (and closes) the perf event."""
    pfd = perf_event_open(event_id)
    ptr = libbpf.lib().bpf_program__attach_perf_event(prog_ptr, pfd)
    if not ptr:
        err = ctypes.get_errno() or errno.EINVAL
        os.close(pfd)
        raise OSError(err, os.strerror(err))
    return ptr


def section_event(section: str) -> tuple[str, str] | None:
    """("syscalls", "sys_exit_write") for a "tp/syscalls/sys_exit_write" (or "tracepoint/...") section."""
    kind, _, rest = section.partition("/")
    cat, _, name = rest.partition("/")
    return (cat, name) if kind in ("tp", "tracepoint") and cat and name else None
