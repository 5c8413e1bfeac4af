"""Load, attach and read ceemsnet's BPF objects through libbpf: the only
place that opens an object file.

Two steps, as in cilium/ebpf's CollectionSpec -> Collection:
  ObjectSpec   what to load: a catalogued object, the programs to autoload,
               map sizes and load-time settings (`const volatile` globals);
  Collection   the loaded object: its maps (BpfMap), and the links
               (ceemsnet/links.py) made from its programs; close() detaches
               and frees everything.
For kernel-function subsystems (net, vfs) select_and_load() tries the planned
hook families best first (fexit -> kretprobe -> tracepoint) and keeps the
first one the kernel really accepts: loading and attaching the real
programs is the feature probe, so a kernel that refuses trampolines (EPERM
at load) or has no kprobes (attach fails) is found out by what it does, not
by a config flag. The skb subsystem loads its object with load() and
attaches to cgroups with Collection.attach_cgroup().
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
from dataclasses import dataclass, field

from packaging.version import Version

from . import CeemsnetError, libbpf, tracepoints
from .choice import FamilyPlan, family_order, plan_family
from .links import LibbpfLink, Link, close_all
from .objects import BpfObject

log = logging.getLogger("ceemsnet.loader")

PRIVILEGE_HINT = ("loading BPF programs needs capabilities: CAP_SYS_ADMIN for net and vfs (libbpf 1.1), "
                  "CAP_BPF with CAP_NET_ADMIN (skb root mode) or CAP_PERFMON (per-cgroup mode); "
                  "README: Least privilege")


def map_info(fd: int):
    info = libbpf.bpf_map_info()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    libbpf.check_rc(libbpf.lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)),
                    "bpf_obj_get_info_by_fd")
    return info


class BpfMap:
    """A loaded map: fd plus the geometry needed to read it."""

    def __init__(self, name: str, fd: int, key_size: int, value_size: int, max_entries: int,
                 map_type: int, map_flags: int = 0, owned: bool = False):
        self.name = name
        self.fd = fd
        self.owned = owned  # our own fd (opened from a pin): close() closes it
        self.map_type = map_type
        self.map_flags = map_flags
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.percpu = map_type in libbpf.PERCPU_MAP_TYPES
        self.ncpus = libbpf.num_possible_cpus() if self.percpu else 1
        # per-CPU values come as one 8-byte aligned slot per possible CPU
        self.value_stride = ((value_size + 7) // 8) * 8 if self.percpu else value_size
        self.batch_ok: bool | None = None  # None: not tried yet

    @classmethod
    def from_libbpf(cls, name: str, map_ptr) -> "BpfMap":
        """A loaded libbpf `struct bpf_map *`, geometry read from libbpf (cgroup
        storage maps report max_entries 0: read them key by key)."""
        lb = libbpf.lib()
        return cls(name, lb.bpf_map__fd(map_ptr), lb.bpf_map__key_size(map_ptr), lb.bpf_map__value_size(map_ptr),
                   max(1, lb.bpf_map__max_entries(map_ptr)), lb.bpf_map__type(map_ptr), lb.bpf_map__map_flags(map_ptr))

    @classmethod
    def from_fd(cls, name: str, fd: int) -> "BpfMap":
        """A map we hold an fd of (opened from a pin); geometry from the kernel. Takes the fd over."""
        info = map_info(fd)
        return cls(name, fd, info.key_size, info.value_size, max(1, info.max_entries), info.type, info.map_flags,
                   owned=True)

    @classmethod
    def create(cls, name: str, key_size: int, value_size: int, max_entries: int) -> "BpfMap":
        """A new hash map made from user space, allocated on use (for state kept beside the counters)."""
        opts = libbpf.bpf_map_create_opts(ctypes.sizeof(libbpf.bpf_map_create_opts))
        opts.map_flags = libbpf.BPF_F_NO_PREALLOC
        fd = libbpf.lib().bpf_map_create(libbpf.BPF_MAP_TYPE_HASH, name[:15].encode(), key_size, value_size,
                                         max_entries, ctypes.byref(opts))
        libbpf.check_rc(fd, f"bpf_map_create({name})")
        return cls.from_fd(name, fd)

    @property
    def id(self) -> int:
        """The kernel's id of this map: unique until reboot, so it names this map's lifetime."""
        return map_info(self.fd).id

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_all(self, chunk: int = 4096) -> tuple[bytes, bytes, int]:
        """Every (key, value) as two packed buffers and a count.

        bpf_map_lookup_batch (5.6+) reads a chunk per syscall; older kernels
        (or a map type without batch ops) fall back to get_next_key + lookup.
        """
        if self.batch_ok is not False:
            try:
                out = self._read_batch(chunk)
                self.batch_ok = True
                return out
            except OSError as e:
                # ENOTSUPP (524, kernel-internal) or EINVAL: no batch ops here
                if self.batch_ok or e.errno not in (errno.EINVAL, 524, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.info("map %s: no batch lookup on this kernel (%s), iterating keys", self.name, e)
                self.batch_ok = False
        return self._read_iter()

    def _read_batch(self, chunk: int) -> tuple[bytes, bytes, int]:
        lb = libbpf.lib()
        vsize = self.value_stride * self.ncpus
        chunk = max(1, min(chunk, self.max_entries))
        keys = ctypes.create_string_buffer(self.key_size * chunk)
        vals = ctypes.create_string_buffer(vsize * chunk)
        in_tok = ctypes.c_uint64(0)
        out_tok = ctypes.c_uint64(0)
        opts = libbpf.bpf_map_batch_opts(ctypes.sizeof(libbpf.bpf_map_batch_opts), 0, 0)
        kparts, vparts, total = [], [], 0
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = lb.bpf_map_lookup_batch(self.fd, None if first else ctypes.byref(in_tok),
                                         ctypes.byref(out_tok), keys, vals, ctypes.byref(count),
                                         ctypes.byref(opts))
            err = -rc if rc < 0 else 0
            if err and err != errno.ENOENT:
                if err == errno.ENOSPC and chunk < self.max_entries:
                    # one hash bucket holds more than a chunk: retry with room for all
                    return self._read_batch(self.max_entries)
                raise OSError(err, f"bpf_map_lookup_batch({self.name}): {os.strerror(err)}")
            n = count.value
            if n:
                kparts.append(keys.raw[: n * self.key_size])
                vparts.append(vals.raw[: n * vsize])
                total += n
            if err == errno.ENOENT:
                break
            in_tok.value = out_tok.value
            first = False
        return b"".join(kparts), b"".join(vparts), total

    def _read_iter(self) -> tuple[bytes, bytes, int]:
        lb = libbpf.lib()
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        val = ctypes.create_string_buffer(self.value_stride * self.ncpus)
        kparts, vparts = [], []
        prev = None
        while lb.bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            ctypes.memmove(key, nxt, self.key_size)
            prev = key
            if lb.bpf_map_lookup_elem(self.fd, key, val) == 0:  # may vanish between calls
                kparts.append(key.raw)
                vparts.append(val.raw)
        return b"".join(kparts), b"".join(vparts), len(kparts)

    def delete(self, key: bytes) -> bool:
        return libbpf.lib().bpf_map_delete_elem(self.fd, key) == 0

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        rc = libbpf.lib().bpf_map_update_elem(self.fd, key, value, flags)
        libbpf.check_rc(rc, f"bpf_map_update_elem({self.name})")


@dataclass
class ObjectSpec:
    """What to load from one committed object."""
    obj: BpfObject | None                      # None only for pins of an object no longer catalogued
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

    @classmethod
    def adopt(cls, spec: ObjectSpec, obj_dir: str, targets=None) -> "Collection":
        """The maps and links a previous run pinned in obj_dir: they never stopped counting.
        targets(link name) -> what the link is attached to, for hooks() and the log."""
        from .pins import entries, open_pinned
        coll = cls(spec, 0)
        coll.pin_dir = obj_dir
        try:
            for name, path in entries(obj_dir, "map").items():
                coll.maps[name] = BpfMap.from_fd(name, open_pinned(path))
            for name, path in entries(obj_dir, "link").items():
                program = name.partition("__")[0]
                target = targets(name) if targets else program.partition("_")[2]
                coll.links.append(LibbpfLink.open_pinned(path, program, target, name))
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
        except BaseException:
            self.unpin(obj_dir)
            raise
        self.pin_dir = obj_dir

    def unpin(self, obj_dir: str | None = None) -> None:
        """Remove this collection's pins: closing it then detaches everything."""
        from .pins import remove_object_dir
        for ln in self.links:
            ln.pin_path = None
        d = obj_dir or self.pin_dir
        if d and os.path.isdir(d):
            remove_object_dir(d)
        self.pin_dir = None

    @property
    def file(self) -> str:
        if self.spec.obj is not None:
            return self.spec.obj.file
        from .pins import parse_object_dir
        return parse_object_dir(self.pin_dir)[0] + ".bpf.o" if self.pin_dir else ""

    def _program(self, name: str):
        p = libbpf.lib().bpf_object__find_program_by_name(self._obj, name.encode())
        if not p:
            raise CeemsnetError(f"{self.file} has no program {name} (rebuild the objects: make objs)")
        return p

    def program_fd(self, name: str) -> int:
        return libbpf.lib().bpf_program__fd(self._program(name))

    def program_stats(self, name: str) -> tuple[int, int]:
        """(run_time_ns, run_cnt) of a loaded program, from its fdinfo: what the kernel counted
        while kernel.bpf_stats_enabled was on (benchmarks and tests; 5.1+)."""
        info = {}
        with open(f"/proc/self/fdinfo/{self.program_fd(name)}") as f:
            for line in f:
                k, _, v = line.partition(":")
                info[k.strip()] = v.strip()
        return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))

    def attach(self, name: str, target: str = "") -> Link:
        """Attach a program where its SEC() says (fexit/, kprobe/, tp_btf/, tp/ ...); OSError if refused."""
        prog = self._program(name)
        event = tracepoints.section_event(libbpf.lib().bpf_program__section_name(prog).decode())
        if event is not None:  # a trace event: its id from tracefs, mounted or not (ceemsnet/tracepoints.py)
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
            self._event_ids = tracepoints.event_ids(events)
        if event not in self._event_ids:
            raise OSError(errno.ENOENT, f"this kernel has no trace event {event[0]}:{event[1]}"
                                        + (" (CONFIG_FTRACE_SYSCALLS is off)" if event[0] == "syscalls" else ""))
        return self._event_ids[event]

    def attach_kretprobe(self, name: str, function: str, maxactive: int, bcc) -> Link:
        """A return probe through a tracefs event with `maxactive` instances (ceemsnet/kprobes.py)."""
        from .kprobes import KretprobeEvent
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

    def _keep(self, link: Link) -> Link:
        self.links.append(link)
        if self.pin_dir:  # attached after pinning (skb per-cgroup mode): pinned like the rest
            try:
                link.pin(os.path.join(self.pin_dir, f"link__{link.name}"))
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


