"""`ceemsnet record` without SLURM: the record's format, the merge and no-overwrite rules,
sacct's output with free text, node names, and the bounded wait, against a fake Prometheus
(HTTP on loopback) and fake sacct/sacctmgr programs that keep the field in a file."""

import json
import os
import stat
import time

import pytest

from ceemsnet.attribution.slurmdb import expand_hostlist, field_name, parse_records, survives
from ceemsnet.report import final
from ceemsnet.report.record import Refused, build, decode, encode, merge, row

from ..promserver import FakeQueryAPI
from .test_cli import assert_one_line_error, run

JOBDIR = "/system.slice/slurmstepd.scope/job_125"


def test_record_is_compact_json_with_backticks_for_quotes():
    rec = build("123_2", {"net_egress_bytes": 1000.0, "vfs_read_bytes": 7, "rdma_egress_bytes": None}, 100.5, 200.9, 2,
                nodes={"n1": {"net_egress_bytes": 600}, "n2": {"net_egress_bytes": 400}})
    line = encode(rec)
    assert line.startswith("ceemsnet:{`v`:1,`job`:`123_2`,`complete`:true,")
    assert '"' not in line and "'" not in line and "\\" not in line and " " not in line
    assert survives(line, lowers=True)
    back = decode(line)
    assert back == rec
    assert back["net_egress_bytes"] == 1000 and back["vfs_read_bytes"] == 7
    assert "rdma_egress_bytes" not in back and "net_ingress_bytes" not in back   # not counted: absent, never 0
    assert (back["start"], back["end"], back["sources"]) == (100, 200, 2)


def test_incomplete_record_names_what_is_missing():
    rec = build("9", {"net_egress_bytes": 5}, 1, 2, 1, missing=["node2", 'we"ird'])
    assert rec["complete"] is False and rec["missing"] == ["node2", "we_ird"]
    assert decode(encode(rec)) == rec


def test_decode_finds_the_line_among_others_and_after_lowercasing():
    line = encode(build("9", {"vfs_write_bytes": 3}, 1, 2, 1))
    assert decode(f"08/20/26 10:00:00 burst_buffer/lua: stage_out: failed\n{line.lower()}")["vfs_write_bytes"] == 3
    assert decode("JS1:H4sIAAAA") is None and decode("") is None and decode(None) is None
    assert decode("ceemsnet:{broken") is None


def test_merge_keeps_other_tools_content():
    line = encode(build("9", {"vfs_write_bytes": 3}, 1, 2, 1))
    assert merge("", line, "SystemComment", True) == line
    assert merge(None, line, "SystemComment", True) == line
    bb = "08/20/26 10:00:00 burst_buffer/lua: stage_out: done"
    assert merge(bb, line, "SystemComment", True) == f"{bb}\n{line}"
    old = encode(build("9", {"vfs_write_bytes": 1}, 1, 2, 1))
    # an earlier ceemsnet line is replaced, the others kept in place
    assert merge(f"{bb}\n{old}", line, "SystemComment", True) == f"{bb}\n{line}"
    assert merge(old, line, "SystemComment", True) == line


@pytest.mark.parametrize("old,lowers,needle", [
    ("JS1:H4sIAAAAAAAAA6tWKkktLlGyUlAqS8wpTtVRSs7PS8", False, "jobstats"),
    ("js1:h4siaaaaaaaaa6twkkktlglyuulaqs8wptttvrss7ps8", True, "jobstats"),   # as 22.05's sacctmgr stores it
    ('note: "quoted"', False, "quotes"),
    ("back\\slash", False, "quotes, backslashes"),
    ("Burst_Buffer/lua: Failed", True, "capitals"),
])
def test_merge_refuses_what_sacctmgr_would_change(old, lowers, needle):
    with pytest.raises(Refused, match=needle):
        merge(old, "ceemsnet:{`v`:1}", "AdminComment", lowers)


def test_merge_capitals_are_kept_by_sacctmgr_from_23_02():
    assert merge("Burst_Buffer/lua: Failed", "ceemsnet:{`v`:1}", "SystemComment", False).startswith("Burst_Buffer")


