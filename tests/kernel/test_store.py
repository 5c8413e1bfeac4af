"""The accounting store: exact per-job totals across step removal, restart and crash."""

import json
import os
import signal
import subprocess
import sys
import time

from .helpers import ROOT, Exporter, host_only, traffic_argv
from .peer import Peer


def report(db, job):
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "report", f"--storage.path={db}", "--by=job",
                        "--format=json", f"--job={job}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout)
    assert row["job"] == job
    return row


def send(spawn, cg, peer, size):
    spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [size]}]), cg).go()


@host_only("the store's totals across removal, restart and crash are user space, the same with every hook family")
def test_job_totals_through_removal_restart_and_crash(slurm_tree, spawn, tmp_path):
    job, steps = slurm_tree
    db = str(tmp_path / "accounting.db")
    flags = ("--unit=slurm", f"--storage.path={db}", "--storage.interval=1")
    peer = Peer()
    try:
        e = Exporter(extra=flags)
        send(spawn, steps["step_0"], peer, 1000)
        e.samples()                     # the step's counts seen ...
        os.rmdir(steps["step_0"].path)  # ... then the step cgroup goes
        rc, err = e.stop()              # SIGTERM writes the store
        assert rc == 0, err
        row = report(db, job)
        assert (row["net_egress_bytes"], row["net_ingress_bytes"], row["net_egress_calls"]) == (1000, 1000, 1)
        assert row["vfs_read_bytes"] is None and row["skb_egress_bytes"] is None  # collectors not run: null

        e = Exporter(extra=flags)       # a restart continues the totals
        send(spawn, steps["step_1"], peer, 2000)
        rc, err = e.stop()
        assert rc == 0, err
        assert report(db, job)["net_egress_bytes"] == 3000

        e = Exporter(extra=flags)       # a crash loses at most one interval
        send(spawn, steps["step_1"], peer, 500)
        time.sleep(2.5)                 # more than two --storage.interval
        e.proc.send_signal(signal.SIGKILL)
        e.proc.wait(timeout=30)
        assert report(db, job)["net_egress_bytes"] == 3500
    finally:
        peer.close()


def test_rdma_columns_without_rdma_traffic(slurm_tree, spawn, tmp_path):
    """--collectors=net,rdma with the store: the store takes the rdma subsystem (a store that did not
    know it refused to open), and a job that moved no RDMA bytes has its rdma columns null beside its
    exact net bytes (this host has no RDMA device; tests/kernel/test_rdma.py counts them in the VMs)."""
    job, steps = slurm_tree
    db = str(tmp_path / "accounting.db")
    peer = Peer()
    try:
        e = Exporter(extra=("--unit=slurm", f"--storage.path={db}", "--storage.interval=1"), collectors="net,rdma")
        send(spawn, steps["step_0"], peer, 1500)
        e.samples()
        rc, err = e.stop()
        assert rc == 0, err
        row = report(db, job)
        assert (row["net_egress_bytes"], row["net_ingress_bytes"]) == (1500, 1500)
        assert (row["rdma_egress_bytes"], row["rdma_ingress_bytes"]) == (None, None)
        p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "report", f"--storage.path={db}", "--by=job",
                            f"--job={job}"], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        header, line = p.stdout.splitlines()[:2]
        assert header.split()[-4:] == ["RDMA", "OUT", "RDMA", "IN"] and line.split()[-2:] == ["-", "-"], p.stdout
    finally:
        peer.close()
