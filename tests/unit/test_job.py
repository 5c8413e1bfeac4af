"""`ceemsnet job JOBID` without SLURM: the pure view (sparklines, the notes' rules and their
config, the split per step and node, the JSON keys, a fixed job rendered) and the command end
to end against a fake sacct and a fake Prometheus (HTTP on loopback)."""

import json
import stat
import time

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.report import final
from ceemsnet.report import job as jv
from ceemsnet.report.prometheus import _last_per_step
from ceemsnet.report.record import build, encode
from ceemsnet.serving.store import COLUMNS

from ..promserver import FakeQueryAPI, PrometheusServer, needs_prometheus
from .test_promreport import Served

from .test_cli import assert_one_line_error, run

JOB = "/system.slice/slurmstepd.scope/job_125"


# ---- pure parts -------------------------------------------------------------------------------

def test_sparkline_scales_to_the_peak_and_shows_gaps():
    assert jv.sparkline([0, 1, 2, 4, 8, None, 8]) == "▁▂▃▅█ █"
    assert jv.sparkline([0, 0]) == "▁▁"
    assert jv.sparkline([None, None]) == "  "
    assert jv.sparkline([1e-9, 1000]) == "▂█"  # anything above zero shows


def test_resample_averages_buckets_and_leaves_empty_ones_none():
    vals = jv.resample([(1, 2.0), (2, 4.0), (9, 10.0)], 0, 10, 5)
    assert vals == [2.0, 4.0, None, None, 10.0]


def test_last_per_step_takes_each_steps_last_sample():
    samples = [(1.0, 5.0), (2.0, 6.0), (3.5, 7.0), (9.0, 8.0)]
    # (0, 2]: 6; (2, 4]: 7; (4, 6] and (6, 8]: nothing (a gap shows as no point); (8, 9]: 8
    assert _last_per_step(samples, [2.0, 4.0, 6.0, 8.0, 9.0], 2.0) == {2.0: 6.0, 4.0: 7.0, 9.0: 8.0}
    assert _last_per_step([], [1.0], 1.0) == {}


def test_split_per_step_and_per_node():
    per = {("n1:9977", JOB + "/step_0"): {"net_egress_bytes": 100.0, "vfs_ops": 3.0},
           ("n2:9977", JOB + "/step_0"): {"net_egress_bytes": 50.0},
           ("n1:9977", JOB + "/step_batch"): {"net_egress_bytes": 7.0},
           ("n1:9977", JOB + "/step_10"): {"net_egress_bytes": 1.0},
           ("n1:9977", JOB): {"vfs_ops": 2.0}}
    totals, steps, nodes = jv.split(per, final.node_of)
    assert totals["net_egress_bytes"] == 158 and totals["vfs_ops"] == 5 and totals["net_ingress_bytes"] is None
    assert [s["step"] for s in steps] == ["0", "10", "batch", "job"]
    assert steps[0]["net_egress_bytes"] == 150 and steps[0]["vfs_ops"] == 3
    assert [(n["node"], n["net_egress_bytes"]) for n in nodes] == [("n1", 108), ("n2", 50)]


def _view(**over):
    totals = {c: None for c in COLUMNS}
    totals.update(net_egress_bytes=10, net_ingress_bytes=10, vfs_write_bytes=5 << 30, vfs_ops=20)
    v = {"job": "123_2", "job_id": "125", "node_names": ["n1", "n2"], "totals": totals,
         "facts": {"user": "ann", "account": "phys", "partition": "cpu", "job_name": "sim", "state": "COMPLETED",
                   "start": "2026-12-07T10:00:00+00:00", "end": "2026-12-07T10:10:00+00:00",
                   "elapsed": "00:10:00", "nodes": "n[1-2]"},
         "source": "prometheus", "source_detail": "Prometheus at http://prom:9090",
         "steps": [{"step": "0", **totals}], "nodes": [{"node": "n1", **totals}], "rates": {}, "notes": []}
    v.update(over)
    return v


