"""A SLURM-shaped cgroup v2 tree, created for real: per-job totals.

system.slice/slurmstepd.scope/job_<j>/{step_0,step_1,step_batch} with one
child each moving known bytes; the exporter (--unit=slurm) must report the
job's total as the sum over its steps, keep it when step_0 is removed (its
map keys freed), and keep it past --cgroup.retention while the job lives.
"""

import os
import time

from .helpers import Exporter, traffic_argv
from .peer import Peer
from .test_lifecycle import cgroup_ids_counted

STEPS = {"step_0": 1000, "step_1": 2000, "step_batch": 3000}


def test_job_totals_survive_their_steps(slurm_tree, spawn):
    job, steps = slurm_tree
    e = Exporter(extra=("--unit=slurm", "--cgroup.retention=1"))
    peer = Peer()
    try:
        for step, size in STEPS.items():
            spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [size]}]), steps[step]).go()
        total = sum(STEPS.values())
        job_key = ("ceemsnet_job_net_egress_bytes_total", (("family", "ipv4"), ("job", job), ("proto", "udp")))
        s = e.samples()
        assert s[job_key] == total
        for step, size in STEPS.items():
            k = ("ceemsnet_net_egress_bytes_total",
                 (("cgroup", steps[step].rel), ("family", "ipv4"), ("job", job), ("proto", "udp"),
                  ("step", f"{job}.{step[len('step_'):]}")))
            assert s[k] == size
        os.rmdir(steps["step_0"].path)
        assert e.samples()[job_key] == total            # the step is gone, its bytes are not
        assert steps["step_0"].id not in cgroup_ids_counted(e.proc.pid)
        time.sleep(1.5)                                   # past --cgroup.retention, the job still lives
        e.samples()
        assert e.samples()[job_key] == total
    finally:
        peer.close()
        rc, err = e.stop()
    assert rc == 0, err
