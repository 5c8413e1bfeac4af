"""Return probes with a chosen `maxactive`, through bcc's libbcc.

A kretprobe can track only `maxactive` calls in flight per function; a
return beyond that is *missed* (never runs our program). The kernel default
is max(10, 2 * possible CPUs): far too few for tcp_recvmsg, where every
thread blocked in recv() holds one. libbpf 1.1 cannot set maxactive; bcc's
bpf_attach_kprobe() can, on a program fd loaded by libbpf, by creating the
probe through tracefs kprobe_events ("r<maxactive>:..."). Events created
that way also report their misses in tracefs' kprobe_profile, which the
collector exports.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os

from ceemsnet.runtime.links import Link
from ceemsnet.runtime.tracepoints import TRACEFS

log = logging.getLogger("ceemsnet.runtime.kprobes")

MAXACTIVE_MAX = 4096  # KRETPROBE_MAXACTIVE_MAX, kernel/trace/trace_kprobe.c


def tracefs() -> str | None:
    for d in TRACEFS:
        if os.path.exists(os.path.join(d, "kprobe_events")):
            return d
    return None


def parse_kprobe_profile(text: str) -> dict[str, tuple[int, int]]:
    """{event name: (hits, misses)} from tracefs kprobe_profile."""
    out = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[-1].isdigit() and parts[-2].isdigit():
            out[parts[0]] = (int(parts[-2]), int(parts[-1]))
    return out


class KretprobeEvent(Link):
    """One tracefs kretprobe event with our program attached; close() removes it."""

    def __init__(self, libbcc, prog_fd: int, program: str, function: str, maxactive: int):
        self._lib = libbcc
        self.program = program
        self.target = function
        # bcc names the event <ev_name>_bcc_<pid> in the kprobes group
        self.ev_name = f"ceemsnet_r_{function}".encode()
        self.tracefs_event = f"{self.ev_name.decode()}_bcc_{os.getpid()}"
        self.fd = -1
        fd = libbcc.bpf_attach_kprobe(prog_fd, 1, self.ev_name, function.encode(), 0, maxactive)
        if fd < 0:
            err = ctypes.get_errno() or (-fd if fd < -1 else errno.EINVAL)
            raise OSError(err, f"kretprobe on {function} (maxactive {maxactive}): {os.strerror(err)}")
        self.fd = fd

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self._lib.bpf_detach_kprobe(self.ev_name)


def libbcc():
    """bcc's libbcc with prototypes (python3-bpfcc), or None with the reason logged."""
    try:
        # not at the top: optional (python3-bpfcc, via system site-packages), and libbcc costs 50-130 ms, 60 MiB
        from bcc.libbcc import lib
        return lib
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        log.warning("bcc is not importable (%s): kretprobes fall back to libbpf's default maxactive", e)
        return None


def missed(links: list[Link]) -> dict[str, int]:
    """{function: returns missed} for those of `links` that are tracefs events, from kprobe_profile."""
    events = [ln for ln in links if ln.tracefs_event]
    d = tracefs()
    if not d or not events:
        return {}
    try:
        with open(os.path.join(d, "kprobe_profile")) as f:
            prof = parse_kprobe_profile(f.read())
    except OSError:
        return {}
    return {e.target: prof[e.tracefs_event][1] for e in events if e.tracefs_event in prof}
