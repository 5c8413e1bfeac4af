"""The catalogue of committed BPF objects and what each one assumes.

One entry per file in bpf/objs/, and the single source for everything that
names objects: the Makefile builds each one from the entry's source,
defines and target (`python -m ceemsnet.planning.catalogue make-specs`), the choice
(ceemsnet/planning/choice.py) checks each hook's prototype against the running
kernel's BTF before anything is loaded, and tests/unit checks this table
against the ELF files themselves and against the tables in bpf/README.md.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace

from packaging.version import Version

from ceemsnet.runtime.btf import Signature

# The committed objects: bpf/objs in a checkout; /usr/lib/ceemsnet/bpf/objs where the Debian
# package installs them (make deb); CEEMSNET_OBJ_DIR overrides both.
OBJ_DIR = os.environ.get("CEEMSNET_OBJ_DIR") or next(
    (d for d in (os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bpf", "objs")),)
     if os.path.isdir(d)), "/usr/lib/ceemsnet/bpf/objs")

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
    "fexit": FamilyRule("fexit", ("x86_64", "aarch64"), Version("5.5"),
                        "BPF trampolines (fexit) arrived in 5.5"),
    "kretprobe": FamilyRule("kretprobe", ("x86_64", "aarch64"), Version("4.18"),
                            "kprobes need CONFIG_KPROBES"),
    "tracepoint": FamilyRule("tracepoint", ("x86_64", "aarch64"), Version("6.3"),
                             "the sock_send_length/sock_recv_length tracepoints arrived in 6.3"),
}
# Where a subsystem's rule differs from the family's.
SUBSYSTEM_RULES = {
    # one program per counted system call on its syscalls:sys_exit_<name> event; the arguments come
    # from bpf_task_pt_regs() (5.15, commit dd6e10fbd9fb)
    ("vfs", "tracepoint"): FamilyRule(
        "tracepoint", ("x86_64",), Version("5.15"),
        "the syscalls:sys_exit_* programs read the arguments with bpf_task_pt_regs() (5.15); "
        "they use x86_64 argument registers"),
}


# Where an arch's rule differs from the family's (a subsystem's rule comes first).
ARCH_RULES = {
    # arm64 has had BPF trampolines since 6.0 (commit efc9909fdce0), but a trampoline reaches a
    # kernel function through an ftrace direct call, which arm64 gained in 6.4 (commit
    # 2aa6ac03516d "arm64: ftrace: Add direct call support"): before, the attach fails with
    # ENOTSUPP (524), as Debian 12's arm64 6.1 does
    ("fexit", "aarch64"): FamilyRule(
        "fexit", ("aarch64",), Version("6.4"),
        "on arm64 a BPF trampoline reaches a kernel function through an ftrace direct call, added in 6.4 "
        "(commit 2aa6ac03516d, CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS); older arm64 kernels refuse the "
        "attach with error 524 (ENOTSUPP)"),
}


def family_rule(subsystem: str, family: str, arch: str | None = None) -> FamilyRule:
    """The rule for a family: a subsystem's own, else the arch's (when arch is given), else the family's."""
    return SUBSYSTEM_RULES.get((subsystem, family)) or ARCH_RULES.get((family, arch or "")) or FAMILY_RULES[family]


@dataclass(frozen=True)
class Alternative:
    """One way of serving a hook, for the kernels whose trace events have the prototypes its
    programs were compiled for (a hook whose event changed prototype has one per prototype, in
    the same object: bpf/vfs/vfs_uring.h). The planner takes the first alternative whose every
    event matches this kernel's BTF; without BTF (probe --kernel), the first whose `kernels`
    hold the version."""
    label: str                                  # which prototype, as probe names it
    programs: tuple[str, ...]                   # autoloaded when this alternative is taken
    # (raw tracepoint, prototype without its leading void *, argument positions read: None = all)
    events: tuple[tuple[str, Signature, tuple[int, ...] | None], ...]
    kernels: tuple[tuple[Version, Version | None], ...]  # version rule: [since, until) ranges
    note: str = ""                              # what it counts and misses, shown by probe when taken


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
    note: str = ""                     # what the hook counts, shown by probe when planned ok
    absent: str = ""                   # what goes uncounted where the function is not in BTF, shown by probe
    # where `function` is not in BTF (the compiler inlined it): the functions hooked instead, each by
    # programs kprobe_<f> and kretprobe_<f> (prototype INLINED_AT), all of them or none
    inlined_at: tuple[str, ...] = ()
    # carried by every family's objects alike (trace events, which need neither trampolines nor
    # kprobes): it does not make a family usable by itself, or a kretprobe object whose kprobes
    # cannot attach would be kept for these alone (ceemsnet/planning/select.py)
    rides: bool = False
    # served by one of these instead of `programs` (which is then ()): not a kernel function but
    # trace events whose prototype changed; `function` names what is counted (choice.py)
    alternatives: tuple[Alternative, ...] = ()

    @property
    def inlined_programs(self) -> tuple[str, ...]:
        return tuple(p for f in self.inlined_at for p in (f"kprobe_{f}", f"kretprobe_{f}"))

    @property
    def alternative_programs(self) -> tuple[str, ...]:
        """Every program of every alternative, each once: what the object holds for this hook."""
        out: list[str] = []
        for a in self.alternatives:
            out += [p for p in a.programs if p not in out]
        return tuple(out)


@dataclass(frozen=True)
class BpfObject:
    file: str
    subsystem: str
    family: str
    arches: tuple[str, ...]
    since: Version          # first kernel of its signature era (and of every helper it calls)
    until: Version | None   # first kernel of the next era (None: open)
    hooks: tuple[Hook, ...] = field(default=())
    # how `make objs` builds it: clang -D<define>... -D__TARGET_ARCH_<target> <source>
    source: str = ""                 # relative to the checkout
    defines: tuple[str, ...] = ()    # NAME or NAME=VALUE
    target: str = "x86"              # libbpf's __TARGET_ARCH_ suffix: x86 | arm64
    layout: str = "hash"             # counters: "hash" (per-CPU hash) or "slots" (bpf/*/*_slots.h)
    modules: tuple[str, ...] = ()    # kernel modules whose BTF its CO-RE relocations and hooks need

    @property
    def path(self) -> str:
        return os.path.join(OBJ_DIR, self.file)

    def make_spec(self) -> str:
        """One whitespace-free token: FILE:SOURCE:TARGET:DEFINE,DEFINE..."""
        fields = (self.file, self.source, self.target, ",".join(self.defines))
        for f in fields:
            if not f or any(c in f for c in " \t:$#%"):
                raise ValueError(f"{self.file}: {f!r} cannot go into a make spec")
        return ":".join(fields)


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
          4: (("", "struct mnt_idmap *"),), 5: (("", "struct mnt_idmap *"),)}
