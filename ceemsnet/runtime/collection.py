"""Load an object file through libbpf: the only place that opens one.

Two steps, as in cilium/ebpf's CollectionSpec -> Collection:
  ObjectSpec   what to load: an object file, the programs to autoload,
               map sizes and load-time settings (`const volatile` globals);
  Collection   the loaded object: its maps (BpfMap), and the links
               (links.py) made from its programs; close() detaches and
               frees everything; pin()/adopt() keep them in bpffs.
This layer knows nothing of net, vfs or skb: which object to load, and the
hook family fallback, are planning's (ceemsnet/planning/select.py).
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass, field
from typing import Protocol

from ceemsnet import CeemsnetError
from ceemsnet.runtime import libbpf, tracepoints
from ceemsnet.runtime.bpffs import entries, open_pinned, remove_object_dir
from ceemsnet.runtime.btf import VMLINUX, KernelBTF
from ceemsnet.runtime.kprobes import KretprobeEvent
from ceemsnet.runtime.links import LibbpfLink, Link, close_all
from ceemsnet.runtime.maps import BpfMap, map_fits


class ObjectFile(Protocol):
    """What the runtime needs of a catalogued object (ceemsnet/planning/catalogue.BpfObject)."""
    path: str     # the object file
    file: str     # its name, for messages
    family: str   # fexit, kretprobe, tracepoint, skb: for the errno hints


PRIVILEGE_HINT = ("loading BPF programs needs capabilities: CAP_BPF and CAP_PERFMON for net and vfs, "
                  "CAP_BPF with CAP_NET_ADMIN (skb root mode) or CAP_PERFMON (per-cgroup mode); "
                  "CAP_SYS_ADMIN before 5.8; docs/install.md: Least privilege")
CAP_SYS_ADMIN, CAP_BPF = 21, 39
PERF_EVENT_PARANOID = "/proc/sys/kernel/perf_event_paranoid"
ENOTSUPP = 524  # the kernel's internal "operation not supported" (include/linux/errno.h), not in errno


def _holds(*caps: int) -> bool:
    """Does this thread hold one of these capabilities (effective)? True where it cannot tell."""
    try:
        with open("/proc/thread-self/status") as f:
            eff = next((int(ln.split()[1], 16) for ln in f if ln.startswith("CapEff:")), 0)
    except OSError:
        return True  # cannot tell: say nothing of capabilities
    return any(eff >> c & 1 for c in caps)


def perf_event_paranoid() -> int:
    """kernel.perf_event_paranoid (2, the kernel's default, where it cannot be read)."""
    try:
        with open(PERF_EVENT_PARANOID) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 2


def perf_restricted_hint(paranoid: int) -> str:
    """Why perf_event_open() was refused (EACCES) to a caller with CAP_PERFMON: Debian's and Ubuntu's
    kernels add levels above 2 (kernel.perf_event_paranoid 3 by default on Debian, 4 on Ubuntu), where
    perf_event_open() checks capable(CAP_SYS_ADMIN), not perfmon_capable()."""
    return (f"missing capability CAP_SYS_ADMIN (kernel.perf_event_paranoid is {paranoid}: above 2, a Debian "
            "and Ubuntu kernel patch, perf_event_open(), which kprobes and trace events attach through, needs "
            "CAP_SYS_ADMIN, CAP_PERFMON is not enough); set kernel.perf_event_paranoid=2 or grant CAP_SYS_ADMIN "
            "(docs/install.md: Least privilege)")


@dataclass
class ObjectSpec:
    """What to load from one committed object."""
    obj: ObjectFile | None                     # None only for pins of an object no longer catalogued
    programs: tuple[str, ...] | None = None    # to autoload; None: every program of the object
    map_entries: dict[str, int] = field(default_factory=dict)  # {map: max_entries}; absent maps ignored
    settings: dict[str, int] = field(default_factory=dict)     # {const volatile global: value}
    reuse: dict[str, "BpfMap"] = field(default_factory=dict)   # {map: an existing map to use if it fits}


class Collection:
    """A loaded object: its maps by name and the links made from its programs."""

    def __init__(self, spec: ObjectSpec, handle: int):
        self.spec = spec
        self._obj = handle            # 0 for a collection adopted from pins (nothing loaded here)
        self.maps: dict[str, BpfMap] = {}
        self.links: list[Link] = []
        self.reused: set[str] = set()  # maps taken over from spec.reuse
        self.pin_dir: str | None = None
        self._event_ids: dict[tuple[str, str], int] | None = None  # trace event ids, read once
        self.label = ""                # the object file's name where spec.obj is None (adopted pins)
        self._prog_fds: dict[str, int] = {}  # adopted: programs opened from their pins (prog__<name>)

    @classmethod
    def adopt(cls, spec: ObjectSpec, obj_dir: str, targets=None, label: str = "") -> "Collection":
        """The maps and links a previous run pinned in obj_dir: they never stopped counting.
        targets(link name) -> what the link is attached to, for hooks() and the log;
        label: the object file's name, for messages, where spec.obj is None."""
        coll = cls(spec, 0)
        coll.pin_dir = obj_dir
        coll.label = label
        try:
            for name, path in entries(obj_dir, "map").items():
                coll.maps[name] = BpfMap.from_fd(name, open_pinned(path))
            for name, path in entries(obj_dir, "link").items():
                program = name.partition("__")[0]
                target = targets(name) if targets else program.partition("_")[2]
                coll.links.append(LibbpfLink.open_pinned(path, program, target, name))
            for name, path in entries(obj_dir, "prog").items():  # none in pins of ceemsnet before 0.2
                coll._prog_fds[name] = open_pinned(path)
        except BaseException:
            coll.close()
            raise
        return coll

    def pin(self, obj_dir: str) -> None:
        """Pin every map and link in obj_dir (made here), and links attached later too.
        PinUnsupported (nothing left pinned) if a link cannot be pinned."""
        os.mkdir(obj_dir, 0o700)
        try:
            for m in self.maps.values():
                _pin_map(m, obj_dir)
            for ln in self.links:
                ln.pin(os.path.join(obj_dir, f"link__{ln.name}"))
            for name, fd in self.program_fds().items():
                _pin_program(name, fd, obj_dir)
        except BaseException:
            self.unpin(obj_dir)
            raise
        self.pin_dir = obj_dir

    def unpin(self, obj_dir: str | None = None) -> None:
        """Remove this collection's pins: closing it then detaches everything."""
        for ln in self.links:
            ln.pin_path = None
        d = obj_dir or self.pin_dir
        if d and os.path.isdir(d):
            remove_object_dir(d)
        self.pin_dir = None

    @property
    def file(self) -> str:
        return self.spec.obj.file if self.spec.obj is not None else self.label

    def _program(self, name: str):
        p = libbpf.lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not p:
            raise CeemsnetError(f"{self.file} has no program {name} (rebuild the objects: make objs)")
        return p

    def program_fd(self, name: str) -> int:
        return libbpf.lib().bpf_program__fd(self._program(name))

    def program_fds(self) -> dict[str, int]:
        """{program: fd} of the programs attached (loaded here), or pinned beside the links
        (adopted): an adopted program cannot be opened by id without CAP_SYS_ADMIN, so
        pin() pins each attached program too."""
        if not self._obj:
            return dict(self._prog_fds)
        return {ln.program: self.program_fd(ln.program) for ln in self.links}

    def program_misses(self) -> dict[str, int]:
        """{program: runs the kernel skipped} (its recursion_misses, 5.12+): a run while the
        program was already running on that CPU (preempted or interrupted inside it) is not
        made, and its event not counted. Programs whose kernel keeps no such count are absent."""
        out = {}
        for name, fd in self.program_fds().items():
            try:
                with open(f"/proc/self/fdinfo/{fd}") as f:
                    for line in f:
                        if line.startswith("recursion_misses:"):
                            out[name] = int(line.split(":", 1)[1])
                            break
            except (OSError, ValueError):
                continue
        return out

    def attach(self, name: str, target: str = "") -> Link:
        """Attach a program where its SEC() says (fexit/, kprobe/, tp_btf/, tp/ ...); OSError if refused."""
        prog = self._program(name)
        event = tracepoints.section_event(libbpf.lib().bpf_program__section_name(prog).decode())
        if event is not None:  # a trace event: its id from tracefs, mounted or not (ceemsnet/runtime/tracepoints.py)
            ptr = tracepoints.attach(prog, self._event_id(event))
        else:
            ptr = libbpf.lib().bpf_program__attach(prog)
            if not ptr:
                err = ctypes.get_errno() or errno.EINVAL
                raise OSError(err, os.strerror(err))
        return self._keep(LibbpfLink(ptr, name, target or name.partition("_")[2]))

    def _event_id(self, event: tuple[str, str]) -> int:
        """The trace event's id; the ids of all the object's events are read at the first call."""
        if self._event_ids is None:
            lb, events = libbpf.lib(), []
            prog = lb.bpf_object__next_program(self._obj, None)
            while prog:
                e = tracepoints.section_event(lb.bpf_program__section_name(prog).decode())
                if e is not None:
                    events.append(e)
                prog = lb.bpf_object__next_program(self._obj, prog)
            try:
                self._event_ids = tracepoints.event_ids(events)
            except OSError as e:
                if e.errno not in (errno.EPERM, errno.EACCES):
                    raise
                # not an attach refusal the next family might avoid: say what to change
                raise CeemsnetError(
                    f"{self.file}: missing capability CAP_SYS_ADMIN (no tracefs is mounted, and the trace "
                    "event ids these programs attach to are only there: mounting one needs it); mount tracefs "
                    "on /sys/kernel/tracing (systemd's sys-kernel-tracing.mount does) or grant CAP_SYS_ADMIN "
                    "(docs/install.md: Least privilege)") from e
        if event not in self._event_ids:
            raise OSError(errno.ENOENT, f"this kernel has no trace event {event[0]}:{event[1]}"
                                        + (" (CONFIG_FTRACE_SYSCALLS is off)" if event[0] == "syscalls" else ""))
        return self._event_ids[event]

    def attach_kretprobe(self, name: str, function: str, maxactive: int, bcc) -> Link:
        """A return probe through a tracefs event with `maxactive` instances (ceemsnet/runtime/kprobes.py)."""
        return self._keep(KretprobeEvent(bcc, self.program_fd(name), name, function, maxactive))

    def attach_cgroup(self, name: str, cgroup_dir: str, target: str) -> Link:
        """A cgroup program linked to the cgroup at `cgroup_dir` (a multi-attach BPF link)."""
        prog = self._program(name)
        fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            cid = os.fstat(fd).st_ino
            ptr = libbpf.lib().bpf_program__attach_cgroup(prog, fd)
            if not ptr:
                err = ctypes.get_errno() or errno.EINVAL
                hint = (": a program attached there without BPF_F_ALLOW_MULTI excludes others"
                        if err == errno.EPERM and os.geteuid() == 0 else "")
                raise OSError(err, f"attach {name} to {target}: {os.strerror(err)}{hint}")
        finally:
            os.close(fd)
        return self._keep(LibbpfLink(ptr, name, target, f"{name}__{cid}"))

    def add_map(self, m: BpfMap) -> None:
        """A map made or kept beside the object's own; pinned with them."""
        self.maps[m.name] = m
        if self.pin_dir:
            _pin_map(m, self.pin_dir)

    def replace_map(self, m: BpfMap) -> None:
        """A map in place of this collection's map of the same name (a layout change of a map
        made beside the object's own): pinned under a temporary name, then renamed over the
        old one's pin, so the pin path always names one complete map, old or new."""
        old = self.maps.get(m.name)
        if self.pin_dir:
            tmp = os.path.join(self.pin_dir, f"tmp__{m.name}")  # not a map__ entry: never adopted
            if os.path.exists(tmp):
                os.unlink(tmp)  # left by a crash before the rename
            libbpf.check_rc(libbpf.lib().bpf_obj_pin(m.fd, tmp.encode()), f"pinning map {m.name}")
            os.rename(tmp, os.path.join(self.pin_dir, f"map__{m.name}"))
        self.maps[m.name] = m
        if old is not None and old is not m:
            old.close()

    def _keep(self, link: Link) -> Link:
        self.links.append(link)
        if self.pin_dir:  # attached after pinning (skb per-cgroup mode): pinned like the rest
            try:
                link.pin(os.path.join(self.pin_dir, f"link__{link.name}"))
                if not os.path.exists(os.path.join(self.pin_dir, f"prog__{link.program}")):
                    _pin_program(link.program, self.program_fd(link.program), self.pin_dir)
            except BaseException:
                self.detach([link])
                raise
        return link

    def detach(self, links) -> None:
        """Unpin, close and forget these links: they are detached."""
        drop = {id(ln) for ln in links}
        gone = [ln for ln in self.links if id(ln) in drop]
        for ln in gone:
            ln.unpin()
        close_all(gone)
        self.links = [ln for ln in self.links if id(ln) not in drop]

    def close(self) -> None:
        """Close every link and the object. Unpinned links are detached; pinned
        links and maps stay in the kernel, counting, until unpinned."""
        close_all(self.links)
        self.links = []
        for fd in self._prog_fds.values():
            os.close(fd)
        self._prog_fds = {}
        for m in self.maps.values():
            m.close()
        if self._obj:
            libbpf.lib().bpf_object__close(self._obj)
            self._obj = 0

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _pin_program(name: str, fd: int, obj_dir: str) -> None:
    libbpf.check_rc(libbpf.lib().bpf_obj_pin(fd, os.path.join(obj_dir, f"prog__{name}").encode()),
                    f"pinning program {name}")


def _pin_map(m: BpfMap, obj_dir: str) -> None:
    libbpf.check_rc(libbpf.lib().bpf_obj_pin(m.fd, os.path.join(obj_dir, f"map__{m.name}").encode()),
                    f"pinning map {m.name}")


class LoadRefused(Exception):
    """The kernel refused this object or family (load or every attach failed)."""


def explain_errno(err: int, family: str) -> str:
    if err == errno.EACCES and family in ("kretprobe", "tracepoint") and not _holds(CAP_SYS_ADMIN):
        paranoid = perf_event_paranoid()
        if paranoid > 2:
            return perf_restricted_hint(paranoid)
    if err == errno.EPERM:
        if os.geteuid() != 0 or not _holds(CAP_BPF, CAP_SYS_ADMIN):
            return PRIVILEGE_HINT
        if family == "fexit":
            return "the kernel refuses fexit (BPF trampoline) programs: EPERM"
        return "the kernel refused the load: EPERM"
    if err == ENOTSUPP and family == "fexit":
        # the kernel's own ENOTSUPP, which os.strerror does not know: register_fentry() found no
        # way to reach the function from a trampoline (no ftrace direct calls: arm64 before 6.4,
        # or a kernel built without CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS)
        return ("error 524 (ENOTSUPP): this kernel cannot attach BPF trampolines to kernel functions "
                "(no ftrace direct calls: CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, on arm64 from 6.4)")
    return os.strerror(err)


def load(spec: ObjectSpec) -> Collection:
    """Open spec.obj, autoload only spec.programs, size maps, write settings, load.

    LoadRefused when the kernel refuses the load (the verifier's last line
    in the message); CeemsnetError when the object file is missing or broken.
    """
    lb = libbpf.lib()
    path = spec.obj.path
    if not os.path.exists(path):
        raise CeemsnetError(f"BPF object {path} is missing: the checkout is incomplete")
    with libbpf.capture_log() as cap:
        # CO-RE against vmlinux BTF alone: without btf_custom_path libbpf 1.1 lists every module's
        # BTF (BPF_BTF_GET_NEXT_ID, CAP_SYS_ADMIN only) for each relocation whose type vmlinux
        # lacks, and our objects carry other kernels' types (the old union kernfs_node_id);
        # with it, CAP_BPF and CAP_PERFMON load them (docs/install.md: Least privilege)
        # An object that relocates against kernel modules' types (its `modules`: rdma's ib_core and
        # rdma_rxe) needs libbpf's own search of every module's BTF, so no custom path (and root)
        custom = VMLINUX if os.path.exists(VMLINUX) and not getattr(spec.obj, "modules", ()) else None
        opts = libbpf.open_opts(custom)
        handle = lb.bpf_object__open_file(path.encode(), ctypes.byref(opts))
        if not handle:
            raise CeemsnetError(f"cannot open {path}: {os.strerror(ctypes.get_errno())}")
        coll = Collection(spec, handle)
        try:
            if spec.programs is not None:
                wanted = set(spec.programs)
                prog = lb.bpf_object__next_program(handle, None)
                while prog:
                    lb.bpf_program__set_autoload(prog, lb.bpf_program__name(prog).decode() in wanted)
                    prog = lb.bpf_object__next_program(handle, prog)
            for mname, n in spec.map_entries.items():
                m = lb.bpf_object__find_map_by_name(handle, mname.encode())
                if m:
                    libbpf.check_rc(lb.bpf_map__set_max_entries(m, n), f"resize map {mname}")
            for mname, old in spec.reuse.items():
                m = lb.bpf_object__find_map_by_name(handle, mname.encode())
                if m and map_fits(old, lb.bpf_map__type(m), lb.bpf_map__key_size(m), lb.bpf_map__value_size(m),
                                  lb.bpf_map__max_entries(m), lb.bpf_map__map_flags(m)):
                    libbpf.check_rc(lb.bpf_map__reuse_fd(m, old.fd), f"reuse map {mname}")  # dups the fd
                    coll.reused.add(mname)
            if spec.settings:
                _apply_settings(lb, handle, path, spec.obj.file, spec.settings)
            rc = lb.bpf_object__load(handle)
            if rc < 0:
                err = -rc
                detail = _last_verifier_line(cap.lines)
                raise LoadRefused(f"loading {spec.obj.file} failed: {explain_errno(err, spec.obj.family)}"
                                  + (f" ({detail})" if detail and err != errno.EPERM else ""))
            m = lb.bpf_object__next_map(handle, None)
            while m:
                name = lb.bpf_map__name(m).decode()
                if "." not in name:  # .rodata, .bss: libbpf's internal maps
                    coll.maps[name] = BpfMap.from_libbpf(name, m)
                m = lb.bpf_object__next_map(handle, m)
            return coll
        except BaseException:
            coll.close()
            raise


def _apply_settings(lb, obj, path: str, file: str, settings: dict[str, int]) -> None:
    # the opened object's BTF: libbpf has filled in the section offsets there (in the
    # file's BTF every variable of .rodata is at offset 0)
    btf = KernelBTF(borrowed=lb.bpf_object__btf(obj))
    layout = btf.datasec_vars(".rodata")
    m = lb.bpf_object__find_map_by_name(obj, b".rodata")
    size = ctypes.c_size_t(0)
    ptr = lb.bpf_map__initial_value(m, ctypes.byref(size)) if m else None
    for name, value in settings.items():
        if name not in layout or not ptr:
            raise CeemsnetError(f"{file} has no setting {name} (rebuild the objects: make objs)")
        off, sz = layout[name]
        if off + sz > size.value:
            raise CeemsnetError(f"{file}: .rodata too small for {name}")
        ctypes.memmove(ptr + off, value.to_bytes(sz, "little", signed=True), sz)


def _last_verifier_line(lines: list[str]) -> str:
    for line in reversed(lines):
        s = line.strip()
        if s and not s.startswith("--") and "processed" not in s:
            return s[:200]
    return ""
