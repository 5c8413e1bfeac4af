#!/usr/bin/env python3
"""How long counting stops across an exporter restart and an upgrade.

A child in a fresh cgroup sends 100-byte UDP datagrams over loopback at a
steady pace while the exporter (with pins) is restarted: once adopting its
own pins (restart), once with a bigger --net.map-entries, which must load
new maps and copy the counts over (upgrade: migrate), and once with
--bpf.pin-path=none for comparison (today's behaviour before pins). Each
scenario's missed datagrams = sent - counted; the window is missed / rate.
Root; this kernel's best hook family (set --hook to choose).
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ceemsnet.attribution.cgroups import find_cgroup2_root  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402

SENDER = r"""
import socket, sys, time
port, pace = int(sys.argv[1]), float(sys.argv[2])
sys.stdin.readline()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
n, t0 = 0, time.monotonic()
import select
while not select.select([sys.stdin], [], [], 0)[0]:
    try:
        s.sendto(b"x" * 100, ("127.0.0.1", port))
        n += 1
    except BlockingIOError:
        pass
    time.sleep(pace)
print(n, time.monotonic() - t0, flush=True)
"""


ROWS = False


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    def __init__(self, port, extra):
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.p = subprocess.Popen([sys.executable, "-m", "ceemsnet.cli", "serve", f"--web.listen-address=127.0.0.1:{port}",
                                   "--unit=none", "--storage.path=none", "--log.level=warning", *extra], cwd=ROOT)
        for _ in range(300):
            try:
                urllib.request.urlopen(self.url, timeout=2).read()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("the exporter did not start")

    def egress(self, rel):
        text = urllib.request.urlopen(self.url, timeout=10).read().decode()
        want = f'ceemsnet_net_egress_bytes_total{{cgroup="{rel}",proto="udp",family="ipv4"}} '
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(want))

    def stop(self):
        self.p.terminate()  # our own child, by its PID
        self.p.wait(timeout=60)


def scenario(name, first, second, cg, rel, port, sink_port, pace):
    snd = subprocess.Popen([sys.executable, "-c", SENDER, str(sink_port), str(pace)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True)
    with open(os.path.join(cg, "cgroup.procs"), "w") as f:
        f.write(str(snd.pid))
    e = Serve(port, first)
    base = e.egress(rel)
    snd.stdin.write("go\n")
    snd.stdin.flush()
    time.sleep(1.0)
    pre = e.egress(rel)
    t0 = time.monotonic()
    e.stop()
    e = Serve(port, second)
    restart = time.monotonic() - t0
    time.sleep(1.0)
    snd.stdin.write("stop\n")
    snd.stdin.flush()
    n, secs = snd.stdout.readline().split()
    snd.wait()
    time.sleep(0.2)
    post = e.egress(rel)
    # without pins the counter starts again at zero: what a scraper sees is the
    # first run up to its last scrape plus the second run
    counted = ((post - base) if "--bpf.pin-path=none" not in second else (pre - base) + post) / 100
    e.stop()
    n, secs = int(n), float(secs)
    missed = n - counted
    rate = n / secs
    print(f"{name:34} {n:>8} {counted:>9.0f} {missed:>7.0f} {missed / rate * 1000:>9.1f} ms  {restart:>6.2f} s",
          file=sys.stderr if ROWS else sys.stdout)
    return missed / rate * 1000


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hook", default="auto")
    ap.add_argument("--pace", type=float, default=0.0002, help="seconds between sends (default 0.2 ms)")
    add_rows_flag(ap)
    a = ap.parse_args()
    global ROWS
    ROWS = a.rows
    if os.geteuid() != 0:
        sys.exit("bench/continuity_gap.py: needs root")
    root = find_cgroup2_root()
    rel = f"/ceemsnet-bench-{uuid.uuid4().hex[:8]}"
    cg = os.path.join(root, rel.lstrip("/"))
    os.mkdir(cg)
    pins = f"/sys/fs/bpf/ceemsnet-bench-{os.getpid()}"
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def drain():
        sink.settimeout(0.2)
        while not stop.is_set():
            try:
                sink.recv(2048)
            except OSError:
                pass
    threading.Thread(target=drain, daemon=True).start()
    port = free_port()
    common = [f"--hook={a.hook}"]
    out = sys.stderr if a.rows else sys.stdout
    print(f"kernel {os.uname().release}: 100-byte UDP datagrams every {a.pace * 1000:.1f} ms, exporter "
          "restarted after 1 s", file=out)
    print(f"{'scenario':34} {'sent':>8} {'counted':>9} {'missed':>7} {'window':>12}  restart took", file=out)
    try:
        before = scenario("restart, no pins (before)", common + ["--bpf.pin-path=none"], common + ["--bpf.pin-path=none"],
                 cg, rel, port, sink.getsockname()[1], a.pace)
        pinned = common + [f"--bpf.pin-path={pins}"]
        adopted = scenario("restart, pins adopted", pinned, pinned, cg, rel, port, sink.getsockname()[1], a.pace)
        migrated = scenario("upgrade: new map size (migrate)", pinned, pinned + ["--net.map-entries=70000"], cg, rel, port,
                 sink.getsockname()[1], a.pace)
        if a.rows:
            for what, v in (("restart adopting the pins", adopted), ("upgrade with a new map size", migrated)):
                emit(row(f"counting gap across an exporter {what}", v, "ms", before,
                         "restart without pins (counts lost)"))
    finally:
        stop.set()
        subprocess.run([sys.executable, "-m", "ceemsnet.cli", "detach", f"--bpf.pin-path={pins}"], cwd=ROOT,
                       capture_output=True)
        for _ in range(50):
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.1)


if __name__ == "__main__":
    main()
