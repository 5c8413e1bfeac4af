"""The slot layout of the net counters (bpf/net/net_slots.h), read as one source.

Objects built with NET_SLOTS count a cgroup's events in a slot of a per-CPU
array (net_slot_vals) found by the cgroup id's position in an owner array
(net_slot_owner), and fall back to the per-CPU hash (net_stats) when both
of its slots belong to other cgroups. SlotSource reads both
and answers exactly like HashSource (ceemsnet/collectors/counters.py), so
CounterMap, the lifecycle and the renderers do not know which layout runs:

  read()      -> ({(cgroup id, proto, family, dir): (bytes, calls, errors)}, keys)
  delete(key) -> bool: the lifecycle folded this key of a removed cgroup into
                 its retired totals; once every key of a slot is gone the slot
                 is given back: counts zeroed, then the owner cleared.
"""

from __future__ import annotations

import ctypes
import struct

from ceemsnet.collectors.counters import HashSource
from ceemsnet.planning.structs import NET_SLOT_OWNER, NET_SLOT_VALS
from ceemsnet.runtime import libbpf

OWNER, VALS = NET_SLOT_OWNER, NET_SLOT_VALS
SLOT_MAPS = (OWNER, VALS)
KEYS = 8          # [proto][family][direction], index (proto << 2) | (family << 1) | dir
WORDS = 3         # bytes, calls, errors
SLOT_BYTES = KEYS * WORDS * 8
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


def key_of(idx: int) -> tuple[int, int, int]:
    """(proto, family, dir) of a slot's counter index."""
    return idx >> 2, (idx >> 1) & 1, idx & 1


def decode_slots(owners: bytes, vals: bytes, n: int, ncpus: int) -> dict[int, tuple[int, dict[int, tuple]]]:
    """{slot: (owner cgroup id, {index: (bytes, calls, errors)})} for owned slots (pure).
    A slot owned but with nothing counted yet has an empty dict."""
    own = memoryview(owners).cast("Q")
    mv = memoryview(vals).cast("Q")
    per = KEYS * WORDS
    stride = per * ncpus
    out = {}
    for s in range(n):
        cid = own[s]
        if not cid:
            continue
        base = s * stride
        counts = {}
        for k in range(KEYS):
            off = base + k * WORDS
            v = tuple(sum(mv[off + w:base + stride:per]) for w in range(WORDS))
            if v[0] or v[1] or v[2]:
                counts[k] = v
        out[s] = (cid, counts)
    return out


def _read_slots(maps: dict) -> dict[int, tuple[int, dict[int, tuple]]]:
    owner, vals = maps[OWNER], maps[VALS]
    _, owners, n = owner.read_all()
    _, values, nv = vals.read_all()
    return decode_slots(owners, values, min(n, nv), vals.ncpus)


def fold_slots(old_maps: dict, new_maps: dict, reused: set[str], pack) -> int:
    """An upgrade whose new object does not take the old slot maps over (it has none,
    or of another size): add the counts they hold into the new object's net_stats,
    which no program writes yet. Read-add-write, exact. When net_stats itself was
    taken over (the same map as the old one), the old slots are emptied as they are
    added, so another family tried after this one does not add them twice.
    Returns keys added."""
    stats = new_maps.get("net_stats")
    if not has_slots(old_maps) or stats is None or set(SLOT_MAPS) <= reused:
        return 0
    lb = libbpf.lib()
    ncpus, vsz = stats.ncpus, stats.value_stride
    val = ctypes.create_string_buffer(vsz * ncpus)
    added = 0
    for slot, (cid, counts) in _read_slots(old_maps).items():
        for idx, v in counts.items():
            key = pack(cid, *key_of(idx))
            have = [0, 0, 0]
            if lb.bpf_map_lookup_elem(stats.fd, key, val) == 0:
                words = memoryview(val.raw).cast("Q")
                have = [sum(words[w::vsz // 8]) for w in range(WORDS)]
            # a per-CPU value: the whole sum goes to CPU 0, the other CPUs zero
            new = bytearray(vsz * ncpus)
            struct.pack_into(f"={WORDS}Q", new, 0, *(a + b for a, b in zip(have, v)))
            stats.update(key, bytes(new))
            added += 1
        if "net_stats" in reused:
            old_vals = old_maps[VALS]
            old_vals.update(_U32.pack(slot), bytes(old_vals.value_stride * old_vals.ncpus))
    return added


class SlotSource:
    """net_stats (hash fallback) plus the slot maps, read as one source."""

    def __init__(self, stats, maps: dict, decode, pack):
        self.hash = HashSource(stats, decode, pack)
        self.name = self.hash.name
        self.owner, self.vals = maps[OWNER], maps[VALS]
        self._slots_of: dict[int, list[int]] = {}   # cgroup id -> its slots, as of the last read
        self._keys_left: dict[int, set[int]] = {}   # slot -> counter indexes the last read returned
        self._in_hash: set[tuple] = set()           # keys the last read found in the hash map
        self._zero = bytes(self.vals.value_stride * self.vals.ncpus)

    @property
    def capacity(self) -> int:
        """The hash map's max_entries: the keys beyond the slots that still fit."""
        return self.hash.capacity

    def read(self) -> tuple[dict[tuple, tuple], int]:
        stats, entries = self.hash.read()
        self._in_hash = set(stats)
        slots = _read_slots({OWNER: self.owner, VALS: self.vals})
        self._slots_of, self._keys_left = {}, {}
        for s, (cid, counts) in slots.items():
            self._slots_of.setdefault(cid, []).append(s)
            if not counts:
                counts = {0: (0, 0, 0)}  # owned, nothing counted yet: still a key, so a removed cgroup frees it
            self._keys_left[s] = set(counts)
            for idx, v in counts.items():
                key = (cid,) + key_of(idx)
                have = stats.get(key)
                if have is None:
                    stats[key] = v
                    entries += 1
                else:
                    stats[key] = tuple(a + b for a, b in zip(have, v))
        return stats, entries

    def delete(self, key: tuple) -> bool:
        done = key in self._in_hash and self.hash.delete(key)
        idx = (key[1] << 2) | (key[2] << 1) | key[3]
        for s in self._slots_of.get(key[0], ()):
            left = self._keys_left.get(s)
            if left is None:
                continue
            left.discard(idx)
            done = True
            if not left:
                del self._keys_left[s]
                self.release(s)
        return done

    def release(self, slot: int) -> None:
        """Give a removed cgroup's slot back; the lifecycle has already folded what it
        held. Zeroed before its owner is cleared: once free, another cgroup may take
        it at any moment and must find it empty."""
        k = _U32.pack(slot)
        self.vals.update(k, self._zero)
        self.owner.update(k, _U64.pack(0))
