"""QpCounters (ceemsnet/collectors/rdma_counters.py) against a scripted RDMA netlink: one
counter per (cgroup, device, port), later QPs bound to it, a freed counter's bytes kept,
refusals recorded once and never retried, failures never failing a scrape. The kernel's
side (a real rxe device refusing) is tests/kernel/test_rdma_nl.py."""

import errno

from ceemsnet.collectors.rdma_counters import QpCounters, cgroup_of_pid, parse_proc_cgroup
from ceemsnet.runtime.rdmanl import MODE_AUTO, MODE_MANUAL, Counter, Device, Qp, RdmaNetlinkError

BYTES = {"rdma_tx_bytes": 0, "rdma_rx_bytes": 0}


class FakeNl:
    """A device set whose counters behave as the kernel's: bind makes or extends one,
    the last QP gone frees it."""

    def __init__(self, devices, refuse=None, port_names=BYTES, mode=0):
        self.devs = devices
        self.qp_list: dict[int, list[Qp]] = {d.index: [] for d in devices}
        self.ctrs: dict[int, dict[int, Counter]] = {d.index: {} for d in devices}
        self.refuse = refuse          # errno every bind answers
        self.port_names = dict(port_names)
        self.mode = mode
        self.binds = []
        self.next_id = 1
        self.closed = False

    def devices(self):
        return self.devs

    def qps(self, dev):
        return list(self.qp_list[dev])

    def counters(self, dev, port=None):
        live = {q.lqpn for q in self.qp_list[dev]}
        for cid, c in list(self.ctrs[dev].items()):
            qpns = tuple(n for n in c.qpns if n in live)
            if not qpns:
                del self.ctrs[dev][cid]
            else:
                self.ctrs[dev][cid] = Counter(dev, c.device, c.port, cid, MODE_MANUAL, c.pid, qpns, c.hw)
        return [c for c in self.ctrs[dev].values() if port is None or c.port == port]

    def port_counters(self, dev, port):
        return self.port_names

    def port_mode(self, dev, port):
        return self.mode, 0, False

    def bind(self, dev, port, lqpn, counter_id=None):
        self.binds.append((dev, port, lqpn, counter_id))
        if self.refuse:
            raise RdmaNetlinkError(self.refuse, f"bind QP {lqpn}")
        if counter_id is None:
            counter_id, self.next_id = self.next_id, self.next_id + 1
            self.ctrs[dev][counter_id] = Counter(dev, "", port, counter_id, MODE_MANUAL, 0, (lqpn,), dict(BYTES))
        else:
            c = self.ctrs[dev][counter_id]
            self.ctrs[dev][counter_id] = Counter(dev, "", port, counter_id, MODE_MANUAL, 0, c.qpns + (lqpn,), c.hw)
        return counter_id

    def add_bytes(self, dev, counter_id, tx, rx):
        hw = self.ctrs[dev][counter_id].hw
        hw["rdma_tx_bytes"] += tx
        hw["rdma_rx_bytes"] += rx

    def close(self):
        self.closed = True


MLX = Device(0, "mlx5_0", 1, "roce", "mlx5_core")
CGROUPS = {100: "/job_1", 101: "/job_1", 200: "/job_2"}


def rows(q):
    (fam,) = q.collect()
    assert fam.name == "ceemsnet_rdma_hw_bytes" and fam.kind == "counter"
    return dict(fam.rows)


def test_one_counter_per_job_and_bytes_per_direction():
    nl = FakeNl([MLX])
    nl.qp_list[0] = [Qp(0, "mlx5_0", 1, pid=0, type=1, kern_name="ib_core"),  # a kernel QP: never bound
                     Qp(0, "mlx5_0", 17, port=1, pid=100, type=2), Qp(0, "mlx5_0", 18, port=1, pid=101, type=2),
                     Qp(0, "mlx5_0", 19, port=0, pid=200, type=2)]  # no port yet: port 1 of a one-port device
    q = QpCounters(CGROUPS.get, open_nl=lambda: nl)
    assert rows(q) == {("/job_1", "mlx5_0", "1", "egress"): 0, ("/job_1", "mlx5_0", "1", "ingress"): 0,
                       ("/job_2", "mlx5_0", "1", "egress"): 0, ("/job_2", "mlx5_0", "1", "ingress"): 0}
    # QP 18 (another task of job 1) joins QP 17's counter
    assert nl.binds == [(0, 1, 17, None), (0, 1, 18, 1), (0, 1, 19, None)]
    nl.add_bytes(0, 1, 1000, 10)
    nl.add_bytes(0, 2, 5, 7)
    assert rows(q) == {("/job_1", "mlx5_0", "1", "egress"): 1000, ("/job_1", "mlx5_0", "1", "ingress"): 10,
                       ("/job_2", "mlx5_0", "1", "egress"): 5, ("/job_2", "mlx5_0", "1", "ingress"): 7}
    assert len(nl.binds) == 3  # nothing bound twice
    assert q.binding_status() == [("mlx5_0", True, "per-QP hardware counters: bound (2 job counters live)")]


def test_a_freed_counter_keeps_its_bytes_and_a_new_one_adds_to_them():
    nl = FakeNl([MLX])
    nl.qp_list[0] = [Qp(0, "mlx5_0", 17, port=1, pid=100)]
    now = [0.0]
    q = QpCounters(CGROUPS.get, open_nl=lambda: nl, keep=300, clock=lambda: now[0])
    rows(q)
    nl.add_bytes(0, 1, 4096, 0)
    assert rows(q)[("/job_1", "mlx5_0", "1", "egress")] == 4096
    nl.qp_list[0] = []  # the job's QP destroyed: the kernel frees its counter
    assert rows(q)[("/job_1", "mlx5_0", "1", "egress")] == 4096
    nl.qp_list[0] = [Qp(0, "mlx5_0", 30, port=1, pid=101)]  # the same job, a new QP, a new counter
    rows(q)
    nl.add_bytes(0, 2, 100, 0)
    assert rows(q)[("/job_1", "mlx5_0", "1", "egress")] == 4196
    nl.qp_list[0] = []
    rows(q)
    now[0] = 299
    assert rows(q)[("/job_1", "mlx5_0", "1", "egress")] == 4196
    now[0] = 301 + 299
    assert rows(q) == {}  # kept `keep` seconds after its last counter went


