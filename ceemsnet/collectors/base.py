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

from .. import CeemsnetError
from ..cgroups import CgroupResolver, Hierarchy, find_cgroup2_root
from ..choice import HookChoice
from ..lifecycle import Lifecycle
from ..metrics import Family
from .counters import CounterMap, HashSource

log = logging.getLogger("ceemsnet.collectors")


def add_map_entries_flag(group, name: str, keys: str) -> None:
    """--<name>.map-entries: the capacity of the subsystem's counters map (<name>_stats)."""
    from ..flags import positive_int
    group.add_argument(f"--{name}.map-entries", dest=f"{name}_map_entries", type=positive_int, default=65536,
                       metavar="N", help=f"capacity of the {name} counters map in keys ({keys}); entries are "
                                         "allocated on use (default 65536)")


class Subsystem(Protocol):
    name: str

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
    btf: object                   # kernel BTF prototypes (ceemsnet.kernel.KernelBTF)
    hierarchy: Hierarchy          # which cgroups net and vfs charge
    resolver: CgroupResolver      # cgroup id -> path in that hierarchy
    unit_kind: str = "none"       # --unit resolved: none, slurm, systemd, k8s
    unit_of: object = None        # path -> unit (SLURM job, ...) or None
    _cgroup2: tuple | None = field(default=None, repr=False)

    def lifecycle(self, root: str | None = None) -> Lifecycle:
        return Lifecycle(root or self.hierarchy.root, self.args.retention, unit_of=self.unit_of)

    def cgroup2(self, why: str) -> tuple[str, CgroupResolver]:
        """(cgroup2 mount, resolver there): the attribution's own where it is cgroup2."""
        if self._cgroup2 is None:
            try:
                root = find_cgroup2_root()
            except CeemsnetError as e:
                raise CeemsnetError(f"{why}: {e}") from None
            same = self.hierarchy.version == "v2" and self.hierarchy.root == root
            self._cgroup2 = (root, self.resolver if same else CgroupResolver(root))
        return self._cgroup2


def open_kernel_hooks(ctx: Context, name: str, map_entries: dict[str, int]):
    """Load and attach the best hook family for a kernel-function subsystem;
    log what was hooked and what was not, and why. -> LoadedObject."""
    from ..loader import select_and_load
    args = ctx.args
    sel = select_and_load(name, ctx.kver, ctx.arch, ctx.btf, forced=args.hook, map_entries=map_entries,
                          maxactive=args.maxactive or None,
                          settings={"cgrp_v1_subsys": ctx.hierarchy.subsys_index})
    if sel.loaded is None:
        why = "; ".join(f"{f}: {r}" for f, r in sel.refusals.items())
        raise CeemsnetError(f"no hook family works for {name} on this kernel ({why})")
    for fam, why in sel.refusals.items():
        log.info("%s: %s not used: %s", name, fam, why)
    for note in sel.plan.notes:
        log.info("%s: %s", name, note)
    for h in sel.plan.hooks:
        if h.status == "ok":
            log.info("%s: %s -> %s (%s)", name, h.function, h.hook, h.object)
        else:
            # absent functions are expected; a mismatch or failed attach is not
            absent = "not in this kernel" in h.reason or "does not exist" in h.reason
            log.log(logging.INFO if absent else logging.WARNING, "%s: %s not hooked: %s", name, h.function, h.reason)
    return sel.loaded


class KernelHooks:
    """A kernel-function subsystem: one loaded object and its counters map."""

    def __init__(self, name: str, loaded, counters):
        self.name = name
        self.loaded = loaded
        self.counters = counters

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


def open_kernel_subsystem(ctx: Context, name: str, map_entries: int, decode, pack, families) -> KernelHooks:
    """Open a kernel-function subsystem whose programs count into `<name>_stats`
    (keys decoded by `decode`, packed by `pack`) with drops in `<name>_drops`."""
    loaded = open_kernel_hooks(ctx, name, {f"{name}_stats": map_entries})
    try:
        source = HashSource(loaded.maps[f"{name}_stats"], decode, pack)
        counters = CounterMap(source, families, ctx.resolver, ctx.lifecycle(), loaded.maps.get(f"{name}_drops"),
                              f"{name}_stash" if loaded.plan.family == "kretprobe" else None)
    except BaseException:
        loaded.close()
        raise
    return KernelHooks(name, loaded, counters)