# 6.19: directory delegations for knfsd (merge db74a7d02ae2, tag vfs-6.19-rc1.directory.delegations):
# "filelock: add struct delegated_inode" turned vfs_unlink's `struct inode **` into a
# `struct delegated_inode *`; "vfs: allow mkdir/rmdir to wait for delegation break on parent"
# gave vfs_mkdir and vfs_rmdir one; "vfs: clean up argument list for vfs_create()" dropped its
# `dir` (always the dentry's parent) and `want_excl` (always true), and "vfs: make vfs_create
# break delegations on parent directory" added a `struct delegated_inode *`.
DELEG = ("", "struct delegated_inode *")
# File IO that never passes the vfs_* functions above, each in its own block below and its own
# header in bpf/vfs/: opens inside file systems with ->atomic_open (finish_open, vfs_open.h),
# io_uring (vfs_uring.h) and AIO (vfs_aio.h).
OPEN_FUNCTIONS: tuple[str, ...] = ("finish_open",)
URING_FUNCTIONS = ("io_uring",)  # its reads and writes (one hook: _uring_hooks)
AIO_FUNCTIONS: tuple[str, ...] = ("aio_read", "aio_write", "aio_complete_rw")
# sendfile(), splice() and copy_file_range() (vfs_splice.h): their system calls
SPLICE_FUNCTIONS = ("sendfile", "splice", "copy_file_range")
VFS_FUNCTIONS = ("vfs_read", "vfs_write", "vfs_readv", "vfs_writev", "vfs_open", "vfs_create",
                 "vfs_unlink", "vfs_mkdir", "vfs_rmdir") + OPEN_FUNCTIONS + URING_FUNCTIONS + AIO_FUNCTIONS \
    + SPLICE_FUNCTIONS


def _vfs_sigs(era: int) -> dict[str, Signature]:
    ns = VFS_NS[era]
    # 6.15: vfs_mkdir returns the new dentry or an ERR_PTR (commit c54b386969a5)
    mkdir_ret = "struct dentry *" if era >= 4 else "int"
    deleg = (DELEG,) if era >= 5 else ()  # 6.19, see DELEG
    return {
        "vfs_read": RW, "vfs_write": RW, "vfs_readv": RWV, "vfs_writev": RWV, "vfs_open": OPEN,
        "vfs_create": Signature("int", ns + (DENTRY, MODE, DELEG)) if era >= 5 else
                      Signature("int", ns + (DIR, DENTRY, MODE, ("want_excl", "bool"))),
        "vfs_unlink": Signature("int", ns + (DIR, DENTRY, DELEG if era >= 5 else ("", "struct inode **"))),
        "vfs_mkdir": Signature(mkdir_ret, ns + (DIR, DENTRY, MODE) + deleg),
        "vfs_rmdir": Signature("int", ns + (DIR, DENTRY) + deleg),
    }


# What each op counts where a vfs_* function is hooked itself (fexit,
# kretprobe); shown by `probe` beside the prototype check.
_ATOMIC_OPEN = ("file systems with ->atomic_open (NFS, CIFS/SMB, FUSE, Lustre, Ceph, 9p, GFS2) open, and create, "
                "inside the file system through finish_open(), never vfs_open(); so do O_TMPFILE opens: those "
                "are counted at hook finish_open, the same way")
# What one open and one create are in the fexit and kretprobe families (bpf/README.md, "Filesystem IO")
_OPEN_IS = ("one open of a file by the kernel's open path (open(), openat(), openat2(), creat(), exec, "
            "in-kernel dentry_open()), counted once, errors of the open itself included; not the kernel's own "
            "opens of a file it never gives a descriptor (FMODE_NOACCOUNT: the backing file overlayfs or FUSE "
            "passthrough opens under the user's file, cachefiles), so an open on overlayfs is one open, of "
            "overlayfs")
_VFS_NOTES = {
    "vfs_open": f"op open: {_OPEN_IS}; here when it reaches vfs_open(), charged to the opened path's file system; "
                "plus op create when the open created the file (FMODE_CREATED: open(O_CREAT), creat()). "
                f"{_ATOMIC_OPEN}",
    "vfs_create": "op create: mknod()/mknodat() of regular files; open(O_CREAT) and creat() are counted with the "
                  "opens (FMODE_CREATED); not a vfs_create() made under overridden credentials (cred != "
                  "real_cred: overlayfs on its upper and work directories, nfsd, ksmbd, cachefiles), the inner call "
                  "of a create already counted where the user made it, or a server's for its clients",
    "vfs_unlink": "op unlink: unlink(), unlinkat() of non-directories, charged to the parent directory's file "
                  "system; errors only from vfs_unlink() itself, not failed path lookups",
    "vfs_mkdir": "op mkdir: mkdir(), mkdirat(), charged to the parent directory's file system",
    "vfs_rmdir": "op rmdir: rmdir(), unlinkat(AT_REMOVEDIR), charged to the parent directory's file system",
}


# Where a kernel has no vfs_readv/vfs_writev in its BTF (Debian 11's arm64 5.10: gcc inlined both
# into their system calls, and do_readv, do_preadv, do_iter_read with them), nothing is hooked for
# them and that IO is not counted by these families; probe says so.
_RWV_CALLS = {"vfs_readv": ("readv", "preadv", "preadv2"), "vfs_writev": ("writev", "pwritev", "pwritev2")}
_RWV_ABSENT = {f: f"{', '.join(calls)} are not counted on this kernel (it inlined {f})"
               for f, calls in _RWV_CALLS.items()}
