"""RDMA collector: live RDMA objects per cgroup (any driver), soft-RoCE payload bytes per
cgroup (charged to the job owning the queue pair), and the node's port counters.

The objects and bytes come from bpf/rdma/rdma.bpf.c, hooked on module functions (ib_core,
rdma_rxe) whose prototypes are checked against the modules' own BTF; the port counters from
sysfs (/sys/class/infiniband/<device>/ports/<port>/counters/port_{xmit,rcv}_data, in units
of 4 bytes). Not pinned yet: a restart starts the byte counters from zero and sees only the
objects created after it (docs/kernels.md, "RDMA per job").
"""

from __future__ import annotations

import builtins
import logging
import os

from ceemsnet import CeemsnetError
from ceemsnet.collectors.base import Context, log_plan
from ceemsnet.common.metrics import Family
from ceemsnet.planning.catalogue import SUBSYSTEM_MODULES
from ceemsnet.planning.choice import HookChoice
from ceemsnet.planning.select import LoadedObject, select_and_load
from ceemsnet.planning.structs import (RDMA_DIRS, RDMA_TYPES, decode_rdma_bytes, decode_rdma_devs,
                                       decode_rdma_objects)
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


def rdma_families(objects: dict, nbytes: dict, devs: dict[int, str], paths: dict[int, str],
                  ports: list) -> list[Family]:
    """Metric families from decoded maps (pure). objects {(cgroup id, dev, type): live},
    nbytes {(cgroup id, dev, port, dir): bytes}; cgroup id 0 (a queue pair whose creation was
    not seen) gets cgroup=""."""
    def path(cid: int) -> str:
        return "" if cid == 0 else paths.get(cid, f"unknown:{cid}")

    def dev(i: int) -> str:
        return devs.get(i, f"index:{i}")

    o = Family("ceemsnet_rdma_objects", "Live RDMA objects (queue pairs, completion queues, memory regions, "
               "protection domains, shared receive queues) per cgroup of the task that created them",
               "gauge", ("cgroup", "device", "type"))
    acc: dict[tuple[str, str, str], int] = {}
    for (cid, d, t), n in objects.items():
        if n > 0 and t in RDMA_TYPES:
            k = (path(cid), dev(d), RDMA_TYPES[t])
            acc[k] = acc.get(k, 0) + n
    o.rows = sorted(acc.items())
    b = Family("ceemsnet_rdma_bytes", "RDMA payload bytes per cgroup owning the queue pair, where the kernel "
               "carries the data (soft-RoCE); each packet sequence number once", "counter",
               ("cgroup", "device", "port", "direction"))
    accb: dict[tuple[str, str, str, str], int] = {}
    for (cid, d, port, direction), n in nbytes.items():
        k = (path(cid), dev(d), str(port), RDMA_DIRS.get(direction, str(direction)))
        accb[k] = accb.get(k, 0) + n
    b.rows = sorted(accb.items())
    p = Family("ceemsnet_rdma_port_bytes", "Bytes through each RDMA port, from its counters (port_xmit_data, "
               "port_rcv_data: 4-byte units); all traffic, every job's and none", "counter",
               ("device", "port", "direction"))
    p.rows = list(ports)
    return [o, b, p]


class Rdma:
    """The rdma subsystem: its object (when ib_core is loaded) and the ports' counters."""

    def __init__(self, ctx: Context, loaded: LoadedObject | None):
        self.name = NAME
        self.generation = ""  # not pinned: every start is a new lifetime of the counters
        self.ctx = ctx
        self.loaded = loaded
        self.sysfs = getattr(ctx.args, "rdma_sysfs", SYSFS)

    def hooks(self) -> list[HookChoice]:
        return [h for h in self.loaded.plan.hooks if h.status == "ok"] if self.loaded else []

    def collect(self) -> list[Family]:
        objects, nbytes, devs, drops = {}, {}, {}, [0] * len(DROPS)
        if self.loaded is not None:
            maps = self.loaded.maps
            objects = decode_rdma_objects(*maps["rdma_objects"].read_all())
            nbytes = decode_rdma_bytes(*maps["rdma_bytes"].read_all())
            devs = decode_rdma_devs(*maps["rdma_devs"].read_all())
            for i in range(len(DROPS)):
                v = maps["rdma_drops"].lookup(i.to_bytes(4, "little"))
                if v:
                    drops[i] = sum(int.from_bytes(v[j:j + 8], "little") for j in range(0, len(v), 8))
        ids = {k[0] for k in objects if k[0]} | {k[0] for k in nbytes if k[0]}
        paths = self.ctx.resolver.resolve(ids) if ids else {}
        fams = rdma_families(objects, nbytes, devs, paths, port_bytes(self.sysfs))
        if self.loaded is not None:
            d = Family("ceemsnet_rdma_drops", "RDMA events not counted because a map was full", "counter",
                       ("reason",))
            d.rows = [((why,), n) for why, n in zip(DROPS, drops)]
            fams.append(d)
        return fams

    def close(self) -> None:
        if self.loaded is not None:
            self.loaded.close()


def open(ctx: Context) -> Rdma:
    modules = SUBSYSTEM_MODULES[NAME]
    sigs = ModuleBTF(ctx.btf, modules)
    try:
        if "ib_core" in sigs.missing:
            log.warning("rdma: %s has no ib_core BTF (no RDMA device, or ib_core not loaded): only the ports' "
                        "counters are exported", BTF_DIR)
            return Rdma(ctx, None)
        sel = select_and_load(NAME, ctx.kver, ctx.arch, sigs, forced=ctx.args.hook,
                              maxactive=getattr(ctx.args, "maxactive", None) or None,
                              settings={"cgrp_v1_subsys": ctx.hierarchy.subsys_index})
    finally:
        sigs.close()
    if sel.loaded is None:
        why = "; ".join(f"{f}: {r}" for f, r in sel.refusals.items())
        raise CeemsnetError(f"no hook family works for rdma on this kernel ({why})")
    for fam, why in sel.refusals.items():
        log.info("rdma: %s not used: %s", fam, why)
    log_plan(NAME, sel.loaded.plan)
    return Rdma(ctx, sel.loaded)
