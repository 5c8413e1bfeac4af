#!/usr/bin/env python3
"""Benchmark: scrape time while squeue and sacct hang, job names looked up in the background.

Times full scrapes through the exporter's WSGI app (add_units' job labels
and per-job sums, the text exposition) over a stand-in collector serving
SLURM-shaped cgroups (--jobs jobs, 4 step cgroups each, 8 series per
cgroup), one scrape every --interval seconds for --seconds seconds, in
three configurations in the same process:

  none        no lookup (--slurm.squeue=none --slurm.sacct=none): the baseline
  background  fake squeue and sacct that sleep 60 s, asked from BackgroundNames' thread (serve now)
  in-scrape   the same fakes asked inside the scrape (SlurmNames.learn in gather, as serve did before)

No root, no kernel: the fakes are shell scripts in a temporary directory.

    .venv/bin/python bench/slurm_lookup.py [--jobs 200] [--seconds 12] [--interval 0.5]
"""

import argparse
import logging
import os
import stat
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ceemsnet.attribution.slurm import BackgroundNames, SlurmNames  # noqa: E402
from ceemsnet.common.metrics import Family  # noqa: E402
from ceemsnet.serving.exporter import CeemsnetCollector, make_app  # noqa: E402

V2 = "/system.slice/slurmstepd.scope"


class Jobs:
    """Stand-in net collector: 8 series per step cgroup of each job."""
    name = "net"

    def __init__(self, jobs: int):
        self.paths = [f"{V2}/job_{1000 + j}/step_{s}" for j in range(jobs) for s in ("0", "1", "batch", "extern")]
        self.n = 0

    def collect(self):
        self.n += 1
        f = Family("ceemsnet_net_egress_bytes", "Bytes sent", "counter", ("cgroup", "proto", "family"))
        for i, p in enumerate(self.paths):
            for proto in ("tcp", "udp"):
                for fam in ("ipv4", "ipv6"):
                    f.add((p, proto, fam), i + self.n)
        return [f]


def hanging(d, name):
    p = os.path.join(d, name)
    with open(p, "w") as f:
        f.write("#!/bin/sh\nsleep 60\n")
    os.chmod(p, os.stat(p).st_mode | stat.S_IXUSR)
    return p


def scrape_times(names, jobs: int, seconds: float, interval: float) -> list[float]:
    app = make_app(lambda: None, CeemsnetCollector([Jobs(jobs)], [], {"version": "bench"}, "slurm", names))
    env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET"}
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        body = app(env, lambda *a: None)
        b"".join(body)
        body.close()
        out.append(time.perf_counter() - t0)
        time.sleep(interval)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--interval", type=float, default=0.5)
    a = ap.parse_args()
    logging.disable(logging.WARNING)  # the lookups' "did not answer" warnings
    with tempfile.TemporaryDirectory() as d:
        sq, sa = hanging(d, "squeue"), hanging(d, "sacct")
        runs = {}
        runs["none"] = scrape_times(None, a.jobs, a.seconds, a.interval)
        bg = BackgroundNames(sa, sq)
        try:
            runs["background"] = scrape_times(bg, a.jobs, a.seconds, a.interval)
        finally:
            bg.stop()
        # the old way: the lookup inside the scrape (5 s timeout per program, each killed at it)
        sync = SlurmNames(sa, squeue=sq, run=bg.runner.__class__())
        runs["in-scrape"] = scrape_times(sync, a.jobs, a.seconds, a.interval)
    print(f"{a.jobs} jobs, {a.jobs * 4} cgroups, {a.jobs * 32} series; fake squeue and sacct sleep 60 s; "
          f"a scrape every {a.interval:g} s for {a.seconds:g} s")
    print(f"{'lookup':<12} {'scrapes':>7} {'median ms':>10} {'max ms':>10}")
    for k, v in runs.items():
        print(f"{k:<12} {len(v):>7} {statistics.median(v) * 1000:>10.1f} {max(v) * 1000:>10.1f}")


if __name__ == "__main__":
    main()
