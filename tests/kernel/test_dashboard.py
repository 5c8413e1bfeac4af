"""The Grafana dashboard and the Prometheus rules against a real Prometheus scraping a real exporter.

Debian's prometheus loads packaging/prometheus/rules.yml (evaluated every
second) and scrapes `ceemsnet serve --collectors=net,vfs,skb,rdma --unit=slurm`
twice: as job "ceemsnet" with the default scrape config (the SLURM job is
stored as `exported_job`) and as job "ceemsnet-honor" with honor_labels
(the SLURM job is `job`), the two values of the dashboard's $job_label.
A child in a step of a SLURM-shaped test cgroup moves known TCP and UDP
bytes on loopback, in two rounds with a scrape between them (a rate needs
the series before the bytes), and a second child does file IO in another
step. Then every PromQL expression of packaging/grafana/ceemsnet.json, with
its template variables substituted, and every recording rule returns a
non-empty result for the test job (the per-job RDMA queries excepted: this
host has no RDMA device, so they must only evaluate; the port counters come
from a sysfs tree the test writes, --rdma.sysfs, and are exact, and what no
job explains is the whole port); the variable queries list the test job and
instance; every alert expression parses and evaluates, and every rule
evaluates without error in Prometheus itself.
"""

import json
import os
import re
import sys
import time

import pytest

from ..promserver import PrometheusServer, needs_prometheus
from .helpers import ROOT, TRAFFIC, Exporter, host_only
from .peer import Peer, reply_size

pytestmark = [needs_prometheus, host_only("the dashboard and rules do not depend on the hook family")]

DASHBOARD = os.path.join(ROOT, "packaging", "grafana", "ceemsnet.json")
RULES = os.path.join(ROOT, "packaging", "prometheus", "rules.yml")
HERE = os.path.dirname(os.path.abspath(__file__))

# what Grafana would put in: a 1 s scrape interval gives $__rate_interval >= 4 s; the windows are
# wide enough to hold both traffic rounds whatever the test's pace
GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "5s", "__range": "5m"}
# series that only an RDMA device gives (the host has none; without ib_core the rdma collector has no
# object, so no drops either): their queries may be empty
NEEDS_RDMA_DEVICE = re.compile(r"ceemsnet_(job_)?rdma_(bytes_total|objects|drops_total)\b")
# the fake port counters (4-byte words) the rdma collector reads
PORT_WORDS = {"port_xmit_data": 1000, "port_rcv_data": 250}


def dashboard_exprs():
    """[(panel title, expr)] of every query in the dashboard."""
    dash = json.load(open(DASHBOARD))
    out = []
    for p in dash["panels"]:
        for sub in [p, *p.get("panels", [])]:
            out += [(sub["title"], t["expr"]) for t in sub.get("targets", [])]
    return dash, out


