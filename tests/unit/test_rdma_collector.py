"""The rdma collector's pure parts: decoding rdma_bytes' records, the families, and how the
queue pairs of no known owner (cgroup id 0) pass the cgroup lifecycle untouched."""

import os

from ceemsnet.collectors.counters import CounterMap
from ceemsnet.collectors.rdma import _Lifecycle, _Unowned, bytes_families, carry_state, objects_family
from ceemsnet.planning.structs import decode_rdma_bytes, pack_rdma_bytes_key


def test_bytes_records_round_trip():
    recs = {(1234, 3, 1, 0): 100, (1234, 3, 1, 1): 7, (0, 3, 2, 1): 5}
    keys = b"".join(pack_rdma_bytes_key(*k) for k in recs)
    values = b"".join(v.to_bytes(8, "little") for v in recs.values())
    assert decode_rdma_bytes(keys, values, len(recs), 1) == {k: (v,) for k, v in recs.items()}


def test_families_name_devices_cgroups_and_directions():
    stats = {(7, 0, 1, 0): (64,), (7, 0, 1, 1): (32,), (0, 0, 1, 1): (5,), (-1, 0, 1, 0): (1000,)}
    paths = {7: "/job_7", -1: "/job_old"}
    [b] = bytes_families(stats, paths, {0: "rxe0"})
    assert dict(b.rows) == {("/job_7", "rxe0", "1", "egress"): 64, ("/job_7", "rxe0", "1", "ingress"): 32,
                            ("", "rxe0", "1", "ingress"): 5, ("/job_old", "rxe0", "1", "egress"): 1000}
    o = objects_family({(7, 0, 2): 2, (7, 0, 1): 0, (9, 1, 4): 1}, {0: "rxe0"}, {7: "/job_7", 9: "/job_9"})
    # gone objects (0) make no series; an unnamed device keeps its index
    assert dict(o.rows) == {("/job_7", "rxe0", "qp"): 2, ("/job_9", "index:1", "srq"): 1}


class _Resolver:
    def __init__(self, paths):
        self.paths = paths
        self.asked = []

    def resolve(self, ids):
        self.asked.append(set(ids))
        return {i: self.paths.get(i, f"unknown:{i}") for i in ids}


class _Source:
    """A counters map in memory with the HashSource contract (read, delete, name)."""
    name = "rdma_bytes"

    def __init__(self, stats):
        self.stats = stats

    def read(self):
        return dict(self.stats), len(self.stats)

    def delete(self, key):
        return self.stats.pop(key, None) is not None


def test_unknown_owner_is_never_retired(tmp_path):
    """cgroup id 0 is no cgroup: never resolved, never found gone, never deleted; a removed
    cgroup's counts are retired under its path, as for net and vfs."""
    job = tmp_path / "job_1"
    job.mkdir()
    cid = os.stat(job).st_ino
    res = _Resolver({cid: "/job_1"})
    src = _Source({(0, 0, 1, 1): (5,), (cid, 0, 1, 0): (64,)})
    cm = CounterMap(src, lambda st, p: bytes_families(st, p, {0: "rxe0"}), _Unowned(res),
                    _Lifecycle(str(tmp_path), retention=300, watcher=False))
    rows = dict(cm.collect()[0].rows)
    assert rows == {("", "rxe0", "1", "ingress"): 5, ("/job_1", "rxe0", "1", "egress"): 64}
    assert all(0 not in ids for ids in res.asked)
    job.rmdir()
    rows = dict(cm.collect()[0].rows)
    assert rows == {("", "rxe0", "1", "ingress"): 5, ("/job_1", "rxe0", "1", "egress"): 64}
    assert src.stats == {(0, 0, 1, 1): (5,)}  # the removed cgroup's key went; its total stays


class _Map:
    def __init__(self, ks, vs, items=()):
        self.key_size, self.value_size = ks, vs
        self.items = dict(items)

    def read_all(self):
        return b"".join(self.items), b"".join(self.items.values()), len(self.items)

    def update(self, k, v):
        self.items[k] = v


def test_upgrade_carries_owners_counts_and_names():
    old = {"rdma_objs": _Map(8, 32, {b"a" * 8: b"o" * 32}), "rdma_bytes": _Map(16, 8, {b"k" * 16: b"v" * 8}),
           "rdma_objects": _Map(16, 8), "rdma_devs": _Map(4, 64, {b"\0" * 4: b"rxe0".ljust(64, b"\0")})}
    new = {"rdma_objs": _Map(8, 32), "rdma_bytes": _Map(16, 8), "rdma_objects": _Map(16, 8),
           "rdma_devs": _Map(4, 65)}
    assert carry_state(old, new, {"rdma_objects"}) == 2
    assert new["rdma_objs"].items == old["rdma_objs"].items and new["rdma_bytes"].items == old["rdma_bytes"].items
    assert new["rdma_devs"].items == {}  # its layout changed: not copied (a warning says so)
