"""Per-job RDMA bytes from the adapter's own per-QP counters, for hardware that moves the
data without the kernel (mlx5 from Linux 6.15: the optional counters rdma_tx_bytes and
rdma_rx_bytes, bound per queue pair).

Each scrape, for each RDMA device: every user queue pair not yet bound to a statistic
counter is bound, through RDMA netlink (ceemsnet/runtime/rdmanl.py, what `rdma statistic qp
bind` does), to its job's counter: one counter per (cgroup, device, port), made by the first
bind of that job there; the cgroup is the QP's creating task's (`cgroup_of(pid)`, the
caller's hierarchy). Then those counters' rdma_tx_bytes / rdma_rx_bytes are read and
exported as ceemsnet_rdma_hw_bytes_total. The kernel frees a counter with its last queue
pair; its last value read is kept in the job's series (carried), which is dropped `keep`
seconds after the job has no live counter left.

Not bound: ports whose counters have no rdma_tx_bytes / rdma_rx_bytes (nothing to read;
rechecked every RECHECK seconds, as an admin may enable them: `rdma statistic set link
DEV/PORT optional-counters rdma_tx_bytes,rdma_rx_bytes`), unless bind_without_bytes; devices
that refuse binding (the driver has no per-QP counters), recorded once with the reason and
never retried; a queue pair whose bind failed, until it is gone. A netlink failure logs and
leaves the scrape whole: it never raises.
"""

from __future__ import annotations

import errno
import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from ceemsnet.common.metrics import Family
from ceemsnet.runtime.rdmanl import MODE_AUTO, Counter, Device, RdmaNetlink, RdmaNetlinkError

log = logging.getLogger("ceemsnet.collectors.rdma_counters")

BYTES = (("rdma_tx_bytes", "egress"), ("rdma_rx_bytes", "ingress"))
RECHECK = 60.0
NAME = "ceemsnet_rdma_hw_bytes"
HELP = ("RDMA bytes per cgroup from the adapter's per-QP counters (rdma_tx_bytes, rdma_rx_bytes: mlx5 on "
        "Linux 6.15+), the job's queue pairs bound to one counter per device and port")


def parse_proc_cgroup(text: str, version: str = "v2", controller: str = "") -> str | None:
    """A task's cgroup path from /proc/PID/cgroup: the v2 line ("0::/path"), or the v1 line
    whose controller list holds `controller`; None where there is none."""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if version == "v2" and parts[0] == "0" and parts[1] == "":
            return parts[2].strip()
        if version == "v1" and controller in parts[1].split(","):
            return parts[2].strip()
    return None


def cgroup_of_pid(pid: int, version: str = "v2", controller: str = "", proc: str = "/proc") -> str | None:
    """The cgroup path (in the collector's hierarchy) of a task, None when it is gone. A QP's
    pid in RDMA netlink is its creating thread's: /proc/TID/cgroup answers for threads too."""
    try:
        with open(f"{proc}/{pid}/cgroup") as f:
            return parse_proc_cgroup(f.read(), version, controller)
    except OSError:
        return None


def refusal(e: RdmaNetlinkError, new_counter: bool, ever_bound: bool) -> str:
    """Why a device refuses binding, from a failed bind; "" where the failure is the queue
    pair's own (gone, already bound, ...). The kernel answers EOPNOTSUPP where the port has
    no hardware counters at all, and ENOMEM where it cannot allocate a counter, which is what
    a driver with port counters but no per-QP ones (no counter_alloc_stats) gets
    (drivers/infiniband/core/counters.c, alloc_and_bind): rxe on 6.12 answers ENOMEM, as
    `rdma statistic qp bind` shows. A device that bound before is not refused for it."""
    if e.errno == errno.EOPNOTSUPP:
        return "not supported by the driver (EOPNOTSUPP)"
    if e.errno in (errno.EPERM, errno.EACCES):
        return (f"binding needs CAP_NET_ADMIN ({errno.errorcode[e.errno]}): serve drops its capabilities once "
                "attached unless --capabilities.keep=all")
    if e.errno == errno.ENOMEM and new_counter and not ever_bound:
        return "the driver cannot allocate per-QP counters (ENOMEM on the first bind)"
    return ""


@dataclass
class _Job:
    cgroup: str
    device: str
    port: int
    id: int
    qpns: set[int] = field(default_factory=set)
    last: dict[str, int] = field(default_factory=dict)  # direction -> bytes, last read