def test_merge_refuses_beyond_the_column():
    with pytest.raises(Refused, match="65535"):
        merge("x" * 65530, "ceemsnet:{`v`:1}", "SystemComment", False)


def test_survives():
    assert survives("abc: 1,2", True)
    assert not survives("Abc", True) and survives("Abc", False)
    assert not survives(" lead", False) and not survives("a'b", False) and not survives('a"b', False)


def test_field_names_and_hostlists():
    assert field_name("systemcomment") == "SystemComment" and field_name("AdminComment") == "AdminComment"
    with pytest.raises(ValueError, match="SystemComment"):
        field_name("JobName")
    assert expand_hostlist("node[01-03,7],gpu1") == ["node01", "node02", "node03", "node7", "gpu1"]
    assert expand_hostlist("n1") == ["n1"] and expand_hostlist("None assigned") == [] and expand_hostlist("") == []
    with pytest.raises(ValueError):
        expand_hostlist("n[a-b]")


def test_sacct_text_field_may_hold_pipes_and_lines():
    out = ("125|123_2|bb line one\nbb line two|with a pipe\nceemsnet:{`v`:1}\n"
           "126|123_3|\n")
    recs = parse_records(out, ("JobIDRaw", "JobID", "SystemComment"))
    assert recs["125"]["SystemComment"] == "bb line one\nbb line two|with a pipe\nceemsnet:{`v`:1}"
    assert recs["126"]["SystemComment"] == "" and recs["126"]["JobID"] == "123_3"


def test_report_row_from_a_record():
    r = row("125", build("123_2", {"net_egress_bytes": 10, "vfs_ops": 2}, 1_000_000, 1_000_060, 1))
    assert (r["job"], r["net_egress_bytes"], r["vfs_ops"], r["net_ingress_bytes"]) == ("125", 10, 2, None)
    assert r["first_seen"].startswith("1970-01-12") and r["last_seen"] > r["first_seen"]


def test_missing_by_node_name_or_by_instance():
    assert final.node_of("node1:9977") == "node1" and final.node_of("Node1.cluster.org:9977") == "node1"
    assert final.node_of("10.0.0.1:9977") == "10.0.0.1" and final.node_of("[fd00::1]:9977") == "fd00::1"
    nodes = ["node1", "node2"]
    assert final.missing(nodes, {"node1:9977", "node2:9977"}, {"node1:9977"}) == (["node2"], True)
    assert final.missing(nodes, set(), {"node1:9977", "node2:9977"}) == ([], True)
    # a node with no exporter series at all is missing too
    assert final.missing(nodes, {"node1:9977"}, {"node1:9977"}) == (["node2"], True)
    # exporters named by address: the ones that had the job's series
    assert final.missing(nodes, {"10.0.0.1:9977", "10.0.0.2:9977"}, {"10.0.0.2:9977"}) == (["10.0.0.1:9977"], False)
    assert final.missing(nodes, set(), set()) == (["node1", "node2"], True)


class FakeAPI:
    """job_instances' queries: `fresh` instances appear after `ready_at` (the fake clock)."""

    def __init__(self, seen, fresh, ready_at, clock):
        self.seen, self.fresh, self.ready_at, self.clock, self.base = seen, fresh, ready_at, clock, "http://fake"

    def query(self, expr, at):
        assert expr.startswith("group by (instance) (count_over_time(")
        # one family per count_over_time (the function drops the name: families would collide)
        assert expr.count("count_over_time(") == expr.count(" or ") + 1 > 5 and "__name__" not in expr
        span = float(expr.rsplit("[", 1)[1].split("ms]")[0]) / 1000
        if span > 1000:   # the job's whole life: seen
            return "vector", [{"metric": {"instance": i}} for i in self.seen]
        return "vector", [{"metric": {"instance": i}} for i in (self.fresh if self.clock[0] >= self.ready_at else ())]


