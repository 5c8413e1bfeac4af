"""SLURM names, the aggregate fold, sacct parsing and the report's join.

sacct is a fake script on PATH in a tmp dir (it stands for SLURM's client,
not for the kernel); it logs its argv so batching can be checked.
"""

import datetime
import json
import os
import random
import stat
import subprocess
import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ceemsnet import CeemsnetError
from ceemsnet.collectors.counters import CounterMap
from ceemsnet.collectors.net import net_families
from ceemsnet.attribution.lifecycle import Lifecycle
from ceemsnet.common.metrics import Family, merge_families
from ceemsnet.attribution.slurm import (BATCH, FIELDS, LEVELS, SLUID, FactsCache, Runner, SacctError, SlurmNames,
                                        fold, is_final, job_facts, parse, parse_sacct, run_sacct, run_squeue)
from ceemsnet.serving.store import Store, totals_from_families
from ceemsnet.planning.structs import decode_net, net_index, pack_net_key
from ceemsnet.attribution.workloads import add_units, folder, resolve_level, slurm_job

from .helpers import render_text
from .test_counters import NCPUS, Clock, FakeMap, OldSource, RawSource, Resolver

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V2 = "/system.slice/slurmstepd.scope"


# ---- names -------------------------------------------------------------

@pytest.mark.parametrize("path, job, step, job_path, step_path, uid", [
    (f"{V2}/job_42/step_0/user/task_3", "42", "0", f"{V2}/job_42", f"{V2}/job_42/step_0", None),
    (f"{V2}/job_42/step_batch/slurm", "42", "batch", f"{V2}/job_42", f"{V2}/job_42/step_batch", None),
    (f"{V2}/job_42/step_extern/user/task_special", "42", "extern", f"{V2}/job_42", f"{V2}/job_42/step_extern",
     None),
    (f"{V2}/job_42/step_interactive", "42", "interactive", f"{V2}/job_42", f"{V2}/job_42/step_interactive",
     None),
    (f"{V2}/job_42/step_0+1/user/task_0", "42", "0+1", f"{V2}/job_42", f"{V2}/job_42/step_0+1", None),
    (f"{V2}/job_42", "42", "", f"{V2}/job_42", "", None),
    (f"{V2}/sEKNKTV3WPV500/step_1/user/task_0", "sEKNKTV3WPV500", "1", f"{V2}/sEKNKTV3WPV500",
     f"{V2}/sEKNKTV3WPV500/step_1", None),
    ("/system.slice/node7_slurmstepd.scope/job_9/step_2", "9", "2", "/system.slice/node7_slurmstepd.scope/job_9",
     "/system.slice/node7_slurmstepd.scope/job_9/step_2", None),
    ("/slurm/uid_1000/job_77/step_batch/task_0", "77", "batch", "/slurm/uid_1000/job_77",
     "/slurm/uid_1000/job_77/step_batch", "1000"),
    ("/slurm_node3/uid_5/job_8/step_extern", "8", "extern", "/slurm_node3/uid_5/job_8",
     "/slurm_node3/uid_5/job_8/step_extern", "5"),
])
def test_parse_both_layouts(path, job, step, job_path, step_path, uid):
    p = parse(path)
    assert (p.job, p.step, p.job_path, p.step_path, p.uid) == (job, step, job_path, step_path, uid)


@pytest.mark.parametrize("path", [f"{V2}/system", f"{V2}/system/x", "/system.slice/sshd.service", "/", "",
                                  f"{V2}/sEKNKTV3WPV5OO/step_0",  # O is no Crockford digit
                                  f"{V2}/sEKNKTV3WPV50/step_0", "/slurm/uid_x/job_1"])
def test_parse_outside_jobs(path):
    assert parse(path) is None


def test_sluid_shape_is_slurms_print_sluid():
    # 's' and 13 Crockford base32 digits (src/common/sluid.c: cb32map, no I L O U)
    assert SLUID.match("sEKNKTV3WPV500") and SLUID.match("s0000000000000")
    for bad in ("sEKNKTV3WPV5I0", "sEKNKTV3WPV5L0", "sEKNKTV3WPV5U0", "SEKNKTV3WPV500", "sekNKTV3WPV500",
                "sEKNKTV3WPV5000", "job_1"):
        assert not SLUID.match(bad), bad


class Names:
    """SlurmNames as add_units uses it, with fixed answers: raw job id -> the id SLURM shows."""

    def __init__(self, shown: dict[str, str]):
        self.shown, self.learnt = shown, set()

    def learn(self, raws) -> None:
        self.learnt |= set(raws)

    def display(self, raw: str) -> str:
        return self.shown.get(raw, raw)


