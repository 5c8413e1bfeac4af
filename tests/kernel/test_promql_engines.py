"""`ceemsnet report --prometheus` for a cluster, against each PromQL engine: Prometheus and
VictoriaMetrics, several nodes' exporters, jobs spread over them, one exporter restarted.

The cluster, on one host. SLURM can run several slurmd on one machine ("multiple slurmd"),
each node with its own scope: system.slice/<node>_slurmstepd.scope/job_<j>/step_<s>, a layout
the exporter's and the report's path parsers read. Here three nodes are three such scopes,
each with its own `ceemsnet serve` (its own BPF programs, --bpf.pin-path=none, its own port:
one Prometheus instance per node). A kernel has no notion of nodes, so every exporter counts
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
report by job, by cgroup, for one job and in small chunks must equal the bytes moved exactly.

`engine` is the fixture a test of another consumer of the same data (e.g. a `ceemsnet job`
command) takes: the engine's URL, the range, and the exact per-job (and per-cgroup) totals.
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
            want = {f"127.0.0.1:{self.exporters[n].port}": self.current[n][i] for n in self.nodes if self.current[n][i]}
            for prom in self.engines.values():
                prom.wait_for(f"sum by (instance) (ceemsnet_net_{d}_bytes_total)",
                              lambda v, want=want: {m.get("instance"): x for m, x in v} == want)

    def restart(self, node):
        """SIGTERM the node's exporter, start it again on its port without pins: counters from zero."""
        old = self.exporters[node]
        started = f'ceemsnet_process_start_time_seconds{{instance="127.0.0.1:{old.port}"}}'
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
    return EngineCase(request.param, c.engines[request.param].url, since, until, jobs, dict(c.cgroups))


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
