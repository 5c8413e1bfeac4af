#!/usr/bin/env python3
"""Benchmark: the exporter's resident memory, idle and with many cgroups.

Starts the real `ceemsnet serve --collectors=net,vfs,skb` (pins in a
private bpffs folder, no store), scrapes it a few times and reads its
VmRSS from /proc: idle (whatever this host's cgroups counted meanwhile),
then with N fresh cgroups holding a net_stats record each (bench/scrape.py's fill(), written from here
into the exporter's pinned net_stats). Baselines from the same run: a bare
`python3 -c pass` interpreter's RSS, and with --before REV the same
measurements of `ceemsnet serve` from that git revision (extracted to a
temporary folder). Needs root. Not a test.

    sudo .venv/bin/python bench/memory.py [--cgroups 10000] [--before REV] [--rows]
"""

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ceemsnet.attribution.cgroups import find_cgroup2_root  # noqa: E402
from ceemsnet.runtime import libbpf  # noqa: E402
from ceemsnet.runtime.maps import BpfMap  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402
from scrape import fill  # noqa: E402


def rss_mib(pid, field="VmRSS"):
    """VmRSS (resident now) or VmHWM (the most resident since start) of a process, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Serve:
    def __init__(self, tree, pins, entries):
        self.port = free_port()
        self.pins = pins
        self.tree = tree
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.p = subprocess.Popen([sys.executable, "-m", "ceemsnet.cli", "serve",
                                   f"--web.listen-address=127.0.0.1:{self.port}", "--collectors=net,vfs,skb",
                                   "--unit=none", "--storage.path=none", "--log.level=error",
                                   f"--bpf.pin-path={pins}", f"--net.map-entries={entries}"],
                                  cwd=tree, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while True:
            try:
                self.scrape()
                return
            except OSError:
                if self.p.poll() is not None or time.time() > deadline:
                    raise SystemExit(f"ceemsnet serve ({tree}) did not start: {self.p.stderr.read().strip()}")
                time.sleep(0.2)

    def scrape(self):
        with urllib.request.urlopen(self.url, timeout=120) as r:
            return len(r.read())

    def settle(self, scrapes=3):
        for _ in range(scrapes):
            self.scrape()
        return rss_mib(self.p.pid)

    def net_stats(self):
        for d, _, files in os.walk(os.path.join(self.pins, "net")):
            if "map__net_stats" in files:
                fd = libbpf.lib().bpf_obj_get(os.path.join(d, "map__net_stats").encode())
                libbpf.check_rc(fd, "bpf_obj_get(net_stats)")
                return BpfMap.from_fd("net_stats", fd)
        raise SystemExit("no pinned net_stats found")

    def stop(self):
        self.p.terminate()  # our own child, by its PID
        self.p.wait(timeout=60)
        subprocess.run([sys.executable, "-m", "ceemsnet.cli", "detach", f"--bpf.pin-path={self.pins}"],
                       cwd=self.tree, capture_output=True)


def measure(tree, ids, entries):
    pins = f"/sys/fs/bpf/ceemsnet-bench-mem-{os.getpid()}"
    s = Serve(tree, pins, entries)
    try:
        idle = s.settle()
        m = s.net_stats()
        try:
            fill(m, ids)
        finally:
            m.close()
        busy = s.settle()
        return idle, busy, rss_mib(s.p.pid, "VmHWM")
    finally:
        s.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cgroups", type=int, default=10000)
    ap.add_argument("--before", metavar="REV", help="also measure ceemsnet serve as of this git revision")
    add_rows_flag(ap)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/memory.py: needs root (loads BPF programs, creates cgroups)")
    say = (lambda *x: print(*x, file=sys.stderr)) if a.rows else print
    bare = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    time.sleep(0.5)
    bare_rss = rss_mib(bare.pid)
    bare.communicate(b"")
    root = find_cgroup2_root()
    base = os.path.join(root, f"ceemsnet-bench-mem-{os.getpid()}")
    os.mkdir(base)
    made, old_tree = [], None
    entries = a.cgroups * 16 + 65536
    try:
        for i in range(a.cgroups):
            p = os.path.join(base, f"job_{i}")
            os.mkdir(p)
            made.append((p, os.stat(p).st_ino))
        ids = [cid for _, cid in made]
        idle, busy, peak = measure(ROOT, ids, entries)
        say(f"bare python3: {bare_rss:.1f} MiB; ceemsnet serve net,vfs,skb: idle {idle:.1f} MiB, "
            f"{a.cgroups} cgroups {busy:.1f} MiB (peak {peak:.1f})")
        before = None
        if a.before:
            old_tree = tempfile.mkdtemp(prefix="ceemsnet-bench-before-")
            arch = subprocess.run(["git", "-C", ROOT, "archive", a.before], capture_output=True, check=True).stdout
            with tarfile.open(fileobj=io.BytesIO(arch)) as t:
                t.extractall(old_tree)
            before = measure(old_tree, ids, entries)
            say(f"ceemsnet serve as of {a.before}: idle {before[0]:.1f} MiB, {a.cgroups} cgroups {before[1]:.1f} MiB "
                f"(peak {before[2]:.1f})")
        out = []
        for what, v, b4, target in (("idle", idle, before and before[0], 30),
                                    (f"{a.cgroups} cgroups ({a.cgroups * 24} net series)", busy, before and before[1], 60)):
            label = f"exporter RSS, net,vfs,skb, {what}"
            if b4:
                out.append(row(label, v, "MiB", b4, f"same, ceemsnet as of {a.before}", f"<= {target} MiB",
                               v <= target))
            out.append(row(label + " (vs bare interpreter)", v, "MiB", bare_rss, "bare python3 -c pass",
                           f"<= {target} MiB", v <= target))
        # the most resident at any time (the first scrape after the records appear, a scrape being sent):
        # what a memory limit on the unit must allow; no target
        if before:
            out.append(row(f"exporter peak RSS (VmHWM), net,vfs,skb, {a.cgroups} cgroups", peak, "MiB", before[2],
                           f"same, ceemsnet as of {a.before}"))
        out.append(row(f"exporter peak RSS (VmHWM), net,vfs,skb, {a.cgroups} cgroups (vs bare interpreter)", peak,
                       "MiB", bare_rss, "bare python3 -c pass"))
        for r in out:
            if a.rows:
                emit(r)
            else:
                print(f"{r['what']}: {r['value']:.1f} {r['unit']} ({r['baseline_what']}: {r['baseline']:.1f}, "
                      f"x{r['ratio']:.2f}; target {r['target']})")
    finally:
        for p, _ in reversed(made):
            for _ in range(50):
                try:
                    os.rmdir(p)
                    break
                except OSError:
                    time.sleep(0.1)
        os.rmdir(base)
        if old_tree:
            shutil.rmtree(old_tree, ignore_errors=True)


if __name__ == "__main__":
    main()
