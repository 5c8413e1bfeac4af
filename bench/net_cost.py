#!/usr/bin/env python3
"""Kernel run time per event of the net programs, above an empty program on the same hooks.

In one run, with kernel.bpf_stats_enabled on (restored after): a child in a
fresh cgroup does a fixed number of 64-byte UDP sendto() + recv() pairs on
loopback, once per variant and round, with only that variant attached:
  empty   programs that only return, on the same hooks (bench/net_empty.bpf.c,
          built here with clang-19): the floor
  hash    the catalogued net object with the per-CPU hash layout
  slots   its NET_SLOTS twin (cgroup id -> its slot by position -> per-CPU array)
run_time_ns / run_cnt of the attached programs gives ns per event (each
send and each receive is one event; a kretprobe event is two runs, its
entry and return probes, and their times are added); the median over rounds is printed
with the floor, "above floor" and ratios, and both objects' counts for the
child's cgroup are checked against what it sent. Needs root. Not a test.

  .venv/bin/python bench/net_cost.py [--rows]     (host: tracepoint family)
  tests/vm/run.sh 6.12 .venv/bin/python bench/net_cost.py --hook=fexit   (or --hook=kretprobe)
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import types
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ceemsnet import CeemsnetError  # noqa: E402
from ceemsnet.cgroups import find_cgroup2_root  # noqa: E402
from ceemsnet.choice import plan_family  # noqa: E402
from ceemsnet.collectors import slots  # noqa: E402
from ceemsnet.kernel import KernelBTF, normalize_arch, parse_kernel_version, running_release  # noqa: E402
from ceemsnet.loader import ObjectSpec, load  # noqa: E402
from ceemsnet.objects import slots_twin  # noqa: E402
from ceemsnet.structs import decode_net  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STATS = "/proc/sys/kernel/bpf_stats_enabled"
TARGET_NS = 30.0
# the programs the traffic below runs, per hook family (UDP over IPv4)
PROGRAMS = {"tracepoint": ("tp_btf_sock_send_length", "tp_btf_sock_recv_length"),
            "fexit": ("fexit_udp_sendmsg", "fexit_udp_recvmsg"),
            "kretprobe": ("kprobe_udp_sendmsg", "kretprobe_udp_sendmsg",
                          "kprobe_udp_recvmsg", "kretprobe_udp_recvmsg")}
# program runs per event: a kretprobe event is its entry probe and its return probe
RUNS_PER_EVENT = {"tracepoint": 1, "fexit": 1, "kretprobe": 2}
HOOKS = {"tracepoint": "tp_btf sock_send/recv_length", "fexit": "fexit udp_sendmsg/udp_recvmsg",
         "kretprobe": "kprobe+kretprobe udp_sendmsg/udp_recvmsg"}
CHILD = """
import socket, sys
n = int(sys.argv[1])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 0))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
addr, buf = rx.getsockname(), b"u" * int(sys.argv[2])
sys.stdin.readline()
for _ in range(n):
    tx.sendto(buf, addr)
    rx.recv(2048)
