"""What every subsystem shares: the context it opens in, the interface it
returns, and the open path of the kernel-function subsystems (net, vfs).

A subsystem module (net.py, vfs.py, skb.py) provides:
  NAME, HELP         its --collectors name and a one-line description
  add_flags(group)   its own --<name>.* flags on the serve parser
  check(args)        flag checks that need no root and load nothing
  open(ctx)          load and attach through the loader -> a Subsystem
The Subsystem answers hooks() (what it attached, for ceemsnet_hook_info and
the log), collect() (metric families, each scrape) and close() (detach).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

from packaging.version import Version

from ceemsnet import CeemsnetError
from ceemsnet.attribution.cgroups import CgroupResolver, Hierarchy, find_cgroup2_root
from ceemsnet.planning.choice import HookChoice
from ceemsnet.attribution.lifecycle import Lifecycle
from ceemsnet.common.metrics import Family
from ceemsnet.collectors.counters import CounterMap, HashSource

log = logging.getLogger("ceemsnet.collectors")


def add_map_entries_flag(group, name: str, keys: str) -> None:
    """--<name>.map-entries: the capacity of the subsystem's counters map (<name>_stats)."""
    from ceemsnet.common.flags import positive_int
    group.add_argument(f"--{name}.map-entries", dest=f"{name}_map_entries", type=positive_int, default=65536,
                       metavar="N", help=f"capacity of the {name} counters map in keys ({keys}); entries are "
                                         "allocated on use (default 65536)")


class Subsystem(Protocol):
    name: str
    generation: str  # the lifetime of its counters: kept across restarts that adopt pins (the store uses it)

    def hooks(self) -> list[HookChoice]: ...
    def collect(self) -> list[Family]: ...
    def close(self) -> None: ...


@dataclass
class Context:
    """What a subsystem needs to open: the kernel, the attribution, the flags."""
    args: object                  # the parsed serve flags (each subsystem reads its own)
    release: str                  # uname -r
    kver: Version
    arch: str
    btf: object                   # kernel BTF prototypes (ceemsnet.planning.kernel.KernelBTF)
    hierarchy: Hierarchy          # which cgroups net and vfs charge
    resolver: CgroupResolver      # cgroup id -> path in that hierarchy
    unit_kind: str = "none"       # --unit resolved: none, slurm, systemd, k8s
    unit_of: object = None        # path -> unit (SLURM job, ...) or None
    pins: object = None           # ceemsnet.pinned.pins.PinDir, or None with --bpf.pin-path=none
    fold: object = None           # --cgroup.aggregate: path -> the path it counts in, None: every cgroup its own
    _cgroup2: tuple | None = field(default=None, repr=False)

    def lifecycle(self, root: str | None = None, ledger=None) -> Lifecycle:
        return Lifecycle(root or self.hierarchy.root, self.args.retention, unit_of=self.unit_of, ledger=ledger,
                         fold=self.fold)

    def ledger(self, coll, name: str, stats, capacity: int, decode, pack):
        """With pins, the lifecycle's state kept in BPF maps beside the counters (ceemsnet/pinned/ledger.py)."""
        if self.pins is None:
            return None
        from ceemsnet.pinned.ledger import Ledger
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


def _log_plan(name: str, plan) -> None:
    for note in plan.notes:
        log.info("%s: %s", name, note)
    for h in plan.hooks:
        if h.status == "ok":
            log.info("%s: %s -> %s (%s)", name, h.function, h.hook, h.object)
        else:
            # absent functions are expected; a mismatch or failed attach is not
            absent = "not in this kernel" in h.reason or "does not exist" in h.reason
            log.log(logging.INFO if absent else logging.WARNING, "%s: %s not hooked: %s", name, h.function, h.reason)


def _wanted(ctx: Context, name: str, pinned, settings: dict[str, int], map_entries: dict[str, int]):
    """(Wanted, plan) for the pinned object's catalogue entry on this kernel, or None
    when this run would not load that object at all."""
    from ceemsnet.planning.choice import plan_object
    from ceemsnet.pinned.continuity import Wanted
    from ceemsnet.planning.catalogue import CATALOGUE
    from ceemsnet.pinned.pins import identity
    if len(pinned) != 1:
        return None
    p = pinned[0]
    obj = next((o for o in CATALOGUE if o.subsystem == name and o.file == f"{p.stem}.bpf.o"
                and ctx.arch in o.arches), None)
    if obj is None or ctx.args.hook not in ("auto", obj.family):
        return None
    if obj.family == "kretprobe" and ctx.args.maxactive:
        return None  # pinned kretprobes were attached without a maxactive (see continuity.continuity)
    plan = plan_object(obj, ctx.kver, ctx.btf)
    if not plan.usable:
        return None
    fits = all(p.capacity(mname) in (None, n) for mname, n in map_entries.items())
    return Wanted(p.stem, identity(obj.path, settings), frozenset(plan.programs()), fits), plan