def test_a_refusing_device_is_recorded_once_and_never_retried():
    rxe = Device(1, "rxe0", 1, "roce", "")
    nl = FakeNl([rxe], refuse=errno.EOPNOTSUPP)
    nl.qp_list[1] = [Qp(1, "rxe0", 17, port=1, pid=100), Qp(1, "rxe0", 18, port=1, pid=200)]
    q = QpCounters(CGROUPS.get, open_nl=lambda: nl, bind_without_bytes=True)
    for _ in range(3):
        assert rows(q) == {}
    assert nl.binds == [(1, 1, 17, None)]
    assert q.binding_status() == [("rxe0", False, "per-QP hardware counters: not supported by the driver (EOPNOTSUPP)")]


def test_enomem_on_the_first_bind_is_a_refusal_later_only_the_qps():
    nl = FakeNl([MLX], refuse=errno.ENOMEM)
    nl.qp_list[0] = [Qp(0, "mlx5_0", 17, port=1, pid=100)]
    q = QpCounters(CGROUPS.get, open_nl=lambda: nl)
    rows(q)
    assert "ENOMEM" in q.refused["mlx5_0"]
    nl2 = FakeNl([MLX])
    nl2.qp_list[0] = [Qp(0, "mlx5_0", 17, port=1, pid=100)]
    q2 = QpCounters(CGROUPS.get, open_nl=lambda: nl2)
    rows(q2)
    nl2.refuse = errno.ENOMEM  # counters exhausted later: that QP is skipped, the device is not refused
    nl2.qp_list[0].append(Qp(0, "mlx5_0", 18, port=1, pid=200))
    rows(q2)
    rows(q2)
    assert not q2.refused and list(q2.failed) == [("mlx5_0", 18, 200)]
    assert nl2.binds.count((0, 1, 18, None)) == 1  # not retried every scrape
    nl2.qp_list[0].pop()  # the QP gone: its failure forgotten
    rows(q2)
    assert not q2.failed


def test_ports_without_byte_counters_are_not_bound():
    nl = FakeNl([MLX], port_names={"out_of_sequence": 0})
    nl.qp_list[0] = [Qp(0, "mlx5_0", 17, port=1, pid=100)]
    q = QpCounters(CGROUPS.get, open_nl=lambda: nl)
    assert rows(q) == {} and nl.binds == []
    ((dev, ok, why),) = q.binding_status()
    assert (dev, ok) == ("mlx5_0", False)
    assert "rdma statistic set link mlx5_0/1 optional-counters rdma_tx_bytes,rdma_rx_bytes" in why


def test_auto_mode_port_is_a_refusal():
    nl = FakeNl([MLX], refuse=errno.EINVAL, mode=MODE_AUTO)
    nl.qp_list[0] = [Qp(0, "mlx5_0", 17, port=1, pid=100), Qp(0, "mlx5_0", 18, port=1, pid=200)]
    q = QpCounters(CGROUPS.get, open_nl=lambda: nl)
    rows(q)
    rows(q)
    assert "auto mode" in q.refused["mlx5_0"] and len(nl.binds) == 1


def test_no_rdma_netlink_is_an_empty_scrape():
    def fail():
        raise RdmaNetlinkError(errno.EPROTONOSUPPORT, "cannot open a NETLINK_RDMA socket", "ib_core is not loaded")
    q = QpCounters(CGROUPS.get, open_nl=fail)
    assert rows(q) == {}
    assert q.binding_status() == []


def test_a_failing_dump_does_not_fail_the_scrape_nor_lose_counts():
    nl = FakeNl([MLX])
    nl.qp_list[0] = [Qp(0, "mlx5_0", 17, port=1, pid=100)]
    q = QpCounters(CGROUPS.get, open_nl=lambda: nl)
    rows(q)
    nl.add_bytes(0, 1, 64, 0)
    assert rows(q)[("/job_1", "mlx5_0", "1", "egress")] == 64

    def broken(dev):
        raise RdmaNetlinkError(errno.EIO, "list the queue pairs")
    nl.qps = broken
    assert rows(q)[("/job_1", "mlx5_0", "1", "egress")] == 64  # the last value read stays
    q.close()
    assert nl.closed


def test_proc_cgroup_lines():
    v1 = "12:memory:/slurm/uid_1/job_7\n11:cpu,cpuacct:/slurm/uid_1/job_7/step_0\n0::/user.slice\n"
    assert parse_proc_cgroup("0::/system.slice/job_1/step_0\n") == "/system.slice/job_1/step_0"
    assert parse_proc_cgroup(v1, "v1", "cpuacct") == "/slurm/uid_1/job_7/step_0"
    assert parse_proc_cgroup(v1, "v1", "memory") == "/slurm/uid_1/job_7"
    assert parse_proc_cgroup(v1, "v1", "blkio") is None
    assert parse_proc_cgroup("garbage") is None


def test_cgroup_of_a_task_and_of_a_gone_one(tmp_path):
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cgroup").write_text("0::/job_42\n")
    assert cgroup_of_pid(42, proc=str(tmp_path)) == "/job_42"
    assert cgroup_of_pid(43, proc=str(tmp_path)) is None
