"""Links: one type for every way ceemsnet attaches a program to the kernel.

A Link is what keeps a program attached: a libbpf `struct bpf_link *` (fexit,
tp_btf, perf-event kprobes, cgroup_skb links) or a tracefs kretprobe event
made through bcc (kretprobes with a chosen maxactive, ceemsnet/kprobes.py).
Whoever holds the link detaches it with close(); nothing else needs to know
which kind it is (modelled on cilium/ebpf's link.Link).
"""

from __future__ import annotations

from . import libbpf


class Link:
    """An attachment of one program. close() detaches it; closing twice is harmless."""

    program: str = ""     # the BPF program's name
    target: str = ""      # what it is attached to: a kernel function, tracepoint or cgroup path
    tracefs_event: str | None = None  # kretprobe events: their name in tracefs kprobe_profile

    def close(self) -> None:
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.program} -> {self.target}{' closed' if self.closed else ''}>"


class LibbpfLink(Link):
    """A libbpf `struct bpf_link *`: bpf_link__destroy() detaches it."""

    def __init__(self, ptr: int, program: str, target: str):
        self._ptr = ptr
        self.program = program
        self.target = target

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
