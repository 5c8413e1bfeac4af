"""The slot layout of the net counters (bpf/net/net_slots.h), read as one source.

Objects built with NET_SLOTS count a cgroup's events in a slot of a per-CPU
array (net_slot_vals) found by the cgroup id's position in an owner array
(net_slot_owner), and fall back to the per-CPU hash (net_stats) when both
of its slots belong to other cgroups. A slot holds the same record as a
net_stats value (struct net_counts: every counter of one cgroup). SlotSource
reads both and answers exactly like HashSource (ceemsnet/collectors/counters.py),
raw contract included, so CounterMap renders it incrementally and the
lifecycle and the renderers do not know which layout runs:

  read_raw()  -> (keys, values, count): net_stats' records, then one record per
                 owned slot's cgroup (a cgroup in both, or in two slots, summed)
  delete(key) -> bool: the lifecycle folded the record of a removed cgroup into
                 its retired totals: its hash key is deleted and its slots given
                 back (counts zeroed, then the owner cleared).
"""

from __future__ import annotations

import struct
from itertools import compress

from ceemsnet.collectors.counters import BesideHash, HashSource
from ceemsnet.pinned.continuity import add_record
from ceemsnet.planning.structs import NET_SLOT_OWNER, NET_SLOT_VALS, NET_WORDS, sum_percpu

OWNER, VALS = NET_SLOT_OWNER, NET_SLOT_VALS
SLOT_MAPS = (OWNER, VALS)
SLOT_BYTES = NET_WORDS * 8  # one struct net_counts per slot, per CPU
BUDGET = 16 << 20  # default: the per-CPU array may take this much kernel memory
MIN_SLOTS, MAX_SLOTS = 64, 4096
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")


def default_slots(ncpus: int) -> int:
    """A power of two that fits BUDGET (the array is per CPU and preallocated): 4096
    on up to 21 CPUs, 256 on 256 CPUs; cgroups beyond them count on the hash path."""
    fit = BUDGET // (SLOT_BYTES * max(1, ncpus))
    return max(MIN_SLOTS, min(MAX_SLOTS, 1 << max(0, fit.bit_length() - 1)))


def has_slots(maps: dict) -> bool:
    return all(m in maps for m in SLOT_MAPS)


def owned_slots(owners: bytes, n: int) -> dict[int, list[int]]:
    """{cgroup id: its slots} from a read of net_slot_owner (pure; free slots left out)."""
    own = memoryview(owners).cast("Q")[:n]
    out: dict[int, list[int]] = {}
    for s in compress(range(n), own):
        out.setdefault(own[s], []).append(s)
    return out


def owned_values(vals, slots: list[int]) -> dict[int, bytes]:
    """{slot: its value on every CPU} of these slots of a per-CPU array. Few owned slots are
    looked up one by one, so a scrape holds (and the exporter keeps) only their bytes, not
    the whole preallocated array's (4096 slots x 800 B x CPUs for vfs); when most are owned,
    one batch read is cheaper than a system call each."""
    if len(slots) * 4 < vals.max_entries:
        out = {}
        for s in slots:
            v = vals.lookup(_U32.pack(s))
            if v is not None:
                out[s] = v
        return out
    _, values, n = vals.read_all()
    vsz = vals.value_stride * vals.ncpus
    return {s: values[s * vsz:(s + 1) * vsz] for s in slots if s < n}


def decode_slots(owners: bytes, vals: bytes, n: int, ncpus: int) -> dict[int, tuple[int, tuple[int, ...]]]:
    """{slot: (owner cgroup id, its record: NET_WORDS counters summed over the CPUs)} for owned
    slots (pure). A slot owned but with nothing counted yet has a record of zeros."""
    sums = sum_percpu(vals, n, ncpus, NET_WORDS)
    return {s: (cid, sums[s]) for cid, ss in owned_slots(owners, n).items() for s in ss}


def _read_slots(maps: dict) -> dict[int, tuple[int, tuple[int, ...]]]:
    owner, vals = maps[OWNER], maps[VALS]
    _, owners, n = owner.read_all()
    _, values, nv = vals.read_all()
    return decode_slots(owners, values, min(n, nv), vals.ncpus)


