"""What every subsystem shares: the context it opens in, the interface it
returns, and the open path of the kernel-function subsystems (net, vfs).

A subsystem module (net.py, vfs.py, skb.py) provides:
  NAME, HELP         its --collectors name and a one-line description
  add_flags(group)   its own --<name>.* flags on the serve parser
  check(args)        flag checks that need no root and load nothing
  open(ctx)          load and attach (or adopt its pins) through the one pinning
                     sequence (ceemsnet/pinned/sequence.py) -> a Subsystem
The Subsystem answers hooks() (what it attached, for ceemsnet_hook_info and
the log), skipped() (the functions of its plan not hooked, for
ceemsnet_hook_skipped), collect() (metric families, each scrape) and close() (detach).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from typing import Callable, Protocol

from packaging.version import Version

from ceemsnet import CeemsnetError
from ceemsnet.attribution.cgroups import CgroupResolver, Hierarchy, find_cgroup2_root
from ceemsnet.attribution.lifecycle import Lifecycle
from ceemsnet.collectors.counters import CounterMap, HashSource
from ceemsnet.common.flags import positive_int
from ceemsnet.common.metrics import Family
from ceemsnet.pinned.continuity import Carry, Pinned, Upgrade, Wanted
from ceemsnet.pinned.ledger import Ledger
from ceemsnet.pinned.pins import PinDir, boot_id
from ceemsnet.pinned.sequence import open_subsystem
from ceemsnet.planning.catalogue import CATALOGUE
from ceemsnet.planning.choice import FamilyPlan, HookChoice, plan_object
from ceemsnet.planning.select import LoadedObject, select_and_load
from ceemsnet.runtime.btf import KernelBTF
from ceemsnet.runtime.collection import Collection, ObjectSpec
from ceemsnet.runtime.maps import BpfMap

log = logging.getLogger("ceemsnet.collectors.base")


def add_map_entries_flag(group, name: str, keys: str) -> None:
    """--<name>.map-entries: the capacity of the subsystem's counters map (<name>_stats)."""
    group.add_argument(f"--{name}.map-entries", dest=f"{name}_map_entries", type=positive_int, default=65536,
                       metavar="N", help=f"capacity of the {name} counters map in keys ({keys}); entries are "
                                         "allocated on use (default 65536)")


class Subsystem(Protocol):
    name: str
    generation: str  # the lifetime of its counters: kept across restarts that adopt pins (the store uses it)

    def hooks(self) -> list[HookChoice]: ...
    def skipped(self) -> list[HookChoice]: ...
    def collect(self) -> list[Family]: ...
    def close(self) -> None: ...