def test_rules_fire_above_their_thresholds_and_only_then():
    rules = jv.load_rules(None)
    view = _view()
    got = jv.notes(rules, view, {"nfs": 5 << 30, "lustre": 1}, {"nfs", "lustre"}, {"open": 2_000_000})
    assert [n["rule"] for n in got] == ["home_nfs_writes", "no_internode_traffic", "many_opens"]
    assert "5.0 GiB" in got[0]["message"] and "lustre" in got[0]["message"]
    assert "2 nodes" in got[1]["message"] and "2000000" in got[2]["message"]
    # no scratch on the cluster; traffic above 1 MiB; opens below; a one-node job
    view["totals"]["net_egress_bytes"] = 2 << 20
    assert jv.notes(rules, view, {"nfs": 5 << 30}, {"nfs"}, {"open": 10}) == []
    assert jv.notes(rules, _view(node_names=["n1"], nodes=[]), None, None, None) == []
    # nothing measured: no note (no net collector: no claim of no traffic)
    quiet = _view()
    quiet["totals"]["net_egress_bytes"] = None
    assert jv.notes(rules, quiet, None, None, None) == []


def test_config_overrides_disables_and_refuses_nonsense(tmp_path):
    rules = jv.load_rules(None, "rules:\n  many_opens:\n    threshold: 5\n    message: 'opened {value}'\n"
                                "  no_internode_traffic:\n    enabled: false\n")
    assert "no_internode_traffic" not in rules and rules["many_opens"]["threshold"] == 5
    got = jv.notes(rules, _view(), None, None, {"open": 6})
    assert got == [{"rule": "many_opens", "message": "opened 6"}]
    for text, needle in (("rules:\n  nope: {}\n", "unknown rule"),
                         ("rules:\n  many_opens:\n    threshold: -1\n", "threshold"),
                         ("rules:\n  many_opens:\n    thresh: 1\n", "unknown setting"),
                         ("rules:\n  home_nfs_writes:\n    home_fstypes: nfs\n", "list"),
                         ("rules: [\n", "not YAML"),
                         ("- 1\n", "rules:")):
        with pytest.raises(CeemsnetError, match=needle):
            jv.load_rules(None, text)
    with pytest.raises(CeemsnetError, match="cannot read"):
        jv.load_rules(str(tmp_path / "missing.yml"))


def test_render_a_fixed_job():
    view = _view(range=[1000.0, 1600.0],
                 rates={"net_egress_bytes": [(1000.0 + 10 * i, float(i)) for i in range(60)]},
                 notes=[{"rule": "many_opens", "message": "opened 2 files"}])
    text = jv.render(view, width=6)
    lines = text.split("\n")
    assert lines[0] == "Job 123_2 (raw id 125)  sim"
    assert "  User:      ann" in lines and "  Nodes:     n[1-2]" in lines
    assert "  WRITTEN:   5.0 GiB" in lines
    step = next(ln for ln in lines if ln.startswith("  0 "))
    assert "10 B" in step and "5.0 GiB" in step
    spark = next(ln for ln in lines if ln.startswith("  NET OUT   "))
    # bucket means 4.5, 14.5, ... 54.5 of 7 steps: 0.58 -> 1, 1.86 -> 2, 3.15, 4.43, 5.72, 7
    assert spark.split()[2] == "▂▃▄▅▇█" and spark.endswith("peak 54 B/s")
    assert "  - opened 2 files  [many_opens]" in lines
    assert lines[-1] == "Source: Prometheus at http://prom:9090"


def test_json_keys():
    doc = json.loads(jv.to_json(_view(range=[1.0, 2.0], rates={"vfs_read_bytes": [(1.0, 2.5)]})))
    assert set(doc) == {"job", "job_id", "facts", "node_names", "source", "source_detail", "totals", "steps",
                        "nodes", "rates", "notes", "range"}
    assert set(doc["facts"]) == {"user", "account", "partition", "job_name", "state", "start", "end", "elapsed",
                                 "nodes"}
    assert set(doc["totals"]) == set(COLUMNS) and doc["rates"] == {"vfs_read_bytes": [[1.0, 2.5]]}


# ---- the command, end to end, with fakes -------------------------------------------------------

def fake_sacct(tmp_path, state="COMPLETED", nodes="n[1-2]", field="", known=True, start=None, end=None):
    """A fake sacct: the job 123_2 (raw 125) ran from 600 s to 30 s ago (or start to end) on `nodes`."""
    now = time.time()
    start, end = int(start or now - 600), ("" if state == "RUNNING" else int(end or now - 30))
    (tmp_path / "field").write_text(field)
    p = tmp_path / "sacct"
    body = f"""#!/bin/sh
case "$*" in
  *NodeList,SystemComment*) printf '125|123_2|{state}|{start}|{end}|{nodes}|%s\\n' "$(cat {tmp_path}/field)";;
  *User,Account*) echo '125|123_2|ann|phys|cpu|sim|{state}|{start}|{end}|00:09:30|{nodes}';;
esac
""" if known else "#!/bin/sh\nexit 0\n"
    p.write_text(body)
    p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(p), start