# The era-1 arm64 kretprobe object counts them at the system calls' own wrappers there instead
# (bpf/vfs/vfs.bpf.c, fd_file()): long __arm64_sys_<call>(const struct pt_regs *regs).
INLINED_AT = Signature("long int", (("", "struct pt_regs *"),))
_RWV_SYSCALLS = {f: tuple(f"__arm64_sys_{c}" for c in calls) for f, calls in _RWV_CALLS.items()}


# Before 5.12 (era 1) rmdir is also counted at do_rmdir(), for kernels whose compiler split
# vfs_rmdir() so that rmdir(2) never calls it (Debian 11's 5.10: vfs_rmdir.part.0); see
# rmdir_calls in bpf/vfs/vfs.h. Extra programs of the vfs_rmdir hook, per family.
_RMDIR_SPLIT = {"fexit": ("fentry_vfs_rmdir", "fentry_do_rmdir", "fentry_security_inode_rmdir", "fexit_do_rmdir"),
                "kretprobe": ("kprobe_do_rmdir", "kprobe_security_inode_rmdir", "kretprobe_do_rmdir")}


def _vfs_programs(family: str, era: int, f: str) -> tuple[str, ...]:
    own = (f"fexit_{f}",) if family == "fexit" else (f"kprobe_{f}", f"kretprobe_{f}")
    return own + (_RMDIR_SPLIT[family] if f == "vfs_rmdir" and era == 1 else ())


_VFS_OWN = VFS_FUNCTIONS[:9]  # the vfs_* functions, hooked themselves (fexit, kretprobe) or at system calls


# ---- opens inside file systems (->atomic_open: finish_open) -------------


# int finish_open(struct file *file, struct dentry *dentry, int (*open)(struct inode *, struct file *)),
# the same in every kernel's BTF from 5.10 to 7.3 (exported: never inlined into a module's call)
FINISH_OPEN = Signature("int", (FILE, DENTRY, ("open", "fnptr *")))
_FINISH_OPEN_NOTE = (f"op open: {_OPEN_IS}; here when the file system opens the file itself (->atomic_open: "
                     "NFS, CIFS/SMB, FUSE, Lustre, Ceph, 9p, GFS2; O_TMPFILE), charged to the dentry's file "
                     "system; plus op create when that open created the file (FMODE_CREATED, set by the file "
                     "system before finish_open())")
_FINISH_OPEN_ABSENT = ("opens and creates inside file systems with ->atomic_open (NFS, CIFS/SMB, FUSE, Lustre, "
                       "Ceph, 9p, GFS2) and O_TMPFILE opens are not counted on this kernel: only opens that reach "
                       "vfs_open()")


def _open_hooks(family: str, era: int, arch: str) -> tuple[Hook, ...]:
    """Hooks of OPEN_FUNCTIONS for one object (bpf/vfs/vfs_open.h): finish_open(), beside vfs_open(), in the
    fexit and kretprobe objects of every era (the kretprobe entry reads the file's f_mode and the dentry).
    The tracepoint family counts opens at the open system calls' exit, which ->atomic_open opens pass too:
    nothing to add there."""
    if family == "fexit":
        return (Hook("vfs", "finish_open", ("fexit_finish_open",), FINISH_OPEN, note=_FINISH_OPEN_NOTE,
                     absent=_FINISH_OPEN_ABSENT),)
    if family == "kretprobe":
        return (Hook("vfs", "finish_open", ("kprobe_finish_open", "kretprobe_finish_open"), FINISH_OPEN,
                     reads=(0, 1), note=_FINISH_OPEN_NOTE, absent=_FINISH_OPEN_ABSENT),)
    return ()


# ---- io_uring ------------------------------------------------------------


# io_uring:io_uring_complete, one event per CQE, per prototype (include/trace/events/io_uring.h):
#   5.5: (void *ctx, u64 user_data, long res); 5.13 ("io_uring: include cflags in completion trace
#   event") adds unsigned cflags; later res is an int
#   5.18 ("io-uring: Make tracepoints consistent"): (void *ctx, void *req, u64 user_data, int res,
#   unsigned cflags); 5.19 ("io_uring: add tracing for additional CQE32 fields") adds u64 extra1, extra2
#   6.13 ("io_uring: clean up cqe trace points"): (struct io_ring_ctx *ctx, void *req, struct io_uring_cqe *cqe)
# io_uring:io_uring_submit_sqe got the request in 5.14 ("io_uring: Add to traces the req pointer when
# available"): (void *ctx, void *req, u8 opcode, u64 user_data, u32 flags, bool force_nonblock,
# bool sq_thread); 5.18 swapped opcode and user_data; 6.0 made it (struct io_kiocb *req, bool).
# The 5.10 stable series imported 5.15's io_uring (Debian 11's 5.10.0-32 has these prototypes).
_VOID = ("", "void *")
URING_CQE = Signature("void", (("", "struct io_ring_ctx *"), _VOID, ("", "struct io_uring_cqe *")))
URING_REQ = Signature("void", (_VOID, _VOID, ("", "u64"), ("", "int")))        # 5.18-6.12: reads 0-3
URING_DONE = Signature("void", (_VOID, ("", "u64")))                           # 5.13-5.17: ctx, user_data
URING_SQE = Signature("void", (_VOID, _VOID, ("", "u8"), ("", "u64")))         # 5.14-5.17: ctx, req, opcode, user_data
_URING_OPS = ("READ, WRITE, READV, WRITEV, READ_FIXED, WRITE_FIXED (and READV_FIXED, WRITEV_FIXED, 6.15) on "
              "regular files, in the read and write counters (bytes and a call at res >= 0, an error below), "
              "keyed by the file's file system")
_URING_MISSED = ("not counted: requests with IOSQE_CQE_SKIP_SUCCESS that succeed (they post no CQE), CQEs that "
                 "overflow the CQ ring (posted later from the overflow list, without the event), and io_uring's "
                 "other file IO: SPLICE, TEE, URING_CMD (NVMe passthrough); socket IO is the net collector's")