@dataclass
class Context:
    """What a subsystem needs to open: the kernel, the attribution, the flags."""
    args: argparse.Namespace      # the parsed serve flags (each subsystem reads its own)
    release: str                  # uname -r
    kver: Version
    arch: str
    btf: KernelBTF                # kernel BTF prototypes
    hierarchy: Hierarchy          # which cgroups net and vfs charge
    resolver: CgroupResolver      # cgroup id -> path in that hierarchy
    unit_kind: str = "none"       # --unit resolved: none, slurm, systemd, k8s
    unit_of: Callable[[str], str | None] | None = None  # path -> unit (SLURM job, ...) or None
    pins: PinDir | None = None    # None with --bpf.pin-path=none
    fold: Callable[[str], str] | None = None  # --cgroup.aggregate: path -> the path it counts in; None: each its own
    _cgroup2: tuple[str, CgroupResolver] | None = field(default=None, repr=False)

    def lifecycle(self, root: str | None = None, ledger: Ledger | None = None) -> Lifecycle:
        return Lifecycle(root or self.hierarchy.root, self.args.retention, unit_of=self.unit_of, ledger=ledger,
                         fold=self.fold)

    def ledger(self, coll: Collection, name: str, stats: BpfMap, capacity: int, decode: Callable,
               pack: Callable[..., bytes]) -> Ledger | None:
        """With pins, the lifecycle's state kept in BPF maps beside the counters (ceemsnet/pinned/ledger.py)."""
        if self.pins is None:
            return None
        return Ledger(coll, name, stats.key_size, stats.value_size // 8, capacity, decode, pack)

    def cgroup2(self, why: str) -> tuple[str, CgroupResolver]:
        """(cgroup2 mount, resolver there): the attribution's own where it is cgroup2."""
        if self._cgroup2 is None:
            try:
                root = find_cgroup2_root()
            except CeemsnetError as e:
                raise CeemsnetError(f"{why}: {e}") from None
            same = self.hierarchy.version == "v2" and self.hierarchy.root == root
            self._cgroup2 = (root, self.resolver if same else CgroupResolver(root))
            if not same and self.resolver.watcher is not None:  # serve watches for new cgroups
                self._cgroup2[1].watch()
        return self._cgroup2


def log_plan(name: str, plan: FamilyPlan) -> None:
    """Log a subsystem's hook plan: its notes, each hook attached, and why the others are not
    (a warning unless the function is simply absent from this kernel). Every collector's open()
    calls it once its object is loaded."""
    for note in plan.notes:
        log.info("%s: %s", name, note)
    for h in plan.hooks:
        if h.status == "ok":
            log.info("%s: %s -> %s (%s)", name, h.function, h.hook, h.object)
        else:
            # absent functions are expected; a mismatch or failed attach is not
            absent = "not in this kernel" in h.reason or "does not exist" in h.reason
            log.log(logging.INFO if absent else logging.WARNING, "%s: %s not hooked: %s", name, h.function, h.reason)


class HookSteps:
    """How a kernel-function subsystem (net, vfs) opens, as steps of the pinning sequence
    (ceemsnet/pinned/sequence.py): the catalogue object it would adopt, and the best hook
    family loaded by select_and_load."""

    def __init__(self, ctx: Context, name: str, map_entries: dict[str, int], carry: Carry | None = None):
        self.ctx = ctx
        self.subsystem = name
        self.map_entries = map_entries
        self.carry = carry
        self.settings = {"cgrp_v1_subsys": ctx.hierarchy.subsys_index}
        self.counters = f"{name}_stats"
        self._plan: FamilyPlan | None = None  # what wanted() found this run would load

    def wanted(self, pinned: Pinned) -> Wanted | None:
        """The pinned object's catalogue entry as this run would load it on this kernel, or None
        when this run would not load that object at all."""
        ctx = self.ctx
        obj = next((o for o in CATALOGUE if o.subsystem == self.subsystem and o.file == f"{pinned.stem}.bpf.o"
                    and ctx.arch in o.arches), None)
        if obj is None or ctx.args.hook not in ("auto", obj.family):
            return None
        if obj.family == "kretprobe" and ctx.args.maxactive:
            return None  # pinned kretprobes were attached without a maxactive (see continuity.continuity)
        plan = plan_object(obj, ctx.kver, ctx.btf)
        if not plan.usable:
            return None
        self._plan = plan
        return Wanted.of(pinned, obj, self.settings, plan.programs(), self.map_entries)

    def adopt(self, pinned: Pinned) -> LoadedObject:
        plan = self._plan
        spec = ObjectSpec(plan.obj, tuple(plan.programs()), dict(self.map_entries), self.settings)
        return LoadedObject(plan, Collection.adopt(spec, pinned.path))

    def load(self, up: Upgrade) -> LoadedObject:
        ctx, args = self.ctx, self.ctx.args
        sel = select_and_load(self.subsystem, ctx.kver, ctx.arch, ctx.btf, forced=args.hook,
                              map_entries=self.map_entries, maxactive=args.maxactive or None,
                              settings=self.settings, reuse=up.reuse, before_attach=up.before_attach)
        if sel.loaded is None:
            why = "; ".join(f"{f}: {r}" for f, r in sel.refusals.items())
            raise CeemsnetError(f"no hook family works for {self.subsystem} on this kernel ({why})")
        for fam, why in sel.refusals.items():
            log.info("%s: %s not used: %s", self.subsystem, fam, why)
        return sel.loaded


def open_kernel_hooks(ctx: Context, name: str, map_entries: dict[str, int],
                      carry: Carry | None = None) -> tuple[LoadedObject, int]:
    """Load and attach (or adopt from pins) the best hook family for a kernel-function
    subsystem; log what was hooked and what was not, and why.
    -> (LoadedObject, generation of its counters)."""
    opened = open_subsystem(ctx.pins, HookSteps(ctx, name, map_entries, carry))
    log_plan(name, opened.obj.plan)
    return opened.obj, opened.generation


class KernelHooks:
    """A kernel-function subsystem: one loaded object and its counters map."""

    def __init__(self, name: str, loaded: LoadedObject, counters: CounterMap, generation: str = ""):
        self.name = name
        self.loaded = loaded
        self.counters = counters
        self.generation = generation  # names the lifetime of the counters (the store uses it)

    def hooks(self) -> list[HookChoice]:
        return [h for h in self.loaded.plan.hooks if h.status == "ok"]

    def skipped(self) -> list[HookChoice]:
        return [h for h in self.loaded.plan.hooks if h.status != "ok"]

    def collect(self) -> list[Family]:
        fams = self.counters.collect()
        if self.loaded.plan.family == "kretprobe" and self.loaded.maxactive:
            k = Family("ceemsnet_kretprobe_missed",
                       "Returns of hooked functions not seen because more calls were in flight than "
                       "--kretprobe.maxactive allows: their bytes are not counted", "counter", ("function",))
            for fn, n in sorted(self.loaded.kretprobe_missed().items()):
                k.add((fn,), n)
            fams.append(k)
        r = Family("ceemsnet_bpf_recursion_misses",
                   "Runs of a BPF program the kernel skipped because the program was already running on that "
                   "CPU (preempted or interrupted inside it; the program's recursion_misses, 5.12+): each one "
                   "an event not counted. Expected 0; fexit on a preemptible kernel and tracepoints from 7.0 "
                   "can miss (ceemsnet probe)", "counter", ("program",))
        for prog, n in sorted(self.loaded.collection.program_misses().items()):
            r.add((prog,), n)
        fams.append(r)
        return fams

    def close(self) -> None:
        self.loaded.close()


def open_kernel_subsystem(ctx: Context, name: str, map_entries: int, decode: Callable,
                          pack: Callable[..., bytes], families: Callable[[dict, dict], list[Family]],
                          more_maps: dict[str, int] | None = None,
                          source: Callable[[LoadedObject, BpfMap], object] | None = None,
                          carry: Carry | None = None) -> KernelHooks:
    """Open a kernel-function subsystem whose programs count into `<name>_stats`
    (keys decoded by `decode`, packed by `pack`) with drops in `<name>_drops`.
    more_maps: other maps' sizes; source(loaded, stats): the counters' source
    (default HashSource on `<name>_stats`); carry(old maps, new maps, reused): an upgrade's
    carry-over of the layout's own maps (pinned/continuity.Upgrade)."""
    loaded, gen = open_kernel_hooks(ctx, name, {f"{name}_stats": map_entries, **(more_maps or {})}, carry)
    try:
        stats = loaded.maps[f"{name}_stats"]
        ledger = ctx.ledger(loaded.collection, name, stats, map_entries, decode, pack)
        src = source(loaded, stats) if source else HashSource(stats, decode, pack)
        counters = CounterMap(src, families, ctx.resolver, ctx.lifecycle(ledger=ledger),
                              loaded.maps.get(f"{name}_drops"),
                              f"{name}_stash" if loaded.plan.family == "kretprobe" else None)
    except BaseException:
        loaded.close()
        raise
    return KernelHooks(name, loaded, counters, f"{boot_id()}:{gen}")
