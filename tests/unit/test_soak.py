"""bench/soak.py's pure parts: the flatness rule, the schedule, reading /metrics into worker-tally
keys, the comparison and the table. The soak itself needs root and runs for minutes (make soak)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import soak  # noqa: E402

MiB = 1 << 20


def test_flat_allows_noise_and_small_growth_but_not_a_leak():
    steady = [40 * MiB + (i % 3) * 100_000 for i in range(40)]
    assert soak.flat_verdict(steady)[0]
    # +1.5 MiB on 100 MiB: under both 10 % and 2 MiB
    assert soak.flat_verdict([100 * MiB] * 20 + [101.5 * MiB] * 20)[0]
    # +3 MiB on 10 MiB: over 2 MiB and over 10 %
    ok, m1, m4, why = soak.flat_verdict([10 * MiB] * 20 + [13 * MiB] * 20)
    assert not ok and m1 == 10 * MiB and m4 == 13 * MiB and "last-quarter" in why
    # a steady climb: the last quarter's median is far above the first's
    assert not soak.flat_verdict([i * MiB for i in range(30, 90)])[0]
    # +5 % on 100 MiB is 5 MiB, over the slack but under 10 %: flat
    assert soak.flat_verdict([100 * MiB] * 20 + [105 * MiB] * 20)[0]


def test_flat_needs_samples_and_takes_an_absolute_slack():
    ok, _, _, why = soak.flat_verdict([1, 2, 3])
    assert not ok and "fewer than" in why
    assert soak.flat_verdict([10] * 10 + [26] * 10, slack=16)[0]
    assert not soak.flat_verdict([10] * 10 + [27] * 10, slack=16)[0]


def test_schedule_is_seeded_and_brings_every_kind():
    a, b = soak.schedule(7, 1800), soak.schedule(7, 1800)
    assert a == b and a != soak.schedule(8, 1800)
    kinds = [k for _, k in a]
    for i in range(0, len(kinds) - 2, 3):
        assert sorted(kinds[i:i + 3]) == ["kill", "restart", "upgrade"]
    times = [t for t, _ in a]
    assert times == sorted(times) and times[-1] <= 1800 - 20
    gaps = [y - x for x, y in zip([0.0] + times, times)]
    assert all(soak.EVENT_GAP_S[0] <= g <= soak.EVENT_GAP_S[1] + 0.1 for g in gaps)
    assert soak.schedule(1, 30) == []


TEXT = """# HELP ceemsnet_net_egress_bytes_total x
# TYPE ceemsnet_net_egress_bytes_total counter
ceemsnet_net_egress_bytes_total{cgroup="/s/w1",proto="tcp",family="ipv4"} 1000
ceemsnet_net_egress_calls_total{cgroup="/s/w1",proto="tcp",family="ipv4"} 3
ceemsnet_net_ingress_errors_total{cgroup="/s/w1",proto="udp",family="ipv6"} 1
ceemsnet_vfs_read_bytes_total{cgroup="/s/w1",fstype="tmpfs"} 500
ceemsnet_vfs_read_bytes_total{cgroup="/s/w1",fstype="ext4"} 20
ceemsnet_vfs_ops_total{cgroup="/s/w1",op="open"} 4
ceemsnet_map_entries{map="net_stats"} 12
ceemsnet_build_info{version="0.1.0",kernel="6.18 \\"x\\""} 1
ceemsnet_process_resident_memory_bytes 3.3e+07
"""


def test_metrics_become_tally_keys():
    samples = soak.parse_metrics(TEXT)
    assert ("ceemsnet_map_entries", {"map": "net_stats"}, 12.0) in samples
    assert ("ceemsnet_process_resident_memory_bytes", {}, 33_000_000.0) in samples
    assert any(lab.get("kernel") == '6.18 "x"' for _, lab, _ in samples)
    got = {}
    for name, labels, v in samples:
        k = soak.tally_key(name, labels)
        if k:
            vals = got.setdefault(k[0], [0, 0])
            vals[k[1]] += int(v)
    assert got == {"net/tcp/ipv4/egress": [1000, 3], "err/net/udp/ipv6/ingress": [1, 0], "vfs/read": [520, 0],
                   "ops/open": [4, 0]}
    assert soak.tally_key("ceemsnet_map_entries", {"map": "x"}) is None


def test_differences_are_found_both_ways_and_only_for_the_collectors_run():
    tally = {"net/tcp/ipv4/egress": [1000, 3], "vfs/read": [520, 7], "ops/open": [4]}
    same = {"net/tcp/ipv4/egress": [1000, 3], "vfs/read": [520, 7], "ops/open": [4], "err/net/x": [1, 0]}
    assert soak.diff_totals(tally, same, soak.compared_keys(("net", "vfs"))) == []
    off = dict(same, **{"net/tcp/ipv4/egress": [999, 3], "net/udp/ipv6/ingress": [5, 1]})
    assert soak.diff_totals(tally, off, soak.compared_keys(("net", "vfs"))) == [
        ("net/tcp/ipv4/egress", 0, 1000, 999), ("net/udp/ipv6/ingress", 0, 0, 5), ("net/udp/ipv6/ingress", 1, 0, 1)]
    # vfs only: the net keys are not compared
    assert soak.diff_totals(tally, off, soak.compared_keys(("vfs",))) == []
    assert soak.diff_totals(tally, {}, soak.compared_keys(("vfs",))) == [
        ("ops/open", 0, 4, 0), ("vfs/read", 0, 520, 0), ("vfs/read", 1, 7, 0)]


def test_store_view_sums_a_tally_as_the_report_does():
    tally = {"net/tcp/ipv4/egress": [1000, 3], "net/udp/ipv6/egress": [10, 1], "net/tcp/ipv4/ingress": [600, 4],
             "vfs/read": [520, 7], "vfs/write": [520, 2], "ops/open": [4], "ops/unlink": [2]}
    assert soak.store_view(tally) == {"net_egress_bytes": 1010, "net_ingress_bytes": 600, "net_egress_calls": 4,
                                      "net_ingress_calls": 4, "vfs_read_bytes": 520, "vfs_write_bytes": 520,
                                      "vfs_ops": 6}


def test_table_and_figures():
    t = soak.markdown_table([("a|b", 1)], ("k", "v")).splitlines()
    assert t == ["| k | v |", "|---|---|", "| a\\|b | 1 |"]
    assert soak.human(512) == "512 B" and soak.human(3 * MiB) == "3.0 MiB"
    assert soak.percentile([5, 1, 3], 50) == 3 and soak.percentile([], 99) == 0.0


def test_pinned_entries_are_told_apart_by_cgroup_id_or_path():
    def hx(b):
        return [f"0x{x:02x}" for x in b]
    cid = 123456789
    key = hx(cid.to_bytes(8, "little") + bytes(8))
    assert soak.entry_id(key) == cid and soak.entry_id(hx(b"\x01\x02")) is None
    ids, marker = {cid}, b"/ceemsnet-soak-42"
    assert soak.soak_owned({"key": key, "value": hx(bytes(24))}, ids, marker, counters=True)
    other = hx((cid + 1).to_bytes(8, "little"))
    assert not soak.soak_owned({"key": other, "value": hx(bytes(8))}, ids, marker, counters=True)
    # a slot owner: the array index is the key, the cgroup id the value
    assert soak.soak_owned({"key": hx(bytes(4)), "value": hx(cid.to_bytes(8, "little"))}, ids, marker, counters=True)
    # a ledger entry naming the soak's path; in a counters map a path means nothing
    path = {"key": hx(b"\x07" * 8), "value": hx(b"/ceemsnet-soak-42/w3\x00")}
    assert soak.soak_owned(path, ids, marker, counters=False)
    assert not soak.soak_owned(path, ids, marker, counters=True)
    assert not soak.soak_owned({"key": hx(b"\x07" * 8), "value": hx(b"/slurm/job_1")}, ids, marker, counters=False)
