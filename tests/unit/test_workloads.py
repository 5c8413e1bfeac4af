"""Workload parsers (SLURM job, systemd unit, Kubernetes pod) on real layouts, odd names included."""

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.attribution.workloads import add_units, folder, k8s_pod, resolve_kind, slurm_job, systemd_unit
from ceemsnet.common.metrics import Family

from .helpers import render_text


@pytest.mark.parametrize("path,job", [
    ("/slurm/uid_1000/job_42/step_0/task_0", "42"),
    ("/slurm/uid_1000/job_42", "42"),
    ("/slurm/uid_1000/job_42/step_batch", "42"),
    ("/slurm_node01/uid_0/job_7/step_extern", "7"),              # multiple slurmd per node
    ("/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0", "4242"),
    ("/system.slice/slurmstepd.scope/job_4242", "4242"),
    ("/system.slice/node01_slurmstepd.scope/job_9/step_1", "9"),
    ("/system.slice/slurmstepd.scope/system", None),              # slurmstepd itself
    ("/system.slice/virtme_slurmstepd.scope/slurmd", None),       # slurmd itself (IgnoreSystemd=yes)
    ("/system.slice/slurmstepd.scope/whatever/step_0", None),     # no job directory shape
    # 26.05's default: the job directory is the job's SLUID (cgroup.conf(5), CgroupJobIdPaths=no)
    ("/system.slice/slurmstepd.scope/sEKNKTV3WPV500/step_0/user/task_0", "sEKNKTV3WPV500"),
    ("/system.slice/slurmstepd.scope/sEKNKTV3WPV500/step_extern", "sEKNKTV3WPV500"),
    ("/system.slice/slurmd.service", None),
    ("/slurm/uid_1000", None),
    ("/", None),
    ("/user.slice/job_42", None),
])
def test_slurm(path, job):
    assert slurm_job(path) == job


@pytest.mark.parametrize("path,unit", [
    ("/system.slice/nginx.service", "nginx.service"),
    ("/user.slice/user-1000.slice/session-2.scope", "session-2.scope"),
    ("/system.slice/docker-abc.scope/init", "docker-abc.scope"),
    ("/user.slice/user-1000.slice", "user-1000.slice"),
    ("/machine.slice/my vm with spaces.service", "my vm with spaces.service"),
    ("/system.slice/ünïcode.service", "ünïcode.service"),
    ("/system.slice/a.service\n", "system.slice"),  # a name ending in a newline is no unit (`$` took it)
    ("/", None),
])
def test_systemd(path, unit):
    assert systemd_unit(path) == unit


@pytest.mark.parametrize("path,pod", [
    ("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/"
     "cri-containerd-0123abcd.scope", "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"),
    ("/kubepods.slice/kubepods-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice", "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"),
    ("/kubepods/besteffort/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/0123abcd", "1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901"),
    ("/system.slice/kubelet.service", None),
    ("/kubepods/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901\n", None),  # a sibling "pod<uid>\n" is no pod
])
def test_k8s(path, pod):
    assert k8s_pod(path) == pod


def test_names_ending_in_a_newline_do_not_fold():
    assert folder("systemd", "unit")("/system.slice/a.service\n/x") == "/system.slice/a.service\n/x"
    assert folder("k8s", "pod")("/kubepods/pod0123abcd-0000\n/c") == "/kubepods/pod0123abcd-0000\n/c"


def test_deep_trees():
    deep = "/slurm/uid_1/job_5" + "/x" * 500
    assert slurm_job(deep) == "5"
    assert systemd_unit("/a.slice" + "/d" * 500) == "a.slice"


def test_unit_kinds(tmp_path):
    assert resolve_kind("auto", str(tmp_path)) == "none"
    (tmp_path / "system.slice" / "slurmstepd.scope").mkdir(parents=True)
    assert resolve_kind("auto", str(tmp_path)) == "slurm"
    assert resolve_kind("k8s", str(tmp_path)) == "k8s"
    with pytest.raises(CeemsnetError):
        resolve_kind("lsf", str(tmp_path))