def test_wait_is_bounded_and_stops_when_every_node_is_scraped():
    clock = [1000.0]

    def sleep(s):
        clock[0] += s
    api = FakeAPI({"n1:1", "n2:1"}, {"n1:1", "n2:1"}, 1010.0, clock)
    miss, by_node, seen = final.wait_final(api, "125", ["n1", "n2"], 0.0, 990.0, 1030.0, 5.0,
                                           clock=lambda: clock[0], sleep=sleep)
    assert (miss, by_node) == ([], True) and 1010 <= clock[0] < 1013
    clock[0] = 1000.0
    api = FakeAPI({"n1:1", "n2:1"}, {"n1:1"}, 1005.0, clock)
    miss, by_node, _ = final.wait_final(api, "125", ["n1", "n2"], 0.0, 990.0, 1030.0, 5.0,
                                        clock=lambda: clock[0], sleep=sleep)
    assert miss == ["n2"] and clock[0] == 1030.0   # gave up at the deadline, not before, not after


# ---- the command, end to end, with fakes --------------------------------------------------

def fake_slurm(tmp_path, state="COMPLETED", nodes="n[1-2]", initial=""):
    """Fake sacct and sacctmgr sharing the field's text in a file (sacctmgr as 23.02+: no lower-casing);
    the job ran from 60 s to 30 s ago."""
    now = time.time()
    start, end = (int(now - d) for d in (60, 30))   # SLURM_TIME_FORMAT=%s
    field = tmp_path / "field"
    field.write_text(initial)
    sacct = tmp_path / "sacct"
    sacct.write_text(f"""#!/bin/sh
case "$*" in
  *State,Start,End,NodeList*) printf '125|123_2|{state}|{start}|{end}|{nodes}|%s\\n' "$(cat {field})";;
  *) printf '125|123_2|%s\\n' "$(cat {field})";;
esac
""")
    mgr = tmp_path / "sacctmgr"
    mgr.write_text(f"""#!/bin/sh
[ "$1" = --version ] && {{ echo "slurm 24.05.1"; exit 0; }}
for a in "$@"; do case "$a" in SystemComment=*|AdminComment=*) printf '%s' "${{a#*=}}" > {field};; jobid=*) echo "$a" >> {tmp_path}/jobids;; esac; done
echo " Modified jobs..."; echo "  125 submitted at now"
""")
    for p in (sacct, mgr):
        p.chmod(p.stat().st_mode | stat.S_IEXEC)
    return str(sacct), str(mgr), field


class FakePrometheus(FakeQueryAPI):
    """Answers record's queries (POSTed, as PrometheusAPI sends them): instances `fresh` scraped
    after the end; net egress growth per instance; nothing else."""

    def __init__(self, fresh, growth):
        self.fresh, self.growth = fresh, growth
        super().__init__()

    def answer(self, expr, at):
        if expr.startswith("group by (instance) (count_over_time("):
            span = float(expr.rsplit("[", 1)[1].split("ms]")[0]) / 1000
            insts = self.growth if span > 3600 else self.fresh
            return "vector", [{"metric": {"instance": i}, "value": [0, "1"]} for i in insts]
        if expr.startswith("sum by (instance, cgroup) (last_over_time(ceemsnet_net_egress_bytes_total"):
            return "vector", [{"metric": {"instance": i, "cgroup": JOBDIR + "/step_0"}, "value": [0, str(v)]}
                              for i, v in self.growth.items()]
        return "vector", []


@pytest.fixture
def prom_fake():
    made = []

    def make(fresh, growth):
        p = FakePrometheus(fresh, growth)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


def _record(tmp_path, prom, *extra, env_job=None, **slurm):
    sacct, mgr, field = fake_slurm(tmp_path, **slurm)
    args = ["record", f"--prometheus={prom.url}", f"--slurm.sacct={sacct}", f"--slurm.sacctmgr={mgr}",
            "--timeout=3s", "--settle=0", *extra]
    if env_job is None:
        args.append("123_2")
        return run(*args) + (field,)
    old = os.environ.get("SLURM_JOB_ID")
    os.environ["SLURM_JOB_ID"] = env_job
    try:
        return run(*args) + (field,)
    finally:
        if old is None:
            del os.environ["SLURM_JOB_ID"]
        else:
            os.environ["SLURM_JOB_ID"] = old