def _pin_map(m: BpfMap, obj_dir: str) -> None:
    libbpf.check_rc(libbpf.lib().bpf_obj_pin(m.fd, os.path.join(obj_dir, f"map__{m.name}").encode()),
                    f"pinning map {m.name}")


def map_fits(old: BpfMap, map_type: int, key_size: int, value_size: int, max_entries: int, flags: int) -> bool:
    """Can an existing map stand in for one an object defines? (What the kernel
    would check at load: same type, key and value sizes, capacity and flags.)"""
    return (old.map_type, old.key_size, old.value_size, old.max_entries, old.map_flags) == \
        (map_type, key_size, value_size, max(1, max_entries), flags)


class LoadRefused(Exception):
    """The kernel refused this object or family (load or every attach failed)."""


def _explain_errno(err: int, family: str) -> str:
    if err == errno.EPERM:
        if os.geteuid() != 0:
            return PRIVILEGE_HINT
        if family == "fexit":
            return "the kernel refuses fexit (BPF trampoline) programs: EPERM"
        return "the kernel refused the load: EPERM"
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
        handle = lb.bpf_object__open_file(path.encode(), None)
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
                raise LoadRefused(f"loading {spec.obj.file} failed: {_explain_errno(err, spec.obj.family)}"
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


@dataclass
class LoadedObject:
    """A planned kernel-function object, loaded and attached (net, vfs)."""
    plan: FamilyPlan
    collection: Collection
    maxactive: int | None = None  # kretprobes: instances per function (None: kernel default)

    @property
    def maps(self) -> dict[str, BpfMap]:
        return self.collection.maps

    @property
    def links(self) -> list[Link]:
        return self.collection.links

    @property
    def file(self) -> str:
        return self.collection.file

    def programs(self) -> list[str]:
        """Names of the programs attached now."""
        return [ln.program for ln in self.links]

    def kretprobe_missed(self) -> dict[str, int]:
        """{function: returns missed} of return probes attached with a maxactive."""
        from .kprobes import missed
        return missed(self.links)

    def close(self) -> None:
        self.collection.close()


def load_object(plan: FamilyPlan, map_entries: dict[str, int] | None = None,
                settings: dict[str, int] | None = None, maxactive: int | None = None,
                reuse: dict[str, BpfMap] | None = None, before_attach=None) -> LoadedObject:
    """Load plan.obj with the planned programs and attach them.

    Programs whose attach fails are detached from the plan (their hooks turn
    "skipped" with the reason); only when nothing attaches is the family
    refused. maxactive: kretprobe programs are attached through bcc with
    this many instances per function (see ceemsnet/kprobes.py), else with
    libbpf's default. reuse: existing maps the object takes over where they
    fit; before_attach(loaded): called once the object is loaded, before any
    program is attached (an upgrade detaches the old programs there).
    """
    if plan.obj is None:
        raise LoadRefused(plan.refused or "nothing planned")
    coll = load(ObjectSpec(plan.obj, tuple(plan.programs()), dict(map_entries or {}), dict(settings or {}),
                           dict(reuse or {})))
    loaded = LoadedObject(plan, coll)
    try:
        if before_attach is not None:
            before_attach(loaded)
        bcc = None
        if maxactive and plan.family == "kretprobe":
            from .kprobes import libbcc, tracefs
            if tracefs() is None:  # no kprobe_events: no kprobes at all, or tracefs not mounted
                log.debug("no tracefs kprobe_events: kretprobes attach with the kernel's default maxactive")
            else:
                bcc = libbcc()
                if bcc is not None:
                    loaded.maxactive = maxactive
        failed: dict[str, str] = {}
        # entry probes first: a return probe without its entry would only miss
        for name in sorted(plan.programs(), key=lambda n: (n.startswith("kretprobe_"), n)):
            try:
                if bcc is not None and name.startswith("kretprobe_"):
                    coll.attach_kretprobe(name, name[len("kretprobe_"):], maxactive, bcc)
                else:
                    coll.attach(name)
            except OSError as e:
                failed[name] = _attach_error(e.errno, plan.family)
        for name, why in failed.items():
            plan.skip({name}, f"attach of {name} failed: {why}")
        # A hook is all its programs or none: a kprobe whose kretprobe
        # failed would only fill the stash. Release what is left unused.
        still = set(plan.programs())
        coll.detach([ln for ln in coll.links if ln.program not in still])
        if not coll.links:
            raise LoadRefused(f"no program of {plan.obj.file} could attach: "
                              + "; ".join(sorted(set(failed.values()))))
        return loaded
    except BaseException:
        loaded.close()
        raise


def _apply_settings(lb, obj, path: str, file: str, settings: dict[str, int]) -> None:
    from .kernel import KernelBTF
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


def _attach_error(err: int, family: str) -> str:
    if family == "kretprobe" and err in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP, 524):
        return f"{os.strerror(err)} (no kprobe support: CONFIG_KPROBES off, or the symbol is not traceable)"
    return _explain_errno(err, family)