class QpCounters:
    """One per rdma collector: collect() each scrape, binding_status() for probe, close()."""

    def __init__(self, cgroup_of: Callable[[int], str | None], open_nl: Callable[[], RdmaNetlink] = RdmaNetlink,
                 keep: float = 600.0, bind_without_bytes: bool = False, clock: Callable[[], float] = time.monotonic):
        self.cgroup_of = cgroup_of
        self.open_nl = open_nl
        self.keep = keep
        self.bind_without_bytes = bind_without_bytes
        self.clock = clock
        self.nl: RdmaNetlink | None = None
        self.refused: dict[str, str] = {}            # device -> why it refuses binding
        self.bound: set[str] = set()                 # devices where a bind succeeded
        self.no_bytes: dict[tuple[str, int], float] = {}  # (device, port) without byte counters -> when seen
        self.jobs: dict[tuple[str, int, str], _Job] = {}  # (device, port, cgroup)
        self.failed: dict[tuple[str, int, int], str] = {}  # (device, lqpn, pid) -> why its bind failed
        self.carried: dict[tuple[str, str, str, str], int] = {}  # (cgroup, device, port, direction) -> bytes
        self.idle: dict[tuple[str, str, str], float] = {}  # (cgroup, device, port) without a counter -> since
        self.devices: list[Device] = []
        self._logged: set[str] = set()

    def _once(self, level: int, msg: str) -> None:
        if msg not in self._logged:
            self._logged.add(msg)
            log.log(level, "%s", msg)

    def _socket(self) -> RdmaNetlink | None:
        if self.nl is None:
            try:
                self.nl = self.open_nl()
            except RdmaNetlinkError as e:
                self._once(logging.INFO, f"rdma: per-QP hardware counters not read: {e}")
        return self.nl

    def collect(self) -> list[Family]:
        nl = self._socket()
        if nl is not None:
            try:
                self.devices = nl.devices()
            except RdmaNetlinkError as e:
                self._once(logging.WARNING, f"rdma: per-QP hardware counters: {e}")
                self.devices = []
            for d in self.devices:
                if d.name in self.refused:
                    continue
                try:
                    self._device(nl, d)
                except RdmaNetlinkError as e:
                    self._once(logging.WARNING, f"rdma: {d.name}: per-QP hardware counters: {e}")
        self._expire()
        return [self._family()]

    def _has_bytes(self, nl: RdmaNetlink, d: Device, port: int) -> bool:
        if self.bind_without_bytes:
            return True
        seen = self.no_bytes.get((d.name, port))
        if seen is not None and self.clock() - seen < RECHECK:
            return False
        names = nl.port_counters(d.index, port)
        if all(n in names for n, _ in BYTES):
            self.no_bytes.pop((d.name, port), None)
            return True
        self.no_bytes[(d.name, port)] = self.clock()
        return False

    def _device(self, nl: RdmaNetlink, d: Device) -> None:
        qps = nl.qps(d.index)
        live = {(q.lqpn, q.pid) for q in qps}
        for k in [k for k in self.failed if k[0] == d.name and (k[1], k[2]) not in live]:
            del self.failed[k]
        counters = nl.counters(d.index)
        bound = {n for c in counters for n in c.qpns}
        ids = {c.id for c in counters}
        changed = False
        for q in qps:
            # user QPs only; one without a port yet (not moved to INIT) only on a one-port device
            port = q.port or (1 if d.ports == 1 else 0)
            if not q.pid or not port or q.lqpn in bound or (d.name, q.lqpn, q.pid) in self.failed:
                continue
            if not self._has_bytes(nl, d, port):
                continue
            cg = self.cgroup_of(q.pid)
            if cg is None:
                self.failed[(d.name, q.lqpn, q.pid)] = f"task {q.pid} is gone: its cgroup is unknown"
                continue
            job = self.jobs.get((d.name, port, cg))
            new = job is None or job.id not in ids
            try:
                cid = nl.bind(d.index, port, q.lqpn, None if new else job.id)
            except RdmaNetlinkError as e:
                if e.errno == errno.ENOENT:
                    continue  # the QP went between the dump and the bind
                why = refusal(e, new, d.name in self.bound)
                if not why and e.errno == errno.EINVAL and new and nl.port_mode(d.index, port)[0] == MODE_AUTO:
                    why = f"port {port} is in auto mode (set by `rdma statistic qp set link {d.name}/{port} auto " \
                          "...`): ceemsnet binds in manual mode only"
                if why:
                    self.refused[d.name] = why
                    self._once(logging.WARNING, f"rdma: {d.name}: per-QP hardware counters: {why}; not tried again")
                    return
                self.failed[(d.name, q.lqpn, q.pid)] = str(e)
                self._once(logging.INFO, f"rdma: {d.name}: QP {q.lqpn} of task {q.pid} not bound: {e}")
                continue
            self.bound.add(d.name)
            if new:
                job = self.jobs[(d.name, port, cg)] = _Job(cg, d.name, port, cid)
                ids.add(cid)
            job.qpns.add(q.lqpn)
            bound.add(q.lqpn)
            changed = True
        if changed:
            counters = nl.counters(d.index)
        self._read(d, counters)

    def _read(self, d: Device, counters: list[Counter]) -> None:
        by_id = {c.id: c for c in counters}
        for key, job in list(self.jobs.items()):
            if job.device != d.name:
                continue
            c = by_id.get(job.id)
            # the kernel freed it with its last QP (and may have given its id to another counter since)
            if c is None or c.port != job.port or not set(c.qpns) & job.qpns:
                for direction, v in job.last.items():
                    k = (job.cgroup, job.device, str(job.port), direction)
                    self.carried[k] = self.carried.get(k, 0) + v
                del self.jobs[key]
                continue
            job.qpns = set(c.qpns)
            for name, direction in BYTES:
                if name in c.hw:
                    job.last[direction] = c.hw[name]

    def _expire(self) -> None:
        now = self.clock()
        live = {(j.cgroup, j.device, str(j.port)) for j in self.jobs.values()}
        for k in {k[:3] for k in self.carried} - live:
            since = self.idle.setdefault(k, now)
            if now - since >= self.keep:
                for direction in {d for _, d in BYTES}:
                    self.carried.pop(k + (direction,), None)
                del self.idle[k]
        for k in [k for k in self.idle if k in live]:
            del self.idle[k]

    def _family(self) -> Family:
        acc = dict(self.carried)
        for j in self.jobs.values():
            for direction, v in j.last.items():
                k = (j.cgroup, j.device, str(j.port), direction)
                acc[k] = acc.get(k, 0) + v
        return Family(NAME, HELP, "counter", ("cgroup", "device", "port", "direction"), sorted(acc.items()))

    def binding_status(self) -> list[tuple[str, bool, str]]:
        """[(device, binding works and bytes are read, one line)] for `ceemsnet probe` and the log."""
        nl = self._socket()
        if nl is not None and not self.devices:
            try:
                self.devices = nl.devices()
            except RdmaNetlinkError as e:
                return [("", False, f"per-QP hardware counters: {e}")]
        out = []
        for d in self.devices:
            head = "per-QP hardware counters: "
            if d.name in self.refused:
                out.append((d.name, False, head + self.refused[d.name]))
                continue
            missing = []
            for port in range(1, d.ports + 1):
                try:
                    names = nl.port_counters(d.index, port) if nl is not None else {}
                except RdmaNetlinkError as e:
                    missing.append(f"port {port}: {e}")
                    continue
                if not all(n in names for n, _ in BYTES):
                    missing.append(f"port {port} has no rdma_tx_bytes/rdma_rx_bytes counters (mlx5 on Linux 6.15+ "
                                   f"offers them: rdma statistic set link {d.name}/{port} optional-counters "
                                   "rdma_tx_bytes,rdma_rx_bytes)")
                elif nl is not None and nl.port_mode(d.index, port)[0] == MODE_AUTO:
                    missing.append(f"port {port} is in auto mode (rdma statistic qp set link {d.name}/{port} auto "
                                   "...): ceemsnet binds in manual mode only")
            n = sum(1 for j in self.jobs.values() if j.device == d.name)
            if missing:
                out.append((d.name, False, head + "; ".join(missing)))
            elif d.name in self.bound:
                out.append((d.name, True, head + f"bound ({n} job counters live)"))
            else:
                out.append((d.name, True, head + "byte counters present; no user queue pair bound yet"))
        return out

    def close(self) -> None:
        if self.nl is not None:
            self.nl.close()
            self.nl = None