def test_add_units_labels_and_sums():
    f = Family("ceemsnet_net_egress_bytes", "h", "counter", ("cgroup", "proto", "family"), [
        (("/system.slice/slurmstepd.scope/job_42/step_0", "tcp", "ipv4"), 100),
        (("/system.slice/slurmstepd.scope/job_42/step_1", "tcp", "ipv4"), 20),
        (("/system.slice/slurmstepd.scope/job_42/step_batch", "udp", "ipv4"), 3),
        (("/system.slice/sshd.service", "tcp", "ipv4"), 9),
    ])
    g = Family("ceemsnet_build_info", "b", "gauge", ("version",), [(("x",), 1)])
    out = {x.name: x for x in add_units([f, g], "slurm")}
    assert out["ceemsnet_net_egress_bytes"].labels == ("cgroup", "proto", "family", "job", "step")
    assert out["ceemsnet_net_egress_bytes"].rows[0][0][3:] == ("42", "42.0")
    assert out["ceemsnet_net_egress_bytes"].rows[2][0][3:] == ("42", "42.batch")
    assert out["ceemsnet_net_egress_bytes"].rows[3] == (("/system.slice/sshd.service", "tcp", "ipv4", "", ""), 9)
    assert out["ceemsnet_job_net_egress_bytes"].rows == [(("42", "tcp", "ipv4"), 120), (("42", "udp", "ipv4"), 3)]
    assert out["ceemsnet_build_info"] is g
    assert "ceemsnet_job_net_egress_bytes_total{job=\"42\"" in render_text(list(out.values()))
    assert add_units([f], "none") == [f]


def test_refold_baselines_give_each_old_count_to_one_new_series():
    from ceemsnet.attribution.workloads import refold_baselines
    j = "/system.slice/slurmstepd.scope/job_9"
    t0, t1, u0 = f"{j}/step_0/user/task_0", f"{j}/step_0/user/task_1", f"{j}/step_1/user/task_0"
    # finer -> coarser: the tasks' last values are their step's baseline; the root cgroup's own
    # series, above every path, shares no counts with a job's
    assert refold_baselines({t0: 10, t1: 20, u0: 5, "/": 7}, {f"{j}/step_0": 35, f"{j}/step_1": 6, "/": 9},
                            "cgroup", "slurm:step") == {f"{j}/step_0": 30, f"{j}/step_1": 5, "/": 7}
    # coarser -> finer: the job's last value spread over its steps, never above what each holds
    new = {f"{j}/step_0": 70, f"{j}/step_1": 50, "/": 1000}
    b = refold_baselines({j: 100}, new, "slurm:job", "slurm:step")
    assert sum(b.values()) == 100 and "/" not in b and all(b[p] <= new[p] for p in b)
    # what no new series holds (expired meanwhile) goes nowhere
    assert refold_baselines({f"{j}/step_0": 10, f"{j}/step_0/slurm": 5}, {f"{j}/step_0": 12},
                            "slurm:task", "slurm:step") == {f"{j}/step_0": 12}
    assert refold_baselines({"/x": 10}, {"/y": 12}, "cgroup", "slurm:job") == {}


def test_add_units_labels_and_sums_rdma():
    """RDMA bytes (counter) and live objects (gauge) get the job and its sums; the port counters and
    the drops carry no cgroup and stay as they are; a queue pair with no known owner (cgroup "") no job."""
    s0, s1 = "/system.slice/slurmstepd.scope/job_42/step_0", "/system.slice/slurmstepd.scope/job_42/step_1"
    b = Family("ceemsnet_rdma_bytes", "h", "counter", ("cgroup", "device", "port", "direction"), [
        ((s0, "rxe0", "1", "egress"), 1000), ((s1, "rxe0", "1", "egress"), 24),
        ((s1, "rxe0", "1", "ingress"), 7), (("", "rxe0", "1", "egress"), 5)])
    o = Family("ceemsnet_rdma_objects", "h", "gauge", ("cgroup", "device", "type"), [
        ((s0, "rxe0", "qp"), 2), ((s1, "rxe0", "qp"), 1), ((s1, "rxe0", "mr"), 4)])
    p = Family("ceemsnet_rdma_port_bytes", "h", "counter", ("device", "port", "direction"),
               [(("mlx5_0", "1", "egress"), 9)])
    d = Family("ceemsnet_rdma_drops", "h", "counter", ("reason",), [(("objects map full",), 0)])
    out = {x.name: x for x in add_units([b, o, p, d], "slurm")}
    assert out["ceemsnet_rdma_port_bytes"] is p and out["ceemsnet_rdma_drops"] is d
    assert out["ceemsnet_rdma_bytes"].rows[3] == (("", "rxe0", "1", "egress", "", ""), 5)
    assert out["ceemsnet_job_rdma_bytes"].rows == [(("42", "rxe0", "1", "egress"), 1024),
                                                   (("42", "rxe0", "1", "ingress"), 7)]
    assert out["ceemsnet_rdma_objects"].labels == ("cgroup", "device", "type", "job", "step")
    j = out["ceemsnet_job_rdma_objects"]
    assert (j.kind, j.labels, j.rows) == ("gauge", ("job", "device", "type"),
                                          [(("42", "rxe0", "mr"), 4), (("42", "rxe0", "qp"), 3)])
    text = render_text(list(out.values()))
    assert 'ceemsnet_job_rdma_objects{job="42",device="rxe0",type="qp"} 3' in text
    assert 'ceemsnet_job_rdma_bytes_total{job="42",device="rxe0",port="1",direction="egress"} 1024' in text
