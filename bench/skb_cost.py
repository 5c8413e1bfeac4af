#!/usr/bin/env python3
"""Per-packet cost of the cgroup_skb backend: root hash vs per-cgroup storage.

In one run: a child in a fresh cgroup sends UDP datagrams over loopback to a
receiver in this process, timed with no skb programs, with root mode
(attached to the cgroup2 root: hash keyed by the skb's cgroup), with
per-cgroup mode (attached to the child's cgroup: per-CPU cgroup storage),
and with none again. kernel.bpf_stats_enabled gives the run time per program
run (one run per skb). Prints figures and ratios. Needs root. Not a test.
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ceemsnet.attribution.cgroups import find_cgroup2_root  # noqa: E402
from ceemsnet.collectors.skb import PROGRAMS, SkbBackend  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402

STATS = "/proc/sys/kernel/bpf_stats_enabled"
SENDER = """
import socket, sys, time
n, size, port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
sys.stdin.readline()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
buf = b"u" * size
t0 = time.perf_counter()
for _ in range(n):
    s.sendto(buf, ("127.0.0.1", port))
print(n / (time.perf_counter() - t0))
"""


def send_rate(cg_path, n, size, port):
    p = subprocess.Popen([sys.executable, "-c", SENDER, str(n), str(size), str(port)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    with open(os.path.join(cg_path, "cgroup.procs"), "w") as f:
        f.write(str(p.pid))
    out, _ = p.communicate("go\n")
    return float(out)


def run_stats(backend):
    out = {}
    for name in PROGRAMS:
        with open(f"/proc/self/fdinfo/{backend.coll.program_fd(name)}") as f:
            info = dict(line.split(":", 1) for line in f if ":" in line)
        out[name] = (int(info.get("run_time_ns", "0")), int(info.get("run_cnt", "0")))
    return out


def measure(label, backend, cg_path, a, port, rows):
    rates = [send_rate(cg_path, a.packets, a.size, port) for _ in range(a.rounds)]
    line = {"mode": label, "rate": statistics.median(rates)}
    if backend is not None:
        with open(STATS, "w") as f:
            f.write("1")
        before = run_stats(backend)
        send_rate(cg_path, a.packets, a.size, port)
        after = run_stats(backend)
        with open(STATS, "w") as f:
            f.write("0")
        line["ns"] = {n: (after[n][0] - before[n][0]) / max(1, after[n][1] - before[n][1]) for n in after}
    rows.append(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--packets", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    add_rows_flag(ap)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/skb_cost.py: needs root")
    root = find_cgroup2_root()
    name = f"ceemsnet-bench-{uuid.uuid4().hex[:8]}"
    cg_path = os.path.join(root, name)
    os.mkdir(cg_path)
    old = open(STATS).read().strip()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    port = rx.getsockname()[1]
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            try:
                rx.recv(65536)
            except OSError:
                return

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    rows = []
    try:
        measure("none", None, cg_path, a, port, rows)
        b = SkbBackend(root, "root").start(None)
        measure("root (hash, attached at /)", b, cg_path, a, port, rows)
        b.close()
        b = SkbBackend(root, "per-cgroup", pattern="/" + name).start(None)
        measure("per-cgroup (storage)", b, cg_path, a, port, rows)
        b.close()
        measure("none again", None, cg_path, a, port, rows)
    finally:
        with open(STATS, "w") as f:
            f.write(old)
        stop.set()
        rx.close()
        os.rmdir(cg_path)
    base = (rows[0]["rate"] + rows[-1]["rate"]) / 2
    if a.rows:
        root_ns, per_ns = rows[1]["ns"], rows[2]["ns"]
        for r in rows[1:3]:
            emit(row(f"UDP {a.size} B sends/s, skb {r['mode']}", r["rate"], "sends/s", base,
                     "no skb programs (mean of before and after)"))
        for prog in (p for p in PROGRAMS if per_ns[p]):  # no run: no receiver in a matching cgroup
            emit(row(f"{prog}: ns per run, per-cgroup storage", per_ns[prog], "ns", root_ns[prog],
                     "root mode (hash keyed by cgroup id)"))
        return
    print(f"kernel {os.uname().release}: {a.packets} UDP datagrams of {a.size} B over loopback per round, "
          f"median of {a.rounds}")
    print(f"{'mode':28} {'sends/s':>10} {'ratio':>6}  ns per program run (egress, ingress)")
    for r in rows:
        ns = r.get("ns")
        ns_txt = f"{ns['cgroup_skb_egress']:.0f}, {ns['cgroup_skb_ingress']:.0f}" if ns else "-"
        print(f"{r['mode']:28} {r['rate']:>10.0f} {r['rate'] / base:>6.3f}  {ns_txt}")

if __name__ == "__main__":
    main()
