"""The exporter-health alerts of packaging/prometheus/rules.yml firing on real data.

A real exporter (`serve --collectors=net --net.map-entries=8 --net.slots=0`: a net_stats
hash map of 8 keys, every cgroup in it) is scraped by Debian's prometheus, which loads
rules.yml with each `for:` shortened to 1s (the expressions as shipped: the test checks
they are the same). Twelve fresh cgroups each send one UDP datagram of a size of their
own: the map cannot take them all. Each cgroup is then either counted exactly or not at
all, the ones not counted show in ceemsnet_map_update_failures_total, and Prometheus'
own rule evaluation fires CeemsnetMapNearlyFull (entries over 80% of
ceemsnet_map_capacity, 100% here) and CeemsnetMapUpdateFailures for net_stats, and no
other ceemsnet alert: this host's skipped hooks (ceemsnet_hook_skipped) are functions
absent from its kernel, which CeemsnetHookSkipped must not alert on.
"""

import json
import re
import sys
import time

import yaml

from ceemsnet.planning.catalogue import NET_FUNCTIONS

from ..promserver import PrometheusServer, needs_prometheus
from .helpers import ROOT, TRAFFIC, Exporter, host_only
from .peer import Peer

pytestmark = [needs_prometheus, host_only("the rules and the map capacity do not depend on the hook family")]

RULES = f"{ROOT}/packaging/prometheus/rules.yml"
CAPACITY = 8
CGROUPS = 12


def quick_rules(tmp_path):
    """rules.yml with every `for:` at 1s; the expressions untouched (checked)."""
    text = open(RULES).read()
    quick, n = re.subn(r"(?m)^(\s+for: )\S+$", r"\g<1>1s", text)
    assert n >= 3, n
    shipped = [(r.get("alert") or r.get("record"), r["expr"]) for g in yaml.safe_load(text)["groups"]
               for r in g["rules"]]
    assert [(r.get("alert") or r.get("record"), r["expr"]) for g in yaml.safe_load(quick)["groups"]
            for r in g["rules"]] == shipped
    path = tmp_path / "rules.yml"
    path.write_text(quick)
    return path


def egress(samples, cg):
    return samples.get(("ceemsnet_net_egress_bytes_total", (("cgroup", cg.rel), ("family", "ipv4"), ("proto", "udp"))))