URING_ALTERNATIVES = (
    Alternative("cqe", ("tp_btf_uring_cqe",), (("io_uring_complete", URING_CQE, None),), ((Version("6.13"), None),),
                f"counted at tracepoint io_uring:io_uring_complete(ctx, req, cqe), once per CQE: {_URING_OPS}; "
                f"charged to the submitter's cgroup (req->tctx->task); {_URING_MISSED}"),
    Alternative("req", ("tp_btf_uring_req",), (("io_uring_complete", URING_REQ, (0, 1, 2, 3)),),
                ((Version("5.18"), Version("6.13")),),
                f"counted at tracepoint io_uring:io_uring_complete(ctx, req, user_data, res, ...), once per CQE "
                f"(auxiliary CQEs carry no request): {_URING_OPS}; charged to the submitter's cgroup (req->task); "
                f"{_URING_MISSED}"),
    Alternative("submission stash", ("tp_btf_uring_sqe", "tp_btf_uring_done"),
                (("io_uring_submit_sqe", URING_SQE, (0, 1, 2, 3)), ("io_uring_complete", URING_DONE, (0, 1))),
                ((Version("5.10.162"), Version("5.11")), (Version("5.14"), Version("5.18"))),
                f"counted at tracepoint io_uring:io_uring_complete(ctx, user_data, res, cflags), which names no "
                f"request: io_uring:io_uring_submit_sqe keeps each read's or write's cgroup (the submitting "
                f"thread's: the io_uring_enter() caller or the SQPOLL thread, one of its threads), file system "
                f"and op under (ring, user_data) until its CQE: {_URING_OPS}; also not counted: a request whose "
                f"(ring, user_data) another one in flight on the same ring reuses (one of the two), requests "
                f"refused before the submission event fires (their preparation: EBADF of a file not open for "
                f"that direction, EINVAL), requests submitted before the exporter attached; {_URING_MISSED}"),
)
_URING_NONE = ("io_uring reads and writes are not counted on this kernel: its io_uring trace events name no "
               "request (before 5.14, and 5.10 stable kernels before they imported 5.15's io_uring), so nothing "
               "tells the file or the submitter")


def _uring_hooks(family: str, era: int, arch: str) -> tuple[Hook, ...]:
    """Hooks of URING_FUNCTIONS for one object (bpf/vfs/vfs_uring.h): tp_btf programs in every family
    (BTF and 5.5; neither trampolines nor kprobes), one per prototype of the io_uring events."""
    return (Hook("vfs", "io_uring", (), tracepoint="io_uring_complete", alternatives=URING_ALTERNATIVES,
                 absent=_URING_NONE, rides=True),)


# ---- AIO (io_submit) -----------------------------------------------------


# fs/aio.c calls ->read_iter/->write_iter itself, never vfs_read/vfs_write: each request is
# stashed at aio_read/aio_write's entry with the submitter's cgroup and counted at
# aio_complete_rw (its ki_complete), in whatever context the IO ends; a request aio_read/aio_write
# refuse (return < 0) never completes and is an error. See bpf/vfs/vfs_aio.h.
AIO_RW = Signature("int", (("req", "struct kiocb *"), ("iocb", "struct iocb *"), ("vectored", "bool"),
                           ("compat", "bool")))
# void aio_complete_rw(struct kiocb *kiocb, long res), plus long res2 before 5.16 (commit
# 6b19b766e8f0): the programs read the first two
AIO_COMPLETE = Signature("void", (("kiocb", "struct kiocb *"), ("res", "long int")))
_AIO_OP = {"aio_read": "read", "aio_write": "write"}
_AIO_NOTES = {
    **{f: f"AIO (io_submit) {op}s (IOCB_CMD_P{op.upper()}, P{op.upper()}V), folded into the {op} counters and "
          "charged to the submitting task's cgroup: the request is remembered here and counted when it "
          "completes (aio_complete_rw); a request refused here is an error" for f, op in _AIO_OP.items()},
    "aio_complete_rw": "AIO completions: the bytes (or the error) of each request remembered at aio_read/"
                       "aio_write, whatever context the IO ends in (O_DIRECT: interrupt or workqueue), on "
                       "regular files",
}
_AIO_ABSENT = {
    **{f: f"AIO (io_submit) {op}s are not counted on this kernel (it inlined {f})" for f, op in _AIO_OP.items()},
    "aio_complete_rw": "AIO (io_submit) reads and writes are not counted on this kernel",
}
_AIO_TP_NOTES = {
    **{f: f"AIO {op}s (IOCB_CMD_P{op.upper()}, P{op.upper()}V on regular files), folded into the {op} "
          "counters and charged to the submitting task's cgroup: each iocb of an io_submit() is remembered "
          "at its entry (syscalls:sys_enter_io_submit)" for f, op in _AIO_OP.items()},
    "aio_complete_rw": "AIO completions, counted when reaped by io_getevents or io_pgetevents "
                       "(syscalls:sys_exit_*: each io_event's res); not seen: events reaped from the ring in "
                       "user space (fio --userspace_reap), events never reaped, iocbs or events beyond 128 "
                       "per call, and requests io_submit() refuses (not counted as errors)",
}


def _aio_hooks(family: str, era: int, arch: str) -> tuple[Hook, ...]:
    """Hooks of AIO_FUNCTIONS for one object (bpf/vfs/vfs_aio.h)."""
    if family == "tracepoint":
        programs = {"aio_read": ("tp_sys_enter_io_submit",), "aio_write": ("tp_sys_enter_io_submit",),
                    "aio_complete_rw": ("tp_sys_exit_io_getevents", "tp_sys_exit_io_pgetevents")}
        return tuple(Hook("vfs", f, programs[f], SYS_TP, tracepoint="sys_exit" if f == "aio_complete_rw"
                          else "sys_enter", note=_AIO_TP_NOTES[f]) for f in AIO_FUNCTIONS)
    # fexit: the return value follows the last argument, so the whole prototype matters; a kprobe
    # pair reads the request (argument 1) and the return value
    entry, ret, reads = ("fentry", "fexit", None) if family == "fexit" else ("kprobe", "kretprobe", (0,))
    return tuple(Hook("vfs", f, (f"{entry}_{f}", f"{ret}_{f}"), AIO_RW, reads=reads, note=_AIO_NOTES[f],
                      absent=_AIO_ABSENT[f]) for f in _AIO_OP) + \
        (Hook("vfs", "aio_complete_rw", (f"{entry}_aio_complete_rw",), AIO_COMPLETE, reads=(0, 1),
              note=_AIO_NOTES["aio_complete_rw"], absent=_AIO_ABSENT["aio_complete_rw"]),)


