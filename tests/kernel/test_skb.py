"""cgroup_skb backend beside the socket-level one, on a real kernel.

Both modes run at once (two exporters): root (hash keyed by the skb's
cgroup) and per-cgroup (programs attached to cgroups matching a glob). IP
bytes must lie between the payload and the payload plus a header bound per
skb, while the socket-level bytes beside them stay exact.
"""

import ctypes
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from ceemsnet.runtime import libbpf
from ceemsnet.commands.compare import MAX_HEADER

from .accuracy import record
from .helpers import ROOT, Exporter, traffic_argv
from .peer import Peer, reply_size

HERE = os.path.dirname(os.path.abspath(__file__))
PREFIX = "ceemsnet-skb"


@pytest.fixture(scope="module")
def exporters():
    root = Exporter(collectors="net,skb")
    try:
        percg = Exporter(collectors="net,skb", extra=("--skb.mode=per-cgroup", f"--skb.cgroups=/{PREFIX}-*"))
    except BaseException:
        root.stop()
        raise
    yield {"root": root, "per-cgroup": percg}
    for e in (root, percg):
        rc, err = e.stop()
        assert rc == 0, err


@pytest.fixture
def peer():
    p = Peer()
    yield p
    p.close()


def val(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def skb(samples, cg, d, field, family="ipv4"):
    return val(samples, f"ceemsnet_skb_{d}_{field}_total", cgroup=cg.rel, family=family)


def tcp_retrans_segs() -> int:
    """The kernel's count of retransmitted TCP segments (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("RetransSegs")])


LOOPBACK_MSS = 65483  # a retransmitted loopback segment carries at most this much payload again


def within(payload, b, p, retrans):
    """skb bytes lie between the payload and the payload plus headers (plus, if the
    kernel retransmitted meanwhile, the retransmitted segments: skbs see those twice)."""
    return payload <= b <= payload + p * MAX_HEADER + retrans * LOOPBACK_MSS


def wait_attached(exporter, cg, timeout=30):
    """per-cgroup mode follows new cgroups within --skb.sync-interval."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ("ceemsnet_skb_egress_bytes_total", (("cgroup", cg.rel), ("family", "ipv4"))) in exporter.samples():
            return
        time.sleep(0.2)
    pytest.fail(f"per-cgroup exporter did not attach to {cg.rel}")


def test_bulk_tcp_ip_bytes_within_header_bound(exporters, make_cgroup, spawn, peer):
    cg = make_cgroup(PREFIX)
    wait_attached(exporters["per-cgroup"], cg)
    size = 4 * 1024 * 1024
    child = spawn(traffic_argv([{"op": "tcp", "family": 4, "addr": peer.tcp4, "send": size,
                                 "expect": reply_size(size)}]), cg)
    r0 = tcp_retrans_segs()
    child.go()
    retrans = tcp_retrans_segs() - r0
    for mode, e in exporters.items():
        s = e.samples()
        record(f"4 MiB over TCP, with the cgroup_skb backend ({mode} mode) beside", "the plan",
               "ceemsnet_net_egress_bytes_total{proto=tcp,family=ipv4}", size,
               val(s, "ceemsnet_net_egress_bytes_total", cgroup=cg.rel, proto="tcp", family="ipv4"), samples=s)
        # socket level: exact, whatever the skb backend does beside it
        assert val(s, "ceemsnet_net_egress_bytes_total", cgroup=cg.rel, proto="tcp", family="ipv4") == size
        for d, payload in (("egress", size), ("ingress", reply_size(size))):
            b, p, seg = skb(s, cg, d, "bytes"), skb(s, cg, d, "packets"), skb(s, cg, d, "segments")
            assert within(payload, b, p, retrans), (mode, d, b, p, retrans)
            assert 0 < p <= seg, (mode, d)


def test_socket_created_before_the_move(exporters, make_cgroup, spawn, peer):
    old, new = make_cgroup(PREFIX), make_cgroup(PREFIX)
    wait_attached(exporters["per-cgroup"], new)
    n = 200_000
    child = spawn([sys.executable, os.path.join(HERE, "moved_socket.py"), peer.tcp4[0], str(peer.tcp4[1]), str(n)],
                  old)
    child.proc.stdin.write("go\n")
    child.proc.stdin.flush()
    assert child.proc.stdout.readline().strip() == "connected"
    new.add(child.proc.pid)  # cgroup2: moving our own child between our own test cgroups
    r0 = tcp_retrans_segs()
    out = child.go()
    retrans = tcp_retrans_segs() - r0
    assert int(out.split()[-1]) == reply_size(n)
    s = exporters["root"].samples()
    for which, c, want in (("the task's new cgroup", new, n), ("the cgroup it left", old, 0)):
        record("TCP from a socket made before its task moved cgroups", "the plan",
               f"ceemsnet_net_egress_bytes_total{{proto=tcp,family=ipv4}}, {which}", want,
               val(s, "ceemsnet_net_egress_bytes_total", cgroup=c.rel, proto="tcp", family="ipv4"), samples=s)
    # socket level follows the task; the skb level stays with the socket's cgroup
    assert val(s, "ceemsnet_net_egress_bytes_total", cgroup=new.rel, proto="tcp", family="ipv4") == n
    assert val(s, "ceemsnet_net_egress_bytes_total", cgroup=old.rel, proto="tcp", family="ipv4") == 0
    assert within(n, skb(s, old, "egress", "bytes"), skb(s, old, "egress", "packets"), retrans)
    assert skb(s, new, "egress", "bytes") == 0
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "compare", "--json", "--url", exporters["root"].url],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    rows = {(r["cgroup"], r["direction"]): r for r in json.loads(p.stdout)}
    assert rows[(new.rel, "egress")]["reason"].startswith("socket only")
    assert rows[(old.rel, "egress")]["reason"].startswith("skb only")
    assert rows[(new.rel, "egress")]["socket_bytes"] == n


