"""`ceemsnet report --prometheus` for a cluster, against each PromQL engine: Prometheus and
VictoriaMetrics, several nodes' exporters, jobs spread over them, one exporter restarted.

The cluster, on one host. SLURM can run several slurmd on one machine ("multiple slurmd"),
each node with its own scope: system.slice/<node>_slurmstepd.scope/job_<j>/step_<s>, a layout
the exporter's and the report's path parsers read. Here three nodes are three such scopes,
each with its own `ceemsnet serve` (its own BPF programs, --bpf.pin-path=none, its own port:
one Prometheus instance per node, relabelled `<node>:<port>` as a real node's would be named by
its host). A kernel has no notion of nodes, so every exporter counts
every cgroup of the host; the scrape config gives each node's instance only its node's cgroups,
as a real node's exporter would only have them: metric_relabel_configs keep the series whose
cgroup is under that node's scope and those with no cgroup (the start time, counters_info),
and drop the per-job sums (ceemsnet_job_*), which here would sum every node's cgroups. Each
engine thus stores what three nodes' exporters would export: every byte once, under the
instance of the node whose cgroup moved it. Both engines scrape the same exporters every
second, at their defaults otherwise (VictoriaMetrics' -search.latencyOffset of 30 s included).

Two jobs: J with steps on all three nodes, K on two of them. TCP and UDP, IPv4 and IPv6 on
loopback, bytes known from the plan, calls from each workload's own tally. Node 2's exporter is
stopped (SIGTERM) between two phases of traffic and started again without pins, so its counters
restart at zero: one of its series grows past its old value (only the start time shows the
restart), another comes back lower (a reset). Traffic stops before the last scrapes. The
report by job, by cgroup, for one job and in small chunks must equal the bytes moved exactly;
so must `ceemsnet job` (a fake sacct giving each job's facts: start, end, its nodes) in total,
per step and per node, and its rates must add up to the same totals.

`engine` is the fixture a test of another consumer of the same data takes: the engine's URL,
the range, and the exact per-job (and per-cgroup) totals.
"""

import dataclasses
import datetime as dt
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from ceemsnet.report import prometheus

from ..promserver import ENGINES, start_engine
from .helpers import ROOT, Cgroup, Child, Exporter, host_only, remove_cgroup_dir, traffic_argv
from .peer import Peer, reply_size

pytestmark = host_only("the PromQL engines' arithmetic does not depend on the kernel's hook family")

COLUMNS = ("net_egress_bytes", "net_ingress_bytes", "net_egress_calls", "net_ingress_calls")
FLAGS = ("--unit=slurm", "--slurm.squeue=none", "--slurm.sacct=none")


@dataclasses.dataclass
class EngineCase:
    """One engine after the scenario: where to ask, for which range, and the exact answers."""
    name: str
    url: str
    since: float
    until: float
    jobs: dict      # {job id: {column: value}}
    cgroups: dict   # {cgroup path: {column: value}}
    workdir: Path   # the scenario's temporary directory (a fake sacct goes there)


def iso(t):
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


def report(case, *args):
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "report", f"--prometheus={case.url}",
                        f"--since={iso(case.since)}", f"--until={iso(case.until)}", "--format=json",
                        "--slurm.sacct=none", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def plan(peer, udp4=(), udp6=(), tcp4=0):
    """A traffic plan and the bytes it moves: (plan, {(proto, family, direction): bytes})."""
    ops, want = [], {}
    if udp4:
        ops.append({"op": "udp", "family": 4, "addr": peer.udp4, "sizes": list(udp4)})
        want[("udp", "ipv4", "egress")] = want[("udp", "ipv4", "ingress")] = sum(udp4)
    if udp6:
        ops.append({"op": "udp", "family": 6, "addr": peer.udp6, "sizes": list(udp6)})
        want[("udp", "ipv6", "egress")] = want[("udp", "ipv6", "ingress")] = sum(udp6)
    if tcp4:
        ops.append({"op": "tcp", "family": 4, "addr": peer.tcp4, "send": tcp4, "expect": reply_size(tcp4)})
        want[("tcp", "ipv4", "egress")], want[("tcp", "ipv4", "ingress")] = tcp4, reply_size(tcp4)
    return ops, want


