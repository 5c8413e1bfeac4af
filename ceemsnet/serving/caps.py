"""Capabilities: which ones `serve` needs, a check naming the missing one,
and dropping them all once the programs are attached (--capabilities.keep).

What each subsystem needs was measured on kernels 6.18 (tracepoint family)
and 6.12 (fexit, kretprobe) with Debian 12's libbpf 1.1 by removing one
capability at a time (tests/kernel/test_capabilities.py repeats it;
docs/install.md "Least privilege"). Two needs depend on the node and show only
once the hook family is known, so the runtime names them when they bite
(ceemsnet/runtime/collection.py): CAP_SYS_ADMIN for perf_event_open() (kprobes,
trace events) where Debian's and Ubuntu's kernel.perf_event_paranoid is above 2,
and for mounting tracefs where none is mounted (vfs trace events). CAP_SYS_ADMIN stands in for CAP_BPF,
CAP_PERFMON and, for BPF, CAP_NET_ADMIN (the kernel's bpf_capable(),
perfmon_capable() and bpf_net_capable() accept it), and for all of them on
kernels before 5.8, which have no CAP_BPF.

Capabilities belong to threads, not processes: capset(2) changes only the
calling thread, and by the time the server socket is bound the HTTP, store
and skb threads exist. So drop() runs the change in every thread, the way
libpsx and Go's AllThreadsSyscall do: a signal to each thread whose handler
makes the two system calls (prctl(PR_SET_NO_NEW_PRIVS), then capset to
nothing), then reads /proc/self/task/*/status until every thread shows it.
Python cannot run its own code in a signal handler on another thread, so the
handler is a few instructions of machine code per architecture, assembled
from the source shown beside them. NO_NEW_PRIVS matters for uid 0: without
it, an execve() by a compromised thread would get every capability back.

One capability may have to stay: kernels before 6.5 refuse every bpf()
command, map reads of maps the process already holds included, to a caller
without bpf_capable() while kernel.unprivileged_bpf_disabled is set (the
check at the top of __sys_bpf; 6.5 moved it into map creation and program
loading, commit c8644cd0efe7). Debian sets that sysctl, so on Debian 11's 5.10
an exporter with nothing left could not read its counters. Whether this kernel
does that is not guessed from its version: a thread drops its own
capabilities and tries to read a map (reads_need_cap()); if it is refused,
CAP_BPF stays (CAP_SYS_ADMIN before 5.8, which has no CAP_BPF, or where the
process was given CAP_SYS_ADMIN without CAP_BPF) and everything else goes.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import signal
import threading
import time

from ceemsnet import CeemsnetError
from ceemsnet.runtime import libbpf

log = logging.getLogger("ceemsnet.serving.caps")

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39
NAMES = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_PERFMON: "CAP_PERFMON",
         CAP_BPF: "CAP_BPF"}
KEEP = ("none", "all")

# What the kernel checks (kernel/bpf/syscall.c, kernel/events/core.c, 6.x):
#  - BPF_PROG_LOAD of tracing, kprobe and tracepoint programs, and BPF_BTF_LOAD and
#    BPF_MAP_CREATE under kernel.unprivileged_bpf_disabled: bpf_capable() (CAP_BPF);
#  - tracing, kprobe and tracepoint programs besides: perfmon_capable() (is_perfmon_prog_type),
#    and so do their helpers that read kernel memory (bpf_probe_read_kernel);
#  - perf_event_open() of a kprobe or trace event on every task of a CPU, under
#    kernel.perf_event_paranoid >= 1: perfmon_capable() (CAP_PERFMON).
# libbpf itself needs no more since the objects are opened with btf_custom_path (ceemsnet/
# runtime/collection.py): without it libbpf 1.1 lists kernel module BTF for CO-RE relocations
# whose types vmlinux lacks (BPF_BTF_GET_NEXT_ID, CAP_SYS_ADMIN only) and fails on the EPERM.
_TRACING = ((CAP_BPF, "loading tracing programs (fexit, kprobe, tracepoint), their BTF and maps"),
            (CAP_PERFMON, "tracing programs read kernel memory; kprobe and trace event perf_event_open()"))
NEEDS = {
    "net": _TRACING,
    "vfs": _TRACING,
    # its objects relocate against ib_core's and rdma_rxe's BTF: libbpf lists the modules' BTF
    # (BPF_BTF_GET_NEXT_ID), which only CAP_SYS_ADMIN may
    "rdma": _TRACING + ((CAP_SYS_ADMIN, "listing the kernel modules' BTF (ib_core, rdma_rxe) for the rdma objects"),),
    "skb:root": ((CAP_BPF, "loading cgroup_skb programs"),
                 (CAP_NET_ADMIN, "attaching to the root cgroup")),
    "skb:per-cgroup": ((CAP_BPF, "loading cgroup_skb programs"),
                       (CAP_PERFMON, "the verifier accepts skb-cgroup.bpf.o only with it")),
}
# before 5.8 (commits 980737282232, CAP_PERFMON, and a17b53c4a4b5, CAP_BPF) the kernel checks
# CAP_SYS_ADMIN where it now checks these two
_NEW_IN_5_8 = (CAP_BPF, CAP_PERFMON)


def kernel_has_cap_bpf() -> bool:
    """Does this kernel know CAP_BPF (5.8+)? Read from /proc/sys/kernel/cap_last_cap."""
    return _cap_last() >= CAP_BPF


def needs(collectors, skb_mode: str = "root", cap_bpf: bool | None = None) -> list[tuple[int, str, str]]:
    """[(capability, subsystem, why)] that serve needs for these collectors; on a kernel without
    CAP_BPF (cap_bpf False: before 5.8) CAP_SYS_ADMIN in place of CAP_BPF and CAP_PERFMON."""
    cap_bpf = kernel_has_cap_bpf() if cap_bpf is None else cap_bpf
    out: list[tuple[int, str, str]] = []
    for name in collectors:
        key = f"skb:{skb_mode}" if name == "skb" else name
        for cap, why in NEEDS.get(key, ()):
            if not cap_bpf and cap in _NEW_IN_5_8:
                cap, why = CAP_SYS_ADMIN, f"{why}: this kernel has no {NAMES[cap]} (5.8+)"
            if not any(c == cap and s == name for c, s, _ in out):
                out.append((cap, name, why))
    return out


def _mask(field: str, status_path: str = "/proc/thread-self/status") -> int:
    with open(status_path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    return 0


def effective() -> int:
    """This thread's effective capabilities, as a bit mask."""
    return _mask("CapEff")


