"""Job names looked up in the background (BackgroundNames): a scrape never waits on SLURM.

Fake squeue and sacct programs (shell scripts in a temporary directory) that
hang for 60 s, or answer: learn() returns at once while they hang, the raw id
stays the label until an answer arrives, the hung programs (and their own
children) are killed at their timeout and at stop(), and nothing waits
without bound.
"""

import os
import stat
import time

from ceemsnet.attribution.slurm import BATCH, BackgroundNames, Runner
from ceemsnet.attribution.workloads import add_units
from ceemsnet.common.metrics import Family
from ceemsnet.serving.exporter import CeemsnetCollector

V2 = "/system.slice/slurmstepd.scope"


def script(tmp_path, name: str, body: str) -> str:
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    p = d / name
    p.write_text("#!/bin/sh\n" + body)
    p.chmod(p.stat().st_mode | stat.S_IXUSR)
    return str(p)


def hanging(tmp_path, name: str) -> str:
    """A program that notes its pid and hangs in a child of its own (`sleep` holds the pipes)."""
    return script(tmp_path, name, f"echo $$ >> {tmp_path}/{name}.pids\nsleep 60\n")


def pids(tmp_path, name):
    try:
        with open(tmp_path / f"{name}.pids") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def wait_until(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def test_learn_never_waits_on_a_hanging_squeue_or_sacct_and_stop_kills_them(tmp_path):
    names = BackgroundNames(hanging(tmp_path, "sacct"), hanging(tmp_path, "squeue"))
    try:
        t0 = time.monotonic()
        names.learn({"125", "42"})
        assert time.monotonic() - t0 < 0.5
        assert wait_until(lambda: pids(tmp_path, "squeue"))       # the lookup is in flight ...
        t0 = time.monotonic()
        names.learn({"126"})                                        # ... and another scrape does not wait
        assert time.monotonic() - t0 < 0.5
        assert names.display("125") == "125"                        # no answer: the raw id
    finally:
        t0 = time.monotonic()
        names.stop()
        took = time.monotonic() - t0
    assert took < 2.5, took
    (pid,) = pids(tmp_path, "squeue")
    assert wait_until(lambda: not group_alive(pid), 5), "the hung squeue's process group outlived stop()"
    assert not names._thread.is_alive()
    assert pids(tmp_path, "sacct") == []                            # never started: stop came first


def test_a_hanging_program_times_out_and_backs_off(tmp_path):
    names = BackgroundNames(hanging(tmp_path, "sacct"), "none", timeout=0.5, retry=30.0)
    try:
        names.learn({"125"})
        assert wait_until(lambda: names.rounds == 1, 5)
        (pid,) = pids(tmp_path, "sacct")
        assert wait_until(lambda: not group_alive(pid), 5)         # killed, its sleep too, at the timeout
        names.learn({"126"})                                        # within the back-off: sacct not run again
        assert wait_until(lambda: names.rounds == 2, 5)
        assert len(pids(tmp_path, "sacct")) == 1
        assert names.display("126") == "126"
    finally:
        names.stop()


def test_an_answer_arriving_later_names_the_series(tmp_path):
    gate = tmp_path / "gate"
    sq = script(tmp_path, "squeue", f"while [ ! -e {gate} ]; do sleep 0.05; done\necho '125|123_2'\n")
    names = BackgroundNames("none", sq)
    f = Family("ceemsnet_net_egress_bytes", "h", "counter", ("cgroup", "proto", "family"),
               [((f"{V2}/job_125/step_0", "udp", "ipv4"), 7)])

    def labels():
        out = {x.name: x for x in add_units([f], "slurm", None, names)}
        return out["ceemsnet_net_egress_bytes"].rows[0][0][3:]
    try:
        assert labels() == ("125", "125.0")                         # asked; no answer yet
        gate.touch()
        assert wait_until(lambda: names.rounds == 1, 10)
        assert labels() == ("123_2", "123_2.0")                     # the next scrape has SLURM's name
    finally:
        names.stop()


def test_ids_waiting_are_bounded(tmp_path):
    names = BackgroundNames(hanging(tmp_path, "sacct"), "none")
    try:
        names.learn({"1"})
        assert wait_until(lambda: pids(tmp_path, "sacct"))         # the thread is busy
        for n in range(5):
            names.learn({str(i) for i in range(2 + n * 10 * BATCH, 2 + (n + 1) * 10 * BATCH)})
        assert len(names._pending) == BackgroundNames.MAX_PENDING
    finally:
        names.stop()


def test_a_stopped_runner_starts_nothing(tmp_path):
    r = Runner()
    r.stop()
    try:
        r(["true"], timeout=1)
    except OSError as e:
        assert "stopping" in str(e)
    else:
        raise AssertionError("a stopped Runner ran a program")


class Slurmish:
    name = "net"

    def collect(self):
        f = Family("ceemsnet_net_egress_bytes", "h", "counter", ("cgroup", "proto", "family"))
        f.add((f"{V2}/job_125/step_0", "udp", "ipv4"), 7)
        return [f]


def test_gather_with_hanging_programs_takes_no_longer(tmp_path):
    names = BackgroundNames(hanging(tmp_path, "sacct"), hanging(tmp_path, "squeue"))
    c = CeemsnetCollector([Slurmish()], [], {"version": "t"}, "slurm", names)
    try:
        times = []
        for _ in range(5):
            t0 = time.monotonic()
            fams = {f.name: f for f in c.gather()}
            times.append(time.monotonic() - t0)
        assert max(times) < 1.0, times
        assert fams["ceemsnet_net_egress_bytes"].rows[0][0][3] == "125"
    finally:
        names.stop()
