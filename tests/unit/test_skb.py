import os
import struct

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.attribution.cgroups import find_cgroup2_root
from ceemsnet.collectors.skb import SkbBackend, skb_families
from ceemsnet.commands.compare import MAX_HEADER, compare_rows, reason
from ceemsnet.planning.structs import decode_skb, decode_skb_storage


def test_decode_skb_root_map():
    keys = struct.pack("=QBB6x", 42, 1, 0) + struct.pack("=QBB6x", 42, 0, 1)
    vals = struct.pack("=6Q", 1000, 2, 3, 500, 1, 1) + struct.pack("=6Q", 7, 1, 1, 0, 0, 0)  # 2 CPUs each
    assert decode_skb(keys, vals, 2, 2) == {(42, 1, 0): (1500, 3, 4), (42, 0, 1): (7, 1, 1)}


def test_decode_skb_storage_sums_attach_types():
    # two storages of cgroup 9 (ingress and egress attachments), 1 CPU, [family][dir] x 3 counters
    def storage(cells):
        words = [0] * 12
        for (fam, d), (b, p, s) in cells.items():
            base = (fam * 2 + d) * 3
            words[base:base + 3] = [b, p, s]
        return struct.pack("=12Q", *words)
    keys = struct.pack("=QI4x", 9, 0) + struct.pack("=QI4x", 9, 1)
    vals = storage({(0, 1): (100, 1, 1)}) + storage({(0, 0): (200, 2, 2), (1, 0): (60, 1, 1)})
    out = decode_skb_storage(keys, vals, 2, 1)
    assert out[(9, 0, 1)] == (100, 1, 1) and out[(9, 0, 0)] == (200, 2, 2) and out[(9, 1, 0)] == (60, 1, 1)
    assert out[(9, 1, 1)] == (0, 0, 0)


def test_skb_families():
    fams = {f.name: f for f in skb_families({(5, 0, 0): (1500, 3, 4), (6, 0, 0): (10, 1, 1)},
                                            {5: "/job", 6: "/job"})}
    assert fams["ceemsnet_skb_egress_bytes"].rows == [(("/job", "ipv4"), 1510)]
    assert fams["ceemsnet_skb_egress_segments"].rows == [(("/job", "ipv4"), 5)]
    assert fams["ceemsnet_skb_ingress_bytes"].rows == []


@pytest.mark.parametrize("sock,skb,pkts,start", [
    (1000, 1052, 1, ""),                       # one packet's headers
    (0, 5000, 10, "skb only"),
    (5000, 0, 0, "socket only"),
    (5000, 4000, 10, "skb below"),
    (1000, 1000 + 3 * MAX_HEADER, 2, "more than headers"),
])
def test_reasons(sock, skb, pkts, start):
    assert reason(sock, skb, pkts, "egress").startswith(start)


METRICS = """\
# TYPE ceemsnet_net_egress_bytes_total counter
ceemsnet_net_egress_bytes_total{cgroup="/a",proto="tcp",family="ipv4"} 1000
ceemsnet_net_egress_bytes_total{cgroup="/a",proto="udp",family="ipv6"} 500
ceemsnet_net_egress_bytes_total{cgroup="/b",proto="tcp",family="ipv4"} 300
# TYPE ceemsnet_skb_egress_bytes_total counter
ceemsnet_skb_egress_bytes_total{cgroup="/a",family="ipv4"} 1600
# TYPE ceemsnet_skb_egress_packets_total counter
ceemsnet_skb_egress_packets_total{cgroup="/a",family="ipv4"} 2
"""


def test_compare_rows():
    rows = {(r["cgroup"], r["direction"]): r for r in compare_rows(METRICS)}
    a = rows[("/a", "egress")]
    assert (a["socket_bytes"], a["skb_bytes"], a["skb_packets"], a["ratio"], a["reason"]) == (1500, 1600, 2,
                                                                                               1.0667, "")
    assert rows[("/b", "egress")]["reason"].startswith("socket only")


def test_compare_needs_both_backends():
    with pytest.raises(CeemsnetError, match="no ceemsnet_skb"):
        compare_rows(METRICS.split("# TYPE ceemsnet_skb")[0])


def test_no_cgroup2_is_a_clear_error(tmp_path):
    mi = tmp_path / "mountinfo"
    mi.write_text("30 22 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n")
    with pytest.raises(CeemsnetError, match="no cgroup2"):
        find_cgroup2_root(str(mi))


def test_skb_backend_hands_the_pinning_sequence_its_own_steps():
    """Made without loading anything; what it hands ceemsnet/pinned/sequence.py is skb's."""
    root = SkbBackend("/sys/fs/cgroup", "root", subtree="/a/", map_entries=1024)
    per = SkbBackend("/sys/fs/cgroup", "per-cgroup", pattern="/slurm/*")
    assert (root.subsystem, root.counters, root.settings, root.carry) == ("skb", "skb_stats", {}, None)
    assert (per.subsystem, per.counters) == ("skb", "skb_cgroup_storage")  # its pins go under <pin path>/skb
    assert root.subtree == "/a" and root.coll is None and not root.attached
    with pytest.raises(CeemsnetError, match="needs --skb.cgroups"):
        SkbBackend("/sys/fs/cgroup", "per-cgroup")


def test_per_cgroup_sync_lets_go_only_of_cgroups_a_stat_finds_gone(tmp_path, monkeypatch):
    """A scan that misses a live cgroup (a directory it could not read) must not detach it: its
    storage and the counts in it would go. One that is gone is let go of."""
    from ceemsnet.collectors import skb as skbmod
    live, dead = tmp_path / "job_1", tmp_path / "job_2"
    live.mkdir()
    dead.mkdir()
    b = skbmod.SkbBackend(str(tmp_path), mode="per-cgroup", pattern="/job_*")
    b.attached = {"/job_1": (live.stat().st_ino, []), "/job_2": (dead.stat().st_ino, [])}
    dead.rmdir()

    class Coll:
        def detach(self, links):
            pass
    b.coll = Coll()
    b._read_storage = lambda: {}
    monkeypatch.setattr(skbmod, "scan_cgroup_ids", lambda root: {os.stat(root).st_ino: "/"})  # saw nothing
    b.sync()
    assert list(b.attached) == ["/job_1"]
