"""The slot layout of the vfs counters (bpf/vfs/vfs_slots.h), read as one source.

Objects built with VFS_SLOTS count a cgroup's reads and writes in a slot of a
per-CPU array (vfs_slot_vals) found by the cgroup id's position in an owner
array (vfs_slot_owner), as net's slots (ceemsnet/collectors/slots.py). vfs
records are per (cgroup, file system): a slot's value is, per CPU, a table of
VFS_SLOT_FS entries, each a file system's tag (magic | 1 << 32; 0: free) and
its struct vfs_counts, claimed per CPU in the order that CPU met them. What
finds no place there (a cgroup whose two slots are taken, a file system beyond
the table, opens and directory operations of a file system without an entry)
counts in the per-CPU hash (vfs_stats). VfsSlotSource reads both and answers
exactly like HashSource (ceemsnet/collectors/counters.py), raw contract
included, so CounterMap renders it incrementally and the lifecycle and the
ledger do not know which layout runs:

  read_raw()  -> (keys, values, count): vfs_stats' records, then one record per
                 (cgroup, file system) held in owned slots, packed as a vfs_stats
                 record (the sum on the first CPU, zeros on the others); one
                 (cgroup, file system) in both places, or in two entries, is summed
  delete(key) -> bool: the lifecycle folded the record of a removed cgroup into
                 its retired totals: its hash key is deleted and its slot entries
                 zeroed; once no entry of the slot is left, the slot is given back.

A scrape decodes only the slots whose bytes changed since the last read: the
per-CPU tables of the others are neither summed nor unpacked again.
"""

from __future__ import annotations

import struct
from itertools import compress

from ceemsnet.collectors.counters import BesideHash, HashSource
from ceemsnet.collectors.slots import BUDGET, MAX_SLOTS, MIN_SLOTS, owned_values
from ceemsnet.pinned.continuity import add_record, add_values
from ceemsnet.planning.structs import (VFS_SLOT_FS, VFS_SLOT_OWNER, VFS_SLOT_TAG, VFS_SLOT_VALS, VFS_SLOT_WORDS,
                                       VFS_WORDS)

OWNER, VALS = VFS_SLOT_OWNER, VFS_SLOT_VALS
SLOT_MAPS = (OWNER, VALS)
SLOT_BYTES = VFS_SLOT_WORDS * 8  # one struct vfs_slot per slot, per CPU
_COUNTS = VFS_SLOT_FS            # the table's first words are its tags; the counts follow
_MAGIC = 0xFFFFFFFF
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_RECORD = struct.Struct(f"={VFS_WORDS}Q")


def default_slots(ncpus: int) -> int:
    """A power of two that fits BUDGET (the array is per CPU and preallocated, SLOT_BYTES per slot
    and CPU, 800 B): 4096 on up to 5 CPUs, 256 on 64, 64 from 164; others count in vfs_stats."""
    fit = BUDGET // (SLOT_BYTES * max(1, ncpus))
    return max(MIN_SLOTS, min(MAX_SLOTS, 1 << max(0, fit.bit_length() - 1)))


def has_slots(maps: dict) -> bool:
    return all(m in maps for m in SLOT_MAPS)


def decode_slot(raw: bytes, ncpus: int) -> dict[int, list[int]]:
    """{magic: its VFS_WORDS counters summed over the CPUs and entries} of one slot's per-CPU
    value (pure). An entry position holding one file system on every CPU that claimed it (the
    common case: a cgroup's tasks meet its file systems in the same order) is summed column by
    column in C; a position holding different ones on different CPUs is added CPU by CPU."""
    mv = memoryview(raw).cast("Q")[:VFS_SLOT_WORDS * ncpus]
    out: dict[int, list[int]] = {}
    for i in range(VFS_SLOT_FS):
        tags = set(mv[i::VFS_SLOT_WORDS])
        tags.discard(0)
        if not tags:
            continue
        base = _COUNTS + i * VFS_WORDS
        if len(tags) == 1:  # the CPUs without it never wrote the entry: their words are 0
            parts = [((tags.pop()), [sum(mv[base + w::VFS_SLOT_WORDS]) for w in range(VFS_WORDS)])]
        else:
            parts = []
            for c in range(ncpus):
                at = c * VFS_SLOT_WORDS
                if mv[at + i]:
                    parts.append((mv[at + i], mv[at + base:at + base + VFS_WORDS].tolist()))
        for tag, rec in parts:
            acc = out.get(tag & _MAGIC)
            if acc is None:
                out[tag & _MAGIC] = rec
            else:
                for w, v in enumerate(rec):
                    acc[w] += v
    return out


def read_slots(owner, vals) -> dict[int, tuple[int, dict[int, list[int]]]]:
    """{slot: (owner cgroup id, {magic: counters})} of the owned slots (for the upgrade's fold)."""
    _, owners, n = owner.read_all()
    _, values, nv = vals.read_all()
    n = min(n, nv)
    own = memoryview(owners).cast("Q")[:n]
    vsz = vals.value_stride * vals.ncpus
    return {s: (own[s], decode_slot(values[s * vsz:(s + 1) * vsz], vals.ncpus)) for s in compress(range(n), own)}


