"""Cgroups that go away: keep their counts, free their map entries.

Every scrape, each counters map is checked for cgroup ids whose cgroup no
longer exists (its path is gone, or now belongs to another cgroup). Their
last counts are folded into a retired total kept under their path, and
their keys are deleted, so maps do not fill up as jobs and steps come and
go. Exported counters are live + retired: a series never goes backwards.
A retired path's series is dropped once no live cgroup has had that path
for `retention` seconds.
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
                 unit_of: Callable[[str], str | None] | None = None):
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
        gone_ids = {cid for cid in {k[0] for k in stats} if not self._alive(cid, paths[cid])}
        live = {}
        for key, vals in stats.items():
            cid = key[0]
            if cid in gone_ids:
                acc = self.retired.setdefault((paths[cid],) + key[1:], [0] * len(vals))
                for i, v in enumerate(vals):
                    acc[i] += v
                if delete(key):
                    self.deleted += 1
                self._last_live.setdefault(paths[cid], now)
            else:
                live[key] = vals
                self._last_live[paths[cid]] = now
        live_paths = {paths[k[0]] for k in live}
        live_units = {self.unit_of(p) for p in live_paths} - {None} if self.unit_of else set()
        for path in [p for p, t in self._last_live.items() if now - t > self.retention]:
            if path not in live_paths and not (self.unit_of and self.unit_of(path) in live_units):
                for rk in [rk for rk in self.retired if rk[0] == path]:
                    del self.retired[rk]
                del self._last_live[path]
        out_paths = dict(paths)
        ids: dict[str, int] = {}
        for rk, vals in self.retired.items():
            sid = ids.setdefault(rk[0], -1 - len(ids))
            out_paths[sid] = rk[0]
            live[(sid,) + rk[1:]] = tuple(vals)
        return live, out_paths
