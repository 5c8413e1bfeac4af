#!/usr/bin/env python3
"""Benchmark: `report --prometheus` on a backfilled cluster, fast path vs exact path.

Writes synthetic ceemsnet counters for NODES exporters x CGROUPS job cgroups
x 4 series over HOURS at a 15 s scrape interval (OpenMetrics), backfills them
into a fresh TSDB with promtool, starts Debian's prometheus on it (loopback,
no scraping), and times the report over the whole range twice in one process:
once on data without restarts (every series takes the fast path, computed
inside Prometheus), once on the same traffic with every exporter restarted
half way (every series takes the exact path: raw samples fetched and summed
here). Both must equal the bytes generated. Prints figures and the ratio.
Not a test: nothing asserts but the arithmetic.

    .venv/bin/python bench/prom_report.py [--nodes 10] [--cgroups 20] [--hours 6]
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from ceemsnet.report.prometheus import PrometheusAPI, query  # noqa: E402
from tests.promserver import free_port, stop_by_pid  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402

STEP = 15


def write_openmetrics(path, nodes, cgroups, start, n, restart_at):
    """Counters growing by a per-series step; with restart_at, each exporter's counters
    and start time restart at that sample index. Returns the true total bytes."""
    series = [(f"n{i}:9977", f"/system.slice/slurmstepd.scope/job_{1000 + c}/step_0", proto, fam)
              for i in range(nodes) for c in range(cgroups) for proto in ("tcp", "udp") for fam in ("ipv4", "ipv6")]
    total = 0
    with open(path, "w") as f:
        f.write("# TYPE ceemsnet_net_egress_bytes counter\n")
        for k, (inst, cg, proto, fam) in enumerate(series):
            inc = 1000 + k % 97
            labels = f'instance="{inst}",job="ceemsnet",cgroup="{cg}",proto="{proto}",family="{fam}"'
            v = 0
            for j in range(n):
                v = inc * (j + 1 - (restart_at if restart_at and j >= restart_at else 0))
                f.write(f"ceemsnet_net_egress_bytes_total{{{labels}}} {v} {start + j * STEP}\n")
            total += inc * n
        f.write("# TYPE ceemsnet_process_start_time_seconds gauge\n")
        for i in range(nodes):
            for j in range(n):
                st = start - 60 + (restart_at * STEP if restart_at and j >= restart_at else 0)
                f.write(f'ceemsnet_process_start_time_seconds{{instance="n{i}:9977",job="ceemsnet"}} {st} '
                        f"{start + j * STEP}\n")
        f.write("# EOF\n")
    return total


def run(label, work, nodes, cgroups, start, n, restart_at):
    om = os.path.join(work, f"{label}.om")
    truth = write_openmetrics(om, nodes, cgroups, start, n, restart_at)
    tsdb = os.path.join(work, f"{label}-tsdb")
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, tsdb], check=True,
                   stdout=subprocess.DEVNULL)
    os.unlink(om)
    cfg = os.path.join(work, "p.yml")
    with open(cfg, "w") as f:
        f.write("global:\n  scrape_interval: 1m\n")
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tsdb}",
                             f"--web.listen-address={url.split('//')[1]}", "--storage.tsdb.retention.time=30d",
                             "--log.level=error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        api = PrometheusAPI(url, timeout=300)
        deadline = time.time() + 60
        while True:
            try:
                api.query("1", time.time())
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.5)
        t = time.perf_counter()
        rows = query(api, "job", start - 1, start + (n - 1) * STEP)
        took = time.perf_counter() - t
        got = sum(r["net_egress_bytes"] or 0 for r in rows)
        return took, api.queries, got, truth, len(rows)
    finally:
        stop_by_pid(proc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--cgroups", type=int, default=20, help="job cgroups per node")
    ap.add_argument("--hours", type=float, default=6.0)
    add_rows_flag(ap)
    a = ap.parse_args()
    say = (lambda *x: print(*x, file=sys.stderr)) if a.rows else print
    if not shutil.which("promtool") or not shutil.which("prometheus"):
        sys.exit("bench/prom_report.py: needs Debian's prometheus package (make setup)")
    n = int(a.hours * 3600 / STEP)
    start = int(time.time() - a.hours * 3600 - 3600) // 3600 * 3600
    work = tempfile.mkdtemp(prefix="ceemsnet-bench-")
    try:
        series = a.nodes * a.cgroups * 4
        say(f"{a.nodes} exporters x {a.cgroups} jobs x 4 series = {series} series, {n} samples each "
              f"({a.hours:g} h at {STEP} s): {series * n:,} samples")
        base = run("fast", work, a.nodes, a.cgroups, start, n, None)
        exact = run("restarts", work, a.nodes, a.cgroups, start, n, n // 2)
        for name, (took, queries, got, truth, rows) in (("no restarts (fast path)", base),
                                                         ("every exporter restarted (exact path)", exact)):
            say(f"  {name:40s} {took:7.2f} s  {queries:3d} queries  {rows} jobs  "
                  f"bytes {'exact' if got == truth else f'WRONG: {got} != {truth}'}")
        say(f"  exact path / fast path: {exact[0] / base[0]:.1f}x")
        if a.rows:
            emit(row(f"report --prometheus, {series} series over {a.hours:g} h, every exporter restarted "
                     "(exact path)", exact[0], "s", base[0], "no restarts (fast path)", "bytes exact",
                     exact[2] == exact[3] and base[2] == base[3]))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
