"""RDMA collector: live RDMA objects per cgroup (any driver), soft-RoCE payload bytes per
cgroup (charged to the job owning the queue pair), and the node's port counters.

The objects and bytes come from bpf/rdma/rdma.bpf.c, hooked on module functions (ib_core,
rdma_rxe) whose prototypes are checked against the modules' own BTF; the port counters from
sysfs (/sys/class/infiniband/<device>/ports/<port>/counters/port_{xmit,rcv}_data, in units
of 4 bytes). Pinned like net and vfs: the programs go on counting, and the owner of every
queue pair is kept, across restarts and upgrades (docs/kernels.md, "RDMA per job").
"""

from __future__ import annotations

import builtins
import dataclasses
import logging
import os

from ceemsnet.attribution.lifecycle import Lifecycle
from ceemsnet.collectors.base import Context, HookSteps, log_plan
from ceemsnet.collectors.counters import CounterMap, HashSource
from ceemsnet.collectors.rdma_counters import QpCounters, cgroup_of_pid
from ceemsnet.common.metrics import Family
from ceemsnet.pinned.pins import boot_id
from ceemsnet.pinned.sequence import open_subsystem
from ceemsnet.planning.catalogue import RDMA_FUNCTIONS, SUBSYSTEM_MODULES
from ceemsnet.planning.choice import HookChoice
from ceemsnet.planning.select import LoadedObject
from ceemsnet.planning.structs import (RDMA_DIRS, RDMA_TYPES, decode_rdma_bytes, decode_rdma_devs,
                                       decode_rdma_objects, pack_rdma_bytes_key, pack_rdma_count_key)
from ceemsnet.runtime.btf import BTF_DIR, ModuleBTF

log = logging.getLogger("ceemsnet.collectors.rdma")

NAME = "rdma"
HELP = ("RDMA objects per cgroup on any driver, soft-RoCE payload bytes per cgroup and the ports' byte "
        "counters (ceemsnet_rdma_*)")
SYSFS = "/sys/class/infiniband"
# port_xmit_data and port_rcv_data count 32-bit words (the InfiniBand PortCounters' unit)
PORT_FILES = (("port_xmit_data", "egress"), ("port_rcv_data", "ingress"))
DROPS = ("objects map full", "counts map full", "bytes map full", "kretprobe stash full")


def add_flags(group) -> None:
    group.add_argument("--rdma.sysfs", dest="rdma_sysfs", default=SYSFS, metavar="DIR",
                       help=f"where the RDMA devices' port counters are read (default {SYSFS})")


def check(args) -> None:
    pass


def port_bytes(sysfs: str) -> list[tuple[tuple[str, str, str], int]]:
    """[((device, port, direction), bytes)] from the ports' counters; devices or ports without
    them (soft-RoCE has none) give no rows."""
    rows = []
    try:
        devices = sorted(os.listdir(sysfs))
    except OSError:
        return rows
    for dev in devices:
        ports = os.path.join(sysfs, dev, "ports")
        try:
            names = sorted(os.listdir(ports), key=lambda p: (len(p), p))
        except OSError:
            continue
        for port in names:
            for fname, direction in PORT_FILES:
                try:
                    with builtins.open(os.path.join(ports, port, "counters", fname)) as f:  # open() is this module's
                        words = int(f.read().strip())
                except (OSError, ValueError):
                    continue
                rows.append(((dev, port, direction), 4 * words))
    return rows


def objects_family(objects: dict, devs: dict[int, str], paths: dict[int, str]) -> Family:
    """ceemsnet_rdma_objects from decoded rdma_objects {(cgroup id, dev, type): live} (pure);
    cgroup id 0 (an object whose creation was not seen) gets cgroup=""."""
    o = Family("ceemsnet_rdma_objects", "Live RDMA objects (queue pairs, completion queues, memory regions, "
               "protection domains, shared receive queues) per cgroup of the task that created them",
               "gauge", ("cgroup", "device", "type"))
    acc: dict[tuple[str, str, str], int] = {}
    for (cid, d, t), n in objects.items():
        if n > 0 and t in RDMA_TYPES:
            k = (_path(paths, cid), devs.get(d, f"index:{d}"), RDMA_TYPES[t])
            acc[k] = acc.get(k, 0) + n
    o.rows = sorted(acc.items())
    return o