class FakePrometheus(FakeQueryAPI):
    """Answers `ceemsnet job`'s queries: growth per (instance, cgroup) for net egress and file writes,
    file writes by fstype, opens by op, the fstypes present, and a rising rate."""

    def __init__(self, growth, by_fstype=None, ops=None, fstypes=()):
        self.growth, self.by_fstype, self.ops, self.fstypes = growth, by_fstype or {}, ops or {}, fstypes
        self.queries = []
        super().__init__()

    def answer(self, expr, at):
        self.queries.append(expr)
        for col in ("net_egress_bytes", "vfs_write_bytes"):
            if expr.startswith(f"sum by (instance, cgroup) (last_over_time(ceemsnet_{col}_total"):
                return "vector", [{"metric": {"instance": i, "cgroup": cg}, "value": [at, str(v[col])]}
                                  for (i, cg), v in self.growth.items() if col in v]
        if expr.startswith("sum by (cgroup, fstype) (last_over_time(ceemsnet_vfs_write_bytes_total"):
            return "vector", [{"metric": {"cgroup": JOB + "/step_0", "fstype": k}, "value": [at, str(v)]}
                              for k, v in self.by_fstype.items()]
        if expr.startswith("sum by (cgroup, op) (last_over_time(ceemsnet_vfs_ops_total"):
            return "vector", [{"metric": {"cgroup": JOB + "/step_0", "op": k}, "value": [at, str(v)]}
                              for k, v in self.ops.items()]
        if expr.startswith("group by (fstype)"):
            return "vector", [{"metric": {"fstype": f}, "value": [at, "1"]} for f in self.fstypes]
        if expr.startswith("(sum by (instance, cgroup) (max without (job, step, exported_job, exported_step, "
                           "unit, pod) (last_over_time(ceemsnet_net_egress_bytes_total"):
            return "matrix", [{"metric": {"instance": "n1:9977", "cgroup": JOB + "/step_0"},
                               "values": [[at - 600 + 10 * i, str(i * i * 100)] for i in range(60)]},
                              {"metric": {"instance": "n1:9977", "cgroup": "/elsewhere/job_1255"},
                               "values": [[at, "1e12"]]}]
        return "vector", []



@pytest.fixture
def prom_fake():
    made = []

    def make(*a, **kw):
        p = FakePrometheus(*a, **kw)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def test_job_command_from_prometheus_with_steps_nodes_rates_and_notes(tmp_path, prom_fake):
    prom = prom_fake({("n1:9977", JOB + "/step_0"): {"net_egress_bytes": 600, "vfs_write_bytes": 3 << 30},
                      ("n2:9977", JOB + "/step_0"): {"net_egress_bytes": 400},
                      ("n1:9977", JOB + "/step_batch"): {"net_egress_bytes": 24}},
                     by_fstype={"nfs": 3 << 30}, ops={"open": 1_500_000}, fstypes=("nfs", "lustre"))
    sacct, start = fake_sacct(tmp_path)
    rc, out, err = run("job", "123_2", f"--prometheus={prom.url}", f"--slurm.sacct={sacct}", "--format=json",
                       "--rates.step=1s")
    assert rc == 0, err
    doc = json.loads(out)
    assert (doc["job"], doc["job_id"], doc["source"]) == ("123_2", "125", "prometheus")
    assert doc["facts"]["user"] == "ann" and doc["facts"]["elapsed"] == "00:09:30"
    assert doc["totals"]["net_egress_bytes"] == 1024 and doc["totals"]["vfs_write_bytes"] == 3 << 30
    assert [(s["step"], s["net_egress_bytes"]) for s in doc["steps"]] == [("0", 1000), ("batch", 24)]
    assert [(n["node"], n["net_egress_bytes"]) for n in doc["nodes"]] == [("n1", 624), ("n2", 400)]
    # growth per step over the step: a counter i*i*100 every 10 s grows (2i - 1) * 100 in step i, the first
    # value counts from zero; another job's cgroup (a prefix match only) is left out
    rates = doc["rates"]["net_egress_bytes"]
    assert len(rates) == 60 and rates[0][1] == 0 and max(v for _, v in rates) < 1e6
    assert [v for _, v in rates[1:4]] == pytest.approx([10, 30, 50], rel=0.01)   # per second, steps of ~10 s
    assert [n["rule"] for n in doc["notes"]] == ["home_nfs_writes", "no_internode_traffic", "many_opens"]
    # the job is asked for from (just before) its start
    assert any(q.startswith("(sum by (instance, cgroup)") for q in prom.queries)
    rc, out, err = run("job", "125", f"--prometheus={prom.url}", f"--slurm.sacct={sacct}")
    assert rc == 0, err
    assert out.startswith("Job 123_2 (raw id 125)  sim") and "Per step" in out and "Per node" in out
    assert "NET OUT" in out and "█" in out and f"Source: Prometheus at {prom.url}" in out


