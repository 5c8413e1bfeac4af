"""Links: one type for every way ceemsnet attaches a program to the kernel.

A Link is what keeps a program attached: a libbpf `struct bpf_link *` (fexit,
tp_btf, perf-event kprobes, cgroup_skb links) or a tracefs kretprobe event
made through bcc (kretprobes with a chosen maxactive, ceemsnet/runtime/kprobes.py).
Whoever holds the link detaches it with close(); nothing else needs to know
which kind it is (modelled on cilium/ebpf's link.Link). A pinned link stays
attached after close(): the pin holds it until unpin() (ceemsnet/pinned/pins.py).
"""

from __future__ import annotations

import ctypes
import errno
import os

from ceemsnet.runtime import libbpf


class PinUnsupported(OSError):
    """This link cannot be pinned on this kernel (or of this kind)."""


class Link:
    """An attachment of one program. close() detaches it; closing twice is harmless."""

    program: str = ""     # the BPF program's name
    target: str = ""      # what it is attached to: a kernel function, tracepoint or cgroup path
    name: str = ""        # unique in its collection: the pin's name (the program, plus the cgroup id)
    tracefs_event: str | None = None  # kretprobe events: their name in tracefs kprobe_profile
    pin_path: str | None = None

    def close(self) -> None:
        raise NotImplementedError

    def pin(self, path: str) -> None:
        raise PinUnsupported(errno.EOPNOTSUPP, f"{type(self).__name__} links cannot be pinned")

    def unpin(self) -> None:
        """Remove the pin: the link is detached when its last holder closes it."""
        if self.pin_path:
            try:
                os.unlink(self.pin_path)
            except FileNotFoundError:
                pass
            self.pin_path = None

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.program} -> {self.target}{' closed' if self.closed else ''}>"


class LibbpfLink(Link):
    """A libbpf `struct bpf_link *`: bpf_link__destroy() detaches it."""

    def __init__(self, ptr: int, program: str, target: str, name: str = "", pin_path: str | None = None):
        self._ptr = ptr
        self.program = program
        self.target = target
        self.name = name or program
        self.pin_path = pin_path

    @classmethod
    def open_pinned(cls, path: str, program: str, target: str, name: str) -> "LibbpfLink":
        ptr = libbpf.lib().bpf_link__open(path.encode())
        if not ptr:
            err = ctypes.get_errno() or errno.ENOENT
            raise OSError(err, f"cannot open pinned link {path}: {os.strerror(err)}")
        return cls(ptr, program, target, name, path)

    def update_program(self, prog_fd: int, program: str) -> None:
        """Swap the link's program in place (bpf_link_update: cgroup, XDP, netns links): no
        moment without a program, none with two."""
        rc = libbpf.lib().bpf_link_update(libbpf.lib().bpf_link__fd(self._ptr), prog_fd, None)
        if rc < 0:
            raise OSError(-rc, f"bpf_link_update({self.program} -> {program}): {os.strerror(-rc)}")
        self.program = program

    # Pinned with bpf_obj_pin on the link's fd, not bpf_link__pin: libbpf would remember the
    # path and refuse a second pin while it does, and the pin's directory can be renamed
    # (ceemsnet/pinned/sequence.py commits an upgrade's pins so); pin_path here is the record.
    def pin(self, path: str) -> None:
        lb = libbpf.lib()
        fd = lb.bpf_link__fd(self._ptr) if self._ptr else -errno.EBADF
        rc = lb.bpf_obj_pin(fd, path.encode()) if fd >= 0 else fd
        if rc < 0:
            err = -rc if rc < -1 else (ctypes.get_errno() or errno.EINVAL)
            # not a BPF link (a perf event or tracefs probe on an older kernel): nothing to pin
            raise PinUnsupported(err, f"pinning the {self.program} link: {os.strerror(err)}")
        self.pin_path = path

    @property
    def closed(self) -> bool:
        return not self._ptr

    def close(self) -> None:
        if self._ptr:
            libbpf.lib().bpf_link__destroy(self._ptr)
            self._ptr = 0


def close_all(links) -> None:
    """Close every link, the last attached first (return probes before their entries)."""
    for ln in reversed(list(links)):
        ln.close()
