"""Job names looked up in the background: a real exporter whose squeue and sacct hang.

`ceemsnet serve --unit=slurm` with fake `--slurm.squeue` and `--slurm.sacct`
programs (shell scripts in the test's temporary directory) that sleep 60 s:
every scrape must take as long as without them (bound: 2 s, a correctness
bound, not a benchmark: the old code took 5 s per program), the series carry
the raw job id and the exact bytes, and SIGTERM still ends serve promptly,
killing the hung programs. A fake squeue that answers puts SLURM's name on
the series once its answer arrives, bytes unchanged.
"""

import os
import stat
import time

from .helpers import Exporter, host_only, traffic_argv
from .peer import Peer

pytestmark = host_only("the lookup is user space, the same on every kernel")


def script(tmp_path, name, body):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def hanging(tmp_path, name):
    return script(tmp_path, name, f"echo $$ >> {tmp_path}/{name}.pids\nsleep 60\n")


def started(tmp_path, name):
    try:
        return [int(x) for x in (tmp_path / f"{name}.pids").read_text().split()]
    except FileNotFoundError:
        return []


def group_alive(pid):
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def egress(samples, job):
    """{job label: bytes} of the job's per-cgroup egress series."""
    out = {}
    for (name, labels), v in samples.items():
        lab = dict(labels)
        if name == "ceemsnet_net_egress_bytes_total" and f"/job_{job}/" in lab.get("cgroup", ""):
            out[lab["job"]] = out.get(lab["job"], 0) + v
    return out


def test_hanging_squeue_and_sacct_never_slow_a_scrape(slurm_tree, spawn, tmp_path):
    job, steps = slurm_tree
    peer = Peer()
    e = Exporter(extra=("--unit=slurm", f"--slurm.squeue={hanging(tmp_path, 'squeue')}",
                        f"--slurm.sacct={hanging(tmp_path, 'sacct')}"))
    try:
        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [1000]}]), steps["step_0"]).go()
        times = []
        # 12 s of scrapes: squeue's 5 s timeout, then sacct's, both pass while scrapes go on
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            s = e.samples()
            times.append(time.monotonic() - t0)
            time.sleep(0.3)
        assert max(times) < 2.0, times
        assert started(tmp_path, "squeue") and started(tmp_path, "sacct")   # both were asked, in the background
        assert egress(s, job) == {job: 1000}                                 # no answer: the raw id, exact bytes
        t0 = time.monotonic()
        rc, err = e.stop()
        took = time.monotonic() - t0
        assert rc == 0, err
        assert took < 10, took
        pids = started(tmp_path, "squeue") + started(tmp_path, "sacct")
        deadline = time.monotonic() + 5
        while any(group_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(group_alive(p) for p in pids), "a hung squeue or sacct outlived serve"
    finally:
        e.stop()
        peer.close()


def test_an_answer_puts_slurms_name_on_the_series(slurm_tree, spawn, tmp_path):
    job, steps = slurm_tree
    gate = tmp_path / "gate"
    # squeue answers once the test lets it: the job is array task 7 of job <job - 1>
    sq = script(tmp_path, "squeue", f"while [ ! -e {gate} ]; do sleep 0.05; done\necho '{job}|{int(job) - 1}_7'\n")
    peer = Peer()
    e = Exporter(extra=("--unit=slurm", f"--slurm.squeue={sq}", "--slurm.sacct=none"))
    try:
        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [1000]}]), steps["step_0"]).go()
        assert egress(e.samples(), job) == {job: 1000}       # asked, no answer yet: the raw id
        gate.touch()
        name = f"{int(job) - 1}_7"
        deadline = time.monotonic() + 30
        while (got := egress(e.samples(), job)) != {name: 1000} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert got == {name: 1000}
        rc, err = e.stop()
        assert rc == 0, err
    finally:
        e.stop()
        peer.close()