def test_job_command_config_file_thresholds(tmp_path, prom_fake):
    prom = prom_fake({("n1:9977", JOB + "/step_0"): {"net_egress_bytes": 5 << 20}}, ops={"open": 50})
    sacct, _ = fake_sacct(tmp_path, nodes="n1")
    cfg = tmp_path / "notes.yml"
    cfg.write_text("rules:\n  many_opens:\n    threshold: 10\n")
    rc, out, err = run("job", "125", f"--prometheus={prom.url}", f"--slurm.sacct={sacct}", f"--config={cfg}",
                       "--format=json")
    assert rc == 0, err
    assert [n["rule"] for n in json.loads(out)["notes"]] == ["many_opens"]
    cfg.write_text("rules:\n  many_opens:\n    threshold: x\n")
    rc, out, err = run("job", "125", f"--prometheus={prom.url}", f"--slurm.sacct={sacct}", f"--config={cfg}")
    assert_one_line_error(rc, err, "threshold must be a number")


def test_job_command_falls_back_to_the_record(tmp_path, prom_fake):
    rec = build("123_2", {"net_egress_bytes": 1234, "vfs_read_bytes": 55}, 1_000_000, 1_000_060, 2,
                nodes={"n1": {"net_egress_bytes": 1000}, "n2": {"net_egress_bytes": 234}})
    sacct, _ = fake_sacct(tmp_path, field="burst_buffer/lua: ok\n" + encode(rec))
    empty = prom_fake({})
    for extra in ([f"--prometheus={empty.url}"], []):
        rc, out, err = run("job", "123_2", f"--slurm.sacct={sacct}", "--format=json", *extra)
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["source"] == "record" and doc["totals"]["net_egress_bytes"] == 1234
        assert [(n["node"], n["net_egress_bytes"]) for n in doc["nodes"]] == [("n1", 1000), ("n2", 234)]
        assert "SystemComment" in doc["source_detail"]
        assert ("has no series" if extra else "no --prometheus given") in doc["source_detail"]
    # no record either: the facts alone, and the output says there is nothing
    sacct, _ = fake_sacct(tmp_path)
    rc, out, err = run("job", "123_2", f"--slurm.sacct={sacct}")
    assert rc == 0, err
    assert "Totals: nothing counted" in out and "Source: nothing: no --prometheus given" in out


def test_job_command_errors_are_one_line(tmp_path):
    sacct, _ = fake_sacct(tmp_path, known=False)
    rc, out, err = run("job", "999", f"--slurm.sacct={sacct}")
    assert_one_line_error(rc, err, "sacct knows no job '999'")
    rc, out, err = run("job", "999", f"--slurm.sacct={tmp_path}/no-such-sacct")
    assert_one_line_error(rc, err, "not installed")
    rc, out, err = run("job", "999", "--slurm.sacct=none")
    assert_one_line_error(rc, err, "needs sacct")
    sacct, _ = fake_sacct(tmp_path)
    rc, out, err = run("job", "125", f"--slurm.sacct={sacct}", "--prometheus=http://127.0.0.1:1")
    assert_one_line_error(rc, err, "cannot reach Prometheus")


# ---- against a real Prometheus -----------------------------------------------------------------

