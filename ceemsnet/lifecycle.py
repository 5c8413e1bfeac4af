"""Cgroups that go away: keep their counts, free their map entries.

Every scrape, each counters map is checked for cgroup ids whose cgroup no
longer exists (its path is gone, or now belongs to another cgroup). Their
last counts are folded into a retired total kept under their path, and
their keys are deleted, so maps do not fill up as jobs and steps come and
go. Exported counters are live + retired: a series never goes backwards.
A retired path's series is dropped once no live cgroup has had that path
for `retention` seconds. With a ledger (ceemsnet/ledger.py: BPF maps
pinned beside the counters) the retired totals and the paths of the ids
in the map outlive the exporter: a restart that adopts the pins carries on
from them.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("ceemsnet.lifecycle")


class Lifecycle:
    def __init__(self, root: str, retention: float = 300.0, clock=time.monotonic,
                 alive: Callable[[int, str], bool] | None = None,
                 unit_of: Callable[[str], str | None] | None = None, ledger=None):
        self.root = root
        # a removed cgroup's counts also stay while its unit (SLURM job) has live cgroups,
        # so per-job sums never go backwards while the job runs
        self.unit_of = unit_of
        self.retention = retention
        self._clock = clock
        self._alive = alive or self._alive_on_disk
        # (path, *rest of key) -> [counters...]; path -> when it was last seen live
        self.retired: dict[tuple, list[int]] = {}
        self._last_live: dict[str, float] = {}
        self.deleted = 0
        self.ledger = ledger
        if ledger is not None:
            self.retired = ledger.load()
            for rk in self.retired:  # their retention starts again now
                self._last_live.setdefault(rk[0], clock())

    def _alive_on_disk(self, cid: int, path: str) -> bool:
        if not path.startswith("/"):
            return False  # never resolved: removed before we saw it
        try:
            return os.stat(os.path.join(self.root, path.lstrip("/"))).st_ino == cid
        except OSError:
            return False

    def process(self, stats: dict[tuple, tuple], paths: dict[int, str], delete: Callable[[tuple], bool]
                ) -> tuple[dict[tuple, tuple], dict[int, str]]:
        """Fold and delete the gone, expire old retired paths; returns (stats, paths)
        to build the families from, retired totals under synthetic negative ids."""
        now = self._clock()
        led = self.ledger
        if led is not None:
            # ids no cgroup has now (removed while no exporter ran) keep the path recorded for them
            paths = {cid: (led.path_of(cid) or p) if not p.startswith("/") else p for cid, p in paths.items()}
            led.record(paths)
        gone_ids = {cid for cid in {k[0] for k in stats} if not self._alive(cid, paths[cid])}
        live = {}
        for key, vals in stats.items():
            cid = key[0]
            if cid in gone_ids:
                rk = (paths[cid],) + key[1:]
                acc = self.retired.setdefault(rk, [0] * len(vals))
                for i, v in enumerate(vals):
                    acc[i] += v
                if led is not None:
                    led.retire(rk, acc)  # before the delete: see ceemsnet/ledger.py
                if delete(key):
                    self.deleted += 1
                self._last_live.setdefault(paths[cid], now)
            else:
                live[key] = vals
                self._last_live[paths[cid]] = now
        if led is not None:
            for cid in gone_ids:
                led.forget(cid)
        live_paths = {paths[k[0]] for k in live}
        live_units = {self.unit_of(p) for p in live_paths} - {None} if self.unit_of else set()
        for path in [p for p, t in self._last_live.items() if now - t > self.retention]:
            if path not in live_paths and not (self.unit_of and self.unit_of(path) in live_units):
                gone = [rk for rk in self.retired if rk[0] == path]
                for rk in gone:
                    del self.retired[rk]
                if led is not None:
                    led.drop(path, gone)
                del self._last_live[path]
        out_paths = dict(paths)
        ids: dict[str, int] = {}
        for rk, vals in self.retired.items():
            sid = ids.setdefault(rk[0], -1 - len(ids))
            out_paths[sid] = rk[0]
            live[(sid,) + rk[1:]] = tuple(vals)
        return live, out_paths
