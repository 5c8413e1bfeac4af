#!/usr/bin/env python3
"""Benchmark: scrape latency with many cgroups, as the exporter scrapes.

Loads the net object this kernel accepts, creates real cgroups (so the
id -> path scan and the lifecycle's liveness checks are real too), fills
net_stats with one record (8 counters) per cgroup from user space, and times full scrapes
through the exporter's WSGI app (map read + decode + path resolution +
lifecycle + text exposition) at a 100-cgroup baseline and at N cgroups:
with no counter moving between scrapes, and with 10% of the cgroups'
counters moving before each scrape. The baseline of each figure is the
same scrape through the full renderer (a source without the raw contract:
every record decoded and every series rendered each scrape, as before the
incremental path), in the same process. Needs root. Not a test.

    sudo .venv/bin/python bench/scrape.py [--cgroups 10000] [--rounds 10] [--rows]
"""

import argparse
import ctypes
import errno
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


from ceemsnet.attribution.cgroups import CgroupResolver, find_cgroup2_root  # noqa: E402
from ceemsnet.attribution.lifecycle import Lifecycle  # noqa: E402
from ceemsnet.collectors.base import KernelHooks  # noqa: E402
from ceemsnet.collectors.counters import CounterMap, HashSource  # noqa: E402
from ceemsnet.collectors.net import net_families  # noqa: E402
from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version, running_release  # noqa: E402
from ceemsnet.planning.select import select_and_load  # noqa: E402
from ceemsnet.planning.structs import NET, decode_net, pack_net_key  # noqa: E402
from ceemsnet.runtime.btf import KernelBTF  # noqa: E402
from ceemsnet.serving.exporter import CeemsnetCollector, build_registry, make_app  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def fill(m, ids, seed=0):
    """One record per cgroup, all 8 of its counters (proto x family x direction) non-zero:
    24 series per cgroup (an older revision's per-counter map, memory.py --before: 8 keys). Returns how many inserts met a transient ENOMEM:
    non-preallocated per-CPU maps allocate from bpf_mem_alloc caches that
    refill asynchronously, and a burst of user-space inserts can outrun them."""
    val = ctypes.create_string_buffer(m.value_stride * m.ncpus)
    legacy = m.value_stride == 24  # an older revision's per-counter map (memory.py --before)
    words = 3 if legacy else 24
    counters = (1000 + seed, 10 + seed, 1) * (words // 3)
    ctypes.memmove(val, (ctypes.c_uint64 * words)(*counters), 8 * words)  # CPU 0's value; the rest stay 0
    keys = ([NET.legacy_key.pack(cid, p, f, d) for p in (0, 1) for f in (0, 1) for d in (0, 1)] if legacy
            else [pack_net_key(cid)] for cid in ids)
    retries = 0
    for key in (k for per_cgroup in keys for k in per_cgroup):
        for attempt in range(1000):
            try:
                m.update(key, val.raw)
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
    """One GET /metrics through the exporter's WSGI app, as the HTTP server runs it: the body's size."""
    env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": "",
           "HTTP_ACCEPT": "application/openmetrics-text; version=1.0.0" if openmetrics else "text/plain"}
    return sum(map(len, app(env, lambda status, headers: None)))


def body(app):
    env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": "", "HTTP_ACCEPT": "text/plain"}
    return b"".join(app(env, lambda status, headers: None))


def time_scrapes(app, rounds, between=None):
    """(first scrape, median of the next `rounds`, body size); between(i) runs before each timed scrape."""
    t0 = time.perf_counter()
    size = scrape(app)
    first = time.perf_counter() - t0
    times = []
    for i in range(rounds):
        if between:
            between(i)
        t0 = time.perf_counter()
        scrape(app)
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), size


def time_read(m, rounds, batch):
    m.batch_ok = None if batch else False
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        _, _, n = m.read_all()
        times.append(time.perf_counter() - t0)
    m.batch_ok = None
    return statistics.median(times), n


class FullSource:
    """The old contract only (read() -> decoded dict): CounterMap renders everything each scrape."""

    def __init__(self, src):
        self.src, self.name = src, src.name

    def read(self):
        return self.src.read()

    def delete(self, key):
        return self.src.delete(key)