def bytes_families(stats: dict, paths: dict[int, str], devs: dict[int, str]) -> list[Family]:
    """ceemsnet_rdma_bytes from rdma_bytes' records {(cgroup id, dev, port, dir): (bytes,)} (pure:
    the CounterMap renderer, retired totals under negative ids); a queue pair whose creation was
    not seen (cgroup id 0) counts under cgroup=""."""
    b = Family("ceemsnet_rdma_bytes", "RDMA payload bytes per cgroup owning the queue pair, where the kernel "
               "carries the data (soft-RoCE); each packet sequence number once", "counter",
               ("cgroup", "device", "port", "direction"))
    acc: dict[tuple[str, str, str, str], int] = {}
    for (cid, d, port, direction), (n,) in stats.items():
        k = (_path(paths, cid), devs.get(d, f"index:{d}"), str(port), RDMA_DIRS.get(direction, str(direction)))
        acc[k] = acc.get(k, 0) + n
    b.rows = sorted(acc.items())
    return [b]


def port_family(ports: list) -> Family:
    p = Family("ceemsnet_rdma_port_bytes", "Bytes through each RDMA port, from its counters (port_xmit_data, "
               "port_rcv_data: 4-byte units); all traffic, every job's and none", "counter",
               ("device", "port", "direction"))
    p.rows = list(ports)
    return p


def _path(paths: dict[int, str], cid: int) -> str:
    return "" if cid == 0 else paths.get(cid, f"unknown:{cid}")


class _Unowned:
    """The resolver as the rdma counters see it: cgroup id 0 (queue pairs whose creation no
    program saw: made before the collector first started, or by the kernel) is the path ""."""

    def __init__(self, resolver):
        self.resolver = resolver

    def resolve(self, ids) -> dict[int, str]:
        ids = set(ids)
        if 0 not in ids:
            return self.resolver.resolve(ids)
        out = self.resolver.resolve(ids - {0}) if len(ids) > 1 else {}
        out[0] = ""
        return out


class _Lifecycle(Lifecycle):
    """Removed cgroups as for net and vfs; cgroup id 0 is no cgroup and never goes away."""

    def _gone(self, ids, paths: dict[int, str]) -> set[int]:
        if 0 not in paths:
            return super()._gone(ids, paths)
        return super()._gone(set(ids) - {0}, {c: p for c, p in paths.items() if c})


