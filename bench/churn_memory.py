#!/usr/bin/env python3
"""Benchmark: does the exporter's memory follow cgroup churn, per collector?

Rounds of 5,000 cgroups (tests/kernel/test_churn.py's churn_round: one child
visits each fresh cgroup, sends a datagram from a socket made there, and each
cgroup is removed as soon as the child has left it) under one `serve` per
collector, run one after the other in the same process so each is the other's
baseline. After each round, once the removed cgroups' keys are gone, the
exporter's memory is read from /proc/<pid>/smaps_rollup and /proc/<pid>/smaps:
RSS, and where it sits (the C heap, anonymous mappings, Python's own arenas
are part of the anonymous ones), so a change can be told apart from a leak.

Each collector's row gives the RSS after every round, the least-squares slope
per round from round 2 on (round 1 warms up: first-time allocations), and the
largest change between two rounds. A leak shows as a slope of about the same
sign every time; allocator noise as changes of both signs around a flat line.

    sudo .venv/bin/python bench/churn_memory.py [--rounds 8] [--collectors net,skb] [--trace]

--trace runs each exporter under tracemalloc (slower, more memory) and prints,
after the last round, the allocation sites whose Python memory grew most
since round 1: where a per-cgroup growth is kept.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ceemsnet.attribution.cgroups import find_cgroup2_root  # noqa: E402
from tests.kernel.helpers import Cgroup, Exporter  # noqa: E402
from tests.kernel.peer import Peer  # noqa: E402
from tests.kernel.test_churn import N, churn_round  # noqa: E402


def smaps(pid: int) -> dict[str, float]:
    """MiB: RSS, the [heap] mapping's RSS, anonymous mappings' RSS (Python's arenas, glibc's
    mmapped chunks and other threads' arenas), and file-backed (libraries, BPF object files)."""
    heap = anon = filed = 0
    cur = None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                name = parts[5] if len(parts) > 5 else ""
                cur = "heap" if name == "[heap]" else ("anon" if not name or name.startswith("[anon") else "file")
            elif first == "Rss:":
                kib = int(line.split()[1])
                if cur == "heap":
                    heap += kib
                elif cur == "anon":
                    anon += kib
                else:
                    filed += kib
    return {"rss": (heap + anon + filed) / 1024, "heap": heap / 1024, "anon": anon / 1024, "file": filed / 1024}


def slope(ys: list[float]) -> float:
    n = len(ys)
    if n < 2:
        return 0.0
    mx, my = (n - 1) / 2, sum(ys) / n
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / sum((i - mx) ** 2 for i in range(n))


# imported by the exporter's Python (PYTHONPATH) when --trace is given: tracemalloc from the start, and
# SIGUSR2 writes a snapshot to $CEEMSNET_BENCH_TRACE/<n>.snap
SITECUSTOMIZE = """
import os, pickle, signal, tracemalloc
_dir = os.environ.get("CEEMSNET_BENCH_TRACE")
if _dir:
    tracemalloc.start(12)
    _n = [0]
    def _dump(signum, frame):
        _n[0] += 1
        snap = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
        with open(os.path.join(_dir, f"{_n[0]}.snap.tmp"), "wb") as f:
            pickle.dump(snap, f)
        os.rename(os.path.join(_dir, f"{_n[0]}.snap.tmp"), os.path.join(_dir, f"{_n[0]}.snap"))
    signal.signal(signal.SIGUSR2, _dump)
"""


def snapshot(pid: int, trace_dir: str, n: int) -> tracemalloc.Snapshot:
    os.kill(pid, signal.SIGUSR2)  # our own exporter, by its PID
    path = os.path.join(trace_dir, f"{n}.snap")
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the exporter wrote no tracemalloc snapshot to {path}")
        time.sleep(0.2)
    with open(path, "rb") as f:
        return pickle.load(f)


def samples(e: Exporter) -> dict:
    """A scrape, tried again while it times out (a traced exporter meeting 5,000 removed cgroups
    takes longer than the client's 30 s)."""
    for _ in range(10):
        try:
            return e.samples()
        except OSError:
            continue
    return e.samples()


def run(collector: str, rounds: int, root: str, trace: bool = False) -> list[dict[str, float]]:
    extra = ("--cgroup.retention=1",)
    trace_dir = tempfile.mkdtemp(prefix="ceemsnet-bench-trace-") if trace else None
    env_before = dict(os.environ)
    if trace_dir:
        with open(os.path.join(trace_dir, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)
        os.environ["PYTHONPATH"] = trace_dir
        os.environ["CEEMSNET_BENCH_TRACE"] = trace_dir
    try:
        e = Exporter(extra=extra, collectors=collector)
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    snaps = []
    stats = f"{collector}_stats"
    key = ("ceemsnet_map_entries", (("map", stats),))
    parent = Cgroup(root, f"ceemsnet-bench-churn-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    peer = Peer()
    out = []
    try:
        base = samples(e).get(key, 0)
        for r in range(rounds):
            t0 = time.monotonic()
            churn_round(parent, peer, f"r{r}-", socket_per_cgroup=(collector == "skb"))
            # settled: the removed cgroups' keys freed and their series expired (as test_churn waits)
            deadline = time.monotonic() + 90
            while samples(e).get(key, 0) > base + 8 and time.monotonic() < deadline:
                time.sleep(0.5)
            time.sleep(3)
            samples(e)
            m = smaps(e.proc.pid)
            m["secs"] = time.monotonic() - t0
            out.append(m)
            if trace_dir and (r == 0 or r == rounds - 1):
                snaps.append(snapshot(e.proc.pid, trace_dir, len(snaps) + 1))
            print(f"  {collector} round {r + 1}: RSS {m['rss']:.1f} MiB (heap {m['heap']:.1f}, anon {m['anon']:.1f}, "
                  f"file {m['file']:.1f}); {m['secs']:.0f} s", flush=True)
    finally:
        peer.close()
        e.stop()
        parent.remove()
        if trace_dir:
            for name in os.listdir(trace_dir):
                os.unlink(os.path.join(trace_dir, name))
            os.rmdir(trace_dir)
    if len(snaps) == 2:
        stats = snaps[1].compare_to(snaps[0], "traceback")
        total = sum(s.size_diff for s in stats)
        print(f"  {collector}: Python memory traced, round 1 -> {rounds}: {total / 2**20:+.2f} MiB; grew most:")
        for st in stats[:6]:
            print(f"    {st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks")
            for line in st.traceback.format()[-8:]:
                print(f"      {line}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=8, help="rounds of 5,000 cgroups per collector (default 8)")
    ap.add_argument("--collectors", default="net,skb", help="comma-separated, each its own serve (default net,skb)")
    ap.add_argument("--trace", action="store_true", help="run each exporter under tracemalloc and print where its "
                    "Python memory grew between round 1 and the last")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/churn_memory.py: run as root (it loads BPF programs and makes cgroups)", file=sys.stderr)
        return 1
    root = find_cgroup2_root()
    results = {}
    for c in a.collectors.split(","):
        print(f"{c}: {a.rounds} rounds of {N} cgroups", flush=True)
        results[c] = run(c, a.rounds, root, a.trace)
    print()
    print("| collector | RSS after each round (MiB) | slope from round 2 (MiB/round) | largest change between rounds "
          "| heap, anon after round 1 -> last |")
    print("|---|---|---|---|---|")
    for c, ms in results.items():
        rss = [m["rss"] for m in ms]
        steps = [b - a for a, b in zip(rss, rss[1:])]
        big = max(steps, key=abs) if steps else 0.0
        print(f"| {c} | {', '.join(f'{x:.1f}' for x in rss)} | {slope(rss[1:]):+.2f} | {big:+.1f} "
              f"| {ms[0]['heap']:.1f} -> {ms[-1]['heap']:.1f}, {ms[0]['anon']:.1f} -> {ms[-1]['anon']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