def _last_verifier_line(lines: list[str]) -> str:
    for line in reversed(lines):
        s = line.strip()
        if s and not s.startswith("--") and "processed" not in s:
            return s[:200]
    return ""


@dataclass
class Selection:
    """What select_and_load decided, for probe, the log and the info metric."""
    loaded: LoadedObject | None
    plans: list[FamilyPlan]                          # every family considered, in order
    refusals: dict[str, str] = field(default_factory=dict)  # family -> why not used

    @property
    def plan(self) -> FamilyPlan | None:
        return self.loaded.plan if self.loaded else None


SLOT_MASK, SLOT_OWNER = "net_slot_mask", "net_slot_owner"  # bpf/net/net_slots.h


def _load_slots_twin(plan: FamilyPlan, kver: Version, sigs, map_entries, settings, reuse, before_attach):
    """The slot-layout twin of the planned object (objects.slots_twin), loaded and
    attached, or None where there is none or the kernel refuses it: the load is the
    feature probe (its compare and swap needs BPF atomics), and the hash object of the
    same era then serves."""
    from .choice import plan_object
    from .objects import slots_twin
    twin = slots_twin(plan.obj) if plan.obj is not None else None
    if twin is None:
        return None
    tplan = plan_object(twin, kver, sigs)
    if tplan.refused or tplan.programs() != plan.programs():
        return None
    slots = dict(map_entries or {}).get(SLOT_OWNER, 1024)
    if slots == 0:
        plan.notes.append("counter layout: hash (--net.slots=0)")
        return None
    try:
        loaded = load_object(tplan, map_entries, settings={**(settings or {}), SLOT_MASK: slots - 1},
                             reuse=reuse, before_attach=before_attach)
    except LoadRefused as e:
        plan.notes.append(f"counter layout: hash ({twin.file} refused: {e})")
        return None
    tplan.notes = plan.notes + tplan.notes
    return loaded