def fold_slots(old_maps: dict, new_maps: dict, reused: set[str], pack) -> int:
    """An upgrade whose new object does not take the old slot maps over (it has none, or of
    another size): add the records they hold into the new object's vfs_stats, which no program
    writes yet. Read-add-write, exact. When vfs_stats itself was taken over (the same map as the
    old one), the old slots are emptied as they are added (values, then owners), so another
    family tried after this one does not add them twice. Returns records added."""
    stats = new_maps.get("vfs_stats")
    if not has_slots(old_maps) or stats is None or set(SLOT_MAPS) <= reused:
        return 0
    if stats.value_stride != VFS_WORDS * 8:
        return 0  # not this layout's vfs_stats
    old_owner, old_vals = old_maps[OWNER], old_maps[VALS]
    added = 0
    for slot, (cid, recs) in read_slots(old_owner, old_vals).items():
        for magic, rec in recs.items():
            if any(rec):
                add_record(stats, pack(cid, magic), rec)
                added += 1
        if "vfs_stats" in reused:
            k = _U32.pack(slot)
            old_vals.update(k, bytes(old_vals.value_stride * old_vals.ncpus))
            old_owner.update(k, _U64.pack(0))
    return added


class VfsSlotSource(BesideHash):
    """vfs_stats (hash path) plus the slot maps, read as one source (the raw contract of
    HashSource: packed records, one per (cgroup, file system))."""

    def __init__(self, stats, maps: dict, decode, pack):
        self.hash = HashSource(stats, decode, pack)
        self.name = self.hash.name
        self.owner, self.vals = maps[OWNER], maps[VALS]
        self._pack = pack
        self._ncpus = self.vals.ncpus
        self._vsz = self.vals.value_stride * self._ncpus  # one slot, every CPU
        self._pad = bytes(self.hash.value_size - _RECORD.size)  # the other CPUs of a packed record
        self._key = struct.Struct(f"{self.hash.key_size}s")
        # slot -> (owner, its bytes, its records) as of the last read: unchanged slots are not decoded
        self._cache: dict[int, tuple[int, bytes, list[tuple[bytes, bytes]]]] = {}
        self._slots_of: dict[int, list[int]] = {}  # cgroup id -> its slots, as of the last read

    def _slot_records(self, cid: int, raw: bytes) -> list[tuple[bytes, bytes]]:
        return [(self._pack(cid, magic), _RECORD.pack(*(v & 0xFFFFFFFFFFFFFFFF for v in rec)) + self._pad)
                for magic, rec in sorted(decode_slot(raw, self._ncpus).items())]

    def _read_slots(self) -> list[tuple[bytes, bytes]]:
        """The owned slots' records, in slot order; only changed slots decoded."""
        _, owners, n = self.owner.read_all()
        own = memoryview(owners).cast("Q")[:n]
        owned = list(compress(range(n), own))
        svals = owned_values(self.vals, owned)  # only the owned slots' bytes (slots.owned_values)
        cache, new_cache, slots_of, recs = self._cache, {}, {}, []
        for s in owned:
            cid, raw = own[s], svals.get(s)
            if raw is None:
                continue
            hit = cache.get(s)
            if hit is not None and hit[0] == cid and hit[1] == raw:
                new_cache[s] = hit
            else:
                new_cache[s] = hit = (cid, raw, self._slot_records(cid, raw))
            slots_of.setdefault(cid, []).append(s)
            recs += hit[2]
        self._cache, self._slots_of = new_cache, slots_of
        return recs

    def read_raw(self) -> tuple[bytes, bytes, int]:
        keys, values, n = self.hash.read_raw()
        self.hash_entries = n
        ksz, vsz = self.key_size, self.value_size
        keys, values = keys[:n * ksz], values[:n * vsz]
        recs = self._read_slots()
        if not recs:
            return keys, values, n
        skeys = [kb for kb, _ in recs]
        in_hash = set(skeys).intersection(_kb for (_kb,) in self._key.iter_unpack(keys)) if n else set()
        if not in_hash and len(set(skeys)) == len(skeys):
            # the common case: every (cgroup, file system) in one place, records appended as they are
            return keys + b"".join(skeys), values + b"".join(vb for _, vb in recs), n + len(recs)
        # counted in the hash map too (before the slot, or by a CPU whose table was full), or in two
        # slots or entries: summed word by word (per CPU), so it stays one record
        merged: dict[bytes, bytes] = {}
        for i in range(n):
            merged[keys[i * ksz:(i + 1) * ksz]] = values[i * vsz:(i + 1) * vsz]
        for kb, vb in recs:
            have = merged.get(kb)
            merged[kb] = vb if have is None else add_values(have, vb)
        return b"".join(merged), b"".join(merged.values()), len(merged)

    def delete(self, key: tuple) -> bool:
        """Delete a removed cgroup's record: its hash key, and its entries in its slots (zeroed
        on every CPU: no task is left in the cgroup to count there). A slot with no entry left
        is given back."""
        cid, magic = key[0], key[1]
        done = bool(self.hash.delete(key))  # False when it never counted there
        tag = magic | VFS_SLOT_TAG
        for s in list(self._slots_of.get(cid, ())):
            k = _U32.pack(s)
            raw = self.vals.lookup(k)
            if raw is None:
                continue
            mv = memoryview(bytearray(raw)).cast("Q")
            found, left = False, False
            for c in range(self._ncpus):
                at = c * VFS_SLOT_WORDS
                for i in range(VFS_SLOT_FS):
                    t = mv[at + i]
                    if t == tag:
                        mv[at + i] = 0
                        base = at + _COUNTS + i * VFS_WORDS
                        mv[base:base + VFS_WORDS] = memoryview(bytes(VFS_WORDS * 8)).cast("Q")
                        found = True
                    elif t:
                        left = True
            if not left:
                self._slots_of[cid].remove(s)
                self.release(s)
                done = True
            elif found:
                self.vals.update(k, mv.tobytes())
                done = True
        return done

    def release(self, slot: int) -> None:
        """Give a removed cgroup's slot back; the lifecycle has already folded what it held.
        Zeroed before its owner is cleared: once free, another cgroup may take it at any
        moment and must find it empty."""
        k = _U32.pack(slot)
        self.vals.update(k, bytes(self._vsz))
        self.owner.update(k, _U64.pack(0))