def has(cap: int, eff: int | None = None) -> bool:
    eff = effective() if eff is None else eff
    # CAP_SYS_ADMIN passes every BPF, perf and (for BPF) network-admin check
    return bool(eff & (1 << cap)) or (cap in (CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN) and bool(eff & (1 << CAP_SYS_ADMIN)))


def missing(collectors, skb_mode: str = "root", eff: int | None = None,
            cap_bpf: bool | None = None) -> list[tuple[int, str, str]]:
    eff = effective() if eff is None else eff
    return [n for n in needs(collectors, skb_mode, cap_bpf) if not has(n[0], eff)]


def check(what: str, collectors, skb_mode: str = "root") -> None:
    """A one-line error naming the first capability missing, before anything is loaded."""
    gone = missing(collectors, skb_mode)
    if gone:
        cap, sub, why = gone[0]
        others = sorted({NAMES[c] for c, _, _ in gone[1:]} - {NAMES[cap]})
        raise CeemsnetError(f"{what}: missing capability {NAMES[cap]} ({sub}: {why})"
                            + (f", and {', '.join(others)}" if others else "")
                            + "; run as root or grant it (docs/install.md: Least privilege)")


def resolve_keep(keep: str | None, collectors, skb_mode: str) -> str:
    """--capabilities.keep: the default is none, but per-cgroup skb mode attaches to cgroups made
    while it runs, so it keeps them (and refuses an explicit none)."""
    per_cgroup = "skb" in collectors and skb_mode == "per-cgroup"
    if keep is None:
        return "all" if per_cgroup else "none"
    if keep == "none" and per_cgroup:
        raise CeemsnetError("--capabilities.keep=none cannot go with --skb.mode=per-cgroup: it attaches programs "
                            "to new cgroups while it runs, which needs CAP_BPF and CAP_PERFMON (use "
                            "--capabilities.keep=all, or --skb.mode=root)")
    return keep