def exporter(sel, m, root, incremental):
    src = HashSource(m, decode_net, pack_net_key)
    resolver = CgroupResolver(root)
    resolver.watch()  # as serve does: removals come from the watcher, not a readdir each scrape
    counters = CounterMap(src if incremental else FullSource(src), net_families, resolver, Lifecycle(root))
    net = KernelHooks("net", sel.loaded, counters)
    coll = CeemsnetCollector([net], net.hooks(), {"version": "bench"})
    return make_app(build_registry(coll), coll)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cgroups", type=int, default=10000)
    ap.add_argument("--baseline", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--moving", type=float, default=0.1, help="share of cgroups whose counters move per scrape")
    add_rows_flag(ap)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/scrape.py: needs root (loads BPF programs, creates cgroups)")
    say = (lambda *x, **k: print(*x, file=sys.stderr, **k)) if a.rows else print
    kver = parse_kernel_version(running_release())
    arch = normalize_arch(os.uname().machine)
    sel = select_and_load("net", kver, arch, KernelBTF(), map_entries={"net_stats": a.cgroups * 16 + 65536})
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
        say(f"created {a.cgroups} cgroups in {time.perf_counter() - t0:.2f} s")
        m = sel.loaded.maps["net_stats"]
        say(f"kernel {kver}, {sel.plan.family} object {sel.loaded.file}, {m.ncpus} possible CPUs")
        res = {}
        for n in (a.baseline, a.cgroups):
            ids = [cid for _, cid in made[:n]]
            retries = fill(m, ids)
            if retries:
                say(f"filling {n} cgroups: {retries} inserts retried after a transient ENOMEM")
            step = max(1, int(1 / a.moving)) if a.moving > 0 else 0

            def move(i, ids=ids, step=step):
                fill(m, ids[i % step::step], seed=i + 1)
            apps = {}
            for how in ("incremental", "full"):
                app = apps[how] = exporter(sel, m, root, how == "incremental")
                still = time_scrapes(app, a.rounds)
                moving = time_scrapes(app, max(3, a.rounds // 2), move) if step else still
                res[(n, how)] = (still, moving)
            mine = f"ceemsnet-bench-{os.getpid()}/".encode()
            same = [[ln for ln in body(apps[h]).split(b"\n") if mine in ln] for h in ("incremental", "full")]
            if same[0] != same[1]:
                sys.exit("bench/scrape.py: the incremental and the full renderings differ")
            batch, entries = time_read(m, a.rounds, True)
            it, _ = time_read(m, max(1, a.rounds // 3), False)
            res[(n, "read")] = (batch, it, entries)
        say(f"\n{'cgroups':>8} {'entries':>8} {'path':>12} {'1st scrape':>11} {'still p50':>10} {'moving p50':>11} "
            f"{'/metrics':>9}")
        for n in (a.baseline, a.cgroups):
            for how in ("incremental", "full"):
                (first, still, size), (_, moving, _) = res[(n, how)]
                say(f"{n:>8} {res[(n, 'read')][2]:>8} {how:>12} {first * 1000:>9.1f}ms {still * 1000:>8.1f}ms "
                    f"{moving * 1000:>9.1f}ms {size / 1024:>7.0f}KiB")
        N, B = a.cgroups, a.baseline
        inc, full = res[(N, "incremental")], res[(N, "full")]
        keys = res[(N, "read")][2]
        pct = f"{a.moving:.0%}"
        out = [
            row(f"scrape, {N} cgroups ({keys} keys), no counter moved, p50", inc[0][1] * 1000, "ms",
                full[0][1] * 1000, "full render, same scrape", "<= 100 ms", inc[0][1] * 1000 <= 100),
            row(f"scrape, {N} cgroups, {pct} of cgroups' counters moved, p50", inc[1][1] * 1000, "ms",
                full[1][1] * 1000, "full render, same scrape", "<= 100 ms", inc[1][1] * 1000 <= 100),
        ]
        per_n = inc[1][1] / N * 1000
        per_b = res[(B, "incremental")][1][1] / B * 1000
        out.append(row(f"scrape per 1000 cgroups at {N} ({pct} moving)", per_n * 1000, "ms", per_b * 1000,
                       f"same at {B} cgroups", "ratio <= 1 (linear or better)", per_n <= per_b))
        out.append(row(f"first scrape, {N} cgroups (every path rendered)", inc[0][0] * 1000, "ms", full[0][0] * 1000,
                       "full render"))
        batch, it, _ = res[(N, "read")]
        out.append(row(f"map read, {keys} keys (bpf_map_lookup_batch)", batch * 1000, "ms", it * 1000,
                       "get_next_key + lookup"))
        say()
        for r in out:
            if a.rows:
                emit(r)
            else:
                print(f"{r['what']}: {r['value']:.1f} {r['unit']} ({r['baseline_what']}: {r['baseline']:.1f}, "
                      f"x{r['ratio']:.3f}; target {r['target']})")
    finally:
        sel.loaded.close()
        for p, _ in reversed(made):
            os.rmdir(p)
        os.rmdir(base)


if __name__ == "__main__":
    main()