print("done", flush=True)
"""


def build_empty(out_dir):
    """bench/net_empty.bpf.c -> an object, compiled as the Makefile compiles ours."""
    arch = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip() \
        or "x86_64-linux-gnu"
    out = os.path.join(out_dir, "net-empty.bpf.o")
    subprocess.run(["clang-19", "-g", "-O2", "-target", "bpf", "-Wall", "-Werror",
                    f"-I{ROOT}/bpf/include", f"-I/usr/include/{arch}", "-c",
                    os.path.join(HERE, "net_empty.bpf.c"), "-o", out], check=True)
    return types.SimpleNamespace(path=out, file="net-empty.bpf.o", family="bench")


def run_child(cg_path, n, size):
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(n), str(size)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    with open(os.path.join(cg_path, "cgroup.procs"), "w") as f:
        f.write(str(p.pid))
    out, _ = p.communicate("go\n")
    if p.returncode != 0 or "done" not in out:
        raise CeemsnetError(f"traffic child failed (exit {p.returncode})")


def run_stats(coll, programs):
    t = c = 0
    for name in programs:
        with open(f"/proc/self/fdinfo/{coll.program_fd(name)}") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        t += int(info.get("run_time_ns", "0"))
        c += int(info.get("run_cnt", "0"))
    return t, c


def measure(coll, programs, cg_path, a):
    """ns per event (RUNS_PER_EVENT program runs) with only this collection's programs attached. A round in which
    the programs ran fewer times than the child's events (someone else switched
    bpf_stats_enabled off meanwhile: run time is then not counted) is done again."""
    for _ in range(5):
        links = [coll.attach(p) for p in programs]
        try:
            with open(STATS, "w") as f:
                f.write("1")
            t0, c0 = run_stats(coll, programs)
            run_child(cg_path, a.events, a.size)
            t1, c1 = run_stats(coll, programs)
            stats_on = open(STATS).read().strip() == "1"
        finally:
            coll.detach(links)
        per = RUNS_PER_EVENT[a.hook]
        if stats_on and c1 - c0 >= 2 * a.events * per:
            return (t1 - t0) * per / (c1 - c0), c1 - c0
    raise CeemsnetError("kernel.bpf_stats_enabled kept being switched off during the rounds "
                        "(another benchmark running?)")


def counted(label, coll, cid):
    """(bytes, calls) counted for the cgroup as UDP/IPv4, egress + ingress."""
    stats = coll.maps["net_stats"]
    keys, values, n = stats.read_all()
    got = decode_net(keys, values, n, stats.ncpus)
    if slots.has_slots(coll.maps):
        for s, (owner, counts) in slots._read_slots(coll.maps).items():
            for idx, v in counts.items():
                k = (owner,) + slots.key_of(idx)
                got[k] = tuple(x + y for x, y in zip(got.get(k, (0, 0, 0)), v))
    b = c = 0
    for d in (0, 1):
        v = got.get((cid, 1, 0, d), (0, 0, 0))
        b, c = b + v[0], c + v[1]
    return b, c


def rows_of(figs, family):
    floor = figs["empty"]
    hook = HOOKS[family]
    out = []
    for what, key in (("hash layout (per-CPU hash keyed by cgroup id)", "hash"),
                      ("slot layout (per-CPU array slot found by cgroup id)", "slots")):
        if key not in figs:
            continue
        v = figs[key]
        out.append({"what": f"net program, {what}, {hook}: kernel run time per event", "value": round(v, 1),
                    "unit": "ns", "baseline": round(floor, 1),
                    "baseline_what": f"empty program on the same hooks ({hook}), same run",
                    "ratio": round(v / floor, 3), "target": f"<= {TARGET_NS:.0f} ns above the empty program",
                    "meets": v - floor <= TARGET_NS})
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000, help="sendto()+recv() pairs per round")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hook", choices=sorted(PROGRAMS), default="tracepoint")
    ap.add_argument("--hash-object", metavar="PATH",
                    help="measure this file as the hash variant (e.g. an object from another checkout)")
    ap.add_argument("--extra", metavar="LABEL=PATH", action="append", default=[],
                    help="also measure this object file (a variant being tried), under LABEL")
    ap.add_argument("--rows", action="store_true", help="print one JSON object per figure (make bench)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/net_cost.py: needs root")
    if shutil.which("clang-19") is None:
        sys.exit("bench/net_cost.py: clang-19 is needed to build the empty programs (make setup)")
    kver = parse_kernel_version(running_release())
    plan = plan_family("net", a.hook, kver, normalize_arch(platform.machine()), KernelBTF())
    if plan.refused:
        sys.exit(f"bench/net_cost.py: {a.hook}: {plan.refused}")
    programs = PROGRAMS[a.hook]
    tmp = tempfile.mkdtemp(prefix="ceemsnet-bench-")
    cg_path = os.path.join(find_cgroup2_root(), f"ceemsnet-bench-{uuid.uuid4().hex[:8]}")
    os.mkdir(cg_path)
    old = open(STATS).read().strip()
    colls = {}
    try:
        colls["empty"] = load(ObjectSpec(build_empty(tmp), programs))
        settings = {"cgrp_v1_subsys": -1}
        hash_obj = plan.obj if not a.hash_object else types.SimpleNamespace(
            path=os.path.abspath(a.hash_object), file=os.path.basename(a.hash_object), family=a.hook)
        colls["hash"] = load(ObjectSpec(hash_obj, programs, settings=settings))
        twin = slots_twin(plan.obj)
        if twin is not None:
            try:
                n = slots.default_slots(os.cpu_count() or 1)
                colls["slots"] = load(ObjectSpec(twin, programs, {slots.OWNER: n, slots.VALS: n},
                                                 dict(settings, **{slots.MASK: n - 1})))
            except Exception as e:  # a kernel that refuses the twin: say so, measure the rest
                print(f"# {twin.file} not loaded: {e}", file=sys.stderr)
        for spec in a.extra:
            label, _, path = spec.partition("=")
            if not label or not path:
                raise CeemsnetError(f"--extra {spec!r}: expected LABEL=PATH")
            obj = types.SimpleNamespace(path=os.path.abspath(path), file=os.path.basename(path), family=a.hook)
            colls[label] = load(ObjectSpec(obj, programs, settings=settings))
        with open(STATS, "w") as f:
            f.write("1")
        per = {k: [] for k in colls}
        runs = {k: 0 for k in colls}
        for _ in range(a.rounds):
            for k, coll in colls.items():
                ns, cnt = measure(coll, programs, cg_path, a)
                per[k].append(ns)
                runs[k] += cnt
        cid = os.stat(cg_path).st_ino
        checks = {k: counted(k, colls[k], cid) for k in ("hash", "slots") if k in colls}
    finally:
        with open(STATS, "w") as f:
            f.write(old)
        for c in colls.values():
            c.close()
        os.rmdir(cg_path)
        shutil.rmtree(tmp, ignore_errors=True)
    figs = {k: statistics.median(v) for k, v in per.items()}
    want = (2 * a.events * a.size * a.rounds, 2 * a.events * a.rounds)  # each send is received
    if a.rows:
        for r in rows_of(figs, a.hook):
            print(json.dumps(r))
    else:
        floor = figs["empty"]
        print(f"kernel {os.uname().release}, {a.hook} family, {plan.obj.file}: {a.events} UDP sendto()+recv() "
              f"of {a.size} B per round from a fresh cgroup, median of {a.rounds} rounds, bpf_stats_enabled")
        print(f"{'variant':8} {'ns/event':>9} {'above floor':>12} {'ratio':>6}  rounds (ns)   program runs")
        for k in colls:
            v = figs[k]
            print(f"{k:8} {v:9.1f} {v - floor:+12.1f} {v / floor:6.2f}  "
                  f"{' '.join(f'{x:.0f}' for x in per[k])}   {runs[k]}")
        print(f"target: <= {TARGET_NS:.0f} ns above the floor "
              f"({'met' if 'slots' in figs and figs['slots'] - floor <= TARGET_NS else 'not met'} by slots)")
        if "hash" in figs and "slots" in figs:
            print(f"slots / hash: {figs['slots'] / figs['hash']:.2f}; above floor: "
                  f"{(figs['slots'] - floor) / max(1e-9, figs['hash'] - floor):.2f}")
    bad = {k: v for k, v in checks.items() if v != want}
    for k, v in bad.items():
        print(f"# {k}: counted {v[0]} bytes in {v[1]} calls for the bench cgroup, expected {want[0]} in {want[1]}",
              file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CeemsnetError as e:
        sys.exit(f"bench/net_cost.py: {e}")
