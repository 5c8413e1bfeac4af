"""Families every kernel-function collector (net, vfs) exports the same way."""

from __future__ import annotations

from ..metrics import Family
from ..structs import decode_drops


def map_entries_family(name: str, n: int) -> Family:
    f = Family("ceemsnet_map_entries", "Keys in a BPF counters map (capacity: the --*.map-entries flags)",
               "gauge", ("map",))
    f.add((name,), n)
    return f


def health_families(loaded, subsystem: str) -> list[Family]:
    """Map-full drops and (kretprobe family) missed returns of one loaded object."""
    out = []
    drops_map = loaded.maps.get(f"{subsystem}_drops")
    if drops_map is not None:
        _, dv, dn = drops_map.read_all()
        drops = decode_drops(dv, dn, drops_map.ncpus)
        m = Family("ceemsnet_map_update_failures",
                   "Events a BPF program could not count because a map was full", "counter", ("map",))
        m.add((f"{subsystem}_stats",), drops.get("stats_full", 0))
        if loaded.plan.family == "kretprobe":
            m.add((f"{subsystem}_stash",), drops.get("stash_full", 0))
        out.append(m)
    if loaded.plan.family == "kretprobe" and loaded.maxactive:
        k = Family("ceemsnet_kretprobe_missed",
                   "Returns of hooked functions not seen because more calls were in flight than "
                   "--kretprobe.maxactive allows: their bytes are not counted", "counter", ("function",))
        for fn, n in sorted(loaded.kretprobe_missed().items()):
            k.add((fn,), n)
        out.append(k)
    return out