class Cluster:
    """Three nodes' scopes and exporters, a peer, the engines; everything made is undone by close()."""

    def __init__(self, cgroup2_root, workdir):
        self.root, self.workdir = cgroup2_root, workdir
        tag = uuid.uuid4().hex[:8]
        self.nodes = [f"n{k}x{tag}" for k in (1, 2, 3)]
        self.made, self.children, self.exporters, self.engines, self.skipped = [], [], {}, {}, {}
        self.peer = Peer()
        self.cgroups: dict[str, dict] = {}   # exact totals per cgroup path
        self.current: dict[str, list] = {}   # per node: [egress, ingress] bytes its exporter's run counted

    def instance(self, node):
        """The node's instance label: its name and its exporter's port, as a real node's would be."""
        return f"{node}:{self.exporters[node].port}"

    def mkdir(self, rel):
        d = Cgroup(self.root, rel, exist_ok=True)
        if d.created:
            self.made.append(d.path)
        return d

    def step(self, node, job, step):
        rel = f"system.slice/{node}_slurmstepd.scope/job_{job}/{step}"
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            d = self.mkdir("/".join(parts[:i]))
        return d

    def start(self):
        for node in self.nodes:
            self.exporters[node] = Exporter(extra=FLAGS)
            self.current[node] = [0, 0]
        jobs = [{"job_name": node, "targets": [f"127.0.0.1:{self.exporters[node].port}"],
                 "relabel_configs": [{"target_label": "instance", "replacement": self.instance(node)}],
                 "metric_relabel_configs": [
                     {"source_labels": ["__name__"], "regex": "ceemsnet_(job|unit|pod)_.*", "action": "drop"},
                     {"source_labels": ["cgroup"], "regex": f"|/system\\.slice/{node}_slurmstepd\\.scope/.*",
                      "action": "keep"}]}
                for node in self.nodes]
        for name in ENGINES:
            try:
                self.engines[name] = start_engine(name, self.workdir, [], extra_jobs=jobs)
            except pytest.skip.Exception as e:
                self.skipped[name] = str(e)
        if not self.engines:
            pytest.skip("; ".join(self.skipped.values()))

    def run(self, moves):
        """moves: [(node, job, step, (plan, want))]: each in its step's cgroup, one after the other."""
        for node, job, step, (ops, want) in moves:
            cg = self.step(node, job, step)
            child = Child(traffic_argv(ops), cg)
            self.children.append(child)
            tally = json.loads(child.go())
            row = self.cgroups.setdefault(cg.rel, dict.fromkeys(COLUMNS, 0))
            for (proto, fam, d), nbytes in want.items():
                got_bytes, calls, errors = tally[f"{proto}/{fam}/{d}"]
                assert (got_bytes, errors) == (nbytes, 0), (proto, fam, d, tally)   # it did what was planned
                row[f"net_{d}_bytes"] += nbytes
                row[f"net_{d}_calls"] += calls
                self.current[node][d == "ingress"] += nbytes

    def scraped(self):
        """Until every engine's last scrape of every node holds what its exporter counted."""
        for d, i in (("egress", 0), ("ingress", 1)):
            want = {self.instance(n): self.current[n][i] for n in self.nodes if self.current[n][i]}
            for prom in self.engines.values():
                prom.wait_for(f"sum by (instance) (ceemsnet_net_{d}_bytes_total)",
                              lambda v, want=want: {m.get("instance"): x for m, x in v} == want)

    def restart(self, node):
        """SIGTERM the node's exporter, start it again on its port without pins: counters from zero."""
        old = self.exporters[node]
        started = f'ceemsnet_process_start_time_seconds{{instance="{self.instance(node)}"}}'
        # the old run's start time as each engine stored it (VictoriaMetrics keeps 15 or 16 digits);
        # not changes(), which VictoriaMetrics also counts a series' first sample in
        before = {name: {x for _, x in prom.vector(started)} for name, prom in self.engines.items()}
        assert all(len(v) == 1 for v in before.values()), before
        rc, err = old.stop()
        assert rc == 0, err
        time.sleep(2.5)   # down for two scrapes or more: the engines see it gone (staleness markers)
        self.exporters[node] = Exporter(extra=FLAGS, port=old.port)
        self.current[node] = [0, 0]
        for name, prom in self.engines.items():
            prom.wait_for(started, lambda v, old=before[name]: len(v) == 1 and v[0][1] not in old)

    def close(self):
        for c in self.children:
            c.stop()
        for e in self.exporters.values():
            e.stop()
        for prom in self.engines.values():
            prom.stop()
        self.peer.close()
        # system.slice may hold other tests' cgroups by now: only the nodes' scopes must go
        busy = [p for p in reversed(self.made) if not remove_cgroup_dir(p, tries=1 if p.endswith("/system.slice") else 50)]
        assert not [p for p in busy if "_slurmstepd.scope" in p], f"cgroups still busy: {busy}"


