import struct

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from ceemsnet.collectors.net import net_families
from ceemsnet.planning.structs import NET, VFS, decode_drops, decode_net, decode_vfs, net_index, pack_net_key


def record(counters, n=8):  # one CPU's record: {counter index: (bytes, calls, errors)}
    out = [0] * (3 * n)
    for i, v in counters.items():
        out[3 * i:3 * i + 3] = v
    return out


def values(per_cpu, n=8):  # [{index: (bytes, calls, errors)} per CPU]
    return b"".join(struct.pack(f"={3 * n}Q", *record(c, n)) for c in per_cpu)


def test_decode_sums_per_cpu_records():
    keys = pack_net_key(2**63 + 5) + pack_net_key(7)
    i, j = net_index(0, 1, 0), net_index(1, 0, 1)
    vals = values([{i: (100, 1, 0)}, {i: (23, 2, 1), j: (1, 1, 0)}, {}]) + values([{j: (5, 1, 0)}, {}, {j: (6, 1, 2)}])
    out = decode_net(keys, vals, 2, ncpus=3)
    want_a = record({i: (123, 3, 1), j: (1, 1, 0)})
    assert out == {(2**63 + 5,): tuple(want_a), (7,): tuple(record({j: (11, 2, 2)}))}  # ids stay 64-bit


def test_decode_single_cpu_and_count_limits_read():
    keys = pack_net_key(1) + b"\xff" * 8
    vals = values([{0: (9, 1, 0)}]) + values([{0: (1, 1, 1)}])
    assert decode_net(keys, vals, 1, ncpus=1) == {(1,): tuple(record({0: (9, 1, 0)}))}


def test_decode_vfs_records_per_cgroup_and_file_system():
    keys = VFS.pack(5, 0xEF53) + VFS.pack(5, 0x9FA0)
    vals = values([{1: (4096, 1, 0), 2: (0, 3, 1)}, {1: (10, 1, 0)}], 8) + values([{0: (7, 1, 0)}, {}], 8)
    out = decode_vfs(keys, vals, 2, ncpus=2)
    assert out == {(5, 0xEF53): tuple(record({1: (4106, 2, 0), 2: (0, 3, 1)}, 8)),
                   (5, 0x9FA0): tuple(record({0: (7, 1, 0)}, 8))}


def test_legacy_keys_regroup_into_records():
    """ceemsnet 0.1's per-counter keys, summed over CPUs, land at their index in one record per
    cgroup; skipped keys (a crashed retire's) are left out."""
    legacy = NET.legacy_key
    keys = legacy.pack(9, 0, 0, 0) + legacy.pack(9, 1, 1, 1) + legacy.pack(10, 0, 1, 1) + legacy.pack(11, 0, 0, 0)
    vals = b"".join(struct.pack("=6Q", *v) for v in ((1, 1, 0, 2, 1, 0), (5, 1, 1, 0, 0, 0),
                                                     (7, 1, 0, 0, 0, 0), (3, 1, 0, 0, 0, 0)))
    got = NET.regroup(keys, vals, 4, 2, skip=frozenset({legacy.pack(11, 0, 0, 0)}))
    assert got == {(9,): record({0: (3, 2, 0), 7: (5, 1, 1)}), (10,): record({net_index(0, 1, 1): (7, 1, 0)})}
    vk = VFS.legacy_key.pack(4, 0xEF53, 1) + VFS.legacy_key.pack(4, 0xEF53, 3) + VFS.legacy_key.pack(4, 0, 4)
    vv = struct.pack("=9Q", 100, 2, 0, 0, 1, 0, 0, 0, 1)
    assert VFS.regroup(vk, vv, 3, 1) == {(4, 0xEF53): record({1: (100, 2, 0), 3: (0, 1, 0)}, 8),
                                         (4, 0): record({4: (0, 0, 1)}, 8)}
    assert NET.is_legacy(16, 24) and not NET.is_legacy(8, 192) and not VFS.is_legacy(16, 192)


def test_decode_drops():
    vals = struct.pack("=4Q", 1, 2, 0, 5)  # 2 reasons x 2 CPUs
    assert decode_drops(vals, 2, 2) == {"stats_full": 3, "stash_full": 5}


class _Coll:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return [f.to_prometheus() for f in self.fams]


def test_families_merge_ids_with_one_path_and_label_exactly():
    stats = {(10,): tuple(record({0: (100, 2, 0)})), (11,): tuple(record({0: (50, 1, 1)})),
             (12,): tuple(record({net_index(1, 1, 1): (7, 1, 0)}))}
    paths = {10: "/slurm/job_1", 11: "/slurm/job_1", 12: "/a b/ü"}
    reg = CollectorRegistry()
    reg.register(_Coll(net_families(stats, paths)))
    get = reg.get_sample_value
    lab = {"cgroup": "/slurm/job_1", "proto": "tcp", "family": "ipv4"}
    assert get("ceemsnet_net_egress_bytes_total", lab) == 150
    assert get("ceemsnet_net_egress_calls_total", lab) == 3
    assert get("ceemsnet_net_egress_errors_total", lab) == 1
    assert get("ceemsnet_net_ingress_bytes_total", lab) is None
    assert get("ceemsnet_net_ingress_bytes_total", {"cgroup": "/a b/ü", "proto": "udp", "family": "ipv6"}) == 7
    text = generate_latest(reg).decode()
    assert text.count('ceemsnet_net_egress_bytes_total{cgroup="/slurm/job_1"') == 1
