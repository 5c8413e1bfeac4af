#!/usr/bin/env python3
"""Benchmark: scrape latency and exporter memory with many cgroups.

Loads the net object this kernel accepts, creates real cgroups (so the
id -> path scan is real too), fills net_stats with 8 keys per cgroup from
user space, and times full scrapes (map read + decode + path resolution +
text exposition) at a 100-cgroup baseline and at N cgroups, in one process.
Prints figures and ratios. Needs root. Not a test: nothing asserts.

    sudo .venv/bin/python bench/scrape.py [--cgroups 10000] [--rounds 10]
"""

import argparse
import ctypes
import errno
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


from ceemsnet.cgroups import CgroupResolver, find_cgroup2_root  # noqa: E402
from ceemsnet.collectors.base import KernelHooks  # noqa: E402
from ceemsnet.collectors.counters import CounterMap, HashSource  # noqa: E402
from ceemsnet.collectors.net import net_families  # noqa: E402
from ceemsnet.exporter import CeemsnetCollector, build_registry, make_app  # noqa: E402
from ceemsnet.kernel import KernelBTF, normalize_arch, parse_kernel_version, running_release  # noqa: E402
from ceemsnet.loader import select_and_load  # noqa: E402
from ceemsnet.structs import decode_net, pack_net_key  # noqa: E402


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(m, ids):
    """8 keys per cgroup. Returns how many inserts met a transient ENOMEM:
    non-preallocated per-CPU maps allocate from bpf_mem_alloc caches that
    refill asynchronously, and a burst of user-space inserts can outrun them."""
    val = ctypes.create_string_buffer(m.value_stride * m.ncpus)
    ctypes.memmove(val, (ctypes.c_uint64 * 3)(1000, 10, 1), 24)  # CPU 0 slot; the rest stay 0
    retries = 0
    for cid in ids:
        for proto in (0, 1):
            for fam in (0, 1):
                for d in (0, 1):
                    for attempt in range(1000):
                        try:
                            m.update(pack_net_key(cid, proto, fam, d), val.raw)
                            break
                        except OSError as e:
                            if e.errno != errno.ENOMEM:
                                raise
                            retries += 1
                            time.sleep(0.001)
                    else:
                        raise OSError(errno.ENOMEM, "map insert kept failing")
    return retries


def scrape(app, openmetrics=False):
    """One GET /metrics through the exporter's WSGI app, as the HTTP server runs it."""
    env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": "",
           "HTTP_ACCEPT": "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"}
    return b"".join(app(env, lambda status, headers: None))


def time_scrapes(app, rounds, openmetrics=False):
    t0 = time.perf_counter()
    body = scrape(app, openmetrics)
    first = time.perf_counter() - t0
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        scrape(app, openmetrics)
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), len(body)


def time_read(m, rounds, batch):
    m.batch_ok = None if batch else False
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        _, _, n = m.read_all()
        times.append(time.perf_counter() - t0)
    m.batch_ok = None
    return statistics.median(times), n


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cgroups", type=int, default=10000)
    ap.add_argument("--baseline", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/scrape.py: needs root (loads BPF programs, creates cgroups)")
    kver = parse_kernel_version(running_release())
    arch = normalize_arch(os.uname().machine)
    sel = select_and_load("net", kver, arch, KernelBTF(), map_entries={"net_stats": a.cgroups * 8 + 4096})
    if sel.loaded is None:
        sys.exit(f"no hook family loads here: {sel.refusals}")
    root = find_cgroup2_root()
    base = os.path.join(root, f"ceemsnet-bench-{os.getpid()}")
    os.mkdir(base)
    made = []
    try:
        t0 = time.perf_counter()
        for i in range(a.cgroups):
            p = os.path.join(base, f"job_{i}")
            os.mkdir(p)
            made.append((p, os.stat(p).st_ino))
        print(f"created {a.cgroups} cgroups in {time.perf_counter() - t0:.2f} s")
        m = sel.loaded.maps["net_stats"]
        resolver = CgroupResolver(root)
        net = KernelHooks("net", sel.loaded, CounterMap(HashSource(m, decode_net, pack_net_key), net_families,
                                                        resolver))
        coll = CeemsnetCollector([net], net.hooks(), {"version": "bench"})
        app = make_app(build_registry(coll), coll)
        rss0 = rss_mib()
        print(f"kernel {kver}, {sel.plan.family} object {sel.loaded.file}, {m.ncpus} possible CPUs, "
              f"exporter RSS at start {rss0:.1f} MiB")
        rows = []
        for n in (a.baseline, a.cgroups):
            retries = fill(m, [cid for _, cid in made[:n]])
            if retries:
                print(f"filling {n} cgroups: {retries} inserts retried after a transient ENOMEM")
            first, median, size = time_scrapes(app, a.rounds)
            om = time_scrapes(app, max(1, a.rounds // 3), openmetrics=True)[1]
            batch, entries = time_read(m, a.rounds, True)
            it, _ = time_read(m, a.rounds, False)
            rows.append((n, entries, first, median, batch, it, size, rss_mib(), om))
        print()
        print(f"{'cgroups':>8} {'entries':>8} {'1st scrape':>11} {'scrape p50':>11} {'OpenMetrics':>12} "
              f"{'batch read':>11} {'iter read':>10} {'/metrics':>9} {'RSS':>9}")
        for n, entries, first, median, batch, it, size, rss, om in rows:
            print(f"{n:>8} {entries:>8} {first * 1000:>9.1f}ms {median * 1000:>9.1f}ms {om * 1000:>10.1f}ms "
                  f"{batch * 1000:>9.1f}ms {it * 1000:>8.1f}ms {size / 1024:>7.0f}KiB {rss:>6.1f}MiB")
        (bn, _, _, bmed, bb, bi, _, brss, bom), (nn, _, _, nmed, nb, ni, _, nrss, nom) = rows
        print()
        print(f"ratio {nn}/{bn} cgroups: scrape x{nmed / bmed:.1f}, per cgroup x{(nmed / nn) / (bmed / bn):.2f}; "
              f"RSS +{nrss - brss:.1f} MiB")
        print(f"batch lookup vs get_next_key iteration at {nn} cgroups: x{ni / nb:.1f} faster")
        print(f"direct text rendering vs prometheus_client (OpenMetrics path) at {nn} cgroups: "
              f"x{nom / nmed:.1f} faster")
    finally:
        sel.loaded.close()
        for p, _ in reversed(made):
            os.rmdir(p)
        os.rmdir(base)


if __name__ == "__main__":
    main()
