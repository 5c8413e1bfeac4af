"""--cgroup.hierarchy: which hierarchy attributes the work (pure, fixture texts)."""

import os

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.attribution.cgroups import CgroupResolver, choose_hierarchy, parse_proc_cgroups, parse_v1_mounts

PROC_CGROUPS = """\
#subsys_name	hierarchy	num_cgroups	enabled
cpuset	3	1	1
cpu	1	1	1
cpuacct	2	1	1
blkio	7	1	1
memory	4	45	1
devices	5	1	1
freezer	6	1	1
net_cls	0	1	1
"""
HYBRID = """\
30 22 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
35 30 0:31 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
"""
UNIFIED = "31 22 0:27 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
V1_ONLY = HYBRID.replace("31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n", "")


def test_parsers():
    assert parse_proc_cgroups(PROC_CGROUPS).index("memory") == 4
    m = parse_v1_mounts(HYBRID)
    assert m["memory"] == "/sys/fs/cgroup/memory"
    assert m["cpu"] == m["cpuacct"] == "/sys/fs/cgroup/cpu,cpuacct"
    assert "name=systemd" not in m and "xattr" not in m


def test_explicit_choices():
    h = choose_hierarchy("v1:memory", HYBRID, PROC_CGROUPS)
    assert (h.version, h.controller, h.subsys_index, h.root) == ("v1", "memory", 4, "/sys/fs/cgroup/memory")
    h = choose_hierarchy("v2", HYBRID, PROC_CGROUPS)
    assert (h.version, h.subsys_index, h.root) == ("v2", -1, "/sys/fs/cgroup/unified")
    for bad, msg in (("v1:net_cls", "not mounted"), ("v1:nope", "unknown cgroup controller"),
                     ("v3", "invalid"), ("v1:", "invalid")):
        with pytest.raises(CeemsnetError, match=msg):
            choose_hierarchy(bad, HYBRID, PROC_CGROUPS)
    with pytest.raises(CeemsnetError, match="no cgroup2"):
        choose_hierarchy("v2", V1_ONLY, PROC_CGROUPS)


# 7.3 (trixie-backports): /proc/cgroups leaves out the controllers v1 can no longer mount
PROC_CGROUPS_7 = """\
#subsys_name	hierarchy	num_cgroups	enabled
cpu	0	1	1
cpuacct	0	1	1
blkio	0	1	1
devices	0	1	1
freezer	0	1	1
net_cls	0	1	1
perf_event	0	1	1
"""
# its enum cgroup_subsys_id (bpftool btf dump of /sys/kernel/btf/vmlinux)
SUBSYS_IDS_7 = {"cpuset_cgrp_id": 0, "cpu_cgrp_id": 1, "cpuacct_cgrp_id": 2, "io_cgrp_id": 3, "memory_cgrp_id": 4,
                "devices_cgrp_id": 5, "freezer_cgrp_id": 6, "net_cls_cgrp_id": 7, "perf_event_cgrp_id": 8,
                "CGROUP_SUBSYS_COUNT": 14}


def test_v1_index_comes_from_btf_not_proc_cgroups_order():
    net_cls = HYBRID + "36 30 0:32 / /sys/fs/cgroup/net_cls rw,relatime - cgroup cgroup rw,net_cls\n"
    h = choose_hierarchy("v1:net_cls", net_cls, PROC_CGROUPS_7, subsys_ids=SUBSYS_IDS_7)
    assert h.subsys_index == 7  # /proc/cgroups order would say 5: another controller's cgroup
    blkio = HYBRID + "36 30 0:32 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio\n"
    assert choose_hierarchy("v1:blkio", blkio, PROC_CGROUPS_7, subsys_ids=SUBSYS_IDS_7).subsys_index == 3
    # without BTF's enum: /proc/cgroups order, right where it lists every controller
    assert choose_hierarchy("v1:net_cls", net_cls, PROC_CGROUPS).subsys_index == 7
    assert choose_hierarchy("v1:memory", HYBRID, PROC_CGROUPS, subsys_ids={}).subsys_index == 4


def test_auto():
    assert choose_hierarchy("auto", UNIFIED, PROC_CGROUPS).version == "v2"
    # hybrid without a slurm tree: cgroup2
    h = choose_hierarchy("auto", HYBRID, PROC_CGROUPS, isdir=lambda p: False)
    assert h.version == "v2" and "hybrid" in h.reason
    # SLURM on v1 (RHEL 8): the controller holding /slurm, freezer first as slurmd uses it for every job
    slurm = {"/sys/fs/cgroup/freezer/slurm", "/sys/fs/cgroup/memory/slurm"}
    h = choose_hierarchy("auto", HYBRID, PROC_CGROUPS, isdir=lambda p: p in slurm)
    assert (h.version, h.controller, h.subsys_index) == ("v1", "freezer", 6)
    h = choose_hierarchy("auto", V1_ONLY, PROC_CGROUPS, isdir=lambda p: False)
    assert (h.version, h.controller) == ("v1", "memory")


def test_old_kernel_v2_ids_match_on_low_32_bits(tmp_path):
    (tmp_path / "job").mkdir()
    ino = os.stat(tmp_path / "job").st_ino
    r = CgroupResolver(str(tmp_path), low32=True)
    with_generation = (1 << 32) | ino  # what 4.18's bpf_get_current_cgroup_id() returns
    assert r.resolve([with_generation]) == {with_generation: "/job"}
