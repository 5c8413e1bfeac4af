"""Socket-level network collector: ceemsnet_net_* counters per cgroup."""

from __future__ import annotations

from ceemsnet import CeemsnetError
from ceemsnet.collectors import slots
from ceemsnet.collectors.base import Context, KernelHooks, add_map_entries_flag, open_kernel_subsystem
from ceemsnet.collectors.counters import HashSource
from ceemsnet.common.flags import nonnegative_int
from ceemsnet.common.metrics import Family
from ceemsnet.planning.structs import NET_DIR, NET_FAMILY, NET_PROTO, decode_net, pack_net_key
from ceemsnet.runtime import libbpf

LABELS = ("cgroup", "proto", "family")
_FIELDS = (("bytes", "payload bytes moved (the calls' return values)"),
           ("calls", "calls that returned success"),
           ("errors", "calls that returned an error"))


def net_families(stats: dict, paths: dict[int, str]) -> list[Family]:
    """Metric families from decoded net_stats and an id -> path map (pure).

    Ids that map to the same path (a cgroup removed and created again under
    the same name) are summed, so a series never appears twice.
    """
    # (cgroup, proto, family) -> [egress bytes, calls, errors, ingress bytes, calls, errors]
    totals: dict[tuple[str, str, str], list[int]] = {}
    protos, fams = NET_PROTO, NET_FAMILY
    for (cid, proto, fam, d), vals in stats.items():
        key = (paths[cid], protos.get(proto) or str(proto), fams.get(fam) or str(fam))
        acc = totals.get(key)
        if acc is None:
            acc = totals[key] = [0, 0, 0, 0, 0, 0]
        base = 3 * d
        acc[base] += vals[0]
        acc[base + 1] += vals[1]
        acc[base + 2] += vals[2]
    ordered = sorted(totals.items())
    out = []
    for d, direction in sorted(NET_DIR.items()):
        verb = "sent" if direction == "egress" else "received"
        for i, (field, doc) in enumerate(_FIELDS):
            col = 3 * d + i
            f = Family(f"ceemsnet_net_{direction}_{field}",
                       f"TCP/UDP {doc} by sockets {verb} through, per cgroup of the calling task",
                       "counter", LABELS)
            f.rows = [(k, v[col]) for k, v in ordered if v[3 * d + 1] or v[3 * d + 2] or v[3 * d]]
            out.append(f)
    return out


NAME = "net"
HELP = "TCP/UDP payload bytes, calls and errors at the socket calls (ceemsnet_net_*)"


def add_flags(group) -> None:
    add_map_entries_flag(group, NAME, "a cgroup uses up to 8")
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