# ---- sendfile, splice, copy_file_range -----------------------------------

# system call -> (its trace events' name, what is counted)
_SPLICE_CALLS = {
    "sendfile": ("sendfile64", "sendfile(): its bytes as read bytes of the input file, and as written bytes "
                               "of the output where that is a file too"),
    "splice": ("splice", "splice(): its bytes as read bytes of the input side or written bytes of the "
                         "output side, whichever is a file (the other is a pipe)"),
    "copy_file_range": ("copy_file_range", "copy_file_range(): its bytes as read bytes of the input file and "
                                           "written bytes of the output file (also where the file system "
                                           "shares extents or the NFS server copies: the bytes the job asked "
                                           "to copy)"),
}


def _splice_hooks(family: str, era: int, arch: str) -> tuple[Hook, ...]:
    """SPLICE_FUNCTIONS (bpf/vfs/vfs_splice.h): at the system call's enter and exit trace events, in
    every family: the kernel moves these bytes through ->splice_read/->splice_write or
    ->copy_file_range, never vfs_read()/vfs_write(), so nothing else counts them."""
    return tuple(Hook("vfs", f, (f"tp_sys_enter_{ev}", f"tp_sys_exit_{ev}"), SYS_TP, tracepoint="sys_exit", rides=True,
                      note=f"counted at the system call (syscalls:sys_enter_{ev}, sys_exit_{ev}): {what}; a "
                           "socket or pipe side is not file IO (sockets are the net collector's); one call per "
                           "file side; an error once, on the input file, else the output")
                 for f, (ev, what) in _SPLICE_CALLS.items())


def _engine_hooks(family: str, era: int, arch: str) -> tuple[Hook, ...]:
    """File IO besides the vfs_* functions, in every object of a family: family "tracepoint" with
    era 0 is the tracepoint family (its TP_ERA does not matter to these hooks)."""
    return _open_hooks(family, era, arch) + _uring_hooks(family, era, arch) + _aio_hooks(family, era, arch) \
        + _splice_hooks(family, era, arch)


def _vfs_fexit(era: int) -> tuple[Hook, ...]:
    sigs = _vfs_sigs(era)
    return tuple(Hook("vfs", f, _vfs_programs("fexit", era, f), sigs[f], note=_VFS_NOTES.get(f, ""),
                      absent=_RWV_ABSENT.get(f, "")) for f in _VFS_OWN) + _engine_hooks("fexit", era, "")


def _vfs_kretprobe(era: int, arch: str) -> tuple[Hook, ...]:
    # the entry probe reads the file (rw), the path and the file (open:
    # f_mode already holds FMODE_CREATED) or the parent directory, which
    # follows the namespace argument from 5.12 on; from 6.19 vfs_create has
    # no directory argument and the probe reads the new dentry's parent (the
    # dentry sits where the directory was)
    sigs = _vfs_sigs(era)
    dir_at = 0 if era == 1 else 1
    reads = {f: (0,) for f in ("vfs_read", "vfs_write", "vfs_readv", "vfs_writev")}
    reads["vfs_open"] = (0, 1)
    reads.update({f: (dir_at,) for f in ("vfs_create", "vfs_unlink", "vfs_mkdir", "vfs_rmdir")})
    return tuple(Hook("vfs", f, _vfs_programs("kretprobe", era, f), sigs[f], reads=reads[f],
                      note=_VFS_NOTES.get(f, ""), absent=_RWV_ABSENT.get(f, ""),
                      inlined_at=_RWV_SYSCALLS.get(f, ()) if era == 1 and arch == "aarch64" else ())
                 for f in _VFS_OWN) + _engine_hooks("kretprobe", era, arch)


SYS_TP = Signature("void", (("", "struct pt_regs *"), ("", "long int")))  # sys_exit(regs, ret)
# The system calls each vfs_* function stands for in the tracepoint family: one program each,
# on that call's syscalls:sys_exit_<name> event (built on the sys_exit tracepoint, checked in BTF).
VFS_SYSCALLS = {
    "vfs_read": ("read", "pread64"),
    "vfs_write": ("write", "pwrite64"),
    "vfs_readv": ("readv", "preadv", "preadv2"),
    "vfs_writev": ("writev", "pwritev", "pwritev2"),
    "vfs_open": ("open", "openat", "openat2", "creat"),
    "vfs_create": ("mknod", "mknodat"),
    "vfs_unlink": ("unlink", "unlinkat"),
    "vfs_mkdir": ("mkdir", "mkdirat"),
    "vfs_rmdir": ("rmdir", "unlinkat"),
}
_LOOKUP = ("calls that fail before the operation is reached are not counted, as with the vfs_* hooks: "
           "path lookups (ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG, EFAULT) and read-only mounts (EROFS)")
