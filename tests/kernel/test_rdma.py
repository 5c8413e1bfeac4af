"""RDMA per job, on soft-RoCE (tests/kernel/rdma.py): objects charged to the creating task's
cgroup while they live, and perftest's bytes charged exactly to the cgroups of its client
and server (iterations x size each way, retransmissions not counted again).

Runs where the kernel has the rdma_rxe module: the 6.1 and 6.12 VMs (tests/vm/run.sh); this
development host's kernel has no modules, and the tests skip there with that reason.
"""

import os
import sys
import time

import pytest

from .helpers import HOOK, VM, Exporter
from .rdma import soft_roce

HERE = os.path.dirname(os.path.abspath(__file__))
ITERS, SIZE = 100, 65531  # an odd size: the last packet of each message carries pad bytes


@pytest.fixture(scope="module")
def bed():
    with soft_roce() as b:
        yield b


@pytest.fixture(scope="module")
def exporter(bed):
    if HOOK == "tracepoint":
        pytest.skip("rdma has no tracepoint family (its hooks are module functions: fexit or kretprobe)")
    e = Exporter(collectors="rdma")
    yield e
    e.stop()


def series(samples, name, **labels):
    """{labels dict as a tuple: value} of one metric, filtered by labels."""
    return {lab: v for (n, lab), v in samples.items()
            if n == name and all(dict(lab).get(k) == w for k, w in labels.items())}


def value(samples, name, **labels):
    found = series(samples, name, **labels)
    assert len(found) <= 1, found
    return next(iter(found.values()), 0)


def test_hooked(exporter):
    s = exporter.samples()
    hooked = {dict(lab)["function"]: dict(lab)["hook"] for (n, lab) in s if n == "ceemsnet_hook_info"
              and dict(lab)["subsystem"] == "rdma"}
    # rdma_restrack_commit_del only where the kernel has it (Debian's 6.1.0-56+ and 6.12.118 do; older 6.1 builds do not)
    assert set(hooked) - {"rdma_restrack_commit_del"} == {
        "rdma_restrack_add", "rdma_restrack_del", "rxe_xmit_packet", "rxe_resp_queue_pkt", "rxe_comp_queue_pkt"}, \
        exporter.log()
    if HOOK != "auto":
        assert set(hooked.values()) == {HOOK}


def test_objects_per_job(bed, exporter, make_cgroup, spawn):
    from .verbs_holder import EXPECTED
    cg = make_cgroup()
    child = spawn([sys.executable, os.path.join(HERE, "verbs_holder.py"), bed.device], cg)
    line = child.proc.stdout.readline().split()
    assert line and line[0] == "ready", child.proc.stderr.read()
    s = exporter.samples()
    got = {t: value(s, "ceemsnet_rdma_objects", cgroup=cg.rel, device=bed.device, type=t) for t in EXPECTED}
    print("objects while held:", got)
    assert got == EXPECTED  # the second thread's queue pair included
    child.go()
    deadline = time.time() + 30
    while True:
        left = series(exporter.samples(), "ceemsnet_rdma_objects", cgroup=cg.rel)
        if not any(left.values()) or time.time() > deadline:
            break
        time.sleep(0.5)
    assert not any(left.values()), left


@pytest.mark.parametrize("tool", ["ib_write_bw", "ib_send_bw", "ib_read_bw"])
def test_perftest_bytes_exact(bed, exporter, make_cgroup, spawn, tool):
    server_cg, client_cg = make_cgroup("ceemsnet-rdma-server"), make_cgroup("ceemsnet-rdma-client")
    before = exporter.samples()
    run_perftest(bed, spawn, tool, server_cg, client_cg, str(20000 + os.getpid() % 10000))
    after = exporter.samples()

    def moved(cg, direction):
        name = "ceemsnet_rdma_bytes_total"
        return value(after, name, cgroup=cg.rel, device=bed.device, port="1", direction=direction) - \
            value(before, name, cgroup=cg.rel, device=bed.device, port="1", direction=direction)

    sender, receiver = (server_cg, client_cg) if tool == "ib_read_bw" else (client_cg, server_cg)
    got = {"sender egress": moved(sender, "egress"), "receiver ingress": moved(receiver, "ingress"),
           "sender ingress": moved(sender, "ingress"), "receiver egress": moved(receiver, "egress")}
    hw = {}
    for c in ("duplicate_request", "completer_retry_err", "rcvd_seq_err", "out_of_seq_request"):
        try:
            with open(f"/sys/class/infiniband/{bed.device}/ports/1/hw_counters/{c}") as f:
                hw[c] = int(f.read())
        except OSError:
            pass
    print(tool, got, "rxe hw_counters:", hw)
    assert got == {"sender egress": ITERS * SIZE, "receiver ingress": ITERS * SIZE,
                   "sender ingress": 0, "receiver egress": 0}, (got, hw)


