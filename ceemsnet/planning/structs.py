"""Python mirrors of bpf/include/ceemsnet.h, and decoding of map contents.

The ctypes structs are the one Python copy of the C layout;
tests/unit/test_structs.py checks them against the BTF of every committed
object. Decoding is pure: bytes in, dicts out.
"""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Callable
from operator import add

# the net slot layout's maps and load-time setting (bpf/net/net_slots.h): slots - 1 is the mask
NET_SLOT_OWNER, NET_SLOT_VALS, NET_SLOT_MASK = "net_slot_owner", "net_slot_vals", "net_slot_mask"
# the vfs slot layout's (bpf/vfs/vfs_slots.h), the same roles
VFS_SLOT_OWNER, VFS_SLOT_VALS, VFS_SLOT_MASK = "vfs_slot_owner", "vfs_slot_vals", "vfs_slot_mask"
# per subsystem: (owner map, values map, load-time mask setting) of its slot layout
SLOT_MAPS = {"net": (NET_SLOT_OWNER, NET_SLOT_VALS, NET_SLOT_MASK),
             "vfs": (VFS_SLOT_OWNER, VFS_SLOT_VALS, VFS_SLOT_MASK)}

NET_PROTO = {0: "tcp", 1: "udp"}
NET_FAMILY = {0: "ipv4", 1: "ipv6"}
NET_DIR = {0: "egress", 1: "ingress"}
DROP_REASONS = {0: "stats_full", 1: "stash_full"}


class NetKey(ctypes.Structure):
    """net_stats' key: one record per cgroup."""
    _fields_ = [("cgroup_id", ctypes.c_uint64)]


class NetValue(ctypes.Structure):
    _fields_ = [
        ("bytes", ctypes.c_uint64),
        ("calls", ctypes.c_uint64),
        ("errors", ctypes.c_uint64),
    ]


NET_COUNTERS = 8  # [proto][family][direction]: index (proto << 2) | (family << 1) | dir


class NetCounts(ctypes.Structure):
    """net_stats' value (and a net slot's): every counter of one cgroup."""
    _fields_ = [("v", NetValue * NET_COUNTERS)]


VFS_OPS = {0: "read", 1: "write", 2: "open", 3: "create", 4: "unlink", 5: "mkdir", 6: "rmdir"}


