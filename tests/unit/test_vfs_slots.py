"""The vfs slot layout's user-space parts (ceemsnet/collectors/vfs_slots.py): decoding a slot's
per-CPU tables, merging slots and the hash map into one record per (cgroup, file system),
decoding only changed slots, deleting and giving slots back, and the upgrade's fold."""

import argparse
import struct

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.collectors import vfs, vfs_slots
from ceemsnet.collectors.counters import CounterMap, Records
from ceemsnet.planning.catalogue import CATALOGUE, slots_twin
from ceemsnet.planning.structs import (VFS_SLOT_FS, VFS_SLOT_TAG, VFS_SLOT_WORDS, VFS_WORDS, VfsSlot, decode_vfs,
                                       pack_vfs_key)

from .test_structs import layout, struct_layout

TMPFS, EXT4 = 0x01021994, 0xEF53
K, W = VFS_SLOT_FS, VFS_WORDS


def counts(write=(0, 0), read=(0, 0), opens=0):
    """One CPU's struct vfs_counts: read and write (bytes, calls), open calls."""
    c = [0] * W
    c[0], c[1] = read
    c[3], c[4] = write
    c[7] = opens
    return c


def slot_cpu(entries):
    """One CPU's struct vfs_slot from [(magic or None, counts)], at most K."""
    tags = [0] * K
    cs = [0] * (K * W)
    for i, (magic, c) in enumerate(entries):
        tags[i] = 0 if magic is None else magic | VFS_SLOT_TAG
        cs[i * W:(i + 1) * W] = c
    return struct.pack(f"={VFS_SLOT_WORDS}Q", *tags, *cs)


class ArrayMap:
    """A BPF array (per CPU or not) as BpfMap shows it: read_all, lookup, update."""

    def __init__(self, name, n, stride, ncpus):
        self.name, self.key_size, self.value_stride, self.ncpus = name, 4, stride, ncpus
        self.max_entries = n
        self.data = [bytes(stride * ncpus)] * n

    def read_all(self):
        return b"".join(struct.pack("=I", i) for i in range(len(self.data))), b"".join(self.data), len(self.data)

    def lookup(self, k):
        return self.data[struct.unpack("=I", k)[0]]

    def update(self, k, v):
        assert len(v) == self.value_stride * self.ncpus
        self.data[struct.unpack("=I", k)[0]] = v


class HashMap:
    """vfs_stats as BpfMap shows it (per-CPU values)."""

    def __init__(self, ncpus, name="vfs_stats"):
        self.name, self.key_size, self.value_stride, self.ncpus = name, 16, W * 8, ncpus
        self.value_size, self.percpu, self.max_entries = W * 8, True, 65536
        self.data = {}

    def put(self, cid, magic, *percpu):
        self.data[pack_vfs_key(cid, magic)] = b"".join(struct.pack(f"={W}Q", *c) for c in percpu)

    def read_all(self):
        return b"".join(self.data), b"".join(self.data.values()), len(self.data)

    def lookup(self, k):
        return self.data.get(k)

    def update(self, k, v):
        self.data[k] = v

    def delete(self, k):
        return self.data.pop(k, None) is not None


def maps(ncpus=2, n=8):
    return {vfs_slots.OWNER: ArrayMap(vfs_slots.OWNER, n, 8, 1),
            vfs_slots.VALS: ArrayMap(vfs_slots.VALS, n, VFS_SLOT_WORDS * 8, ncpus)}


def own(m, slot, cid, *cpus):
    m[vfs_slots.OWNER].update(struct.pack("=I", slot), struct.pack("=Q", cid))
    m[vfs_slots.VALS].update(struct.pack("=I", slot), b"".join(slot_cpu(c) for c in cpus))


def source(ncpus=2):
    m, h = maps(ncpus), HashMap(ncpus)
    return vfs_slots.VfsSlotSource(h, m, decode_vfs, pack_vfs_key), m, h


def test_decode_sums_cpus_per_file_system_whatever_the_entry():
    # CPU 0 met tmpfs then ext4, CPU 1 ext4 then tmpfs; CPU 2 only tmpfs; magic 0 is a tag too
    raw = b"".join([slot_cpu([(TMPFS, counts(write=(100, 1))), (EXT4, counts(read=(7, 2)))]),
                    slot_cpu([(EXT4, counts(read=(3, 1))), (TMPFS, counts(write=(50, 2))), (0, counts(opens=4))]),
                    slot_cpu([(TMPFS, counts(write=(1, 1)))])])
    got = vfs_slots.decode_slot(raw, 3)
    assert got == {TMPFS: counts(write=(151, 4)), EXT4: counts(read=(10, 3)), 0: counts(opens=4)}