class JobExporter:
    """Serves job 125's counters (step 0 and the batch step) as one node's exporter would, the values
    the test sets; and another job's Lustre writes (so a scratch file system exists)."""

    def __init__(self):
        self.net = self.batch = self.nfs = self.opens = 0
        self.start = time.time()

        def answer(path):
            s0, sb = JOB + "/step_0", JOB + "/step_batch"
            body = (f'ceemsnet_net_egress_bytes_total{{cgroup="{s0}",proto="tcp",family="ipv4"}} {self.net}\n'
                    f'ceemsnet_net_ingress_bytes_total{{cgroup="{s0}",proto="tcp",family="ipv4"}} {self.net // 2}\n'
                    f'ceemsnet_net_egress_bytes_total{{cgroup="{sb}",proto="tcp",family="ipv4"}} {self.batch}\n'
                    f'ceemsnet_vfs_write_bytes_total{{cgroup="{s0}",fstype="nfs"}} {self.nfs}\n'
                    f'ceemsnet_vfs_ops_total{{cgroup="{s0}",op="open"}} {self.opens}\n'
                    'ceemsnet_vfs_write_bytes_total{cgroup="/system.slice/slurmstepd.scope/job_9/step_0",'
                    'fstype="lustre"} 7\n'
                    f"ceemsnet_process_start_time_seconds {self.start}\n").encode()
            return 200, "text/plain; version=0.0.4", body
        self.srv = Served(answer)
        self.target = self.srv.url.split("//")[1]


@needs_prometheus
def test_job_command_against_real_prometheus(tmp_path):
    """The PromQL of job_split, job_by_label, label_values and job_rates as a real Prometheus answers
    it: two nodes (instances relabelled n1, n2), exact totals per step and per node, sparklines, notes."""
    a, b = JobExporter(), JobExporter()
    prom = None
    jobs = [{"job_name": f"node{i}", "targets": [e.target], "relabel_configs": [
        {"target_label": "instance", "replacement": f"n{i}:9977"}]} for i, e in ((1, a), (2, b))]
    t0 = time.time() - 2
    sacct, _ = fake_sacct(tmp_path, state="RUNNING", start=t0)
    cfg = tmp_path / "notes.yml"
    cfg.write_text("rules:\n  home_nfs_writes:\n    threshold: 1000000\n  many_opens:\n    threshold: 1000\n")
    try:
        prom = PrometheusServer(tmp_path, [], extra_jobs=jobs)
        for phase in range(1, 6):
            a.net, a.batch, a.nfs, a.opens = 1000 * phase ** 2, 10 * phase, 600_000 * phase, 300 * phase
            b.net = 500 * phase
            prom.wait_for("sum(ceemsnet_net_egress_bytes_total)", 1000 * phase ** 2 + 10 * phase + 500 * phase)
            time.sleep(1.5)
        rc, out, err = run("job", "125", f"--prometheus={prom.url}", f"--slurm.sacct={sacct}", f"--config={cfg}",
                           "--format=json", "--rates.step=2s")
        assert rc == 0, err
        doc = json.loads(out)
        assert doc["totals"]["net_egress_bytes"] == 25000 + 50 + 2500
        assert doc["totals"]["net_ingress_bytes"] == 12500 + 1250
        assert [(s["step"], s["net_egress_bytes"]) for s in doc["steps"]] == [("0", 27500), ("batch", 50)]
        assert [(n["node"], n["net_egress_bytes"]) for n in doc["nodes"]] == [("n1", 25050), ("n2", 2500)]
        assert doc["totals"]["vfs_write_bytes"] == 3_000_000 and doc["totals"]["vfs_ops"] == 1500
        # 2 nodes and 41 KB of socket traffic: below the default 1 MiB of no_internode_traffic too
        assert [n["rule"] for n in doc["notes"]] == ["home_nfs_writes", "no_internode_traffic", "many_opens"]
        rates = doc["rates"]["net_egress_bytes"]
        assert rates and max(v for _, v in rates) > 0
        rc, out, err = run("job", "125", f"--prometheus={prom.url}", f"--slurm.sacct={sacct}", f"--config={cfg}",
                           "--rates.step=2s")
        assert rc == 0, err
        assert "█" in out and "Per node" in out
        print(out)   # docs/reports.md shows such a run (pytest -s)
    finally:
        if prom:
            prom.stop()
        a.srv.close()
        b.srv.close()