@pytest.fixture(scope="module")
def cluster(cgroup2_root):
    """The scenario, run once with both engines scraping; yields (cluster, since, until, jobs)."""
    workdir = Path(tempfile.mkdtemp(prefix="ceemsnet-promql-"))
    c = Cluster(cgroup2_root, workdir)
    try:
        c.start()
        n1, n2, n3 = c.nodes
        j, k = (str(random.randint(10**8, 10**9)) for _ in range(2))
        since = time.time() - 5
        p = c.peer
        c.run([(n1, j, "step_batch", plan(p, udp4=[1000, 2000])),
               (n1, j, "step_0", plan(p, tcp4=50_000)),
               (n2, j, "step_0", plan(p, udp4=[3000], tcp4=20_000)),
               (n2, k, "step_0", plan(p, udp6=[4000, 4000, 4000])),
               (n3, j, "step_0", plan(p, udp6=[500]))])
        c.scraped()
        c.restart(n2)
        c.run([(n1, j, "step_0", plan(p, udp4=[700])),              # node 1 goes on counting
               (n2, j, "step_0", plan(p, tcp4=100_000)),            # past its old value: only the start time shows it
               (n2, k, "step_0", plan(p, udp6=[100])),              # below its old value: a reset
               (n3, j, "step_1", plan(p, udp4=[900], tcp4=9_000))])  # a step born after the restart
        c.scraped()
        until = time.time()
        jobs: dict[str, dict] = {}
        for path, row in c.cgroups.items():
            tot = jobs.setdefault(path.split("/job_")[1].split("/")[0], dict.fromkeys(COLUMNS, 0))
            for col, v in row.items():
                tot[col] += v
        yield c, since, until, jobs
    finally:
        c.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="module", params=list(ENGINES))
def engine(request, cluster):
    """One engine after the scenario (EngineCase): its URL and the exact totals to expect."""
    c, since, until, jobs = cluster
    if request.param in c.skipped:
        pytest.skip(c.skipped[request.param])
    return EngineCase(request.param, c.engines[request.param].url, since, until, jobs, dict(c.cgroups), c.workdir)


def figures(rows, key):
    return {r[key]: {col: r[col] for col in COLUMNS} for r in rows}


def test_report_by_job_is_exact(engine):
    rows = report(engine, "--by=job")
    assert figures(rows, "job") == engine.jobs, engine.name
    assert len(engine.jobs) == 2 and all(v > 0 for j in engine.jobs.values() for v in j.values())
    for r in rows:
        assert r["vfs_read_bytes"] is None and r["skb_egress_bytes"] is None   # not collected: null
        first, last = (dt.datetime.fromisoformat(r[k]).timestamp() for k in ("first_seen", "last_seen"))
        assert int(engine.since) <= first <= last <= engine.until, r   # rows give whole seconds


def test_report_by_cgroup_splits_jobs_over_nodes(engine):
    rows = report(engine, "--by=cgroup")
    assert figures(rows, "cgroup") == engine.cgroups, engine.name
    assert len({p.split("/")[2] for p in engine.cgroups}) == 3   # the cgroups of three nodes' scopes


def test_report_one_job_and_small_chunks(engine):
    job = min(engine.jobs)
    assert figures(report(engine, f"--job={job}"), "job") == {job: engine.jobs[job]}
    # chunks of 2 s: the restart's chunk down the exact path, the others on the fast path, exact sums
    assert figures(report(engine, "--prometheus.chunk=2s"), "job") == engine.jobs


# ---- `ceemsnet job JOBID` on the same cluster -------------------------------------------------

def fake_sacct(case, job, nodes):
    """A fake sacct knowing one job: COMPLETED, from the scenario's start to its end, on `nodes`
    (the two queries `ceemsnet job` makes: the allocation's record, then the header's facts)."""
    start, end = int(case.since), int(case.until) + 1
    listed = ",".join(nodes)
    p = case.workdir / f"sacct-{job}"
    p.write_text(f"""#!/bin/sh
case "$*" in
  *NodeList,SystemComment*) echo '{job}|{job}|COMPLETED|{start}|{end}|{listed}|';;
  *User,Account*) echo '{job}|{job}|ann|phys|cpu|multinode|COMPLETED|{start}|{end}|00:00:{end - start:02d}|{listed}';;
esac
""")
    p.chmod(0o755)
    return p


def job_view(case, job, nodes):
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "job", job, f"--prometheus={case.url}",
                        f"--slurm.sacct={fake_sacct(case, job, nodes)}", "--format=json", "--rates.step=1s"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr

    def refuse(name):   # NaN or Infinity in the output: not JSON, and no count
        raise AssertionError(f"{case.name}: job {job}: {name} in the JSON")
    return json.loads(p.stdout, parse_constant=refuse)


def split_by(cgroups, job, part):
    """The exact totals of one job's cgroups per step (`step`) or per node (`node`)."""
    out: dict[str, dict] = {}
    for path, row in cgroups.items():
        scope, jobdir, step = path.strip("/").split("/")[1:4]
        if jobdir != f"job_{job}":
            continue
        key = step.removeprefix("step_") if part == "step" else scope.split("_slurmstepd")[0]
        acc = out.setdefault(key, dict.fromkeys(COLUMNS, 0))
        for col, v in row.items():
            acc[col] += v
    return out


