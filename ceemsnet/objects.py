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
# Where a subsystem's rule differs from the family's.
SUBSYSTEM_RULES = {
    ("vfs", "tracepoint"): FamilyRule(
        "tracepoint", ("x86_64",), Version("5.5"),
        "tp_btf on the sys_exit raw tracepoint needs 5.5; the object uses x86_64 syscall numbers"),
}


def family_rule(subsystem: str, family: str) -> FamilyRule:
    return SUBSYSTEM_RULES.get((subsystem, family), FAMILY_RULES[family])


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
    note: str = ""                     # how a tracepoint-served hook counts, shown when planned ok


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
    send_note = ("counted at tracepoint sock:sock_send_length (net/socket.c), "
                 "which every send on a socket passes")
    recv_note = ("counted at tracepoint sock:sock_recv_length (net/socket.c), "
                 "which every receive on a socket passes")
    hooks = [Hook("net", f, ("tp_btf_sock_send_length",), SOCK_TP, tracepoint="sock_send_length",
                  note=send_note) for f in SEND]
    hooks += [Hook("net", f, ("tp_btf_sock_recv_length",), SOCK_TP, tracepoint="sock_recv_length",
                   note=recv_note) for f in RECV_FUNCS]
    hooks += [Hook("net", f, (), removed_in=SENDPAGE_GONE,
                   not_served="sendfile()/splice() to a socket took ->sendpage() before 6.5, which "
                              "bypasses sock_sendmsg() and so the sock_send_length tracepoint")
              for f in ("tcp_sendpage", "udp_sendpage")]
    return tuple(hooks)


# ---- vfs ----------------------------------------------------------------

FILE = ("file", "struct file *")
RW = Signature("ssize_t", (FILE, ("buf", "char *"), ("count", "size_t"), ("pos", "loff_t *")))
RWV = Signature("ssize_t", (FILE, ("vec", "struct iovec *"), ("vlen", "long unsigned int"), ("pos", "loff_t *"),
                            ("flags", "rwf_t")))
OPEN = Signature("int", (("path", "struct path *"), FILE))
DIR, DENTRY, MODE = ("dir", "struct inode *"), ("dentry", "struct dentry *"), ("mode", "umode_t")
# The namespace argument: none before 5.12, then user_namespace, then mnt_idmap
# (6.3, commit abf08576afe3); its name varies (mnt_userns, idmap), its type decides.
VFS_NS = {1: (), 2: (("", "struct user_namespace *"),), 3: (("", "struct mnt_idmap *"),),
          4: (("", "struct mnt_idmap *"),)}
VFS_FUNCTIONS = ("vfs_read", "vfs_write", "vfs_readv", "vfs_writev", "vfs_open", "vfs_create",
                 "vfs_unlink", "vfs_mkdir", "vfs_rmdir")


def _vfs_sigs(era: int) -> dict[str, Signature]:
    ns = VFS_NS[era]
    # 6.15: vfs_mkdir returns the new dentry or an ERR_PTR (commit c54b386969a5)
    mkdir_ret = "struct dentry *" if era == 4 else "int"
    return {
        "vfs_read": RW, "vfs_write": RW, "vfs_readv": RWV, "vfs_writev": RWV, "vfs_open": OPEN,
        "vfs_create": Signature("int", ns + (DIR, DENTRY, MODE, ("want_excl", "bool"))),
        "vfs_unlink": Signature("int", ns + (DIR, DENTRY, ("", "struct inode **"))),
        "vfs_mkdir": Signature(mkdir_ret, ns + (DIR, DENTRY, MODE)),
        "vfs_rmdir": Signature("int", ns + (DIR, DENTRY)),
    }


def _vfs_fexit(era: int) -> tuple[Hook, ...]:
    sigs = _vfs_sigs(era)
    return tuple(Hook("vfs", f, (f"fexit_{f}",), sigs[f]) for f in VFS_FUNCTIONS)


def _vfs_kretprobe(era: int) -> tuple[Hook, ...]:
    # the entry probe reads the file (rw), the path (open) or the parent
    # directory, which follows the namespace argument from 5.12 on
    sigs = _vfs_sigs(era)
    dir_at = 0 if era == 1 else 1
    reads = {f: (0,) for f in ("vfs_read", "vfs_write", "vfs_readv", "vfs_writev", "vfs_open")}
    reads.update({f: (dir_at,) for f in ("vfs_create", "vfs_unlink", "vfs_mkdir", "vfs_rmdir")})
    return tuple(Hook("vfs", f, (f"kprobe_{f}", f"kretprobe_{f}"), sigs[f], reads=reads[f])
                 for f in VFS_FUNCTIONS)