def run_perftest(bed, spawn, tool, server_cg, client_cg, port):
    args = ("-n", str(ITERS), "-s", str(SIZE), "-p", port)
    server = spawn(bed.perftest(tool, *args), server_cg)
    time.sleep(2)  # the server listens on its TCP port for the parameter exchange
    client = spawn(bed.perftest(tool, *args, server=bed.address), client_cg)
    for p in (client, server):
        out, err = p.proc.communicate(timeout=600)
        assert p.proc.returncode == 0, (tool, out, err)


# pinning and adopting are the same for rdma's objects as for net's and vfs's (test_continuity.py):
# the 6.12 runs (fexit links, kprobe perf links) run it; each other run would spend emulated minutes
@pytest.mark.skipif(bool(VM) and VM != "6.12" and os.environ.get("CEEMSNET_TEST_EVERYWHERE") != "1",
                    reason="rdma's pins are checked in the 6.12 runs (fexit and kretprobe)")
def test_counts_and_owners_survive_a_crash_and_restart(bed, make_cgroup, spawn, pin_path):
    """Pinned like net and vfs: a SIGKILLed exporter's programs go on counting with no exporter
    running, and the objects a job made before the crash are still charged to that job after it
    (their owners are kept in the pinned rdma_objs): the next exporter adopts the pins, its counts
    are exact, and the objects leave when their process does."""
    from .verbs_holder import EXPECTED
    if HOOK == "tracepoint":
        pytest.skip("rdma has no tracepoint family (its hooks are module functions: fexit or kretprobe)")
    # kretprobes pin only as libbpf's own perf-event links (--kretprobe.maxactive=0; every guest
    # that runs this is 5.15+), not as tracefs events
    args = [f"--bpf.pin-path={pin_path}", "--log.level=info"] + \
        (["--kretprobe.maxactive=0"] if HOOK == "kretprobe" else [])
    server_cg, client_cg, holder_cg = (make_cgroup("ceemsnet-rdma-server"), make_cgroup("ceemsnet-rdma-client"),
                                       make_cgroup("ceemsnet-rdma-holder"))
    port = str(21000 + os.getpid() % 10000)

    def bytes_of(s):
        return {(cg.rel, d): value(s, "ceemsnet_rdma_bytes_total", cgroup=cg.rel, device=bed.device, port="1",
                                   direction=d) for cg, d in ((client_cg, "egress"), (server_cg, "ingress"))}

    def objects_of(s):
        return {t: value(s, "ceemsnet_rdma_objects", cgroup=holder_cg.rel, device=bed.device, type=t)
                for t in EXPECTED}

    first = Exporter(collectors="rdma", extra=args)
    try:
        holder = spawn([sys.executable, os.path.join(HERE, "verbs_holder.py"), bed.device], holder_cg)
        line = holder.proc.stdout.readline().split()
        assert line and line[0] == "ready", holder.proc.stderr.read()
        run_perftest(bed, spawn, "ib_write_bw", server_cg, client_cg, port)
        s = first.samples()
        assert objects_of(s) == EXPECTED, first.log()
        assert set(bytes_of(s).values()) == {ITERS * SIZE}, (bytes_of(s), first.log())
    finally:
        log = first.kill()
    assert "rdma: maps and links pinned" in log, log
    # no exporter runs: the pinned programs count this one
    run_perftest(bed, spawn, "ib_write_bw", server_cg, client_cg, port)
    second = Exporter(collectors="rdma", extra=args)
    try:
        assert "rdma: adopted the pinned" in second.log(), second.log()
        s = second.samples()
        assert set(bytes_of(s).values()) == {2 * ITERS * SIZE}, (series(s, "ceemsnet_rdma_bytes_total"),
                                                                 second.log())
        assert objects_of(s) == EXPECTED, second.log()  # made under the first exporter, still the holder's
        holder.go()
        deadline = time.time() + 30
        while any(objects_of(second.samples()).values()) and time.time() < deadline:
            time.sleep(0.5)
        assert not any(objects_of(second.samples()).values()), second.log()
    finally:
        second.stop()