_SYSCALLS = {
    "vfs_read": "read, pread64 on regular files",
    "vfs_write": "write, pwrite64 on regular files",
    "vfs_readv": "readv, preadv, preadv2 (folded into the read counters)",
    "vfs_writev": "writev, pwritev, pwritev2 (folded into the write counters)",
    "vfs_open": "op open: open, openat, openat2 and creat (file system from the returned fd; a failed call "
                "is an error of unknown file system); plus op create when the returned file was created by "
                "that call (FMODE_CREATED), so creat() or open(O_CREAT) of an existing file creates nothing; "
                f"{_LOOKUP}, nor opens refused before vfs_open() (EEXIST with O_EXCL, EISDIR, EACCES, EPERM, "
                "EINVAL, EMFILE, ENFILE)",
    "vfs_create": "op create: mknod, mknodat of regular files (file system unknown); creates by open(O_CREAT) "
                  f"and creat are counted with the opens; {_LOOKUP}, nor EEXIST and EINVAL; EACCES of a "
                  "directory on the way is an error here, not at vfs_create",
    "vfs_unlink": f"op unlink: unlink, unlinkat (file system unknown); {_LOOKUP} (unlink of a missing file "
                  "counts nothing); EACCES of a directory on the way is an error here, not at vfs_unlink",
    "vfs_mkdir": f"op mkdir: mkdir, mkdirat (file system unknown); {_LOOKUP}, nor EEXIST (mkdir of an "
                 "existing name); EACCES of a directory on the way is an error here, not at vfs_mkdir",
    "vfs_rmdir": f"op rmdir: rmdir, unlinkat(AT_REMOVEDIR) (file system unknown); {_LOOKUP} but ENOTDIR "
                 "(rmdir of a file: an error), nor EINVAL (rmdir(\".\"))",
}


def _vfs_tracepoint() -> tuple[Hook, ...]:
    return tuple(Hook("vfs", f, tuple(f"tp_sys_exit_{c}" for c in VFS_SYSCALLS[f]), SYS_TP, tracepoint="sys_exit",
                      note=f"counted at the system call boundary (syscalls:sys_exit_* events, only for these "
                           f"calls): {_SYSCALLS[f]}; io_uring is counted by the io_uring hook; mmap IO is not seen") for f in _VFS_OWN) \
        + _engine_hooks("tracepoint", 0, "x86_64")

# ---- rdma ---------------------------------------------------------------

# Module functions (bpf/rdma/rdma.bpf.c): prototypes checked against the module's own BTF
# (/sys/kernel/btf/<module>, runtime/btf.py ModuleBTF). One era: the same in 5.11 (module BTF)
# through 6.12 (checked in the 6.1 and 6.12 guests).
RES = ("res", "struct rdma_restrack_entry *")
RXE_QP, RXE_SKB = ("qp", "struct rxe_qp *"), ("skb", "struct sk_buff *")
RDMA_SIGS = {
    "rdma_restrack_add": Signature("void", (RES,)),
    "rdma_restrack_del": Signature("void", (RES,)),
    # two-phase deletion of QPs, CQs and SRQs (begin_del, then commit_del or abort_del), in
    # Debian's 6.12.118 and its current 6.1 (6.1.0-57 amd64, 6.1.0-56 arm64 export it): they never
    # reach rdma_restrack_del there
    "rdma_restrack_commit_del": Signature("void", (RES,)),
    "rxe_xmit_packet": Signature("int", (RXE_QP, ("pkt", "struct rxe_pkt_info *"), RXE_SKB)),
    "rxe_resp_queue_pkt": Signature("void", (RXE_QP, RXE_SKB)),
    "rxe_comp_queue_pkt": Signature("void", (RXE_QP, RXE_SKB)),
}
RDMA_FUNCTIONS = tuple(RDMA_SIGS)
# the module whose BTF holds each function
RDMA_MODULES = {"rdma_restrack_add": "ib_core", "rdma_restrack_del": "ib_core", "rdma_restrack_commit_del": "ib_core",
                "rxe_xmit_packet": "rdma_rxe",
                "rxe_resp_queue_pkt": "rdma_rxe", "rxe_comp_queue_pkt": "rdma_rxe"}
_RXE_ABSENT = "the rdma_rxe module (soft-RoCE) is not loaded: no RDMA bytes are counted (hardware moves them " \
              "without the kernel; ceemsnet_rdma_port_bytes_total has the ports' own counters)"
_RESTRACK_ABSENT = "ib_core is not loaded (no RDMA device): no RDMA objects are counted"
_COMMIT_ABSENT = "this kernel deletes every object through rdma_restrack_del"
_RDMA_NOTES = {
    "rdma_restrack_add": "objects: every PD, CQ, QP, MR and SRQ user space creates, on any driver, charged to "
                         "the creating task's cgroup (the thread's, whichever made it)",
    "rdma_restrack_del": "objects: each tracked object's destruction",
    "rdma_restrack_commit_del": "objects: the destruction of QPs, CQs and SRQs where the kernel deletes them "
                                "in two phases",
    "rxe_xmit_packet": "bytes (soft-RoCE): SEND and RDMA WRITE payload the requester sends, each packet "
                       "sequence number once (retransmissions not counted again): the queue pair owner's egress",
    "rxe_resp_queue_pkt": "bytes (soft-RoCE): SEND and RDMA WRITE payload a responder accepts in sequence "
                          "(duplicates not counted): ingress; an RDMA READ request's length: the responder's egress",
    "rxe_comp_queue_pkt": "bytes (soft-RoCE): RDMA READ response payload the requester receives in sequence: ingress",
}


def _rdma(family: str) -> tuple[Hook, ...]:
    progs = {"fexit": {"rdma_restrack_add": ("fexit_rdma_restrack_add",)},
             "kretprobe": {"rdma_restrack_add": ("kprobe_rdma_restrack_add", "kretprobe_rdma_restrack_add")}}[family]
    entry = "fentry" if family == "fexit" else "kprobe"
    reads = {"rdma_restrack_add": (0,), "rdma_restrack_del": (0,), "rdma_restrack_commit_del": (0,),
             "rxe_xmit_packet": (0, 1),
             "rxe_resp_queue_pkt": (0, 1), "rxe_comp_queue_pkt": (0, 1)}
    return tuple(Hook("rdma", f, progs.get(f, (f"{entry}_{f}",)), RDMA_SIGS[f],
                      reads=reads[f] if family == "kretprobe" else None, note=_RDMA_NOTES[f],
                      absent=_RXE_ABSENT if RDMA_MODULES[f] == "rdma_rxe" else
                      _COMMIT_ABSENT if f == "rdma_restrack_commit_del" else _RESTRACK_ABSENT)
                 for f in RDMA_FUNCTIONS)


