"""The catalogue of committed BPF objects and what each one assumes.

One entry per file in bpf/objs/. For every hooked kernel function an object
records the programs that serve it and the prototype it was compiled for,
so the choice (ceemsnet/choice.py) can check that prototype against the
running kernel's BTF before anything is loaded. tests/unit checks this table
against the ELF files themselves.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from packaging.version import Version

from .kernel import Signature

OBJ_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf", "objs")

FAMILIES = ("fexit", "kretprobe", "tracepoint")
SUPPORTED_MIN = Version("4.18")
MIN_REASON = ("bpf_get_current_cgroup_id() (4.18) and kernel BTF are needed; "
              "4.18 is the oldest kernel supported (RHEL 8)")


@dataclass(frozen=True)
class FamilyRule:
    name: str
    arches: tuple[str, ...]
    since: Version
    why: str


FAMILY_RULES = {
    "fexit": FamilyRule("fexit", ("x86_64",), Version("5.5"),
                        "BPF trampolines (fexit) arrived in 5.5; ceemsnet uses them on x86_64"),
    "kretprobe": FamilyRule("kretprobe", ("x86_64", "aarch64"), Version("4.18"),
                            "kprobes need CONFIG_KPROBES"),
    "tracepoint": FamilyRule("tracepoint", ("x86_64", "aarch64"), Version("6.3"),
                             "the sock_send_length/sock_recv_length tracepoints arrived in 6.3"),
}


@dataclass(frozen=True)
class Hook:
    """How one object serves one kernel function."""
    subsystem: str
    function: str
    programs: tuple[str, ...]          # programs to autoload for it; () = not served
    expects: Signature | None = None   # prototype the programs were compiled for
    reads: tuple[int, ...] | None = None  # argument positions read; None = whole prototype
    tracepoint: str | None = None      # served through this raw tracepoint instead
    removed_in: Version | None = None  # function gone from mainline since
    not_served: str = ""               # why the object does not serve it, if programs == ()


@dataclass(frozen=True)
class BpfObject:
    file: str
    subsystem: str
    family: str
    arches: tuple[str, ...]
    since: Version          # first kernel of its signature era
    until: Version | None   # first kernel of the next era (None: open)
    hooks: tuple[Hook, ...] = field(default=())

    @property
    def path(self) -> str:
        return os.path.join(OBJ_DIR, self.file)

    @property
    def era(self) -> str:
        return f">= {self.since}" + (f", < {self.until}" if self.until else "")


# ---- net ----------------------------------------------------------------

SK, MSG = ("sk", "struct sock *"), ("msg", "struct msghdr *")
SEND = {
    "tcp_sendmsg": Signature("int", (SK, MSG, ("size", "size_t"))),
    "udp_sendmsg": Signature("int", (SK, MSG, ("len", "size_t"))),
    "udpv6_sendmsg": Signature("int", (SK, MSG, ("len", "size_t"))),
}
SENDPAGE = Signature("int", (SK, ("page", "struct page *"), ("offset", "int"), ("size", "size_t"),
                             ("flags", "int")))
SENDPAGE_GONE = Version("6.5")  # commit dc97391e6610: ->sendpage() replaced by MSG_SPLICE_PAGES
# recvmsg per era; the blocking flag's name differs between tcp ("nonblock")
# and udp ("noblock"), so it is compared by type only ("").
RECV = {
    1: Signature("int", (SK, MSG, ("len", "size_t"), ("", "int"), ("flags", "int"), ("addr_len", "int *"))),
    2: Signature("int", (SK, MSG, ("len", "size_t"), ("flags", "int"), ("addr_len", "int *"))),
    3: Signature("int", (SK, MSG, ("len", "size_t"), ("flags", "int"))),
}
RECV_FUNCS = ("tcp_recvmsg", "udp_recvmsg", "udpv6_recvmsg")
NET_FUNCTIONS = ("tcp_sendmsg", "tcp_recvmsg", "udp_sendmsg", "udp_recvmsg",
                 "udpv6_sendmsg", "udpv6_recvmsg", "tcp_sendpage", "udp_sendpage")
SOCK_TP = Signature("void", (("", "struct sock *"), ("", "int"), ("", "int")))


def _net_fexit(era: int) -> tuple[Hook, ...]:
    hooks = [Hook("net", f, (f"fexit_{f}",), SEND[f]) for f in SEND]
    hooks += [Hook("net", f, (f"fexit_{f}",), RECV[era]) for f in RECV_FUNCS]
    hooks += [Hook("net", f, (f"fexit_{f}",), SENDPAGE, removed_in=SENDPAGE_GONE)
              for f in ("tcp_sendpage", "udp_sendpage")]
    return tuple(hooks)


def _net_kretprobe(era: int) -> tuple[Hook, ...]:
    flags_at = 4 if era == 1 else 3
    hooks = [Hook("net", f, (f"kprobe_{f}", f"kretprobe_{f}"), SEND[f], reads=(0,)) for f in SEND]
    hooks += [Hook("net", f, (f"kprobe_{f}", f"kretprobe_{f}"), RECV[era], reads=(0, flags_at))
              for f in RECV_FUNCS]
    hooks += [Hook("net", f, (f"kprobe_{f}", f"kretprobe_{f}"), SENDPAGE, reads=(0,),
                   removed_in=SENDPAGE_GONE) for f in ("tcp_sendpage", "udp_sendpage")]
    return tuple(hooks)


def _net_tracepoint() -> tuple[Hook, ...]:
    hooks = [Hook("net", f, ("tp_btf_sock_send_length",), SOCK_TP, tracepoint="sock_send_length")
             for f in SEND]
    hooks += [Hook("net", f, ("tp_btf_sock_recv_length",), SOCK_TP, tracepoint="sock_recv_length")
              for f in RECV_FUNCS]
    hooks += [Hook("net", f, (), removed_in=SENDPAGE_GONE,
                   not_served="sendfile()/splice() to a socket took ->sendpage() before 6.5, which "
                              "bypasses sock_sendmsg() and so the sock_send_length tracepoint")
              for f in ("tcp_sendpage", "udp_sendpage")]
    return tuple(hooks)


V = Version
CATALOGUE: tuple[BpfObject, ...] = (
    BpfObject("net-fexit-5.5-x86.bpf.o", "net", "fexit", ("x86_64",), V("5.5"), V("5.19"), _net_fexit(1)),
    BpfObject("net-fexit-5.19-x86.bpf.o", "net", "fexit", ("x86_64",), V("5.19"), V("7.1"), _net_fexit(2)),
    BpfObject("net-fexit-7.1-x86.bpf.o", "net", "fexit", ("x86_64",), V("7.1"), None, _net_fexit(3)),
    BpfObject("net-kretprobe-4.18-x86.bpf.o", "net", "kretprobe", ("x86_64",), V("4.18"), V("5.19"),
              _net_kretprobe(1)),
    BpfObject("net-kretprobe-5.19-x86.bpf.o", "net", "kretprobe", ("x86_64",), V("5.19"), None,
              _net_kretprobe(2)),
    BpfObject("net-kretprobe-4.18-arm64.bpf.o", "net", "kretprobe", ("aarch64",), V("4.18"), V("5.19"),
              _net_kretprobe(1)),
    BpfObject("net-kretprobe-5.19-arm64.bpf.o", "net", "kretprobe", ("aarch64",), V("5.19"), None,
              _net_kretprobe(2)),
    BpfObject("net-tracepoint-6.3.bpf.o", "net", "tracepoint", ("x86_64", "aarch64"), V("6.3"), None,
              _net_tracepoint()),
)

SUBSYSTEMS = {"net": NET_FUNCTIONS}
MAPS = {"net": ("net_stats", "net_drops")}


def objects_for(subsystem: str, family: str, arch: str) -> list[BpfObject]:
    return [o for o in CATALOGUE if o.subsystem == subsystem and o.family == family and arch in o.arches]
