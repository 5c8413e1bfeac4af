"""Socket-level network collector: ceemsnet_net_* counters per cgroup."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily

from ..structs import NET_DIR, NET_FAMILY, NET_PROTO, decode_drops, decode_net

LABELS = ["cgroup", "proto", "family"]
_FIELDS = (("bytes", "payload bytes moved (the calls' return values)"),
           ("calls", "calls that returned success"),
           ("errors", "calls that returned an error"))


def net_families(stats: dict, paths: dict[int, str]) -> list[CounterMetricFamily]:
    """Metric families from decoded net_stats and an id -> path map (pure).

    Ids that map to the same path (a cgroup removed and created again under
    the same name) are summed, so a series never appears twice.
    """
    totals: dict[tuple[str, str, str, str], list[int]] = {}
    for (cid, proto, fam, d), vals in stats.items():
        key = (NET_DIR.get(d, "?"), paths[cid], NET_PROTO.get(proto, str(proto)),
               NET_FAMILY.get(fam, str(fam)))
        acc = totals.setdefault(key, [0, 0, 0])
        for i in range(3):
            acc[i] += vals[i]
    out = []
    for direction, verb in (("egress", "sent"), ("ingress", "received")):
        for i, (field, doc) in enumerate(_FIELDS):
            m = CounterMetricFamily(f"ceemsnet_net_{direction}_{field}",
                                    f"TCP/UDP {doc} by sockets {verb} through, per cgroup of the calling task",
                                    labels=LABELS)
            for (d, cgroup, proto, fam), vals in sorted(totals.items()):
                if d == direction:
                    m.add_metric([cgroup, proto, fam], vals[i])
            out.append(m)
    return out


class NetCollector:
    """Reads the net object's maps each scrape."""

    name = "net"

    def __init__(self, loaded, resolver):
        self.loaded = loaded
        self.resolver = resolver
        self.stats_map = loaded.maps["net_stats"]
        self.drops_map = loaded.maps.get("net_drops")

    def collect(self) -> list:
        keys, values, n = self.stats_map.read_all()
        stats = decode_net(keys, values, n, self.stats_map.ncpus)
        paths = self.resolver.resolve({k[0] for k in stats})
        fams = net_families(stats, paths)
        if self.drops_map is not None:
            _, dv, dn = self.drops_map.read_all()
            drops = decode_drops(dv, dn, self.drops_map.ncpus)
            m = CounterMetricFamily("ceemsnet_map_update_failures",
                                    "Events a BPF program could not count because a map was full",
                                    labels=["map"])
            m.add_metric(["net_stats"], drops.get("stats_full", 0))
            if self.loaded.plan.family == "kretprobe":
                m.add_metric(["net_stash"], drops.get("stash_full", 0))
            fams.append(m)
        return fams
