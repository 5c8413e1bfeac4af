"""Socket-level network collector: ceemsnet_net_* counters per cgroup."""

from __future__ import annotations

from operator import add

from ceemsnet import CeemsnetError
from ceemsnet.collectors import slots
from ceemsnet.collectors.base import Context, KernelHooks, add_map_entries_flag, open_kernel_subsystem
from ceemsnet.collectors.counters import HashSource
from ceemsnet.common.flags import nonnegative_int
from ceemsnet.common.metrics import Family
from ceemsnet.planning.structs import NET_DIR, NET_FAMILY, NET_PROTO, decode_net, net_index, pack_net_key
from ceemsnet.runtime import libbpf

LABELS = ("cgroup", "proto", "family")
_FIELDS = (("bytes", "payload bytes moved (the calls' return values)"),
           ("calls", "calls that returned success"),
           ("errors", "calls that returned an error"))


def net_families(stats: dict, paths: dict[int, str]) -> list[Family]:
    """Metric families from decoded net_stats records and an id -> path map (pure).

    stats: {(cgroup id,): 24 counters}, (bytes, calls, errors) per net_index().
    Ids that map to the same path (a cgroup removed and created again under
    the same name) are summed, so a series never appears twice.
    """
    totals: dict[str, list[int]] = {}  # path -> its 24 counters
    for key, vals in stats.items():
        p = paths[key[0]]
        acc = totals.get(p)
        totals[p] = list(vals) if acc is None else list(map(add, acc, vals))
    ordered = sorted(totals.items())
    # (proto, family) pairs in label order: tcp < udp, ipv4 < ipv6
    pairs = [(proto, fam, (NET_PROTO[proto], NET_FAMILY[fam])) for proto in sorted(NET_PROTO)
             for fam in sorted(NET_FAMILY)]
    out = []
    for d, direction in sorted(NET_DIR.items()):
        verb = "sent" if direction == "egress" else "received"
        # per (proto, family): where its three counters of this direction start
        bases = [(3 * net_index(proto, fam, d), labels) for proto, fam, labels in pairs]
        for i, (field, doc) in enumerate(_FIELDS):
            f = Family(f"ceemsnet_net_{direction}_{field}",
                       f"TCP/UDP {doc} by sockets {verb} through, per cgroup of the calling task",
                       "counter", LABELS)
            f.rows = [((p,) + labels, v[b + i]) for p, v in ordered for b, labels in bases
                      if v[b] or v[b + 1] or v[b + 2]]
            out.append(f)
    return out


NAME = "net"
HELP = "TCP/UDP payload bytes, calls and errors at the socket calls (ceemsnet_net_*)"


def add_flags(group) -> None:
    add_map_entries_flag(group, NAME, "one per cgroup")
    group.add_argument("--net.slots", dest="net_slots", type=nonnegative_int, default=None, metavar="N",
                       help="cgroups counted without hashing by the -slots objects (a power of two; "
                            "others count in the hash map; 0: the hash layout only, no -slots object); "
                            "default: what fits 16 MiB of per-CPU memory, 64 to 4096")


def check(args) -> None:
    n = args.net_slots
    if n and n & (n - 1):
        raise CeemsnetError(f"--net.slots={n}: must be a power of two")


def open(ctx: Context) -> KernelHooks:
    n = ctx.args.net_slots
    if n is None:
        n = slots.default_slots(libbpf.num_possible_cpus())

    def source(loaded, stats):
        if slots.has_slots(loaded.maps):
            return slots.SlotSource(stats, loaded.maps, decode_net, pack_net_key)
        return HashSource(stats, decode_net, pack_net_key)

    return open_kernel_subsystem(ctx, NAME, ctx.args.net_map_entries, decode_net, pack_net_key, net_families,
                                 {slots.OWNER: n, slots.VALS: n}, source,
                                 carry=lambda old, new, reused: slots.fold_slots(old, new, reused, pack_net_key))