def substitute(expr, values):
    """Grafana's interpolation of $name / ${name} (longest names first)."""
    def one(m):
        name = m.group(1) or m.group(2)
        return values[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def promql_regex(value):
    """A value for a =~ matcher, as Grafana formats a variable there: regex-escaped, and the
    backslashes escaped again for the PromQL string."""
    return re.escape(value).replace("\\", "\\\\")


def label_values_query(q):
    """Grafana's label_values(SELECTOR, LABEL) as PromQL: group by (LABEL) (SELECTOR)."""
    m = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", q, re.S)
    assert m, q
    return f"group by ({m.group(2)}) ({m.group(1)})", m.group(2)


def file_io(spawn, cgroup, path):
    """tests/kernel/fileio.py in the cgroup: 2100 bytes written and read, 2 mkdir, ... in path."""
    path.mkdir()
    child = spawn([sys.executable, os.path.join(HERE, "fileio.py"), str(path)], cgroup)
    assert child.proc.stdout.readline().strip() == "ready"
    child.go()


def test_dashboard_and_rules_against_prometheus(slurm_tree, spawn, tmp_path):
    t0 = time.time()
    job, steps = slurm_tree
    peer = Peer()
    # v2 named: with auto, a v1 `slurm` tree (another test's, meanwhile) would move the attribution there
    sysfs = tmp_path / "infiniband"
    counters = sysfs / "mlx5_0" / "ports" / "1" / "counters"
    counters.mkdir(parents=True)
    for name, words in PORT_WORDS.items():
        (counters / name).write_text(f"{words}\n")
    e = Exporter(extra=("--unit=slurm", "--cgroup.hierarchy=v2", f"--rdma.sysfs={sysfs}"),
                 collectors="net,vfs,skb,rdma")
    prom = None
    try:
        target = f"127.0.0.1:{e.port}"
        prom = PrometheusServer(tmp_path, [target], rule_files=[RULES],
                                extra_jobs=[{"job_name": "ceemsnet-honor", "targets": [target],
                                             "honor_labels": True}])
        # round 1: the job's series appear; round 2 (after a scrape): their rates are not zero
        net = spawn([sys.executable, TRAFFIC, "--steps"], steps["step_0"])
        plan = [{"op": "tcp", "family": 4, "addr": peer.tcp4, "send": 200_000, "expect": reply_size(200_000)},
                {"op": "udp", "family": 6, "addr": peer.udp6, "sizes": [1000, 2000]}]
        net.proc.stdin.write(json.dumps(plan) + "\n")
        net.proc.stdin.flush()
        json.loads(net.proc.stdout.readline())
        file_io(spawn, steps["step_1"], tmp_path / "files1")
        # each scrape job (default labels, honor_labels) has scraped round 1, so its rates see round 2
        sels = (f'exported_job="{job}", job="ceemsnet"', f'job="{job}"')
        try:
            for sel in sels:
                for m in ("net_egress_bytes", "vfs_write_bytes", "skb_egress_bytes"):
                    prom.wait_for(f"ceemsnet_job_{m}_total{{{sel}}}", lambda v: len(v) > 0)
        except pytest.fail.Exception as err:
            seen = [x for x in e.scrape_text().splitlines() if job in x or "unknown:" in x]
            pytest.fail(f"{err}\nup: {prom.vector('up')}\nthe exporter's lines of the job: {seen[:20]}")
        net.proc.stdin.write(json.dumps(plan) + "\n")
        net.proc.stdin.flush()
        tally = json.loads(net.proc.stdout.readline())
        net.proc.stdin.close()
        assert net.proc.wait(timeout=30) == 0, net.proc.stderr.read()
        file_io(spawn, steps["step_1"], tmp_path / "files2")
        # both rounds scraped by both: the job's bytes are exact, its file ops are there
        sent = sum(v[0] for k, v in tally.items() if k.endswith("/egress"))
        for sel in sels:
            prom.wait_for(f"sum(ceemsnet_job_net_egress_bytes_total{{{sel}}})", sent)
            prom.wait_for(f'sum(ceemsnet_job_vfs_ops_total{{{sel}, op="mkdir"}})', 4)
        # the port counters in bytes, exact
        for direction, words in (("egress", PORT_WORDS["port_xmit_data"]), ("ingress", PORT_WORDS["port_rcv_data"])):
            prom.wait_for(f'ceemsnet_rdma_port_bytes_total{{job="ceemsnet", device="mlx5_0", port="1", '
                          f'direction="{direction}"}}',
                          4 * words)

        dash, exprs = dashboard_exprs()
        names = [v["name"] for v in dash["templating"]["list"]]
        assert {"datasource", "instance", "job", "job_label"} <= set(names)
        empty, failed, rdma_only = [], [], set()
        for job_label in ("exported_job", "job"):
            values = dict(GRAFANA_VARS, datasource="prometheus", job_label=job_label, job=promql_regex(job),
                          instance=promql_regex(target))
            # the variables' own queries: the test instance, and the test job under its label
            for v in dash["templating"]["list"]:
                if v["type"] != "query":
                    continue
                q, label = label_values_query(substitute(v["definition"], values))
                _, res = prom.query(q)
                want = {"instance": target, "job": job}[v["name"]]
                assert want in {r["metric"].get(label) for r in res}, (v["name"], job_label, q, res)
            for title, expr in exprs:
                q = substitute(expr, values)
                try:
                    _, res = prom.query(q)
                except Exception as err:  # noqa: BLE001
                    failed.append((title, q, str(err)))
                    continue
                if not res:
                    if NEEDS_RDMA_DEVICE.search(q):
                        rdma_only.add(title)
                    else:
                        empty.append((job_label, title, q))
                    continue
                # grouped by the job label: the test job is among the answers
                if f"by ({job_label}" in q:
                    assert job in {r["metric"].get(job_label) for r in res}, (title, q, res)
        assert not failed, failed
        assert not empty, empty
        # what no job explains: the whole port (no job moved RDMA bytes here), one series per direction
        (ports,) = [expr for title, expr in exprs if "what no job explains" in title and " - (" in expr]
        values = dict(GRAFANA_VARS, datasource="prometheus", job_label="job", job=promql_regex(job),
                      instance=promql_regex(target))
        _, res = prom.query(substitute(ports, values))
        assert sorted((r["metric"]["instance"], r["metric"]["direction"]) for r in res) == \
            [(target, "egress"), (target, "ingress")], res
        assert rdma_only <= {"RDMA bytes (job)", "RDMA objects (job)", "RDMA ports vs jobs (what no job explains)",
                             "Map update failures and RDMA drops"}, rdma_only

        # the rules as Prometheus loaded them from rules.yml
        loaded = [r for g in prom.rule_groups() for r in g["rules"]]
        records = [r for r in loaded if r["type"] == "recording"]
        alerts = [r for r in loaded if r["type"] == "alerting"]
        assert len(records) >= 7 and len(alerts) >= 6, loaded
        for r in records:
            _, res = prom.query(r["query"])
            assert {"exported_job": job, "job": "ceemsnet"} in [
                {k: x["metric"].get(k) for k in ("exported_job", "job")} for x in res], (r["name"], res)
            assert any(x["metric"].get("job") == job and "exported_job" not in x["metric"] for x in res), \
                (r["name"], "honor_labels", res)
            # and Prometheus records it, every second
            prom.wait_for(f'{r["name"]}{{exported_job="{job}"}}', lambda v: len(v) > 0, timeout=30)
        for r in alerts:
            kind, _ = prom.query(r["query"])  # parses and evaluates; need not fire
            assert kind == "vector", (r["name"], kind)
            assert r["annotations"].get("summary") and r["annotations"].get("description"), r
        # no alert fires here: the maps are far from full, nothing missed, every hook attached
        _, firing = prom.query('ALERTS{alertname=~"Ceemsnet.*"}')
        assert firing == [], firing

        # Prometheus' own evaluation: every rule loaded, evaluated, healthy
        deadline = time.time() + 30
        while True:
            loaded = [r for g in prom.rule_groups() for r in g["rules"]]
            bad = [(r["name"], r["health"], r.get("lastError")) for r in loaded if r["health"] != "ok"]
            if not bad:
                break
            assert time.time() < deadline, (len(loaded), bad)
            time.sleep(0.5)
        print(f"dashboard: {len(exprs)} expressions x 2 job labels, {len(records)} recording rules, "
              f"{len(alerts)} alerts, in {time.time() - t0:.1f} s")
    finally:
        e.stop()
        if prom:
            prom.stop()
        peer.close()