def fold_slots(old_maps: dict, new_maps: dict, reused: set[str], pack) -> int:
    """An upgrade whose new object does not take the old slot maps over (it has none,
    or of another size): add the records they hold into the new object's net_stats,
    which no program writes yet. Read-add-write, exact. When net_stats itself was
    taken over (the same map as the old one), the old slots are emptied as they are
    added, so another family tried after this one does not add them twice.
    Returns records added."""
    stats = new_maps.get("net_stats")
    if not has_slots(old_maps) or stats is None or set(SLOT_MAPS) <= reused:
        return 0
    if stats.value_stride != SLOT_BYTES:
        return 0  # not this layout's net_stats
    added = 0
    for slot, (cid, record) in _read_slots(old_maps).items():
        if any(record):
            add_record(stats, pack(cid), record)
            added += 1
        if "net_stats" in reused:
            old_vals = old_maps[VALS]
            old_vals.update(_U32.pack(slot), bytes(old_vals.value_stride * old_vals.ncpus))
    return added


class SlotSource(BesideHash):
    """net_stats (hash fallback) plus the slot maps, read as one source (the raw contract
    of HashSource: packed records, one per cgroup)."""

    def __init__(self, stats, maps: dict, decode, pack):
        self.hash = HashSource(stats, decode, pack)
        self.name = self.hash.name
        self.owner, self.vals = maps[OWNER], maps[VALS]
        self._decode, self._pack = decode, pack
        self._slots_of: dict[int, list[int]] = {}   # cgroup id -> its slots, as of the last read
        self._zero = bytes(self.vals.value_stride * self.vals.ncpus)

    def read_raw(self) -> tuple[bytes, bytes, int]:
        keys, values, n = self.hash.read_raw()
        self.hash_entries = n
        ksz, vsz = self.key_size, self.value_size
        keys, values = keys[:n * ksz], values[:n * vsz]
        _, owners, no = self.owner.read_all()
        slots_of = self._slots_of = owned_slots(owners, no)
        if not slots_of:
            return keys, values, n
        svals = owned_values(self.vals, [x for ss in slots_of.values() for x in ss])
        # a slot that vanished between the two reads (given back meanwhile) is left out
        slots_of = self._slots_of = {cid: kept for cid, ss in slots_of.items()
                                     if (kept := [x for x in ss if x in svals])}
        in_hash = {k[0] for k in _U64.iter_unpack(keys)}
        if not (slots_of.keys() & in_hash) and all(len(ss) == 1 for ss in slots_of.values()):
            # the common case: every cgroup in one place, records appended as they are
            order = list(slots_of.items())
            return (keys + b"".join(_U64.pack(cid) for cid, _ in order),
                    values + b"".join(svals[ss[0]] for _, ss in order),
                    n + len(order))
        # a cgroup counted in the hash map before it got a slot, or two slots taken at once by
        # two CPUs: its records are summed word by word (per CPU), so it stays one record
        recs: dict[bytes, list[bytes]] = {}
        for i in range(n):
            recs.setdefault(keys[i * ksz:(i + 1) * ksz], []).append(values[i * vsz:(i + 1) * vsz])
        for cid, ss in slots_of.items():
            recs.setdefault(_U64.pack(cid), []).extend(svals[s] for s in ss)
        words = vsz // 8
        fmt = struct.Struct(f"={words}Q")
        out_v = []
        for parts in recs.values():
            if len(parts) == 1:
                out_v.append(parts[0])
            else:
                out_v.append(fmt.pack(*(sum(c) & 0xFFFFFFFFFFFFFFFF for c in zip(*map(fmt.unpack, parts)))))
        return b"".join(recs), b"".join(out_v), len(recs)

    def delete(self, key: tuple) -> bool:
        cid = key[0]
        done = bool(self.hash.delete(key))  # False when it never counted there
        for s in self._slots_of.pop(cid, ()):
            self.release(s)
            done = True
        return done

    def release(self, slot: int) -> None:
        """Give a removed cgroup's slot back; the lifecycle has already folded what it
        held. Zeroed before its owner is cleared: once free, another cgroup may take
        it at any moment and must find it empty."""
        k = _U32.pack(slot)
        self.vals.update(k, self._zero)
        self.owner.update(k, _U64.pack(0))
