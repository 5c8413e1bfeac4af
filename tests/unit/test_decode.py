import struct

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from ceemsnet.collectors.net import net_families
from ceemsnet.planning.structs import decode_drops, decode_net, pack_net_key


def values(per_cpu):  # [(bytes, calls, errors) per CPU]
    return b"".join(struct.pack("=3Q", *v) for v in per_cpu)


def test_decode_sums_per_cpu_slots():
    keys = pack_net_key(2**63 + 5, 0, 1, 0) + pack_net_key(7, 1, 0, 1)
    vals = values([(100, 1, 0), (23, 2, 1), (0, 0, 0)]) + values([(5, 1, 0), (0, 0, 0), (6, 1, 2)])
    out = decode_net(keys, vals, 2, ncpus=3)
    assert out == {(2**63 + 5, 0, 1, 0): (123, 3, 1), (7, 1, 0, 1): (11, 2, 2)}  # ids stay 64-bit


def test_decode_single_cpu_and_count_limits_read():
    keys = pack_net_key(1, 0, 0, 0) + b"\xff" * 16
    vals = values([(9, 1, 0)]) + values([(1, 1, 1)])
    assert decode_net(keys, vals, 1, ncpus=1) == {(1, 0, 0, 0): (9, 1, 0)}


def test_decode_drops():
    vals = struct.pack("=4Q", 1, 2, 0, 5)  # 2 reasons x 2 CPUs
    assert decode_drops(vals, 2, 2) == {"stats_full": 3, "stash_full": 5}


class _Coll:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return [f.to_prometheus() for f in self.fams]


def test_families_merge_ids_with_one_path_and_label_exactly():
    stats = {(10, 0, 0, 0): (100, 2, 0), (11, 0, 0, 0): (50, 1, 1), (12, 1, 1, 1): (7, 1, 0)}
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
