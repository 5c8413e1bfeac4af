"""One collector for every BPF counters map keyed by cgroup id.

net_stats, vfs_stats and skb_stats (and skb's per-cgroup storage) are read
the same way each scrape: read every key at once, decode the per-CPU values,
resolve cgroup ids to paths, let the lifecycle fold removed cgroups into
retired totals and delete their keys, build the metric families, and report
how full the map is and how many events it could not take.
"""

from __future__ import annotations

from collections.abc import Callable

from ..metrics import Family
from ..structs import decode_drops


class HashSource:
    """A hash map keyed by (cgroup id, ...): read with batch lookups, keys deleted one by one."""

    def __init__(self, bpf_map, decode: Callable, pack: Callable[..., bytes]):
        self.map = bpf_map
        self.name = bpf_map.name
        self._decode = decode
        self._pack = pack

    def read(self) -> tuple[dict[tuple, tuple], int]:
        """({(cgroup id, ...): counters}, keys in the map now)."""
        keys, values, n = self.map.read_all()
        return self._decode(keys, values, n, self.map.ncpus), n

    def delete(self, key: tuple) -> bool:
        return self.map.delete(self._pack(*key))


def map_entries_family(name: str, n: int) -> Family:
    f = Family("ceemsnet_map_entries", "Keys in a BPF counters map (capacity: the --*.map-entries flags)",
               "gauge", ("map",))
    f.add((name,), n)
    return f


def drops_family(drops_map, stats_map: str, stash_map: str | None = None) -> Family:
    """Events the programs could not count: the stats map was full, or (kretprobes) the entry stash."""
    _, values, n = drops_map.read_all()
    drops = decode_drops(values, n, drops_map.ncpus)
    f = Family("ceemsnet_map_update_failures",
               "Events a BPF program could not count because a map was full", "counter", ("map",))
    f.add((stats_map,), drops.get("stats_full", 0))
    if stash_map:
        f.add((stash_map,), drops.get("stash_full", 0))
    return f


class CounterMap:
    """Counters of one map -> metric families, with the cgroup lifecycle applied.

    source: read() -> (stats, entries) and delete(key) -> bool (HashSource, or
    skb's per-cgroup storage); families(stats, paths) -> [Family] is the
    subsystem's pure renderer.
    """

    def __init__(self, source, families: Callable[[dict, dict], list[Family]], resolver, lifecycle=None,
                 drops=None, stash_map: str | None = None):
        self.source = source
        self.families = families
        self.resolver = resolver
        self.lifecycle = lifecycle
        self.drops = drops
        self.stash_map = stash_map

    def collect(self) -> list[Family]:
        stats, entries = self.source.read()
        paths = self.resolver.resolve({k[0] for k in stats})
        if self.lifecycle is not None:
            stats, paths = self.lifecycle.process(stats, paths, self.source.delete)
        fams = self.families(stats, paths)
        fams.append(map_entries_family(self.source.name, entries))
        if self.drops is not None:
            fams.append(drops_family(self.drops, self.source.name, self.stash_map))
        return fams
