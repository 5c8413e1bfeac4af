"""Python mirrors of bpf/include/ceemsnet.h, and decoding of map contents.

The ctypes structs are the one Python copy of the C layout;
tests/unit/test_structs.py checks them against the BTF of every committed
object. Decoding is pure: bytes in, dicts out.
"""

from __future__ import annotations

import ctypes
import struct
from operator import add

# the net slot layout's maps and load-time setting (bpf/net/net_slots.h): slots - 1 is the mask
NET_SLOT_OWNER, NET_SLOT_VALS, NET_SLOT_MASK = "net_slot_owner", "net_slot_vals", "net_slot_mask"

NET_PROTO = {0: "tcp", 1: "udp"}
NET_FAMILY = {0: "ipv4", 1: "ipv6"}
NET_DIR = {0: "egress", 1: "ingress"}
DROP_REASONS = {0: "stats_full", 1: "stash_full"}


class NetKey(ctypes.Structure):
    _fields_ = [
        ("cgroup_id", ctypes.c_uint64),
        ("proto", ctypes.c_uint8),
        ("family", ctypes.c_uint8),
        ("dir", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 5),
    ]


class NetValue(ctypes.Structure):
    _fields_ = [
        ("bytes", ctypes.c_uint64),
        ("calls", ctypes.c_uint64),
        ("errors", ctypes.c_uint64),
    ]


VFS_OPS = {0: "read", 1: "write", 2: "open", 3: "create", 4: "unlink", 5: "mkdir", 6: "rmdir"}


class VfsKey(ctypes.Structure):
    _fields_ = [
        ("cgroup_id", ctypes.c_uint64),
        ("magic", ctypes.c_uint32),
        ("op", ctypes.c_uint8),
        ("pad", ctypes.c_uint8 * 3),
    ]


_VFS_KEY = struct.Struct("=QIB3x")
assert _VFS_KEY.size == ctypes.sizeof(VfsKey)

_NET_KEY = struct.Struct("=QBBB5x")
assert _NET_KEY.size == ctypes.sizeof(NetKey)
# u64 words of a net_value, and of a vfs_value: the same three counters (tests/unit/test_structs.py
# checks both C structs against NetValue)
_NET_VALUE_WORDS = ctypes.sizeof(NetValue) // 8


def pack_net_key(cgroup_id: int, proto: int, family: int, direction: int) -> bytes:
    return _NET_KEY.pack(cgroup_id, proto, family, direction)


def sum_percpu(values: bytes, count: int, ncpus: int, words: int) -> list[tuple[int, ...]]:
    """Sum `count` per-CPU values of `words` u64 each (one slot per possible CPU).

    Column by column in C: a strided memoryview picks one word of one CPU
    for every record, and map(add) sums the CPUs' columns, so the Python work
    does not grow with the records (the scrape decodes 80,000 of them)."""
    stride = words * ncpus
    mv = memoryview(values).cast("Q")[:count * stride]
    cols = []
    for w in range(words):
        col = mv[w::stride]
        for c in range(1, ncpus):
            col = map(add, col, mv[c * words + w::stride])
        cols.append(col)
    return list(zip(*cols))


def decode_net(keys: bytes, values: bytes, count: int, ncpus: int) -> dict[tuple[int, int, int, int], tuple[int, int, int]]:
    """{(cgroup_id, proto, family, dir): (bytes, calls, errors)} from a net_stats read."""
    return dict(zip(_NET_KEY.iter_unpack(keys[: count * _NET_KEY.size]),
                    sum_percpu(values, count, ncpus, _NET_VALUE_WORDS)))


def decode_drops(values: bytes, count: int, ncpus: int) -> dict[str, int]:
    """{reason: events} from the per-CPU drops array (keys are 0..count-1)."""
    sums = sum_percpu(values, count, ncpus, 1)
    return {DROP_REASONS.get(i, str(i)): s[0] for i, s in enumerate(sums)}


def pack_vfs_key(cgroup_id: int, magic: int, op: int) -> bytes:
    return _VFS_KEY.pack(cgroup_id, magic, op)


def decode_vfs(keys: bytes, values: bytes, count: int, ncpus: int) -> dict[tuple[int, int, int], tuple[int, int, int]]:
    """{(cgroup_id, magic, op): (bytes, calls, errors)} from a vfs_stats read."""
    return dict(zip(_VFS_KEY.iter_unpack(keys[: count * _VFS_KEY.size]),
                    sum_percpu(values, count, ncpus, _NET_VALUE_WORDS)))


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