def _slurm_labels(paths, names=None) -> list[tuple[str, str]]:
    """The (job, step) labels add_units gives each path's series."""
    f = Family("ceemsnet_net_egress_bytes", "h", "counter", ("cgroup", "proto", "family"),
               [((p, "tcp", "ipv4"), 1) for p in paths])
    out = {x.name: x for x in add_units([f], "slurm", None, names)}
    return [values[3:] for values, _ in out["ceemsnet_net_egress_bytes"].rows]


def test_step_ids_as_sacct_shows_them():
    names = Names({"125": "123_2"})
    assert _slurm_labels([f"{V2}/job_42/step_batch/user", f"{V2}/job_125/step_0/user/task_1", f"{V2}/job_42"],
                         names) == [("42", "42.batch"), ("123_2", "123_2.0"), ("42", "")]
    assert names.learnt == {"42", "125"}


# ---- the one grammar: every layout SLURM makes, at each level of the fold ----
# (ceemsnet/attribution/slurm.py's docstring says where in SLURM's sources each form is made)

V1 = "/slurm/uid_1000"
SV2 = f"{V2}/sEKNKTV3WPV500"
D2 = "/docker.slice/docker-0a1b.scope/system.slice/slurmstepd.scope"
# the job's directory, the step's directory in it ("": none), what lies below, the raw job id
JOBS = [
    # cgroup v1: /slurm[_<node>]/uid_<u>/job_<j>/step_<s>/task_<t>
    (f"{V1}/job_42", "step_0", "task_3", "42"),
    (f"{V1}/job_42", "step_17", "", "42"),
    (f"{V1}/job_42", "step_batch", "task_0", "42"),
    (f"{V1}/job_42", "step_extern", "task_0", "42"),
    (f"{V1}/job_42", "step_interactive", "task_0", "42"),
    (f"{V1}/job_42", "", "", "42"),
    ("/slurm_node01/uid_0/job_7", "step_1", "task_0", "7"),       # several slurmd per host: /slurm_%n
    ("/lxc/node3/slurm/uid_5/job_8", "step_0", "task_1", "8"),     # a node in a container
    (f"{V1}/job_61034", "step_0+1", "task_0", "61034"),           # a heterogeneous step, before 26.05
    # cgroup v2: <prefix>/<slice>/[<node>_]slurmstepd.scope/job_<j>/step_<s>/{user/task_<t>,slurm}
    (f"{V2}/job_4242", "step_0", "user/task_0", "4242"),
    (f"{V2}/job_4242", "step_0", "user/task_special", "4242"),
    (f"{V2}/job_4242", "step_0", "slurm", "4242"),                # the step's slurmstepd
    (f"{V2}/job_4242", "step_batch", "user/task_0", "4242"),
    (f"{V2}/job_4242", "step_extern", "user/task_0", "4242"),
    (f"{V2}/job_4242", "step_interactive", "user", "4242"),
    (f"{V2}/job_4242", "", "", "4242"),
    ("/system.slice/node01_slurmstepd.scope/job_9", "step_1", "user/task_0", "9"),
    (f"{D2}/job_3", "step_0", "user/task_0", "3"),                 # slurmd in a container
    ("/slurm.slice/slurmstepd.scope/job_3", "step_2", "", "3"),    # CgroupSlice=slurm.slice
    # a heterogeneous step in one allocation (before 26.05): one job directory, step_<n>+<component>
    (f"{V2}/job_61034", "step_0+1", "user/task_0", "61034"),
    # a heterogeneous job's component (shown 100+1) and an array task (shown 123_2): jobs of their own
    (f"{V2}/job_101", "step_0", "user/task_0", "101"),
    (f"{V2}/job_125", "step_batch", "user/task_0", "125"),
    # 26.05's SLUID job directories (a heterogeneous step there is plain step_<n>)
    (SV2, "step_0", "user/task_0", "sEKNKTV3WPV500"),
    (SV2, "step_batch", "slurm", "sEKNKTV3WPV500"),
    (SV2, "step_extern", "user/task_0", "sEKNKTV3WPV500"),
    (SV2, "step_interactive", "", "sEKNKTV3WPV500"),
    (SV2, "", "", "sEKNKTV3WPV500"),
    # below a job, a name SLURM never gives a step (TBD is a pending step: no cgroup): the job's own
    (f"{V2}/job_42", "", "step_TBD/user", "42"),
    (f"{V2}/job_42", "", "step_0x", "42"),
    (f"{V1}/job_42", "", "tmp", "42"),
]
NOT_JOBS = [
    f"{V2}/system", f"{V2}/system/x",                      # stepds waiting for their job directory
    "/system.slice/virtme_slurmstepd.scope/slurmd",        # slurmd itself (IgnoreSystemd=yes)
    "/system.slice/slurmd.service",
    f"{V2}/job_abc", f"{V2}/job_abc/step_0", "/slurm/uid_1/job_abc", f"{V2}/job_42x/step_0",
    f"{V2}/step_0/user/task_0", f"{V2}/step_batch", f"{V1}/step_0/task_0",  # a step without a job
    f"{V2}/whatever/step_0", f"{V2}/sEKNKTV3WPV5OO/step_0", f"{V2}/sEKNKTV3WPV50",
    V1, "/slurm/uid_x/job_1", "/slurm/job_1/step_0", "/user.slice/job_42", "/system.slice/sshd.service", "/", "",
]


