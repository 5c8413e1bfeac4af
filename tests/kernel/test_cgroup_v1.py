"""Attribution on a cgroup v1 controller hierarchy (--cgroup.hierarchy=v1:memory).

The test cgroup is made below this test process's own memory cgroup, and
only the test's child moves into it: no process leaves the cgroup it was
started in on a v1 hierarchy.
"""

import json
import os
import subprocess
import tempfile
import uuid

import pytest

from ceemsnet.attribution.cgroups import parse_v1_mounts

from .helpers import Cgroup, Exporter, require_program, traffic_argv
from .peer import Peer



def own_v1_cgroup(controller):
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if controller in ctrls.split(","):
                return path
    return None


@pytest.fixture
def v1_cgroup():
    """(controller, Cgroup) of a fresh v1 cgroup.

    Uses the host's v1 memory hierarchy where there is one (hybrid hosts,
    RHEL 8); on cgroup2-only systems (the VMs) mounts a v1 hierarchy of
    net_cls, a controller cgroup2 never takes, and unmounts it after.
    """
    with open("/proc/self/mountinfo") as f:
        mounts = parse_v1_mounts(f.read())
    mounted_here = None
    if "memory" in mounts and own_v1_cgroup("memory") is not None:
        controller, mount = "memory", mounts["memory"]
    elif "net_cls" in mounts:
        controller, mount = "net_cls", mounts["net_cls"]
    else:
        mounted_here = tempfile.mkdtemp(prefix="ceemsnet-v1-")
        p = subprocess.run([require_program("mount"), "-t", "cgroup", "-o", "net_cls", "ceemsnet-test", mounted_here],
                           capture_output=True, text=True)
        if p.returncode != 0:
            os.rmdir(mounted_here)
            pytest.skip(f"no cgroup v1 hierarchy can be mounted on {os.uname().release}: {p.stderr.strip()}")
        controller, mount = "net_cls", mounted_here
    own = own_v1_cgroup(controller) or "/"
    cg = Cgroup(mount, f"{own.strip('/')}/ceemsnet-test-{os.getpid()}-{uuid.uuid4().hex[:8]}".lstrip("/"))
    try:
        yield controller, cg
    finally:
        cg.remove()
        if mounted_here:
            subprocess.run(["umount", mounted_here], check=False)
            os.rmdir(mounted_here)


def test_exact_bytes_on_a_v1_hierarchy(v1_cgroup, spawn):
    controller, cg = v1_cgroup
    e = Exporter(extra=(f"--cgroup.hierarchy=v1:{controller}",))
    peer = Peer()
    try:
        sizes = [100, 2000, 777]
        tally = json.loads(spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": sizes}]),
                                 cg).go())
        assert tally["udp/ipv4/egress"][0] == sum(sizes)
        s = e.samples()
        lab = (("cgroup", cg.rel), ("family", "ipv4"), ("proto", "udp"))
        assert s.get(("ceemsnet_net_egress_bytes_total", lab)) == sum(sizes)
        assert s.get(("ceemsnet_net_ingress_bytes_total", lab)) == sum(sizes)
        assert s.get(("ceemsnet_net_egress_calls_total", lab)) == len(sizes)
    finally:
        peer.close()
        rc, err = e.stop()
    assert rc == 0, err