def test_decode_sums_two_entries_of_one_file_system():
    # two programs on one CPU claimed two entries for the same magic at once: summed, nothing misattributed
    raw = slot_cpu([(TMPFS, counts(write=(10, 1))), (TMPFS, counts(write=(5, 1)))]) + slot_cpu([])
    assert vfs_slots.decode_slot(raw, 2) == {TMPFS: counts(write=(15, 2))}


def test_read_merges_slots_and_hash_into_one_record_per_cgroup_and_file_system():
    src, m, h = source()
    own(m, 3, 77, [(TMPFS, counts(write=(100, 1)))], [(TMPFS, counts(write=(20, 1))), (EXT4, counts(read=(9, 1)))])
    own(m, 5, 88, [(EXT4, counts(write=(1, 1)))], [])
    h.put(77, TMPFS, counts(opens=1), counts(write=(5, 1)))   # opened before its slot; in both: summed
    h.put(99, EXT4, counts(read=(4, 1)), counts())            # a cgroup with no slot
    stats, n = src.read()
    assert n == 4
    assert stats == {(77, TMPFS): tuple(counts(write=(125, 3), opens=1)), (77, EXT4): tuple(counts(read=(9, 1))),
                     (88, EXT4): tuple(counts(write=(1, 1))), (99, EXT4): tuple(counts(read=(4, 1)))}
    # the same through the raw contract, as CounterMap reads it
    rec = Records(src)
    assert rec.update() == {77, 88, 99} and rec.stats == stats


def test_map_entries_are_the_hash_maps_keys_beside_its_capacity():
    """ceemsnet_map_entries{map="vfs_stats"} counts the keys in vfs_stats, which its capacity
    (ceemsnet_map_capacity, the hash map's max_entries) bounds: not the records the slots add."""
    src, m, h = source()
    own(m, 3, 77, [(TMPFS, counts(write=(100, 1)))], [])
    own(m, 5, 88, [(EXT4, counts(write=(1, 1)))], [])
    h.put(99, EXT4, counts(read=(4, 1)), counts())
    counters = CounterMap(src, lambda st, paths: vfs.vfs_families(st, paths, frozenset()), Resolver())
    fams = {f.name: f for f in counters.collect()}
    assert fams["ceemsnet_map_entries"].rows == [(("vfs_stats",), 1)]
    assert fams["ceemsnet_map_capacity"].rows == [(("vfs_stats",), 65536)]


class Resolver:
    def resolve(self, ids):
        return {i: f"/c{i}" for i in ids}


def test_only_changed_slots_are_decoded(monkeypatch):
    src, m, h = source()
    own(m, 1, 11, [(TMPFS, counts(write=(1, 1)))], [])
    own(m, 2, 22, [(EXT4, counts(write=(2, 1)))], [])
    rec = Records(src)
    calls = []
    real = vfs_slots.decode_slot
    monkeypatch.setattr(vfs_slots, "decode_slot", lambda raw, n: calls.append(raw) or real(raw, n))
    assert rec.update() == {11, 22} and len(calls) == 2
    assert rec.update() == set() and len(calls) == 2        # nothing moved: nothing decoded
    own(m, 2, 22, [(EXT4, counts(write=(5, 2)))], [])
    assert rec.update() == {22} and len(calls) == 3          # one slot moved: that one only
    assert rec.stats[(22, EXT4)] == tuple(counts(write=(5, 2)))
    assert rec.stats[(11, TMPFS)] == tuple(counts(write=(1, 1)))