V = Version
NET_SRC, VFS_SRC, SKB_SRC = "bpf/net/net.bpf.c", "bpf/vfs/vfs.bpf.c", "bpf/net/skb.bpf.c"
VFS_TP_SRC = "bpf/vfs/vfs_tp.bpf.c"
RDMA_SRC = "bpf/rdma/rdma.bpf.c"
TARGETS = {"x86_64": "x86", "aarch64": "arm64"}


def _net(family: str, era: int, arches: tuple[str, ...], since: str, until: str | None,
         hooks: tuple[Hook, ...], suffix: str) -> BpfObject:
    target = TARGETS[arches[0]] if len(arches) == 1 else "x86"  # tp_btf reads no registers
    defines = (f"CEEMSNET_HOOK_{family.upper()}",) + ((f"RECVMSG_ERA={era}",) if era else ())  # 0: no eras
    return BpfObject(f"net-{family}-{since}{suffix}.bpf.o", "net", family, arches, V(since), until and V(until),
                     hooks, NET_SRC, defines, target)


def _net_slots(family: str, era: int, arches: tuple[str, ...], since: str, until: str | None,
               hooks: tuple[Hook, ...], suffix: str) -> BpfObject:
    o = _net(family, era, arches, since, until, hooks, suffix)
    return replace(o, file=o.file.replace(".bpf.o", "-slots.bpf.o"), defines=o.defines + ("NET_SLOTS",),
                   layout="slots")


def _vfs(family: str, era: int, arch: str, since: str, until: str | None, hooks: tuple[Hook, ...],
         source: str = VFS_SRC, era_name: str = "VFS_ERA") -> BpfObject:
    target = TARGETS[arch]
    defines = (f"CEEMSNET_HOOK_{family.upper()}",) + ((f"{era_name}={era}",) if era else ())  # 0: no eras
    return BpfObject(f"vfs-{family}-{since}-{target}.bpf.o", "vfs", family, (arch,), V(since), until and V(until),
                     hooks, source, defines, target)


def _vfs_slots(family: str, era: int, arch: str, since: str, until: str | None, hooks: tuple[Hook, ...],
               source: str = VFS_SRC, era_name: str = "VFS_ERA") -> BpfObject:
    o = _vfs(family, era, arch, since, until, hooks, source, era_name)
    return replace(o, file=o.file.replace(".bpf.o", "-slots.bpf.o"), defines=o.defines + ("VFS_SLOTS",),
                   layout="slots")


# The version in a name is the object's first kernel: the start of its
# signature era, and never older than a helper or program type it uses.
CATALOGUE: tuple[BpfObject, ...] = (
    # fexit: BPF trampolines, 5.5 (also bpf_probe_read_kernel(), 5.5)
    _net("fexit", 1, ("x86_64",), "5.5", "5.19", _net_fexit(1), "-x86"),
    _net("fexit", 2, ("x86_64",), "5.19", "7.1", _net_fexit(2), "-x86"),
    _net("fexit", 3, ("x86_64",), "7.1", None, _net_fexit(3), "-x86"),
    # arm64: from 6.4 (ftrace direct calls, ARCH_RULES), so eras 2 and 3 only
    _net("fexit", 2, ("aarch64",), "6.4", "7.1", _net_fexit(2), "-arm64"),
    _net("fexit", 3, ("aarch64",), "7.1", None, _net_fexit(3), "-arm64"),
    # kretprobe: 4.18 for RHEL 8; bpf/include/compat.h keeps them off 5.5's
    # bpf_probe_read_kernel(). Era 3 (7.1) keeps flags 4th: era 2 serves it.
    *(_net("kretprobe", era, (arch,), since, until, _net_kretprobe(era), f"-{short}")
      for arch, short in TARGETS.items()
      for since, until, era in (("4.18", "5.19", 1), ("5.19", None, 2))),
    # tp_btf on sock_send_length/sock_recv_length, added in 6.3
    _net("tracepoint", 0, ("x86_64", "aarch64"), "6.3", None, _net_tracepoint(), ""),
    # The slot layout (NET_SLOTS, bpf/net/net_slots.h): twins of the hash objects above,
    # tried first by select_and_load, which keeps the hash object where the kernel refuses the
    # twin (its compare and swap is a 5.12 BPF atomic). kretprobe and the oldest era keep
    # the hash layout.
    _net_slots("fexit", 2, ("x86_64",), "5.19", "7.1", _net_fexit(2), "-x86"),
    _net_slots("fexit", 3, ("x86_64",), "7.1", None, _net_fexit(3), "-x86"),
    _net_slots("fexit", 2, ("aarch64",), "6.4", "7.1", _net_fexit(2), "-arm64"),
    _net_slots("fexit", 3, ("aarch64",), "7.1", None, _net_fexit(3), "-arm64"),
    _net_slots("tracepoint", 0, ("x86_64", "aarch64"), "6.3", None, _net_tracepoint(), ""),
    *(_vfs("fexit", era, "x86_64", since, until, _vfs_fexit(era))
      for since, until, era in (("5.5", "5.12", 1), ("5.12", "6.3", 2), ("6.3", "6.15", 3), ("6.15", "6.19", 4),
                                ("6.19", None, 5))),
    # arm64 from 6.4 (ARCH_RULES): the 6.3 era's object starts there
    *(_vfs("fexit", era, "aarch64", since, until, _vfs_fexit(era))
      for since, until, era in (("6.4", "6.15", 3), ("6.15", "6.19", 4), ("6.19", None, 5))),
    # kretprobe objects only read the parent directory's position: era 2 serves 5.12-6.14;
    # era 5 (6.19) because vfs_create's second argument became the new dentry
    *(_vfs("kretprobe", era, arch, since, until, _vfs_kretprobe(era, arch))
      for arch in TARGETS
      for since, until, era in (("4.18", "5.12", 1), ("5.12", "6.15", 2), ("6.15", "6.19", 4), ("6.19", None, 5))),
    # one program per counted system call (syscalls:sys_exit_<name>), arguments through
    # bpf_task_pt_regs(), 5.15; from 6.2 the file's fields are read through bpf_rdonly_cast()
    # (commit a35b9af4ec2c) instead of probe reads. Before: vfs-tracepoint-5.11-x86, one raw
    # sys_exit program that ran on every system call (named 5.5 until the catalogue was
    # checked against the helpers)
    *(_vfs("tracepoint", era, "x86_64", since, until, _vfs_tracepoint(), VFS_TP_SRC, "TP_ERA")
      for since, until, era in (("5.15", "6.2", 1), ("6.2", None, 2))),
    # The vfs slot layout (VFS_SLOTS, bpf/vfs/vfs_slots.h): a twin of the 6.2 tracepoint object,
    # tried first as net's; the hash object serves where the kernel refuses it or --vfs.slots=0
    _vfs_slots("tracepoint", 2, "x86_64", "6.2", None, _vfs_tracepoint(), VFS_TP_SRC, "TP_ERA"),
)