def _grammar_cases():
    """(path, raw job id, step name, the path at step level, the path at job level)"""
    for job_dir, step_dir, below, job in JOBS:
        at_step = f"{job_dir}/{step_dir}" if step_dir else job_dir
        yield "/".join(x for x in (at_step, below) if x), job, step_dir[len("step_"):], at_step, job_dir
    for path in NOT_JOBS:
        yield path, None, None, path, path


@pytest.mark.parametrize("path, job, step, at_step, at_job", list(_grammar_cases()))
def test_one_grammar_at_every_level(path, job, step, at_step, at_job):
    p = parse(path)
    assert ((p.job, p.step) if p else None) == ((job, step) if job else None)
    assert slurm_job(path) == job
    want = {"task": path, "step": at_step, "job": at_job}
    for level in LEVELS:
        assert fold(path, level) == want[level], level
        f = folder("slurm", level)  # the exporter's cached fold, None at the finest level
        assert (f(path) if f else path) == want[level], level
    assert _slurm_labels([path]) == [(job or "", f"{job}.{step}" if step else "")]


@pytest.mark.parametrize("level, want", [
    ("task", f"{V2}/job_4/step_0/user/task_1"), ("step", f"{V2}/job_4/step_0"), ("job", f"{V2}/job_4")])
def test_fold_levels(level, want):
    assert fold(f"{V2}/job_4/step_0/user/task_1", level) == want
    assert fold("/system.slice/sshd.service", level) == "/system.slice/sshd.service"
    assert fold(f"{V2}/job_4", level) == f"{V2}/job_4"
    assert fold("/slurm/uid_1/job_4/step_batch/task_0", level) == {
        "task": "/slurm/uid_1/job_4/step_batch/task_0", "step": "/slurm/uid_1/job_4/step_batch",
        "job": "/slurm/uid_1/job_4"}[level]


def test_levels_per_unit_and_their_errors():
    assert resolve_level("auto", "slurm") == "step" and resolve_level("auto", "systemd") == "cgroup"
    assert folder("slurm", "task") is None and folder("none", "cgroup") is None
    with pytest.raises(CeemsnetError, match="choose auto, task, step, job"):
        resolve_level("node", "slurm")
    with pytest.raises(CeemsnetError, match="need --unit=slurm"):
        resolve_level("job", "none")
    unit = folder("systemd", "unit")
    assert unit("/system.slice/foo.service/sub/deeper") == "/system.slice/foo.service"
    assert unit("/user.slice/user-1.slice") == "/user.slice/user-1.slice"
    pod = folder("k8s", "pod")
    assert pod("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678.slice/cri-x.scope") \
        == "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234abcd_5678.slice"


def test_cli_refuses_a_bad_level_in_one_line():
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "serve", "--unit=slurm", "--cgroup.aggregate=node"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert p.stderr.strip() == ("ceemsnet: error: invalid --cgroup.aggregate 'node' for --unit=slurm: "
                                "choose auto, task, step, job")


# ---- sacct -------------------------------------------------------------

SACCT_OUT = """\
42|42|alice|physics|batch|two-steps|COMPLETED|2026-11-23T10:00:00|2026-11-23T10:05:00|00:05:00|node1
42.batch|42.batch|||||COMPLETED|2026-11-23T10:00:00|2026-11-23T10:05:00|00:05:00|node1
42.0|42.0|||||COMPLETED|2026-11-23T10:00:01|2026-11-23T10:02:00|00:01:59|node1
125|123_2|bob|chem|debug|arr|CANCELLED by 1000|2026-11-23T11:00:00|2026-11-23T11:01:00|00:01:00|node[1-2]
100|100+0|carol|bio|debug|het|RUNNING|2026-11-23T12:00:00|Unknown|00:10:00|node1
101|100+1|carol|bio|debug|het|RUNNING|2026-11-23T12:00:00|Unknown|00:10:00|node2
not|enough|fields
126|123_[3-4]|bob|chem|debug|arr|PENDING|Unknown|Unknown|00:00:00|None assigned
"""