def test_map_full_alerts_fire_on_real_data(make_cgroup, spawn, tmp_path):
    t0 = time.time()
    peer = Peer()
    e = Exporter(extra=(f"--net.map-entries={CAPACITY}", "--net.slots=0", "--cgroup.hierarchy=v2"),
                 collectors="net")
    prom = None
    try:
        target = f"127.0.0.1:{e.port}"
        prom = PrometheusServer(tmp_path, [target], rule_files=[quick_rules(tmp_path)])
        # the failures counter scraped before the traffic: increase() needs the sample before
        prom.wait_for('ceemsnet_map_capacity{map="net_stats"}', CAPACITY)
        prom.wait_for('ceemsnet_map_update_failures_total{map="net_stats"}', lambda v: len(v) == 1)
        before = e.samples()
        fail_key = ("ceemsnet_map_update_failures_total", (("map", "net_stats"),))
        assert before[("ceemsnet_map_capacity", (("map", "net_stats"),))] == CAPACITY
        # this test's own cgroup (the exporter's and Prometheus' too: scrapes, the peer's receives) holds a key
        own = next(line[3:].strip() for line in open("/proc/self/cgroup") if line.startswith("0::"))
        assert any(dict(k[1]).get("cgroup") == own for k in before if k[0].startswith("ceemsnet_net_")), own

        cgroups = [make_cgroup() for _ in range(CGROUPS)]
        kids = [spawn([sys.executable, TRAFFIC, "--steps"], cg) for cg in cgroups]
        sizes = [1000 + i for i in range(CGROUPS)]

        def send(i):
            kids[i].proc.stdin.write(json.dumps([{"op": "udp", "family": 4, "addr": peer.udp4,
                                                  "sizes": [sizes[i]]}]) + "\n")
            kids[i].proc.stdin.flush()

        for i in range(CGROUPS):
            send(i)
        for i in range(CGROUPS):
            tally = json.loads(kids[i].proc.stdout.readline())
            assert tally["udp/ipv4/egress"][:2] == [sizes[i], 1], tally
        after = e.samples()
        # each cgroup's one send either counted exactly, or not counted and in the failures
        got = {i: egress(after, cg) for i, cg in enumerate(cgroups)}
        counted = {i for i, v in got.items() if v is not None}
        assert all(got[i] == sizes[i] for i in counted), (got, sizes)
        assert len(counted) <= CAPACITY - 1, got  # one key is this test's own cgroup's
        missed = CGROUPS - len(counted)
        assert after[fail_key] - before[fail_key] >= missed >= CGROUPS - CAPACITY + 1, (before[fail_key],
                                                                                         after[fail_key], got)
        assert after[("ceemsnet_map_entries", (("map", "net_stats"),))] >= 0.8 * CAPACITY, after

        # Prometheus' own rule evaluation
        deadline = time.time() + 60
        while True:
            firing = {(a["labels"]["alertname"], a["labels"].get("map")): a for a in prom.alerts()
                      if a["state"] == "firing" and a["labels"]["alertname"].startswith("Ceemsnet")}
            if {("CeemsnetMapNearlyFull", "net_stats"), ("CeemsnetMapUpdateFailures", "net_stats")} <= firing.keys():
                break
            if time.time() > deadline:
                raise AssertionError(f"alerts: {prom.alerts()}; exporter: entries "
                                     f"{e.samples().get(('ceemsnet_map_entries', (('map', 'net_stats'),)))}")
            # a key freed meanwhile (another cgroup on this host removed): the cgroups not counted send again
            s = e.samples()
            for i, cg in enumerate(cgroups):
                if egress(s, cg) is None:
                    send(i)
                    kids[i].proc.stdout.readline()
            time.sleep(1)
        full = firing[("CeemsnetMapNearlyFull", "net_stats")]
        assert full["labels"]["instance"] == target and full["labels"]["severity"] == "warning", full
        assert float(full["value"]) >= 0.8, full
        assert full["annotations"]["description"].startswith("net_stats is "), full
        assert set(firing) == {("CeemsnetMapNearlyFull", "net_stats"), ("CeemsnetMapUpdateFailures", "net_stats")}, \
            firing

        # the hook plan as Prometheus has it: every net function once, hooked or skipped; the skipped ones
        # absent from this kernel (or not served), so CeemsnetHookSkipped stays quiet
        hooked = {m["function"] for m, _ in prom.vector('ceemsnet_hook_info{subsystem="net"}')}
        skipped = {m["function"]: m for m, _ in prom.vector('ceemsnet_hook_skipped{subsystem="net"}')}
        assert hooked and not hooked & skipped.keys(), (hooked, skipped)
        assert hooked | skipped.keys() == set(NET_FUNCTIONS), (hooked, skipped)
        assert {m["reason"] for m in skipped.values()} <= {"absent", "not_served"}, skipped
        assert all(m["detail"] and m["object"] for m in skipped.values()), skipped
        _, res = prom.query('ALERTS{alertname="CeemsnetHookSkipped"}')
        assert res == [], res

        # every rule healthy in Prometheus' evaluation
        bad = [(r["name"], r["health"], r.get("lastError")) for g in prom.rule_groups() for r in g["rules"]
               if r["health"] != "ok"]
        assert not bad, bad
        print(f"\nalerts: {len(counted)} of {CGROUPS} cgroups counted in a map of {CAPACITY}, failures "
              f"+{after[fail_key] - before[fail_key]:.0f}; {sorted(firing)} firing in {time.time() - t0:.1f} s")
    finally:
        rc, err = e.stop()
        if prom:
            prom.stop()
        peer.close()
    assert rc == 0, err