# rdma: module functions (ib_core, rdma_rxe), whose types libbpf relocates against the modules'
# BTF, which arrived in 5.11 (CONFIG_DEBUG_INFO_BTF_MODULES). arm64's fexit object starts at 6.4
# (ftrace direct calls, ARCH_RULES), as net's and vfs's do; its kretprobe object at 5.11
RDMA_OBJECTS = tuple(BpfObject(f"rdma-{fam}-{since}-{TARGETS[arch]}.bpf.o", "rdma", fam, (arch,), V(since), None,
                               _rdma(fam), RDMA_SRC, (f"CEEMSNET_HOOK_{fam.upper()}",), TARGETS[arch],
                               modules=("ib_core", "rdma_rxe"))
                     for arch, fam, since in (("x86_64", "fexit", "5.11"), ("x86_64", "kretprobe", "5.11"),
                                              ("aarch64", "fexit", "6.4"), ("aarch64", "kretprobe", "5.11")))
CATALOGUE = CATALOGUE + RDMA_OBJECTS

# cgroup_skb: stable program type (4.10+), no eras; attached to cgroups, not
# kernel functions, by ceemsnet/collectors/skb.py. "function" names the hook.
# First kernels: both read __sk_buff->gso_segs, 5.1 (commit d9ff286a0f59);
# skb-root calls bpf_skb_cgroup_id(), allowed in cgroup_skb programs only
# from 5.3 (commit 4ecabd55c904). Both were catalogued as 4.20 before.
_SKB_HOOKS = (Hook("skb", "cgroup_skb/egress", ("cgroup_skb_egress",)),
              Hook("skb", "cgroup_skb/ingress", ("cgroup_skb_ingress",)))
SKB_OBJECTS = {
    "root": BpfObject("skb-root.bpf.o", "skb", "cgroup_skb", ("x86_64", "aarch64"), V("5.3"), None, _SKB_HOOKS,
                      SKB_SRC, ("CEEMSNET_SKB_ROOT",)),
    "per-cgroup": BpfObject("skb-cgroup.bpf.o", "skb", "cgroup_skb", ("x86_64", "aarch64"), V("5.1"), None,
                            _SKB_HOOKS, SKB_SRC, ("CEEMSNET_SKB_STORAGE",)),
}
CATALOGUE = CATALOGUE + tuple(SKB_OBJECTS.values())

# the modules whose BTF a subsystem's prototypes are checked against, besides the kernel's
SUBSYSTEM_MODULES = {"rdma": ("ib_core", "rdma_rxe")}
# subsystems whose objects hook kernel functions (planned by ceemsnet/planning/choice.py)
SUBSYSTEMS = {"net": NET_FUNCTIONS, "vfs": VFS_FUNCTIONS, "rdma": RDMA_FUNCTIONS}

# What no hook of a subsystem sees, whatever the family (probe prints it; docs/kernels.md, "What is
# counted, and what is not", says more); what one hook misses is in its own note.
NOT_COUNTED = {
    "net": "RDMA verbs and other kernel-bypass traffic; MPTCP, SCTP, raw and packet sockets; receives with "
           "MSG_PEEK or MSG_ERRQUEUE; splice() from a TCP socket and TCP zerocopy receive; traffic of kernel "
           "threads (the NFS, Lustre and GPFS clients' own, which the vfs collector charges at the file)",
    "vfs": "IO through mmap()ed files (page faults, msync); what the kernel does later on the job's behalf "
           "(writeback, readahead); IO of kernel threads for no job's call (nfsd serving others, loop devices); "
           "files that are not regular files (pipes, sockets, devices)",
    "rdma": "bytes on hardware RDMA devices (mlx5 and others move data without the kernel), except through "
            "the adapter's own per-QP counters where it has them (mlx5 on 6.15+ with optional counters enabled: "
            "ceemsnet_rdma_hw_bytes_total; always the ports' node-wide ceemsnet_rdma_port_bytes_total); RDMA objects made by the kernel itself "
            "(NFS over RDMA, iSER, the GSI queue pairs); objects and queue pairs created before the collector "
            "first started since boot (their bytes count under cgroup \"\"; its pins keep the owners across "
            "restarts); atomic operations' 8-byte operands",
}


def objects_for(subsystem: str, family: str, arch: str) -> list[BpfObject]:
    """The objects that stand for a family's signature eras (slot twins are tried by select_and_load)."""
    return [o for o in CATALOGUE if o.subsystem == subsystem and o.family == family and arch in o.arches
            and o.layout == "hash"]


def slots_twin(obj: BpfObject) -> BpfObject | None:
    """The slot-layout build of a hash-layout object, if there is one: select_and_load tries it
    first and keeps the hash object where the kernel refuses it (no cgroup local storage)."""
    return next((o for o in CATALOGUE if o.layout == "slots" and o.source == obj.source and o.family == obj.family
                 and o.defines[:len(obj.defines)] == obj.defines and o.arches == obj.arches), None)


def make_specs() -> list[str]:
    """One token per object for the Makefile's $(foreach)/$(eval) rules."""
    return [o.make_spec() for o in CATALOGUE]


def main(argv: list[str]) -> int:
    if argv != ["make-specs"]:
        print("usage: python -m ceemsnet.planning.catalogue make-specs", file=sys.stderr)
        return 2
    print("\n".join(make_specs()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
