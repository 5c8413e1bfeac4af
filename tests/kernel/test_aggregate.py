"""--cgroup.aggregate with real cgroups and real bytes: task, step and job give the same sums.

A SLURM cgroup/v2-shaped tree is made for real below the cgroup2 root:
system.slice/slurmstepd.scope/job_<j>/step_<s>/user/task_<t>, a child in
each task cgroup moving known TCP and UDP bytes over loopback. Three
exporters run at once, one per level, and see the same traffic: each
level's series must be the exact sums of the task series folding into it,
the per-job sums must be equal at every level and equal to the bytes moved,
the series counts must be those docs/reports.md gives, and a task cgroup
removed between scrapes must leave its step's and job's counters where
they were. A restart with pins then changes the level (step -> job): the
retired task's counts, kept in the pinned ledger, are still in the sum. And
restarts through task -> job -> step with bytes moved at each level and while
no exporter runs: the store's and Prometheus' reports of the job are exactly
the bytes moved (the new level's series carry the old counts: counted once).
"""

import datetime as dt
import json
import os
import random
import subprocess
import sys
import time

import pytest

from ..promserver import PROMETHEUS, PrometheusServer, free_port
from .helpers import ROOT, Cgroup, Exporter, host_only, traffic_argv
from .peer import reply_size
from . import test_continuity

exporter_args = test_continuity.exporter_args
peer = test_continuity.peer  # its fixture, used here too (pin_path is in conftest.py)

# the fold is arithmetic in user space over the counts every hook family gives: the host run covers it
# (about 3 min per VM run otherwise). The step exporter below counts in the hash layout (--net.slots=0),
# the others in the slots layout. (With --unit the series served come from the renderer over all
# counts; tests/unit/test_slurm.py checks that the incremental rendering folds the same.)
pytestmark = host_only("the fold does not depend on the hook family")

# step -> the TCP bytes each of its tasks sends (one task per entry)
STEPS = {"step_0": [10_000, 20_000], "step_1": [30_000], "step_batch": [4_000]}
UDP = 1_500  # and each task sends one UDP datagram of this size
BASE = ("--unit=slurm", "--slurm.sacct=none", "--cgroup.retention=600")


@pytest.fixture
def slurm_tasks(cgroup2_root):
    """{(step, t): Cgroup} below a fresh job_<j>; yields (job id, job Cgroup, tasks). All made here is removed."""
    job = str(random.randint(10**8, 10**9))
    made = []

    def mk(rel):
        d = Cgroup(cgroup2_root, rel, exist_ok=True)
        if d.created:
            made.append(d)
        return d

    mk("system.slice")
    mk("system.slice/slurmstepd.scope")
    jd = mk(f"system.slice/slurmstepd.scope/job_{job}")
    tasks = {}
    for step, sizes in STEPS.items():
        mk(f"{jd.rel[1:]}/{step}")
        mk(f"{jd.rel[1:]}/{step}/user")
        for t in range(len(sizes)):
            tasks[(step, t)] = mk(f"{jd.rel[1:]}/{step}/user/task_{t}")
    yield job, jd, tasks
    for d in reversed(made):
        if os.path.isdir(d.path):
            d.remove()


