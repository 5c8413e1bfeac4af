#!/usr/bin/env python3
"""How many returns a kretprobe misses as a function of maxactive.

N threads (default 300) of one process in a fresh cgroup each block in
recvfrom() on their own UDP socket, then all are woken at once. For each
--kretprobe.maxactive setting, a fresh `ceemsnet serve --hook=kretprobe`
reports the calls it counted and the returns it missed. Needs root and a
kernel with kprobes: run it in a VM, e.g.

    tests/vm/run.sh 6.12 .venv/bin/python bench/kretprobe_maxactive.py
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from ceemsnet.attribution.cgroups import find_cgroup2_root  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402

WORKLOAD = os.path.join(ROOT, "tests", "kernel", "blocked_recv.py")


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        text = r.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def run_once(maxactive, n, size=1000):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exp = subprocess.Popen([sys.executable, "-m", "ceemsnet.cli", "serve", f"--web.listen-address=127.0.0.1:{port}",
                            "--hook=kretprobe", f"--kretprobe.maxactive={maxactive}", "--log.level=error",
                            "--bpf.pin-path=none", "--storage.path=none"],
                           cwd=ROOT)
    cg = os.path.join(find_cgroup2_root(), f"ceemsnet-bench-{uuid.uuid4().hex[:8]}")
    os.mkdir(cg)
    try:
        for _ in range(300):
            try:
                before = scrape(port)
                break
            except OSError:
                time.sleep(0.2)
        else:
            raise SystemExit("exporter did not start")
        w = subprocess.Popen([sys.executable, WORKLOAD, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        with open(os.path.join(cg, "cgroup.procs"), "w") as f:
            f.write(str(w.pid))
        w.stdin.write("go\n")
        w.stdin.flush()
        ports = json.loads(w.stdout.readline())
        assert w.stdout.readline().strip() == "blocked"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for p in ports:
                s.sendto(b"x" * size, ("127.0.0.1", p))
        w.stdout.readline()
        w.wait()
        after = scrape(port)
        key = ("ceemsnet_net_ingress_calls_total",
               (("cgroup", "/" + os.path.basename(cg)), ("family", "ipv4"), ("proto", "udp")))
        miss_key = ("ceemsnet_kretprobe_missed_total", (("function", "udp_recvmsg"),))
        missed = after.get(miss_key, 0) - before.get(miss_key, 0) if miss_key in after else None
        return int(after.get(key, 0)), missed
    finally:
        exp.terminate()
        exp.wait()
        os.rmdir(cg)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=300)
    ap.add_argument("--maxactive", default="0,4,64,256,1024")
    add_rows_flag(ap)
    a = ap.parse_args()
    ncpu = os.cpu_count()
    print = __builtins__.print if not a.rows else (lambda *x, **k: __builtins__.print(*x, file=sys.stderr, **k))
    print(f"kernel {os.uname().release}, {ncpu} CPUs, {a.threads} threads blocked in udp_recvmsg, then woken")
    print(f"{'maxactive':>22} {'counted':>8} {'missed':>8} {'lost':>6}")
    lost0 = None
    for m in (int(x) for x in a.maxactive.split(",")):
        counted, missed = run_once(m, a.threads)
        lost = 100 * (a.threads - counted) / a.threads
        if lost0 is None:
            lost0 = lost
        if a.rows:
            emit(row(f"kretprobe returns lost, {a.threads} threads woken at once, maxactive {m}", lost, "%",
                     lost0, f"maxactive {a.maxactive.split(',')[0]}"))
        label = f"0 (kernel: {max(10, 2 * ncpu)})" if m == 0 else str(m)
        shown = "n/a" if missed is None else str(int(missed))
        print(f"{label:>22} {counted:>8} {shown:>8} {100 * (a.threads - counted) / a.threads:>5.0f}%", flush=True)


if __name__ == "__main__":
    main()
