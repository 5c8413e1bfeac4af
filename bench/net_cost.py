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
import statistics
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ceemsnet import CeemsnetError  # noqa: E402
from ceemsnet.collectors import slots  # noqa: E402
from ceemsnet.planning.catalogue import slots_twin  # noqa: E402
from ceemsnet.planning.structs import NET_SLOT_MASK, NET_WORDS, decode_net, net_index  # noqa: E402
from ceemsnet.runtime.collection import ObjectSpec, load  # noqa: E402
from hookcost import RUNS_PER_EVENT, STATS, bench_run, build_empty, measure, preflight, run_child, run_main  # noqa: E402

TARGET_NS = 30.0
# the programs the traffic below runs, per hook family (UDP over IPv4)
PROGRAMS = {"tracepoint": ("tp_btf_sock_send_length", "tp_btf_sock_recv_length"),
            "fexit": ("fexit_udp_sendmsg", "fexit_udp_recvmsg"),
            "kretprobe": ("kprobe_udp_sendmsg", "kretprobe_udp_sendmsg",
                          "kprobe_udp_recvmsg", "kretprobe_udp_recvmsg")}
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


def counted(label, coll, cid):
    """(bytes, calls) counted for the cgroup as UDP/IPv4, egress + ingress."""
    stats = coll.maps["net_stats"]
    keys, values, n = stats.read_all()
    got = decode_net(keys, values, n, stats.ncpus)
    rec = list(got.get((cid,), (0,) * NET_WORDS))
    if slots.has_slots(coll.maps):
        for s, (owner, counts) in slots._read_slots(coll.maps).items():
            if owner == cid:
                rec = [x + y for x, y in zip(rec, counts)]
    b = c = 0
    for d in (0, 1):
        i = 3 * net_index(1, 0, d)  # UDP, IPv4
        b, c = b + rec[i], c + rec[i + 1]
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
    plan = preflight("bench/net_cost.py", "net", a.hook)
    programs = PROGRAMS[a.hook]
    with bench_run() as run:
        colls = run.colls
        colls["empty"] = load(ObjectSpec(build_empty("net_empty.bpf.c", run.tmp), programs))
        settings = {"cgrp_v1_subsys": -1}
        hash_obj = plan.obj if not a.hash_object else types.SimpleNamespace(
            path=os.path.abspath(a.hash_object), file=os.path.basename(a.hash_object), family=a.hook)
        colls["hash"] = load(ObjectSpec(hash_obj, programs, settings=settings))
        twin = slots_twin(plan.obj)
        if twin is not None:
            try:
                n = slots.default_slots(os.cpu_count() or 1)
                colls["slots"] = load(ObjectSpec(twin, programs, {slots.OWNER: n, slots.VALS: n},
                                                 dict(settings, **{NET_SLOT_MASK: n - 1})))
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
        sent = {k: 0 for k in colls}  # sendto() calls the child made while k was attached
        work = lambda: run_child(run.cgroup, CHILD, a.events, a.size)  # noqa: E731
        for _ in range(a.rounds):
            for k, coll in colls.items():
                ns, cnt, tries = measure(coll, programs, work, 2 * a.events, RUNS_PER_EVENT[a.hook])
                per[k].append(ns)
                runs[k] += cnt
                sent[k] += tries * a.events
        cid = os.stat(run.cgroup).st_ino
        checks = {k: counted(k, colls[k], cid) for k in ("hash", "slots") if k in colls}
    figs = {k: statistics.median(v) for k, v in per.items()}
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
    want = {k: (2 * sent[k] * a.size, 2 * sent[k]) for k in checks}  # each send is received
    bad = {k: v for k, v in checks.items() if v != want[k]}
    for k, v in bad.items():
        print(f"# {k}: counted {v[0]} bytes in {v[1]} calls for the bench cgroup, expected {want[k][0]} in "
              f"{want[k][1]}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    run_main("bench/net_cost.py", main)