# --- dropping them in every thread -------------------------------------------

# handler(int sig): prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); capset(&HDR, DATA); return
# HDR (version 3, pid 0 = this thread) at 0x30, DATA (two {effective, permitted,
# inheritable} u32 triples) at 0x38; assembled with clang-19.
_STUB = {
    # mov eax,157; mov edi,38; mov esi,1; xor edx,edx; xor r10d,r10d; xor r8d,r8d; syscall;
    # mov eax,126; lea rdi,[rip+hdr]; lea rsi,[rip+data]; syscall; ret; nop
    "x86_64": bytes.fromhex("b89d000000bf26000000be0100000031d24531d24531c00f05b87e000000"
                            "488d3d0b000000488d350c0000000f05c390"),
    # mov x8,#167; mov x0,#38; mov x1,#1; mov x2,#0; mov x3,#0; mov x4,#0; svc #0;
    # mov x8,#91; adr x0,hdr; adr x1,data; svc #0; ret
    "aarch64": bytes.fromhex("e81480d2c00480d2210080d2020080d2030080d2040080d2010000d4"
                             "680b80d280000010a1000010010000d4c0035fd6"),
}
_HDR_OFF, _DATA_OFF = 0x30, 0x38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_SIGNAL = signal.SIGRTMAX - 6  # unused by glibc (SIGRTMIN-2..SIGRTMIN-1) and CPython
_SA_RESTART = 0x10000000
_PROT_READ, _PROT_WRITE, _PROT_EXEC = 1, 2, 4
_MAP_PRIVATE, _MAP_ANONYMOUS = 0x02, 0x20


class _Sigaction(ctypes.Structure):  # glibc's struct sigaction (x86_64 and aarch64)
    _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * 16), ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p)]


_installed = None  # the handler's page, kept for the life of the process
_kept = 0  # the capabilities the handler leaves (a bit mask), see reads_need_cap()
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}


def _machine() -> str:
    """This machine's architecture under the names _STUB and _SYS_CAPSET use."""
    arch = platform.machine()
    return {"arm64": "aarch64", "amd64": "x86_64"}.get(arch, arch)