class VfsKey(ctypes.Structure):
    """vfs_stats' key: one record per (cgroup, file system)."""
    _fields_ = [
        ("cgroup_id", ctypes.c_uint64),
        ("magic", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


VFS_COUNTERS = 8  # the ops (VFS_OPS) and one spare: a power of two, indexed with a mask in C


class VfsCounts(ctypes.Structure):
    """vfs_stats' value: (bytes, calls, errors) per op (VFS_OPS); bytes only for read and write."""
    _fields_ = [("v", NetValue * VFS_COUNTERS)]


WORDS = ctypes.sizeof(NetValue) // 8  # bytes, calls, errors: a net_value and a vfs_value alike
NET_WORDS = ctypes.sizeof(NetCounts) // 8
VFS_WORDS = ctypes.sizeof(VfsCounts) // 8

VFS_SLOT_FS = 4  # file systems per vfs slot (VFS_SLOT_FS in bpf/vfs/vfs_slots.h)
VFS_SLOT_TAG = 1 << 32  # a table entry's tag: magic | VFS_SLOT_TAG (0: free)


class VfsSlot(ctypes.Structure):
    """A vfs slot's per-CPU value (bpf/vfs/vfs_slots.h): a table of VFS_SLOT_FS file systems,
    tag[i] = magic | VFS_SLOT_TAG (0: free) naming the file system of c[i]."""
    _fields_ = [("tag", ctypes.c_uint64 * VFS_SLOT_FS), ("c", VfsCounts * VFS_SLOT_FS)]


VFS_SLOT_WORDS = ctypes.sizeof(VfsSlot) // 8


def net_index(proto: int, family: int, direction: int) -> int:
    """A counter's place in a net record (net_index() in bpf/net/net.h)."""
    return (proto << 2) | (family << 1) | direction


def net_index_parts(idx: int) -> tuple[int, int, int]:
    """(proto, family, direction) of a net record's counter index."""
    return idx >> 2, (idx >> 1) & 1, idx & 1


def sum_percpu(values: bytes, count: int, ncpus: int, words: int) -> list[tuple[int, ...]]:
    """Sum `count` per-CPU values of `words` u64 each (one slot per possible CPU).

    Column by column in C: a strided memoryview picks one word of one CPU
    for every record, and map(add) sums the CPUs' columns, so the Python work
    does not grow with the records."""
    stride = words * ncpus
    mv = memoryview(values).cast("Q")[:count * stride]
    cols = []
    for w in range(words):
        col = mv[w::stride]
        for c in range(1, ncpus):
            col = map(add, col, mv[c * words + w::stride])
        cols.append(col)
    return list(zip(*cols))


class Layout:
    """One subsystem's record layout: a key per cgroup (and per file system for vfs),
    a value of `counters` x (bytes, calls, errors), and the layout of ceemsnet
    0.1's maps (one key per counter: `legacy_key`, whose last field is the counter's
    index source), read only to carry pinned counts and ledgers over to this one."""

    def __init__(self, name: str, key: str, counters: int, legacy_key: str,
                 legacy_split: Callable[[tuple], tuple[tuple, int]]):
        self.name = name
        self.key = struct.Struct(key)
        self.counters = counters
        self.words = counters * WORDS
        self.value_size = self.words * 8
        self.legacy_key = struct.Struct(legacy_key)
        self._split = legacy_split

    def pack(self, *key) -> bytes:
        return self.key.pack(*key)

    def decode(self, keys: bytes, values: bytes, count: int, ncpus: int) -> dict[tuple, tuple]:
        """{record key: its counters, `words` long} from a read of the map (pure)."""
        return dict(zip(self.key.iter_unpack(keys[:count * self.key.size]),
                        sum_percpu(values, count, ncpus, self.words)))

    def is_legacy(self, key_size: int, value_size: int) -> bool:
        """A map of the per-counter layout (value_size: one CPU's value)."""
        return key_size == self.legacy_key.size and value_size == WORDS * 8

    def legacy_split(self, key: tuple) -> tuple[tuple, int]:
        """(record key, counter index) of a legacy key."""
        return self._split(key)

    def regroup(self, keys: bytes, values: bytes, count: int, ncpus: int,
                skip: frozenset = frozenset()) -> dict[tuple, list[int]]:
        """Records from a read of a legacy (per-counter) map: each key's counters summed over
        the CPUs and put at its index (pure). Legacy keys in `skip` (packed) are left out."""
        ksz = self.legacy_key.size
        sums = sum_percpu(values, count, ncpus, WORDS)
        out: dict[tuple, list[int]] = {}
        for i in range(count):
            kb = keys[i * ksz:(i + 1) * ksz]
            if kb in skip:
                continue
            rk, idx = self._split(self.legacy_key.unpack(kb))
            if not 0 <= idx < self.counters:
                continue
            rec = out.get(rk)
            if rec is None:
                rec = out[rk] = [0] * self.words
            for w in range(WORDS):
                rec[idx * WORDS + w] += sums[i][w]
        return out


NET = Layout("net", "=Q", NET_COUNTERS, "=QBBB5x", lambda k: ((k[0],), net_index(k[1] & 1, k[2] & 1, k[3] & 1)))
VFS = Layout("vfs", "=QI4x", VFS_COUNTERS, "=QIB3x", lambda k: ((k[0], k[1]), k[2]))
LAYOUTS = {"net": NET, "vfs": VFS}
assert NET.key.size == ctypes.sizeof(NetKey) and VFS.key.size == ctypes.sizeof(VfsKey)
assert NET.value_size == ctypes.sizeof(NetCounts) and VFS.value_size == ctypes.sizeof(VfsCounts)


def pack_net_key(cgroup_id: int) -> bytes:
    return NET.key.pack(cgroup_id)


def decode_net(keys: bytes, values: bytes, count: int, ncpus: int) -> dict[tuple[int], tuple[int, ...]]:
    """{(cgroup_id,): 24 counters} from a net_stats read: (bytes, calls, errors) per net_index()."""
    return NET.decode(keys, values, count, ncpus)


def decode_drops(values: bytes, count: int, ncpus: int) -> dict[str, int]:
    """{reason: events} from the per-CPU drops array (keys are 0..count-1)."""
    sums = sum_percpu(values, count, ncpus, 1)
    return {DROP_REASONS.get(i, str(i)): s[0] for i, s in enumerate(sums)}


def pack_vfs_key(cgroup_id: int, magic: int) -> bytes:
    return VFS.key.pack(cgroup_id, magic)


def decode_vfs(keys: bytes, values: bytes, count: int, ncpus: int) -> dict[tuple[int, int], tuple[int, ...]]:
    """{(cgroup_id, magic): 24 counters} from a vfs_stats read: (bytes, calls, errors) per op."""
    return VFS.decode(keys, values, count, ncpus)


class SkbKey(ctypes.Structure):
    _fields_ = [
        ("cgroup_id", ctypes.c_uint64),
        ("family", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 6),
    ]


class SkbValue(ctypes.Structure):
    _fields_ = [
        ("bytes", ctypes.c_uint64),
        ("packets", ctypes.c_uint64),
        ("segments", ctypes.c_uint64),
    ]


class SkbStorage(ctypes.Structure):
    _fields_ = [("v", (SkbValue * 2) * 2)]  # [family][direction]


_SKB_KEY = struct.Struct("=QBB6x")
_STORAGE_KEY = struct.Struct("=QI4x")  # struct bpf_cgroup_storage_key { u64 cgroup_inode_id; u32 attach_type; }
assert _SKB_KEY.size == ctypes.sizeof(SkbKey)


def pack_skb_key(cgroup_id: int, family: int, direction: int) -> bytes:
    return _SKB_KEY.pack(cgroup_id, family, direction)


def decode_skb(keys: bytes, values: bytes, count: int, ncpus: int) -> dict[tuple[int, int, int], tuple[int, int, int]]:
    """{(cgroup_id, family, dir): (bytes, packets, segments)} from skb_stats (root mode)."""
    return dict(zip(_SKB_KEY.iter_unpack(keys[: count * _SKB_KEY.size]), sum_percpu(values, count, ncpus, 3)))


def decode_skb_storage(keys: bytes, values: bytes, count: int, ncpus: int) -> dict[tuple[int, int, int], tuple]:
    """The same from per-CPU cgroup storage (per-cgroup mode), one storage per
    (cgroup, attach type), each a [family][direction] array; summed per cgroup."""
    words = ctypes.sizeof(SkbStorage) // 8
    sums = sum_percpu(values, count, ncpus, words)
    out: dict[tuple[int, int, int], list[int]] = {}
    for i, (cg, _attach) in enumerate(_STORAGE_KEY.iter_unpack(keys[: count * _STORAGE_KEY.size])):
        s = sums[i]
        for fam in (0, 1):
            for d in (0, 1):
                base = (fam * 2 + d) * 3
                acc = out.setdefault((cg, fam, d), [0, 0, 0])
                for j in range(3):
                    acc[j] += s[base + j]
    return {k: tuple(v) for k, v in out.items()}


# ---- rdma (bpf/rdma/rdma.h) ----------------------------------------------

RDMA_TYPES = {0: "pd", 1: "cq", 2: "qp", 3: "mr", 4: "srq"}   # the `type` label, by RDMA_T_*
RDMA_DIRS = {0: "egress", 1: "ingress"}
_RDMA_COUNT_KEY = struct.Struct("=QII")       # struct rdma_count_key {u64 cgroup; u32 dev; u32 type;}
_RDMA_BYTES_KEY = struct.Struct("=QIBBH")     # struct rdma_bytes_key {u64 cgroup; u32 dev; u8 port, dir; u16 pad;}
_RDMA_I64, _RDMA_U64, _RDMA_U32 = struct.Struct("=q"), struct.Struct("=Q"), struct.Struct("=I")


def decode_rdma_objects(keys: bytes, values: bytes, count: int) -> dict[tuple[int, int, int], int]:
    """{(cgroup id, device index, type): live objects} from rdma_objects (a plain hash of s64)."""
    return dict(zip(_RDMA_COUNT_KEY.iter_unpack(keys[: count * _RDMA_COUNT_KEY.size]),
                    (v for (v,) in _RDMA_I64.iter_unpack(values[: count * 8]))))


def decode_rdma_bytes(keys: bytes, values: bytes, count: int, ncpus: int = 1) -> dict[tuple[int, int, int, int],
                                                                                   tuple[int]]:
    """{(cgroup id, device index, port, direction): (bytes,)} from rdma_bytes (a plain hash of u64,
    so ncpus is 1): the records contract of the counters maps (collectors/counters.py)."""
    return {(cg, dev, port, d): v for (cg, dev, port, d, _), v in
            zip(_RDMA_BYTES_KEY.iter_unpack(keys[: count * _RDMA_BYTES_KEY.size]),
                _RDMA_U64.iter_unpack(values[: count * 8]))}


def pack_rdma_bytes_key(cgroup: int, dev: int, port: int, direction: int) -> bytes:
    return _RDMA_BYTES_KEY.pack(cgroup, dev, port, direction, 0)


def pack_rdma_count_key(cgroup: int, dev: int, typ: int) -> bytes:
    return _RDMA_COUNT_KEY.pack(cgroup, dev, typ)


def decode_rdma_devs(keys: bytes, values: bytes, count: int) -> dict[int, str]:
    """{device index: name} from rdma_devs (char name[64] values)."""
    return {idx: values[i * 64:(i + 1) * 64].split(b"\0", 1)[0].decode(errors="replace")
            for i, (idx,) in enumerate(_RDMA_U32.iter_unpack(keys[: count * 4]))}