def select_and_load(subsystem: str, kver: Version, arch: str, sigs, forced: str | None = None,
                    map_entries: dict[str, int] | None = None, keep: bool = True,
                    maxactive: int | None = None, settings: dict[str, int] | None = None,
                    reuse: dict[str, BpfMap] | None = None, before_attach=None) -> Selection:
    """Plan each family best first and keep the first the kernel accepts.

    forced: a family name; then only that one is tried and its refusal is
    an error (a forced hook never falls back silently). keep=False loads and
    attaches to find out, then detaches (ceemsnet probe).
    """
    sel = Selection(None, [])
    for family in family_order("any", forced):  # plan_family explains families that do not apply
        plan = plan_family(subsystem, family, kver, arch, sigs)
        sel.plans.append(plan)
        if plan.refused:
            sel.refusals[family] = plan.refused
            continue
        loaded = _load_slots_twin(plan, kver, sigs, map_entries, settings, reuse, before_attach)
        try:
            if loaded is None:
                loaded = load_object(plan, map_entries, settings=settings, maxactive=maxactive, reuse=reuse,
                                     before_attach=before_attach)
        except LoadRefused as e:
            sel.refusals[family] = str(e)
            plan.refused = str(e)
            log.debug("%s: %s family refused: %s", subsystem, family, e)
            continue
        if not keep:
            loaded.close()
        sel.loaded = loaded
        break
    if sel.loaded is None and forced and forced != "auto":
        raise CeemsnetError(f"--hook={forced} cannot be used for {subsystem} on this kernel: "
                            f"{sel.refusals.get(forced, 'refused')}")
    return sel