def test_parse_sacct_rows():
    facts = parse_sacct(SACCT_OUT)
    assert sorted(facts) == ["100", "101", "125", "126", "42"]
    assert facts["42"] == {"job": "42", "user": "alice", "account": "physics", "partition": "batch",
                           "job_name": "two-steps", "state": "COMPLETED", "start": "2026-11-23T10:00:00",
                           "end": "2026-11-23T10:05:00", "elapsed": "00:05:00", "nodes": "node1"}
    assert facts["125"]["job"] == "123_2" and facts["125"]["state"] == "CANCELLED"
    assert facts["101"]["job"] == "100+1" and facts["101"]["end"] is None
    assert facts["126"]["start"] is None and facts["126"]["nodes"] is None


def fake_sacct(tmp_path, out: str = SACCT_OUT, rc: int = 0, err: str = "") -> str:
    """A sacct on PATH that logs its argv and prints `out` (lines of the asked ids only)."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    (d / "out.txt").write_text(out)
    script = d / "sacct"
    script.write_text(f"""#!{sys.executable}
import json, os, sys
with open({str(d / 'tf.txt')!r}, "w") as f:
    f.write(os.environ.get("SLURM_TIME_FORMAT", ""))
with open({str(d / 'calls.jsonl')!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if {rc}:
    sys.stderr.write({err!r})
    sys.exit({rc})
args = sys.argv[1:]
ids = set(args[args.index("-j") + 1].split(","))
fields = [a for a in args if a.startswith("--format=")][0][9:].split(",")
for line in open({str(d / 'out.txt')!r}):
    cols = line.rstrip("\\n").split("|")
    if "SLUID" in fields and len(cols) == len(fields) - 1:
        continue
    if cols[0] in ids or (cols[-1] in ids and "SLUID" in fields):
        sys.stdout.write(line)
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def calls(tmp_path):
    with open(tmp_path / "bin" / "calls.jsonl") as f:
        return [json.loads(x) for x in f]


def test_run_sacct_batches_and_uses_the_portable_flags(tmp_path):
    exe = fake_sacct(tmp_path)
    ids = [str(i) for i in range(1000, 1000 + BATCH + 5)] + ["42"]
    facts = run_sacct(ids, sacct=exe)
    assert list(facts) == ["42"]
    cs = calls(tmp_path)
    assert len(cs) == 2
    for c in cs:
        assert c[:2] == ["-P", "--noheader"] and c[2] == "--format=" + ",".join(FIELDS)
    # Unix seconds: 22.05 cuts an ISO time's offset off (the field is 19 characters wide)
    assert (tmp_path / "bin" / "tf.txt").read_text() == "%s"
    assert sum(len(c[c.index("-j") + 1].split(",")) for c in cs) == len(ids)


def test_ids_sacct_cannot_parse_are_never_asked(tmp_path):
    # one such id would fail the whole call ("sacct: fatal: Bad job/step specified: slurmd")
    exe = fake_sacct(tmp_path)
    facts = run_sacct(["42", "slurmd", "system", "4_2", "٤٢"], sacct=exe)
    assert list(facts) == ["42"]
    assert [c[c.index("-j") + 1] for c in calls(tmp_path)] == ["42"]


def test_sluid_jobs_are_asked_with_the_sluid_field(tmp_path):
    exe = fake_sacct(tmp_path, SACCT_OUT + "7|7|dan|a|p|n|COMPLETED|2026-11-23T10:00:00|2026-11-23T10:01:00|"
                                           "00:01:00|node1|sEKNKTV3WPV500\n")
    facts = run_sacct(["sEKNKTV3WPV500", "42"], sacct=exe)
    assert facts["sEKNKTV3WPV500"]["user"] == "dan" and facts["42"]["user"] == "alice"
    (num, sl) = calls(tmp_path)
    assert "SLUID" not in num[2] and sl[2].endswith(",SLUID") and sl[sl.index("-j") + 1] == "sEKNKTV3WPV500"


def test_sacct_missing_or_failing_is_one_line(tmp_path):
    with pytest.raises(SacctError, match="not installed"):
        run_sacct(["1"], sacct=str(tmp_path / "nope"))
    exe = fake_sacct(tmp_path, rc=1, err="sacct: error: Problem talking to the database: Connection refused\n")
    with pytest.raises(SacctError, match="^sacct failed: sacct: error: Problem talking to the database"):
        run_sacct(["1"], sacct=exe)


def test_cache_keeps_finished_jobs_and_asks_again_for_running_ones(tmp_path):
    exe = fake_sacct(tmp_path)
    cache_file = str(tmp_path / "cache" / "sacct.json")
    facts, note = job_facts(["42", "101", "999"], FactsCache(cache_file), exe)
    assert facts["42"]["user"] == "alice" and facts["101"]["job"] == "100+1"
    assert note.startswith("sacct knows nothing of 1 job(s) (999)")
    assert sorted(json.load(open(cache_file))["jobs"]) == ["42"]  # running 101 not kept
    facts, note = job_facts(["42", "101"], FactsCache(cache_file), exe)
    assert calls(tmp_path)[-1][-1] == "101"  # the finished job came from the cache
    # no sacct: the cache still answers for finished jobs, and the note says what is missing
    facts, note = job_facts(["42", "101"], FactsCache(cache_file), str(tmp_path / "nope"))
    assert list(facts) == ["42"] and "sacct is not installed" in note and "from the cache" in note


def _printing(tmp_path, name: str, data: bytes) -> str:
    """A program that prints these bytes, whatever it is asked."""
    (tmp_path / f"{name}.out").write_bytes(data)
    exe = tmp_path / name
    exe.write_text(f"#!{sys.executable}\nimport sys\n"
                   f"sys.stdout.buffer.write(open({str(tmp_path / f'{name}.out')!r}, 'rb').read())\n")
    exe.chmod(0o755)
    return str(exe)


def test_output_that_is_not_utf8_is_read(tmp_path):
    """A job named in Latin-1 (b'caf\\xe9'): was a UnicodeDecodeError (a report traceback); now its
    name holds U+FFFD and every other fact is read, through subprocess.run and through Runner."""
    exe = _printing(tmp_path, "sacct", b"42|42|alice|physics|batch|caf\xe9|COMPLETED|s|e|00:05:00|node1\n")
    for run in (subprocess.run, Runner()):
        facts = run_sacct(["42"], sacct=exe, run=run)
        assert facts["42"]["job_name"] == "caf\ufffd" and facts["42"]["user"] == "alice"
    exe = _printing(tmp_path, "squeue", b"125|123_2\n7|7_\xe9\n")
    assert run_squeue(["125", "7"], squeue=exe) == {"125": "123_2", "7": "7_\ufffd"}


@pytest.mark.parametrize("text,kept", [
    ('{"jobs": {"1": {"job": "1", "state": ["x"], "end": "e"}}}', []),  # was a TypeError in is_final
    ('{"jobs": {"1": {"job": "1", "state": "COMPLETED", "end": "e"}, "2": {"state": 3}, "3": []}}', ["1"]),
    ("[" * 100000, []),  # was a RecursionError from json.load
    ("{", []), ("null", []), ('{"jobs": [1]}', []), ("", []),
])
def test_a_cache_file_ceemsnet_did_not_write_is_ignored(tmp_path, caplog, text, kept):
    path = tmp_path / "sacct.json"
    path.write_text(text)
    cache = FactsCache(str(path))
    assert sorted(cache.jobs) == kept and all(is_final(v) for v in cache.jobs.values())
    assert "ignoring" in caplog.text
    facts, note = job_facts(["1"], cache, sacct=str(tmp_path / "nope"))
    assert list(facts) == kept and (note is None or "\n" not in note)


def test_names_map_array_and_het_ids_once(tmp_path):
    exe = fake_sacct(tmp_path)
    clock = Clock()
    names = SlurmNames(exe, clock=clock, squeue="none")
    names.learn({"125", "101", "42", "999"})
    assert [names.display(j) for j in ("125", "101", "42", "999")] == ["123_2", "100+1", "42", "999"]
    names.learn({"125", "999"})          # known, and unknown asked within `retry`: no call
    assert len(calls(tmp_path)) == 1
    clock.t += 31
    names.learn({"125", "999"})          # the unknown one is asked again
    assert calls(tmp_path)[-1][-1] == "999"


def fake_squeue(tmp_path, jobs: dict[str, str], rc: int = 0, err: str = "") -> str:
    """A squeue on PATH that logs its argv and prints `%A|%i` of the asked ids slurmctld 'knows'
    (`jobs`: raw -> shown); one unknown id asked alone fails as squeue does."""
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    script = d / "squeue"
    script.write_text(f"""#!{sys.executable}
import json, sys
with open({str(d / 'squeue.jsonl')!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
if {rc}:
    sys.stderr.write({err!r})
    sys.exit({rc})
args = sys.argv[1:]
assert args[:7] == ["-h", "-a", "-t", "all", "-o", "%A|%i", "-j"], args
ids = args[7].split(",")
jobs = {jobs!r}
if len(ids) == 1 and ids[0] not in jobs:
    sys.stderr.write("slurm_load_jobs error: Invalid job id specified\\n")
    sys.exit(1)
for i in ids:
    if i in jobs:
        print(i + "|" + jobs[i])
""")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_names_ask_squeue_first_then_sacct_for_the_rest(tmp_path):
    # slurmctld knows the running array task 125 and a pending array's own record (no cgroup has it);
    # sacct is asked only for what squeue did not know
    sq = fake_squeue(tmp_path, {"125": "123_2", "130": "130_[1-5]"})
    names = SlurmNames(fake_sacct(tmp_path), squeue=sq)
    names.learn({"125", "101", "130"})
    assert [names.display(j) for j in ("125", "101", "130")] == ["123_2", "100+1", "130"]
    (asked_sacct,) = calls(tmp_path)
    assert asked_sacct[asked_sacct.index("-j") + 1].split(",") == ["101", "130"]


def test_names_squeue_alone_unknown_id_is_no_failure(tmp_path, caplog):
    sq = fake_squeue(tmp_path, {})
    names = SlurmNames("none", squeue=sq)
    names.learn({"77"})
    assert names.display("77") == "77"
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_names_squeue_failing_falls_back_to_sacct_and_warns_once(tmp_path, caplog):
    sq = fake_squeue(tmp_path, {}, rc=1, err="squeue: error: Unable to contact slurm controller\n")
    clock = Clock()
    names = SlurmNames(fake_sacct(tmp_path), squeue=sq, clock=clock)
    names.learn({"125"})
    names.learn({"126"})
    assert names.display("125") == "123_2"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "squeue failed: squeue: error: Unable to contact slurm controller" in warned[0]


def test_names_without_sacct_keep_raw_ids(tmp_path, caplog):
    names = SlurmNames(str(tmp_path / "nope"), squeue="none")
    names.learn({"125"})
    names.learn({"126"})
    assert names.display("125") == "125"
    assert len([r for r in caplog.records if "not installed" in r.getMessage()]) == 1


def test_add_units_labels_arrays_and_steps_as_slurm_shows_them(tmp_path):
    names = SlurmNames(fake_sacct(tmp_path), squeue="none")
    f = Family("ceemsnet_net_egress_bytes", "h", "counter", ("cgroup", "proto", "family"), [
        ((f"{V2}/job_125/step_batch", "tcp", "ipv4"), 5),
        ((f"{V2}/job_125/step_0", "tcp", "ipv4"), 7),
        ((f"{V2}/job_101/step_interactive", "tcp", "ipv4"), 1),
        ((f"{V2}/sEKNKTV3WPV500/step_extern", "tcp", "ipv4"), 2),
    ])
    out = {x.name: x for x in add_units([f], "slurm", None, names)}
    assert [r[0][3:] for r in out["ceemsnet_net_egress_bytes"].rows] == [
        ("123_2", "123_2.batch"), ("123_2", "123_2.0"), ("100+1", "100+1.interactive"),
        ("sEKNKTV3WPV500", "sEKNKTV3WPV500.extern")]
    assert out["ceemsnet_job_net_egress_bytes"].rows == [
        (("100+1", "tcp", "ipv4"), 1), (("123_2", "tcp", "ipv4"), 12), (("sEKNKTV3WPV500", "tcp", "ipv4"), 2)]


# ---- the aggregate fold in the exporter ---------------------------------

TASKS = [f"{V2}/job_7/step_0/user/task_{t}" for t in range(4)] + [f"{V2}/job_7/step_batch/slurm",
                                                                  f"{V2}/job_8/step_1/user/task_0", "/other"]


def _series(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.mark.parametrize("seed", range(6))
def test_fold_is_the_exact_sum_and_never_goes_down(seed):
    """Three exporters' CounterMaps over the same counts (task, step, job): every folded series
    is the sum of the task series folding into it, the incremental rendering equals the full
    one, and no folded series goes down as tasks are removed and retired."""
    rng = random.Random(seed)
    clock = Clock()
    alive: dict[int, bool] = {}
    paths: dict[int, str] = {}
    views = {}
    for level in ("task", "step", "job"):
        for src in (OldSource, RawSource):
            m = FakeMap("net_stats", pack_net_key, decode_net, 8, 24, random.Random(seed))
            f = None if level == "task" else (lambda p, lv=level: fold(p, lv))
            life = Lifecycle("/unused", retention=1e9, clock=clock, alive=lambda c, p: alive.get(c, False), fold=f)
            views[(level, src.__name__)] = (m, CounterMap(src(m), net_families, Resolver(paths), life))
    last: dict = {}
    next_id = 10
    for rnd in range(30):
        clock.t += 1
        if rng.random() < 0.5 or not any(alive.values()):
            next_id += 1
            paths[next_id] = rng.choice(TASKS)
            alive[next_id] = True
        live = [c for c, a in alive.items() if a]
        for _ in range(rng.randrange(6)):
            key = (rng.choice(live),)
            idx = net_index(rng.randrange(2), 0, rng.randrange(2))
            m0 = views[("task", "OldSource")][0]
            cur = m0.data.get(key, [(0,) * 24] * NCPUS)
            new = [tuple(v + (rng.choice((1, 100, 1500)) if 3 * idx <= w < 3 * idx + 3 else 0)
                         for w, v in enumerate(cpu)) for cpu in cur]
            for m, _ in views.values():
                m.put(key, new)
        if rng.random() < 0.3:  # a task ends: its cgroup goes, its counts retire
            alive[rng.choice(live)] = False
        text = {}
        for k, (_, cm) in views.items():
            text[k] = render_text(merge_families(cm.collect()))
        for level in ("task", "step", "job"):
            assert text[(level, "OldSource")] == text[(level, "RawSource")], (rnd, level)
        task = _series(text[("task", "RawSource")])
        for level in ("step", "job"):
            got = _series(text[(level, "RawSource")])
            want: dict = {}
            for (name, labels), v in task.items():
                if name.startswith("ceemsnet_net_"):
                    labels = tuple((n, fold(x, level) if n == "cgroup" else x) for n, x in labels)
                    want[(name, labels)] = want.get((name, labels), 0) + v
            assert {k: v for k, v in got.items() if k[0].startswith("ceemsnet_net_")} == want, (rnd, level)
            for k, v in got.items():
                if not k[0].startswith("ceemsnet_net_"):
                    continue
                assert v >= last.get((level, k), 0), (rnd, level, k)
                last[(level, k)] = v


def test_a_folded_series_expires_whole():
    """Retention runs per folded series: a task retired long ago stays while its step has
    live tasks, and all of the step's retired tasks go together."""
    clock = Clock()
    alive = {1: True, 2: True}
    paths = {1: f"{V2}/job_7/step_0/user/task_0", 2: f"{V2}/job_7/step_0/user/task_1"}
    life = Lifecycle("/unused", retention=10, clock=clock, alive=lambda c, p: alive[c],
                     fold=lambda p: fold(p, "step"))
    stats = {(1, 0, 0, 0): (5, 1, 0), (2, 0, 0, 0): (7, 1, 0)}
    life.process(stats, paths, lambda k: True)
    alive[1] = False
    life.process(stats, paths, lambda k: True)
    clock.t = 50                         # task_0 retired 50 s ago; task_1 lives
    out, _ = life.process({(2, 0, 0, 0): (7, 1, 0)}, paths, lambda k: True)
    assert sum(v[0] for v in out.values()) == 12
    alive[2] = False
    life.process({(2, 0, 0, 0): (7, 1, 0)}, paths, lambda k: True)
    clock.t = 55
    out, _ = life.process({}, paths, lambda k: True)
    assert sum(v[0] for v in out.values()) == 12   # both retired, within retention of the series
    clock.t = 70
    assert life.process({}, paths, lambda k: True)[0] == {}


# ---- the report's join ------------------------------------------------------

def _store(tmp_path):
    db = str(tmp_path / "acct.db")
    if os.path.exists(db):
        return db
    f = Family("ceemsnet_net_egress_bytes", "h", "counter", ("cgroup", "proto", "family"), [
        ((f"{V2}/job_42/step_0", "tcp", "ipv4"), 100),
        ((f"{V2}/job_42/step_batch", "tcp", "ipv4"), 10),
        ((f"{V2}/job_125/step_0", "tcp", "ipv4"), 7),
        ((f"{V2}/job_101/step_0", "tcp", "ipv4"), 3),
        ((f"{V2}/job_999/step_0", "tcp", "ipv4"), 1),
    ])
    s = Store(db, slurm_job)
    s.write(totals_from_families([f]))
    s.close()
    return db


def report(tmp_path, *args, path_dirs=None):
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join((path_dirs or []) + ["/usr/bin", "/bin"])
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "report", f"--storage.path={_store(tmp_path)}",
                        f"--slurm.sacct-cache={tmp_path / 'cache.json'}", "--format=json", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    try:
        out = json.loads(p.stdout)
    except ValueError:
        out = p.stdout
    return p.returncode, out, p.stderr


def test_report_joins_sacct_facts(tmp_path):
    fake_sacct(tmp_path)
    rc, rows, err = report(tmp_path, path_dirs=[str(tmp_path / "bin")])
    assert rc == 0, err
    by = {r["job"]: r for r in rows}
    assert sorted(by) == ["100+1", "123_2", "42", "999"]
    j = by["42"]
    assert (j["job_id"], j["net_egress_bytes"], j["user"], j["account"], j["partition"], j["job_name"],
            j["state"], j["start"], j["end"], j["elapsed"], j["nodes"]) == (
        "42", 110, "alice", "physics", "batch", "two-steps", "COMPLETED", "2026-11-23T10:00:00",
        "2026-11-23T10:05:00", "00:05:00", "node1")
    assert by["123_2"]["job_id"] == "125" and by["999"]["user"] is None
    assert err.strip() == "ceemsnet report: sacct knows nothing of 1 job(s) (999): their rows carry no SLURM facts"
    rc, users, err = report(tmp_path, "--by=user", path_dirs=[str(tmp_path / "bin")])
    assert [(u["user"], u["net_egress_bytes"], u["jobs"]) for u in users] == [
        ("alice", 110, 1), ("bob", 7, 1), ("carol", 3, 1)]
    assert "1 job(s) with no user from sacct left out" in err
    rc, accts, err = report(tmp_path, "--by=account", path_dirs=[str(tmp_path / "bin")])
    assert [(a["account"], a["net_egress_bytes"]) for a in accts] == [("bio", 3), ("chem", 7), ("physics", 110)]
    rc, one, err = report(tmp_path, "--job=123_2", path_dirs=[str(tmp_path / "bin")])
    assert [(r["job"], r["net_egress_bytes"]) for r in one] == [("123_2", 7)]
    rc, cg, err = report(tmp_path, "--by=cgroup", path_dirs=[str(tmp_path / "bin")])
    assert {r["cgroup"]: (r["job"], r["user"]) for r in cg}[f"{V2}/job_125/step_0"] == ("123_2", "bob")


def test_report_without_sacct_still_works_and_says_what_is_missing(tmp_path):
    rc, rows, err = report(tmp_path, f"--slurm.sacct={tmp_path}/no/sacct")
    assert rc == 0, err
    assert sorted((r["job"], r["net_egress_bytes"], r["user"]) for r in rows) == [
        ("101", 3, None), ("125", 7, None), ("42", 110, None), ("999", 1, None)]
    lines = err.strip().splitlines()
    assert lines == ["ceemsnet report: sacct is not installed (not on PATH): rows carry no user, account, "
                     "partition, job_name, state, start, end, elapsed, nodes"]
    rc, users, err = report(tmp_path, "--by=user", f"--slurm.sacct={tmp_path}/no/sacct")  # v2 paths carry no uid either: no rows, still exit 0
    assert rc == 0 and users == []
    fake_sacct(tmp_path, rc=1, err="sacct: error: slurmdbd: Connection refused\n")
    rc, rows, err = report(tmp_path, "--format=table", path_dirs=[str(tmp_path / "bin")])
    assert rc == 0 and "TOTAL" in rows, err
    assert "sacct failed: sacct: error: slurmdbd: Connection refused" in err


def test_sacct_seconds_become_iso_times_with_the_offset():
    start, end = 1796649420, 1796649803
    out = f"42|42|alice|acct|debug|name|COMPLETED|{start}|{end}|00:06:23|node1\n"
    facts = parse_sacct(out)["42"]
    for k, ts in (("start", start), ("end", end)):
        got = datetime.datetime.fromisoformat(facts[k])
        assert got.utcoffset() is not None and got.timestamp() == ts, facts
    # an older cache's (or a fake sacct's) ISO text stays as it is
    assert parse_sacct(out.replace(str(start), "2026-12-07T13:22:53+0000"))["42"]["start"] == "2026-12-07T13:22:53+0000"