def test_job_view_is_exact_per_step_and_node_and_its_rates_add_up(engine):
    nodes = sorted({p.split("/")[2].split("_slurmstepd")[0] for p in engine.cgroups})
    for job, want in sorted(engine.jobs.items()):
        on = sorted({p.split("/")[2].split("_slurmstepd")[0] for p in engine.cgroups if f"/job_{job}/" in p})
        doc = job_view(engine, job, on)
        where = (engine.name, job)
        assert (doc["job"], doc["job_id"], doc["source"], doc["node_names"]) == (job, job, "prometheus", on), where
        assert doc["facts"]["user"] == "ann" and doc["facts"]["state"] == "COMPLETED", where
        # totals: the four net columns exactly the bytes moved and calls made; nothing else counted
        assert {c: doc["totals"][c] for c in COLUMNS} == want, where
        assert all(v is None for c, v in doc["totals"].items() if c not in COLUMNS), where
        # per step and per node: exactly what each step's cgroups on each node moved
        steps = {r["step"]: {c: r[c] for c in COLUMNS} for r in doc["steps"]}
        assert steps == split_by(engine.cgroups, job, "step"), where
        per_node = {r["node"]: {c: r[c] for c in COLUMNS} for r in doc["nodes"]}
        assert per_node == split_by(engine.cgroups, job, "node"), where
        assert set(per_node) == set(on) and set(on) <= set(nodes), where
        # rates: drawn for both directions, inside the range, and what they add up to is the total
        # (node 2's restart without pins included: a new counter generation counts from zero)
        since, until = doc["range"]
        step = max(1000, round(1000 * (until - since) / 60)) / 1000   # job_rates' step: whole ms
        assert set(doc["rates"]) == {"net_egress_bytes", "net_ingress_bytes"}, where
        for col, pts in doc["rates"].items():
            ts = [t for t, _ in pts]
            assert pts and ts == sorted(set(ts)) and since - step <= ts[0] and ts[-1] <= until, (where, col)
            assert all(v >= 0 for _, v in pts) and max(v for _, v in pts) > 0, (where, col, pts)
            assert round(sum(v * step for _, v in pts)) == want[col], (where, col, pts)
        # three nodes and ~200 KB: the no-traffic note; the one-node job none
        assert [n["rule"] for n in doc["notes"]] == (["no_internode_traffic"] if len(on) > 1 else []), where
    assert len(engine.jobs) == 2


def test_job_view_renders_on_both_engines(engine):
    job = max(engine.jobs, key=lambda j: len({p.split("/")[2] for p in engine.cgroups if f"/job_{j}/" in p}))
    on = sorted({p.split("/")[2].split("_slurmstepd")[0] for p in engine.cgroups if f"/job_{job}/" in p})
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "job", job, f"--prometheus={engine.url}",
                        f"--slurm.sacct={fake_sacct(engine, job, on)}", "--rates.step=1s"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert out.startswith(f"Job {job}  multinode") and "Per step" in out and "Per node" in out, out
    assert all(f"  {n} " in out for n in on), out
    spark = [ln for ln in out.splitlines() if ln.startswith(("  NET OUT ", "  NET IN "))]
    assert len(spark) == 2 and all("█" in ln and "peak" in ln for ln in spark), out
    assert out.rstrip().endswith(f"Source: Prometheus at {engine.url}"), out
    print(out)   # docs/reports.md shows such a run (pytest -s)


def test_job_rates_add_up_from_subquery_and_raw_samples_alike(engine):
    """job_rates() reads the steps older than RATES_RAW_TAIL before now as a subquery and the later
    ones as raw samples (VictoriaMetrics answers a top-level subquery as a range query, whose last
    -search.latencyOffset it flattens). Told `now` is later, it takes the subquery for all of the
    range, or for its first half: the growth per step must add up to the totals on either path."""
    api = prometheus.PrometheusAPI(engine.url)
    since, until = engine.since, engine.until
    middle = (since + until) / 2
    if engine.name == "victoria-metrics":
        # the subquery must end before VictoriaMetrics' own now minus its latency offset (30 s)
        time.sleep(max(0.0, until + 35 - time.time()))
    for job, want in sorted(engine.jobs.items()):
        for now in (until + prometheus.RATES_RAW_TAIL + 5, middle + prometheus.RATES_RAW_TAIL, time.time()):
            for col in ("net_egress_bytes", "net_ingress_bytes"):
                pts = prometheus.job_rates(api, job, col, since, until, 60, None, 1.0, now=now)
                step = max(1000, round(1000 * (until - since) / 60)) / 1000
                assert pts and all(v >= 0 for _, v in pts), (engine.name, job, col, now - until)
                assert round(sum(v * step for _, v in pts)) == want[col], (engine.name, job, col, now - until, pts)