SYS_TP = Signature("void", (("", "struct pt_regs *"), ("", "long int")))  # sys_exit(regs, ret)
_SYSCALLS = {
    "vfs_read": "read, pread64, readv, preadv, preadv2 on regular files",
    "vfs_write": "write, pwrite64, writev, pwritev, pwritev2 on regular files",
    "vfs_readv": "readv, preadv, preadv2 (folded into the read counters)",
    "vfs_writev": "writev, pwritev, pwritev2 (folded into the write counters)",
    "vfs_open": "open, openat, openat2 (file system from the returned fd)",
    "vfs_create": "creat, and mknod/mknodat of regular files",
    "vfs_unlink": "unlink, unlinkat (file system not known: fstype unknown)",
    "vfs_mkdir": "mkdir, mkdirat (file system not known)",
    "vfs_rmdir": "rmdir, unlinkat(AT_REMOVEDIR) (file system not known)",
}


def _vfs_tracepoint() -> tuple[Hook, ...]:
    return tuple(Hook("vfs", f, ("tp_btf_sys_exit",), SYS_TP, tracepoint="sys_exit",
                      note=f"counted at the system call boundary (raw tracepoint sys_exit): "
                           f"{_SYSCALLS[f]}; errors include failed path lookups, io_uring and mmap IO "
                           f"are not seen") for f in VFS_FUNCTIONS)


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
    BpfObject("vfs-fexit-5.5-x86.bpf.o", "vfs", "fexit", ("x86_64",), V("5.5"), V("5.12"), _vfs_fexit(1)),
    BpfObject("vfs-fexit-5.12-x86.bpf.o", "vfs", "fexit", ("x86_64",), V("5.12"), V("6.3"), _vfs_fexit(2)),
    BpfObject("vfs-fexit-6.3-x86.bpf.o", "vfs", "fexit", ("x86_64",), V("6.3"), V("6.15"), _vfs_fexit(3)),
    BpfObject("vfs-fexit-6.15-x86.bpf.o", "vfs", "fexit", ("x86_64",), V("6.15"), None, _vfs_fexit(4)),
    *(BpfObject(f"vfs-kretprobe-{since}-{short}.bpf.o", "vfs", "kretprobe", (arch,), V(since), until and V(until),
                _vfs_kretprobe(era))
      for arch, short in (("x86_64", "x86"), ("aarch64", "arm64"))
      for since, until, era in (("4.18", "5.12", 1), ("5.12", "6.15", 2), ("6.15", None, 4))),
    BpfObject("vfs-tracepoint-5.5-x86.bpf.o", "vfs", "tracepoint", ("x86_64",), V("5.5"), None,
              _vfs_tracepoint()),
)

# cgroup_skb: stable program type (4.10+), no eras; attached to cgroups, not
# kernel functions, by ceemsnet/collectors/skb.py. "function" names the hook.
_SKB_HOOKS = (Hook("skb", "cgroup_skb/egress", ("cgroup_skb_egress",)),
              Hook("skb", "cgroup_skb/ingress", ("cgroup_skb_ingress",)))
SKB_OBJECTS = {
    "root": BpfObject("skb-root.bpf.o", "skb", "cgroup_skb", ("x86_64", "aarch64"), V("4.20"), None, _SKB_HOOKS),
    "per-cgroup": BpfObject("skb-cgroup.bpf.o", "skb", "cgroup_skb", ("x86_64", "aarch64"), V("4.20"), None,
                            _SKB_HOOKS),
}
CATALOGUE = CATALOGUE + tuple(SKB_OBJECTS.values())

# subsystems whose objects hook kernel functions (planned by ceemsnet/choice.py)
SUBSYSTEMS = {"net": NET_FUNCTIONS, "vfs": VFS_FUNCTIONS}
MAPS = {"net": ("net_stats", "net_drops"), "vfs": ("vfs_stats", "vfs_drops"),
        "skb": ("skb_stats", "skb_drops")}


def objects_for(subsystem: str, family: str, arch: str) -> list[BpfObject]:
    return [o for o in CATALOGUE if o.subsystem == subsystem and o.family == family and arch in o.arches]