def _install(libc) -> None:
    global _installed
    if _installed is not None:
        return
    arch = _machine()
    code = _STUB.get(arch)
    if code is None:
        raise CeemsnetError(f"--capabilities.keep=none is not supported on {arch} (no handler for it): "
                            "use --capabilities.keep=all")
    page = bytearray(4096)
    page[:len(code)] = code
    # version 3, pid 0; effective and permitted: what must stay (_kept), inheritable empty
    page[_HDR_OFF:_HDR_OFF + 8] = _LINUX_CAPABILITY_VERSION_3.to_bytes(4, "little") + bytes(4)
    page[_DATA_OFF:_DATA_OFF + 24] = _cap_data(_kept)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    addr = libc.mmap(None, 4096, _PROT_READ | _PROT_WRITE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap for the capability handler failed")
    ctypes.memmove(addr, bytes(page), 4096)
    if libc.mprotect(addr, 4096, _PROT_READ | _PROT_EXEC) != 0:
        err = ctypes.get_errno()
        raise CeemsnetError(f"--capabilities.keep=none: cannot make its signal handler executable "
                            f"({os.strerror(err)}; a MemoryDenyWriteExecute= setting?): use --capabilities.keep=all")
    act = _Sigaction(handler=addr, flags=_SA_RESTART)
    if libc.sigaction(_SIGNAL, ctypes.byref(act), None) != 0:
        raise OSError(ctypes.get_errno(), "sigaction for the capability handler failed")
    # installed for good: a late signal must never meet SIG_DFL (which ends the process)
    _installed = addr


def _cap_data(mask: int) -> bytes:
    """capset's two {effective, permitted, inheritable} u32 triples for a mask (none inheritable)."""
    lo, hi = mask & 0xFFFFFFFF, mask >> 32
    return b"".join(v.to_bytes(4, "little") for v in (lo, lo, 0, hi, hi, 0))


def _cap_last() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return CAP_SYS_ADMIN


def reads_need_cap() -> bool:
    """Does this kernel refuse a map read to a thread without capabilities? Measured: a
    thread of ours drops its own (capset changes only the calling thread) and reads a map
    made before; the other threads keep theirs."""
    lib = libbpf.lib()
    fd = lib.bpf_map_create(2, b"ceemsnet_caps", 4, 4, 1, None)  # BPF_MAP_TYPE_ARRAY
    if fd < 0:
        return False  # cannot tell; the maps we hold were made, so reads are what they are
    result: list[int] = []

    def probe():
        libc = libbpf.libc()
        nr = _SYS_CAPSET.get(_machine())
        hdr = ctypes.create_string_buffer(_LINUX_CAPABILITY_VERSION_3.to_bytes(4, "little") + bytes(4), 8)
        data = ctypes.create_string_buffer(_cap_data(0), 24)
        if nr is None or libc.syscall(nr, hdr, data) != 0:
            result.append(0)
            return
        key, value = ctypes.c_uint32(0), ctypes.c_uint32(0)
        rc = lib.bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
        result.append(-rc if rc < 0 else 0)

    t = threading.Thread(target=probe, name="ceemsnet-caps-probe")
    t.start()
    t.join()
    os.close(fd)
    return bool(result) and result[0] == 1  # EPERM


def _dropped(tid: int) -> bool | None:
    """Has this thread only the kept capabilities, and no_new_privs? None if it is gone."""
    try:
        with open(f"/proc/self/task/{tid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields["CapPrm"].strip(), 16) == _kept and int(fields["CapEff"].strip(), 16) == _kept \
        and int(fields["CapAmb"].strip(), 16) == 0 and fields.get("NoNewPrivs", "0").strip() == "1"


def drop_all(timeout: float = 5.0) -> None:
    """Every thread of this process: no capabilities (effective, permitted, inheritable,
    ambient) but the one map reads need on this kernel, if any (reads_need_cap()), and
    no_new_privs, so none can be regained by execve()."""
    global _kept
    if _installed is None and reads_need_cap():
        # CAP_BPF where the kernel has it and we hold it; else CAP_SYS_ADMIN, which bpf_capable()
        # accepts too (kernels before 5.8, or a service given CAP_SYS_ADMIN alone: a capability
        # not held cannot be kept, and the threads would keep everything)
        cap = CAP_BPF if _cap_last() >= CAP_BPF and effective() >> CAP_BPF & 1 else CAP_SYS_ADMIN
        _kept = 1 << cap
        log.info("this kernel refuses bpf() map reads without %s while kernel.unprivileged_bpf_disabled is set "
                 "(kernels before 6.5): keeping it, dropping every other capability", NAMES[cap])
    libc = libbpf.libc()
    _install(libc)
    pid = os.getpid()
    done: set[int] = set()
    deadline = time.monotonic() + timeout
    while True:
        tids = {int(t) for t in os.listdir("/proc/self/task")}  # new threads inherit a dropped parent's state
        todo = sorted(tids - done)
        if not todo:
            break
        for tid in todo:
            state = _dropped(tid)
            if state is None or state:
                done.add(tid)
            elif libc.tgkill(pid, tid, _SIGNAL) != 0:
                done.add(tid)  # exited meanwhile (ESRCH)
        time.sleep(0.01)
        for tid in todo:
            if _dropped(tid) in (None, True):
                done.add(tid)
        if time.monotonic() > deadline:
            left = sorted(set(todo) - done)
            if left:
                raise CeemsnetError(f"--capabilities.keep=none: threads {left} still hold capabilities after "
                                    f"{timeout:g}s (signal {_SIGNAL} blocked?)")
    kept = ", kept " + ", ".join(NAMES[c] for c in NAMES if _kept >> c & 1) if _kept else ""
    log.info("dropped every capability in %d threads (--capabilities.keep=none)%s; no_new_privs set", len(done), kept)


def apply(keep: str) -> None:
    """serve calls this once the programs are attached, the pins made and the server socket bound."""
    if keep == "none":
        drop_all()