# the legacy (non-link) cgroup attach another tool makes: enum bpf_attach_type, attach flags
BPF_CGROUP_INET_EGRESS, BPF_F_ALLOW_MULTI = 1, 2


def _other_program(cg):
    """Someone else's cgroup_skb program (think systemd IP accounting), attached
    with bpf_prog_attach(BPF_F_ALLOW_MULTI); returns (read egress bytes, detach)."""
    from ceemsnet.runtime.maps import BpfMap
    from ceemsnet.planning.catalogue import SKB_OBJECTS
    from ceemsnet.planning.structs import decode_skb
    lb = libbpf.lib()
    lb.bpf_prog_attach.restype = lb.bpf_prog_detach2.restype = ctypes.c_int
    lb.bpf_prog_attach.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_uint]
    lb.bpf_prog_detach2.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    obj = lb.bpf_object__open_file(SKB_OBJECTS["root"].path.encode(), None)
    assert obj and lb.bpf_object__load(obj) == 0
    prog = lb.bpf_object__find_program_by_name(obj, b"cgroup_skb_egress")
    mp = lb.bpf_object__find_map_by_name(obj, b"skb_stats")
    m = BpfMap.from_libbpf("other", mp)
    fd = os.open(cg.path, os.O_RDONLY | os.O_DIRECTORY)
    assert lb.bpf_prog_attach(lb.bpf_program__fd(prog), fd, BPF_CGROUP_INET_EGRESS, BPF_F_ALLOW_MULTI) == 0

    def egress_bytes():
        k, v, n = m.read_all()
        return sum(vals[0] for (cid, _, d), vals in decode_skb(k, v, n, m.ncpus).items() if cid == cg.id and d == 0)

    def detach():
        lb.bpf_prog_detach2(lb.bpf_program__fd(prog), fd, BPF_CGROUP_INET_EGRESS)
        os.close(fd)
        lb.bpf_object__close(obj)

    return egress_bytes, detach


def test_other_programs_keep_counting(make_cgroup, spawn, peer):
    cg = make_cgroup("ceemsnet-other")
    egress, detach = _other_program(cg)
    plan = [{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [1000]}]
    try:
        spawn(traffic_argv(plan), cg).go()
        first = egress()
        assert 1000 <= first <= 1000 + MAX_HEADER
        ours = Exporter(collectors="skb", extra=("--skb.mode=per-cgroup", f"--skb.cgroups={cg.rel}"))
        try:
            wait_attached(ours, cg)
            spawn(traffic_argv(plan), cg).go()
            assert 1000 <= egress() - first <= 1000 + MAX_HEADER  # theirs still counts with ours attached
            assert 1000 <= skb(ours.samples(), cg, "egress", "bytes") <= 1000 + MAX_HEADER
        finally:
            rc, err = ours.stop()
        assert rc == 0, err
        second = egress()
        spawn(traffic_argv(plan), cg).go()
        assert 1000 <= egress() - second <= 1000 + MAX_HEADER  # and after ours detached
    finally:
        detach()