def test_delete_zeroes_the_entries_then_gives_the_slot_back():
    src, m, h = source()
    own(m, 4, 77, [(TMPFS, counts(write=(1, 1))), (EXT4, counts(read=(2, 1)))], [(TMPFS, counts(write=(3, 1)))])
    own(m, 6, 88, [(TMPFS, counts(write=(8, 1)))], [])
    h.put(77, 0, counts(opens=1), counts())
    src.read()
    assert src.delete((77, TMPFS)) is True
    # the slot keeps its other file system: still owned, tmpfs's entries zeroed on every CPU
    assert struct.unpack("=Q", m[vfs_slots.OWNER].data[4])[0] == 77
    stats, _ = src.read()
    assert (77, TMPFS) not in stats and stats[(77, EXT4)] == tuple(counts(read=(2, 1)))
    assert src.delete((77, 0)) is True and src.delete((77, EXT4)) is True
    assert struct.unpack("=Q", m[vfs_slots.OWNER].data[4])[0] == 0
    assert m[vfs_slots.VALS].data[4] == bytes(VFS_SLOT_WORDS * 8 * 2)
    assert pack_vfs_key(77, 0) not in h.data
    stats, n = src.read()
    assert stats == {(88, TMPFS): tuple(counts(write=(8, 1)))} and n == 1
    assert src.delete((77, EXT4)) is False  # nothing left anywhere


def test_fold_adds_the_slots_into_vfs_stats_exactly():
    old = maps()
    own(old, 2, 77, [(TMPFS, counts(write=(10, 1)))], [(TMPFS, counts(write=(5, 1))), (EXT4, counts(read=(3, 1)))])
    new_stats = HashMap(2)
    new_stats.put(77, TMPFS, counts(write=(1, 1)), counts())
    assert vfs_slots.fold_slots(old, {"vfs_stats": new_stats}, set(), pack_vfs_key) == 2
    got = decode_vfs(*new_stats.read_all(), 2)
    assert got == {(77, TMPFS): tuple(counts(write=(16, 3))), (77, EXT4): tuple(counts(read=(3, 1)))}
    # the old slots stay as they were: another family tried after this one can fold them again
    assert struct.unpack("=Q", old[vfs_slots.OWNER].data[2])[0] == 77
    # vfs_stats taken over (the same map): the old slots are emptied as they are added
    same = HashMap(2)
    assert vfs_slots.fold_slots(old, {"vfs_stats": same}, {"vfs_stats"}, pack_vfs_key) == 2
    assert struct.unpack("=Q", old[vfs_slots.OWNER].data[2])[0] == 0
    assert old[vfs_slots.VALS].data[2] == bytes(VFS_SLOT_WORDS * 8 * 2)
    assert vfs_slots.fold_slots(old, {"vfs_stats": same}, {"vfs_stats"}, pack_vfs_key) == 0
    # the slot maps taken over too: nothing to do
    assert vfs_slots.fold_slots(maps(), {"vfs_stats": HashMap(2)}, set(vfs_slots.SLOT_MAPS), pack_vfs_key) == 0


def test_default_slots_fit_the_budget_and_are_powers_of_two():
    for ncpus in (1, 2, 5, 6, 64, 256, 4096):
        n = vfs_slots.default_slots(ncpus)
        assert n & (n - 1) == 0 and vfs_slots.MIN_SLOTS <= n <= vfs_slots.MAX_SLOTS
        assert n == vfs_slots.MIN_SLOTS or n * vfs_slots.SLOT_BYTES * ncpus <= vfs_slots.BUDGET
    assert vfs_slots.default_slots(2) == 4096 and vfs_slots.default_slots(64) == 256


def test_the_tracepoint_object_of_6_2_has_a_slots_twin_whose_struct_matches():
    obj = next(o for o in CATALOGUE if o.file == "vfs-tracepoint-6.2-x86.bpf.o")
    twin = slots_twin(obj)
    assert twin is not None and twin.file == "vfs-tracepoint-6.2-x86-slots.bpf.o" and "VFS_SLOTS" in twin.defines
    assert struct_layout(twin.path, "vfs_slot") == layout(VfsSlot)
    assert struct_layout(obj.path, "vfs_slot") is None  # the hash object has no slots


@pytest.mark.parametrize("value", ["3", "1000"])
def test_vfs_slots_flag_must_be_a_power_of_two(value):
    p = argparse.ArgumentParser()
    vfs.add_flags(p)
    with pytest.raises(CeemsnetError, match="power of two"):
        vfs.check(p.parse_args([f"--vfs.slots={value}"]))
    vfs.check(p.parse_args(["--vfs.slots=0"]))
    vfs.check(p.parse_args(["--vfs.slots=1024"]))