class Rdma:
    """The rdma subsystem: its object (when ib_core is loaded), pinned like net and vfs
    (ceemsnet/pinned/sequence.py), and the ports' counters. The bytes go through the counters
    machinery of net and vfs (collectors/counters.py): removed cgroups' totals are retired
    into the ledger and their keys deleted."""

    def __init__(self, ctx: Context, loaded: LoadedObject | None, generation: str = ""):
        self.name = NAME
        self.generation = generation  # the lifetime of the counters, kept by adopt, swap and migrate
        self.ctx = ctx
        self.loaded = loaded
        self.sysfs = getattr(ctx.args, "rdma_sysfs", SYSFS)
        self.devs: dict[int, str] = {}
        self.counters: CounterMap | None = None
        # hardware adapters' per-QP byte counters (mlx5, 6.15+), bound per job through RDMA netlink
        h, fold = ctx.hierarchy, ctx.fold

        def cgroup_of(pid: int) -> str | None:
            p = cgroup_of_pid(pid, h.version, h.controller)
            return fold(p) if p and fold else p
        self.hw = QpCounters(cgroup_of)
        if loaded is not None:
            stats = loaded.maps["rdma_bytes"]
            ledger = ctx.ledger(loaded.collection, NAME, stats, stats.max_entries, decode_rdma_bytes,
                                pack_rdma_bytes_key)
            lifecycle = _Lifecycle(ctx.hierarchy.root, ctx.args.retention, unit_of=ctx.unit_of, ledger=ledger,
                                   fold=ctx.fold)
            self.counters = CounterMap(HashSource(stats, decode_rdma_bytes, pack_rdma_bytes_key),
                                       lambda st, paths: bytes_families(st, paths, self.devs),
                                       _Unowned(ctx.resolver), lifecycle)

    def hooks(self) -> list[HookChoice]:
        return [h for h in self.loaded.plan.hooks if h.status == "ok"] if self.loaded else []

    def skipped(self) -> list[HookChoice]:
        if self.loaded is None:  # no ib_core BTF: nothing was planned, every function is absent
            return [HookChoice(NAME, f, "none", "", "skipped", "ib_core is not loaded (no RDMA device)",
                               cause="absent") for f in RDMA_FUNCTIONS]
        return [h for h in self.loaded.plan.hooks if h.status != "ok"]

    def collect(self) -> list[Family]:
        ports = port_family(port_bytes(self.sysfs))
        if self.loaded is None:
            return [objects_family({}, {}, {}), *bytes_families({}, {}, {}), ports, *self.hw.collect()]
        maps = self.loaded.maps
        self.devs = decode_rdma_devs(*maps["rdma_devs"].read_all())
        objects = decode_rdma_objects(*maps["rdma_objects"].read_all())
        ids = {k[0] for k in objects if k[0]}
        paths = self.ctx.resolver.resolve(ids) if ids else {}
        self._prune(objects, paths)
        fams = [objects_family(objects, self.devs, paths), *self.counters.collect(), ports]
        drops = [0] * len(DROPS)
        for i in range(len(DROPS)):
            v = maps["rdma_drops"].lookup(i.to_bytes(4, "little"))
            if v:
                drops[i] = sum(int.from_bytes(v[j:j + 8], "little") for j in range(0, len(v), 8))
        d = Family("ceemsnet_rdma_drops", "RDMA events not counted because a map was full", "counter", ("reason",))
        d.rows = [((why,), n) for why, n in zip(DROPS, drops)]
        fams.append(d)
        fams += self.hw.collect()
        return fams

    def _prune(self, objects: dict, paths: dict[int, str]) -> None:
        """Delete the object counts of removed cgroups once they are zero, so that rdma_objects
        does not fill up as jobs come and go (a removed cgroup creates no object)."""
        m = self.loaded.maps["rdma_objects"]
        for (cid, d, t), n in objects.items():
            if cid and n == 0 and not paths.get(cid, "").startswith("/"):
                m.delete(pack_rdma_count_key(cid, d, t))

    def close(self) -> None:
        self.hw.close()
        if self.loaded is not None:
            self.loaded.close()


# the maps that hold the subsystem's state besides its counters (rdma_drops: carried as every
# subsystem's *_drops): an upgrade whose new object could not take them over copies them
STATE_MAPS = ("rdma_objs", "rdma_objects", "rdma_bytes", "rdma_devs")


def carry_state(old_maps: dict, new_maps: dict, reused: set[str]) -> int:
    """An upgrade's carry-over (pinned/continuity.Carry): the owner of every tracked object, the
    live counts, the bytes and the device names, into new maps no program writes yet."""
    copied = 0
    for name in STATE_MAPS:
        old, new = old_maps.get(name), new_maps.get(name)
        if old is None or new is None or name in reused:
            continue
        if (old.key_size, old.value_size) != (new.key_size, new.value_size):
            log.warning("rdma: %s could not be carried over: its layout changed", name)
            continue
        keys, values, n = old.read_all()
        ks, vs = old.key_size, old.value_size
        for i in range(n):
            new.update(keys[i * ks:(i + 1) * ks], values[i * vs:(i + 1) * vs])
        copied += n
    return copied


def open(ctx: Context) -> Rdma:
    modules = SUBSYSTEM_MODULES[NAME]
    sigs = ModuleBTF(ctx.btf, modules)
    try:
        if "ib_core" in sigs.missing:
            log.warning("rdma: %s has no ib_core BTF (no RDMA device, or ib_core not loaded): only the ports' "
                        "counters are exported", BTF_DIR)
            return Rdma(ctx, None)
        # the module functions are planned against the modules' BTF
        steps = HookSteps(dataclasses.replace(ctx, btf=sigs), NAME, {}, carry_state)
        steps.counters = "rdma_bytes"
        opened = open_subsystem(ctx.pins, steps)
    finally:
        sigs.close()
    log_plan(NAME, opened.obj.plan)
    try:
        return Rdma(ctx, opened.obj, f"{boot_id()}:{opened.generation}")
    except BaseException:
        opened.obj.close()
        raise