def move(spawn, peer, cg, tcp):
    spawn(traffic_argv([{"op": "tcp", "family": 4, "addr": peer.tcp4, "send": tcp, "expect": reply_size(tcp)},
                        {"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [UDP]}]), cg).go()


def egress(samples, below: str) -> dict[str, float]:
    """{cgroup: TCP+UDP egress bytes} of the series below `below`."""
    out: dict[str, float] = {}
    for (name, labels), v in samples.items():
        cg = dict(labels).get("cgroup", "")
        if name == "ceemsnet_net_egress_bytes_total" and (cg == below or cg.startswith(below + "/")):
            out[cg] = out.get(cg, 0) + v
    return out


def job_sum(samples, job) -> float:
    return sum(v for (name, labels), v in samples.items()
               if name == "ceemsnet_job_net_egress_bytes_total" and ("job", job) in labels)


def series_below(samples, below: str) -> int:
    return sum(1 for (name, labels), _ in samples.items()
               if name.startswith("ceemsnet_net_") and dict(labels).get("cgroup", "").startswith(below))


def test_task_step_and_job_levels_give_the_same_exact_sums(slurm_tasks, spawn, peer):
    job, jd, tasks = slurm_tasks
    ex = {lv: Exporter(extra=BASE + (f"--cgroup.aggregate={lv}",) + (("--net.slots=0",) if lv == "step" else ()))
          for lv in ("task", "step", "job")}
    try:
        for (step, t), cg in tasks.items():
            move(spawn, peer, cg, STEPS[step][t])
        total = sum(sum(s) for s in STEPS.values()) + UDP * len(tasks)
        s = {lv: e.samples() for lv, e in ex.items()}
        # task: every task cgroup its own series, exactly its bytes
        assert egress(s["task"], jd.rel) == {cg.rel: STEPS[st][t] + UDP for (st, t), cg in tasks.items()}
        # step: the sum of its tasks; job: one series, everything
        assert egress(s["step"], jd.rel) == {f"{jd.rel}/{st}": sum(sz) + UDP * len(sz) for st, sz in STEPS.items()}
        assert egress(s["job"], jd.rel) == {jd.rel: total}
        assert {lv: job_sum(x, job) for lv, x in s.items()} == {"task": total, "step": total, "job": total}
        # series counts (docs/reports.md, "Series per job"): a cgroup's series set, times tasks, steps or 1
        per = series_below(s["task"], tasks[("step_0", 0)].rel)
        assert per > 0
        assert [series_below(s[lv], jd.rel) for lv in ("task", "step", "job")] == [
            per * len(tasks), per * len(STEPS), per]

        # task_1 of step_0 ends and its cgroup goes (its child has exited): nothing goes down
        tasks[("step_0", 1)].remove()
        before = s
        s = {lv: e.samples() for lv, e in ex.items()}
        for lv in ex:
            assert egress(s[lv], jd.rel) == egress(before[lv], jd.rel), lv
            assert job_sum(s[lv], job) == total, lv
        # more bytes in a task that lives: every level grows by exactly them
        move(spawn, peer, tasks[("step_0", 0)], 7_000)
        s = {lv: e.samples() for lv, e in ex.items()}
        assert {lv: job_sum(x, job) for lv, x in s.items()} == {lv: total + 7_000 + UDP for lv in ex}
        assert egress(s["step"], jd.rel)[f"{jd.rel}/step_0"] == 37_000 + 3 * UDP
        # the job ends: every cgroup of it goes, the job's own last; every level keeps its sums
        before = s
        for d, _, _ in sorted(os.walk(jd.path), key=lambda w: -w[0].count("/")):
            os.rmdir(d)
        s = {lv: e.samples() for lv, e in ex.items()}
        for lv in ex:
            assert egress(s[lv], jd.rel) == egress(before[lv], jd.rel), lv
            assert job_sum(s[lv], job) == total + 7_000 + UDP, lv
    finally:
        errs = [e.stop() for e in ex.values()]
    assert all(rc == 0 for rc, _ in errs), errs


def test_a_level_change_across_a_restart_keeps_retired_tasks(slurm_tasks, spawn, peer, pin_path):
    job, jd, tasks = slurm_tasks
    args = tuple(exporter_args(pin_path)) + BASE
    e = Exporter(extra=args + ("--cgroup.aggregate=step",))
    try:
        if not os.listdir(pin_path):
            pytest.skip("this kernel cannot pin the links")
        move(spawn, peer, tasks[("step_0", 0)], 10_000)
        move(spawn, peer, tasks[("step_0", 1)], 20_000)
        assert egress(e.samples(), jd.rel) == {f"{jd.rel}/step_0": 30_000 + 2 * UDP}
        tasks[("step_0", 1)].remove()     # retired by the running exporter, into the pinned ledger
        assert egress(e.samples(), jd.rel) == {f"{jd.rel}/step_0": 30_000 + 2 * UDP}
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    move(spawn, peer, tasks[("step_0", 0)], 5_000)   # while no exporter runs: the pinned programs count
    time.sleep(0.1)
    e = Exporter(extra=args + ("--cgroup.aggregate=job",))
    try:
        s = e.samples()
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    assert egress(s, jd.rel) == {jd.rel: 35_000 + 3 * UDP}
    assert job_sum(s, job) == 35_000 + 3 * UDP


def report(*args):
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "report", "--format=json", "--slurm.sacct=none", *args],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def test_level_changes_count_each_byte_once_in_the_store_and_prometheus(slurm_tasks, spawn, peer, pin_path,
                                                                         tmp_path):
    """Pinned counters continue across restarts that change the level task -> job -> step: the store's
    report and the Prometheus report of the job give exactly the bytes moved (each restart's new
    series carry the counts the old ones had: counted once), and so do their per-cgroup rows summed."""
    job, jd, tasks = slurm_tasks
    db = str(tmp_path / "accounting.db")
    port = free_port()
    args = tuple(exporter_args(pin_path)) + BASE + (f"--storage.path={db}", "--storage.interval=1")
    prom = PrometheusServer(tmp_path, [f"127.0.0.1:{port}"]) if PROMETHEUS else None
    sent = f'sum(ceemsnet_net_egress_bytes_total{{cgroup=~".*/job_{job}(/.*)?"}})'
    start = time.time()
    total = 0
    e = None
    try:
        for level, moves in (("task", [(("step_0", 0), 10_000), (("step_1", 0), 30_000)]),
                             ("job", [(("step_0", 1), 20_000)]),
                             ("step", [(("step_batch", 0), 4_000), (("step_0", 0), 1_000)])):
            e = Exporter(extra=args + (f"--cgroup.aggregate={level}",), port=port)
            if not os.listdir(pin_path):
                pytest.skip("this kernel cannot pin the links")
            for (step, t), tcp in moves:
                move(spawn, peer, tasks[(step, t)], tcp)
                total += tcp + UDP
            assert job_sum(e.samples(), job) == total, level   # the new level's series hold every count so far
            if prom:
                prom.wait_for(sent, total)                      # scraped before the stop
            rc, err = e.stop()
            assert rc == 0, err
            move(spawn, peer, tasks[("step_1", 0)], 2_000)     # while no exporter runs: the pinned programs count
            total += 2_000 + UDP
        e = Exporter(extra=args + ("--cgroup.aggregate=step",), port=port)  # the last gap's bytes seen
        if prom:
            prom.wait_for(sent, total)
        rc, err = e.stop()
        assert rc == 0, err
        until = time.time()

        (row,) = report(f"--storage.path={db}", f"--job={job}")
        assert row["net_egress_bytes"] == total
        rows = report(f"--storage.path={db}", "--by=cgroup", f"--job={job}")
        assert sum(r["net_egress_bytes"] for r in rows) == total
        assert min(r["net_egress_bytes"] for r in rows) >= 0
        if prom:
            iso = [dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")
                   for t in (start - 5, until)]
            prom_args = (f"--prometheus={prom.url}", f"--job={job}", f"--since={iso[0]}", f"--until={iso[1]}")
            (row,) = report(*prom_args)
            assert row["net_egress_bytes"] == total
            rows = report(*prom_args, "--by=cgroup")
            assert sum(r["net_egress_bytes"] for r in rows) == total
            assert min(r["net_egress_bytes"] for r in rows) >= 0
    finally:
        if e is not None:
            e.stop()
        if prom:
            prom.stop()