def test_record_command_writes_the_sum_of_every_node(tmp_path, prom_fake):
    prom = prom_fake({"n1:9977", "n2:9977"}, {"n1:9977": 600, "n2:9977": 400})
    rc, out, err, field = _record(tmp_path, prom, "--per-node", env_job="125")
    assert rc == 0, err
    rec = decode(field.read_text())
    assert rec["net_egress_bytes"] == 1000 and rec["complete"] is True and rec["job"] == "123_2"
    assert rec["nodes"] == {"n1": {"net_egress_bytes": 600}, "n2": {"net_egress_bytes": 400}}
    # the job named as SLURM shows it, so that jobid= names that one record
    assert (tmp_path / "jobids").read_text().split() == ["jobid=123_2"]


def test_record_command_on_timeout_writes_what_is_there_marked_incomplete(tmp_path, prom_fake):
    prom = prom_fake({"n1:9977"}, {"n1:9977": 600, "n2:9977": 400})
    rc, out, err, field = _record(tmp_path, prom, initial="burst_buffer/lua: ok")
    assert rc == 0, err
    assert "n2" in err and "complete=false" in err
    text = field.read_text()
    assert text.startswith("burst_buffer/lua: ok\nceemsnet:")
    rec = decode(text)
    assert rec["complete"] is False and rec["missing"] == ["n2"] and rec["net_egress_bytes"] == 1000


def test_record_command_dry_run_prints_json_and_writes_nothing(tmp_path, prom_fake):
    prom = prom_fake({"n1:9977", "n2:9977"}, {"n1:9977": 5, "n2:9977": 6})
    rc, out, err, field = _record(tmp_path, prom, "--dry-run")
    assert rc == 0, err
    assert json.loads(out)["net_egress_bytes"] == 11 and field.read_text() == ""


def test_record_command_refuses_jobstats_payload(tmp_path, prom_fake):
    prom = prom_fake({"n1:9977", "n2:9977"}, {"n1:9977": 5, "n2:9977": 6})
    rc, out, err, field = _record(tmp_path, prom, "--field=AdminComment", initial="JS1:H4sIAAAA")
    assert_one_line_error(rc, err, "jobstats")
    assert field.read_text() == "JS1:H4sIAAAA"


def test_record_command_nothing_to_write_is_an_error(tmp_path, prom_fake):
    prom = prom_fake(set(), {})
    rc, out, err, field = _record(tmp_path, prom)
    assert_one_line_error(rc, err, "no series of job 123_2")
    assert field.read_text() == ""


def test_record_command_needs_a_job_and_a_prometheus():
    env_job = os.environ.pop("SLURM_JOB_ID", None)
    try:
        rc, out, err = run("record", "--prometheus=http://127.0.0.1:1")
        assert_one_line_error(rc, err, "no job")
    finally:
        if env_job is not None:
            os.environ["SLURM_JOB_ID"] = env_job
    rc, out, err = run("record", "5")
    assert_one_line_error(rc, err, "--prometheus URL is required")


def test_report_reads_a_job_back_from_its_record(tmp_path):
    """A job no store has: `report --job` reads its ceemsnet line from the record field."""
    rec = build("123_2", {"net_egress_bytes": 1234, "vfs_read_bytes": 55}, 1_000_000, 1_000_060, 2)
    sacct, _, _ = fake_slurm(tmp_path, initial="burst_buffer/lua: ok\n" + encode(rec))
    rc, out, err = run("report", f"--storage.path={tmp_path}/none.db", "--job=125", "--format=json",
                       f"--slurm.sacct={sacct}", "--slurm.sacct-cache=none")
    assert rc == 0, err
    (r,) = json.loads(out)
    assert (r["job"], r["net_egress_bytes"], r["vfs_read_bytes"], r["net_ingress_bytes"]) == ("125", 1234, 55, None)
    assert "SLURM record (SystemComment)" in err
    # none: the record is not read, and the store's error stands
    rc, out, err = run("report", f"--storage.path={tmp_path}/none.db", "--job=125", f"--slurm.sacct={sacct}",
                       "--slurm.record-field=none")
    assert rc == 1 and "none.db" in err
