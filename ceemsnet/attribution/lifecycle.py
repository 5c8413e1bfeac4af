"""Cgroups that go away: keep their counts, free their map entries.

Every scrape, each counters map is checked for cgroup ids whose cgroup no
longer exists (its path is gone, or now belongs to another cgroup). Their
last counts are folded into a retired total kept under their path, and
their keys are deleted, so maps do not fill up as jobs and steps come and
go. Exported counters are live + retired: a series never goes backwards.
A retired path's series is dropped once no live cgroup has had that path
for `retention` seconds. With a ledger (ceemsnet/pinned/ledger.py: BPF maps
pinned beside the counters) the retired totals and the paths of the ids
in the map outlive the exporter: a restart that adopts the pins carries on
from them, and a crash in the middle of a retire neither loses nor doubles
a count (the ledger's intents; its first scrape settles them).

Which cgroups are gone is known from the cgroup watcher (cgwatch.py, the
inotify thread `serve` starts for the resolver): a scrape checks on disk
only the ids it has not checked before and those whose path the watcher
saw removed, so a scrape with no cgroup event reads no cgroup directory.
Every `recheck` seconds, and whenever the watcher may have missed events,
every id is checked (one readdir per parent directory), which also finds
removals the watcher cannot see (another mount's rmdir).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from ceemsnet.attribution import cgwatch

log = logging.getLogger("ceemsnet.attribution.lifecycle")


class Lifecycle:
    def __init__(self, root: str, retention: float = 300.0, clock=time.monotonic,
                 alive: Callable[[int, str], bool] | None = None,
                 unit_of: Callable[[str], str | None] | None = None, ledger=None,
                 fold: Callable[[str], str] | None = None, watcher=None, recheck: float = 60.0):
        self.root = root
        # --cgroup.aggregate: path -> the path whose series it counts in (None: its own). A retired
        # path's retention runs per series: its totals stay while any path of its series lives, and
        # all of a series' retired paths expire together, so a folded series never goes backwards
        self.fold = fold
        # a removed cgroup's counts also stay while its unit (SLURM job) has live cgroups,
        # so per-job sums never go backwards while the job runs
        self.unit_of = unit_of
        self.retention = retention
        self._clock = clock
        self._alive = alive or self._alive_on_disk
        self._groups = None  # (paths, singles, siblings) for _gone, kept while the paths stay
        # the cgroup watcher telling removals (cgwatch.CgroupWatcher; None: the one serve started for
        # this root, if any; False: none), its cursor, the ids found alive (id -> path) since the last
        # full check, and when that was
        self._watcher = watcher
        self.recheck = recheck
        self._cursor: int | None = None
        self._known: dict[int, str] = {}
        self._checked_at: float | None = None
        self.full_checks = 0
        self.gone_ids: set[int] = set()  # the ids the last process() found gone
        # (path, *rest of key) -> [counters...]; path -> when it was last seen live
        self.retired: dict[tuple, list[int]] = {}
        self._last_live: dict[str, float] = {}
        self.deleted = 0
        self.ledger = ledger
        if ledger is not None:
            self.retired = ledger.load()
            for rk in self.retired:  # their retention starts again now
                self._last_live.setdefault(self._series(rk[0]), clock())

    def _series(self, path: str) -> str:
        return self.fold(path) if self.fold is not None else path

    def _alive_on_disk(self, cid: int, path: str) -> bool:
        if not path.startswith("/"):
            return False  # never resolved: removed before we saw it
        try:
            return os.stat(os.path.join(self.root, path.lstrip("/"))).st_ino == cid
        except OSError:
            return False

    def _gone(self, ids, paths: dict[int, str]) -> set[int]:
        """The ids whose cgroup no longer exists: from the watcher's removals where it has them
        (_gone_watched), else checked on disk (_gone_all)."""
        if self._alive != self._alive_on_disk:
            return {cid for cid in ids if not self._alive(cid, paths[cid])}
        w = self._watcher
        if w is None:
            w = cgwatch.running(self.root)
        if not w:
            return self._gone_all(ids, paths)
        return self._gone_watched(w, ids, paths)

    def _gone_watched(self, w, ids, paths: dict[int, str]) -> set[int]:
        """Checked on disk: the ids not checked alive before (new, or with another path now) and
        those whose path the watcher saw removed since the last scrape; all of them after
        `recheck` seconds or when the watcher may have missed a removal."""
        now = self._clock()
        removed, self._cursor = w.removed(self._cursor, reader=self)
        known = self._known
        if removed is None or self._checked_at is None or now - self._checked_at >= self.recheck:
            gone = self._gone_all(ids, paths)
            self._groups = None  # its 10,000 names are not needed until the next full check
            self._checked_at = now
            self.full_checks += 1
        else:
            same = paths == known  # the common case: no id came, went or moved (compared in C)
            check = set() if same else {cid for cid, _ in paths.items() - known.items()}
            if removed:
                removed = set(removed)
                check.update(cid for cid, p in known.items() if p in removed)
            gone = {cid for cid in check if cid in ids and not self._alive_at(cid, self._where(paths[cid]))}
            if same and not gone:
                return gone
        # what is not gone was alive when checked (now or before) and its path saw no removal since
        known = self._known = dict(paths)
        for cid in gone:
            del known[cid]
        return gone

    def _where(self, path: str) -> str | None:
        """A path's directory on disk (None: never resolved, not a path)."""
        if not path.startswith("/"):
            return None
        return self.root if path == "/" else os.path.join(self.root, path.lstrip("/"))

    def _gone_all(self, ids, paths: dict[int, str]) -> set[int]:
        """Every id checked on disk: siblings with one readdir of their parent (the inode comes
        with each entry) rather than a stat each."""
        if self._groups is None or self._groups[0] != paths:
            self._groups = (dict(paths), *self._group(paths))
        _, singles, siblings = self._groups
        gone = {cid for cid, where in singles if not self._alive_at(cid, where)}
        for where, expect in siblings.items():
            try:
                with os.scandir(where) as it:
                    found = {e.name: e.inode() for e in it}
            except OSError:
                found = {}
            if not expect.items() <= found.items():  # all alive: checked in C without a set of items
                # each one the listing lacks is checked on its own: a directory that could not be read
                # (found empty) must not retire every live cgroup in it
                gone.update(cid for name, cid in expect.items() - found.items()
                            if not self._alive_at(cid, os.path.join(where, name)))
        return gone & ids

    def _group(self, paths: dict[int, str]):
        """([(id, absolute path)] to stat, {parent directory: {name: id}} to read)."""
        by_parent: dict[str, dict[str, int]] = {}
        singles = []
        for cid, path in paths.items():
            if not path.startswith("/") or path == "/":
                singles.append((cid, None if path != "/" else self.root))
                continue
            parent, _, name = path.rpartition("/")
            by_parent.setdefault(os.path.join(self.root, parent.lstrip("/")), {})[name] = cid
        siblings = {}
        for where, kids in by_parent.items():
            if len(kids) >= 16:
                siblings[where] = kids
            else:
                singles += [(cid, os.path.join(where, name)) for name, cid in kids.items()]
        return singles, siblings

    @staticmethod
    def _alive_at(cid: int, where: str | None) -> bool:
        try:
            return where is not None and os.stat(where).st_ino == cid
        except OSError:
            return False

    def process(self, stats: dict[tuple, tuple], paths: dict[int, str], delete: Callable[[tuple], bool],
                keys_of: dict[int, set] | None = None) -> tuple[dict[tuple, tuple], dict[int, str]]:
        """Fold and delete the gone, expire old retired paths; returns (stats, paths)
        to build the families from, retired totals under synthetic negative ids.
        keys_of: the keys of stats per cgroup id, when the caller keeps them (else
        derived here). `stats` itself is never changed (it may be returned as it is)."""
        now = self._clock()
        led = self.ledger
        if keys_of is None:
            keys_of = {}
            for key in stats:
                keys_of.setdefault(key[0], []).append(key)
        if led is not None:
            # ids no cgroup has now (removed while no exporter ran) keep the path recorded for them
            paths = {cid: (led.path_of(cid) or p) if not p.startswith("/") else p for cid, p in paths.items()}
            led.record(paths)
        live = stats
        if led is not None and not led.settled:
            # the first scrape since the ledger's load: keys whose counts a crashed retire had
            # folded already (pending) are deleted, not added again
            pending = led.pending
            if pending:
                live = {k: v for k, v in stats.items() if k not in pending}
                keys_of = {cid: ks for cid, ks in ((c, [k for k in ks if k not in pending])
                                                   for c, ks in keys_of.items()) if ks}
            self.deleted += led.settle(stats.keys(), keys_of.keys(), delete)
        gone_ids = self.gone_ids = self._gone(keys_of.keys(), paths)
        if gone_ids:
            if live is stats:
                live = dict(stats)
            folded = []  # (key, rk, rk's total with the key's counts in it), for the ledger
            for cid in gone_ids:
                path = paths[cid]
                for key in keys_of[cid]:
                    vals = live.pop(key)
                    rk = (path,) + key[1:]
                    acc = self.retired.setdefault(rk, [0] * len(vals))
                    for i, v in enumerate(vals):
                        acc[i] += v
                    folded.append((key, rk, tuple(acc)))
                self._last_live.setdefault(self._series(path), now)
            if led is None:
                self.deleted += sum(1 for key, _, _ in folded if delete(key))
            else:
                self.deleted += led.retire(folded, delete)  # crash-safe: see ceemsnet/pinned/ledger.py
                for cid in gone_ids:
                    led.forget(cid)
        live_paths = {paths[cid] for cid in keys_of if cid not in gone_ids}
        if self.fold is not None:
            live_paths = {self.fold(p) for p in live_paths}
        for path in live_paths:
            self._last_live[path] = now
        expired = [p for p, t in self._last_live.items() if now - t > self.retention and p not in live_paths]
        if expired:
            live_units = {self.unit_of(p) for p in live_paths} - {None} if self.unit_of else set()
            by_series: dict[str, dict[str, list]] = {}
            for rk in self.retired:
                by_series.setdefault(self._series(rk[0]), {}).setdefault(rk[0], []).append(rk)
            for series in expired:
                if self.unit_of and self.unit_of(series) in live_units:
                    continue
                for path, gone in by_series.get(series, {}).items():
                    for rk in gone:
                        del self.retired[rk]
                    if led is not None:
                        led.drop(path, gone)
                del self._last_live[series]
        if not self.retired:
            return live, paths
        out_paths = dict(paths)
        if live is stats:
            live = dict(stats)
        ids: dict[str, int] = {}
        for rk, vals in self.retired.items():
            sid = ids.setdefault(rk[0], -1 - len(ids))
            out_paths[sid] = rk[0]
            live[(sid,) + rk[1:]] = tuple(vals)
        return live, out_paths