def open_kernel_hooks(ctx: Context, name: str, map_entries: dict[str, int], carry=None):
    """Load and attach (or adopt from pins) the best hook family for a kernel-function
    subsystem; log what was hooked and what was not, and why.
    -> (LoadedObject, generation of its counters)."""
    from ceemsnet.pinned.continuity import Pinned
    settings = {"cgrp_v1_subsys": ctx.hierarchy.subsys_index}
    pinned = [Pinned.read(p) for p in ctx.pins.pinned(name)] if ctx.pins else []
    try:
        return _open_kernel_hooks(ctx, name, map_entries, settings, pinned, carry)
    except OSError as e:
        if not pinned:
            raise
        raise CeemsnetError(f"{name}: cannot take over the pinned {', '.join(p.path for p in pinned)}: "
                            f"{e.strerror or e} (`ceemsnet detach` removes them)") from None


def _open_kernel_hooks(ctx: Context, name: str, map_entries: dict[str, int], settings: dict[str, int], pinned,
                       carry=None):
    from ceemsnet.pinned.continuity import Upgrade, decide, generation_of
    from ceemsnet.runtime.links import PinUnsupported
    from ceemsnet.runtime.collection import Collection, ObjectSpec
    from ceemsnet.planning.select import LoadedObject, select_and_load
    from ceemsnet.pinned.pins import identity
    args = ctx.args
    wanted = _wanted(ctx, name, pinned, settings, map_entries)
    how = decide(pinned, wanted[0] if wanted else None)
    if how == "adopt":
        plan = wanted[1]
        coll = Collection.adopt(ObjectSpec(plan.obj, tuple(plan.programs()), dict(map_entries), settings),
                                pinned[0].path)
        log.info("%s: adopted the pinned %s: its programs never stopped counting", name, plan.obj.file)
        _log_plan(name, plan)
        return LoadedObject(plan, coll), pinned[0].generation
    up = Upgrade([Collection.adopt(ObjectSpec(None), p.path, label=f"{p.stem}.bpf.o") for p in pinned], carry)
    try:
        sel = select_and_load(name, ctx.kver, ctx.arch, ctx.btf, forced=args.hook, map_entries=map_entries,
                              maxactive=args.maxactive or None, settings=settings,
                              reuse=dict(up.old[-1].maps) if up.old else None, before_attach=up.before_attach)
        if sel.loaded is None:
            why = "; ".join(f"{f}: {r}" for f, r in sel.refusals.items())
            raise CeemsnetError(f"no hook family works for {name} on this kernel ({why})")
    except BaseException:
        up.abandon()
        raise
    olds = ", ".join(c.file for c in up.old)
    up.finish(sel.loaded.collection)
    for fam, why in sel.refusals.items():
        log.info("%s: %s not used: %s", name, fam, why)
    loaded = sel.loaded
    if up.how:
        log.info("%s: replaced the pinned %s by %s (%s: %s)", name, olds, loaded.file, up.how,
                 "the counts stayed in the same maps" if up.how == "swap" else "the counts were copied over")
    gen = generation_of(pinned, loaded.maps[f"{name}_stats"].id)
    if ctx.pins:
        d = ctx.pins.object_dir(name, loaded.file.removesuffix(".bpf.o"), identity(loaded.plan.obj.path, settings),
                                gen)
        try:
            loaded.collection.pin(d)
            log.info("%s: maps and links pinned in %s: counting goes on when the exporter stops", name, d)
        except PinUnsupported as e:
            log.warning("%s: %s: no continuity for the %s family here; the programs stop with the exporter",
                        name, e, loaded.plan.family)
    _log_plan(name, loaded.plan)
    return loaded, gen


class KernelHooks:
    """A kernel-function subsystem: one loaded object and its counters map."""

    def __init__(self, name: str, loaded, counters, generation: str = ""):
        self.name = name
        self.loaded = loaded
        self.counters = counters
        self.generation = generation  # names the lifetime of the counters (the store uses it)

    def hooks(self) -> list[HookChoice]:
        return [h for h in self.loaded.plan.hooks if h.status == "ok"]

    def collect(self) -> list[Family]:
        fams = self.counters.collect()
        if self.loaded.plan.family == "kretprobe" and self.loaded.maxactive:
            k = Family("ceemsnet_kretprobe_missed",
                       "Returns of hooked functions not seen because more calls were in flight than "
                       "--kretprobe.maxactive allows: their bytes are not counted", "counter", ("function",))
            for fn, n in sorted(self.loaded.kretprobe_missed().items()):
                k.add((fn,), n)
            fams.append(k)
        return fams

    def close(self) -> None:
        self.loaded.close()


def open_kernel_subsystem(ctx: Context, name: str, map_entries: int, decode, pack, families,
                          more_maps: dict[str, int] | None = None, source=None, carry=None) -> KernelHooks:
    """Open a kernel-function subsystem whose programs count into `<name>_stats`
    (keys decoded by `decode`, packed by `pack`) with drops in `<name>_drops`.
    more_maps: other maps' sizes; source(loaded, stats): the counters' source
    (default HashSource on `<name>_stats`); carry(old maps, new maps, reused): an upgrade's
    carry-over of the layout's own maps (pinned/continuity.Upgrade)."""
    from ceemsnet.pinned.pins import boot_id
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