# A child that opens a UDP socket, sends each size and takes its echo, says "sent", and keeps
# the socket open until its stdin says so: the socket holds its cgroup's BPF state (and so the
# per-cgroup storage) after the cgroup is removed, as a daemon's socket would.
_HOLDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
for n in map(int, sys.argv[3:]):
    s.sendto(b"x" * n, (sys.argv[1], int(sys.argv[2])))
    s.recvfrom(65536)
print("sent", flush=True)
sys.stdin.readline()
s.close()
"""


def final_ids(pin_path):
    """Cgroup ids in the pinned skb_final map (what the per-cgroup exporter kept of detached cgroups)."""
    from ceemsnet.planning.structs import decode_skb
    from ceemsnet.runtime.bpffs import entries, open_pinned
    from ceemsnet.runtime.maps import BpfMap
    ids = set()
    base = os.path.join(pin_path, "skb")
    for d in os.listdir(base) if os.path.isdir(base) else ():
        path = entries(os.path.join(base, d), "map").get("skb_final")
        if path:
            m = BpfMap.from_fd("skb_final", open_pinned(path))
            try:
                k, v, n = m.read_all()
                ids |= {key[0] for key in decode_skb(k, v, n, 1)}
            finally:
                m.close()
    return ids


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
def test_per_cgroup_final_counts_of_a_removed_cgroup_survive_restarts(how, make_cgroup, spawn, peer):
    """per-cgroup mode, with pins: a removed cgroup's last counts, kept when the exporter
    detaches it (skb_final), and then its retired total (the ledger), each survive a
    restart of the exporter (SIGTERM or SIGKILL), exactly."""
    pin_path = f"/sys/fs/bpf/ceemsnet-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    prefix = f"ceemsnet-skbfinal-{uuid.uuid4().hex[:6]}"
    args = (f"--bpf.pin-path={pin_path}", "--skb.mode=per-cgroup", f"--skb.cgroups=/{prefix}-*",
            "--skb.sync-interval=0.2s", "--cgroup.retention=600", "--log.level=debug")
    sizes = [1000, 3000]
    want = sum(n + 28 for n in sizes)  # one IPv4 packet per datagram each way: 20 B IP + 8 B UDP header
    cg, away = make_cgroup(prefix), make_cgroup("ceemsnet-away")

    def restart(e):
        if how == "sigterm":
            rc, err = e.stop()
            assert rc == 0, err
        else:
            e.kill()
        return Exporter(extra=args, collectors="skb")

    def exact(e, when):
        s = e.samples()
        for d in ("egress", "ingress"):  # for docs/accuracy.md, before the asserts
            for field, v in (("bytes", want), ("packets", len(sizes))):
                record(f"cgroup_skb (per-cgroup mode): a removed cgroup's UDP across a {how} and a restart",
                       "the plan's datagrams, each + 28 B of IPv4 and UDP headers",
                       f"ceemsnet_skb_{d}_{field}_total{{family=ipv4}}, {when}", v, skb(s, cg, d, field), field,
                       samples=s, subsystem="skb")
        for d in ("egress", "ingress"):
            assert skb(s, cg, d, "bytes") == want, (how, d, s)
            assert skb(s, cg, d, "packets") == len(sizes), (how, d)
        return s
    e = Exporter(extra=args, collectors="skb")
    child = None
    try:
        wait_attached(e, cg)
        child = spawn([sys.executable, "-c", _HOLDER, peer.udp4[0], str(peer.udp4[1]), *map(str, sizes)], cg)
        child.proc.stdin.flush()
        assert child.proc.stdout.readline().strip() == "sent"
        away.add(child.proc.pid)  # the holder leaves; its socket stays in cg
        cg.remove()
        deadline = time.time() + 30
        while cg.id not in final_ids(pin_path):  # the exporter's sync detached cg and kept its counts
            assert time.time() < deadline, ("the exporter did not keep the removed cgroup's counts within 30 s "
                                             f"(sync every 0.2 s); its log:\n{e.log()}")
            time.sleep(0.1)
        e = restart(e)           # no scrape since: the counts are in skb_final only
        child.proc.stdin.write("close\n")
        child.proc.stdin.flush()
        assert child.proc.wait(timeout=30) == 0  # the socket goes: the kernel frees cg's storage
        exact(e, "kept in skb_final")  # this scrape retires them (the ledger)
        assert cg.id not in final_ids(pin_path)
        e = restart(e)
        exact(e, "retired")      # from the pinned retired totals
    finally:
        if child is not None:
            child.stop()
        rc, err = e.stop()
        p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "detach", f"--bpf.pin-path={pin_path}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
    assert rc == 0, err
    assert "adopted the pinned skb-" in err, err
