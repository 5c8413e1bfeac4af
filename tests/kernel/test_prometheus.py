"""`ceemsnet report --prometheus` against a real Prometheus scraping a real exporter.

Debian's prometheus, started here on loopback with a 1 s scrape interval and
its own TSDB in the test's temporary directory, scrapes `ceemsnet serve`.
The exporter is restarted half way (its BPF counters restart at zero, and the
second run counts more than the first, so only the exporter's start time
shows the reset). Traffic stops before the last scrape, so Prometheus and
the local store must agree exactly, and equal the bytes sent.
"""

import datetime as dt
import json
import os
import subprocess
import sys
import time

from ..promserver import PrometheusServer, needs_prometheus
from .helpers import ROOT, Exporter, host_only, traffic_argv
from .peer import Peer

pytestmark = [needs_prometheus, host_only("report --prometheus and the store are user space; the counts under each "
                                           "family are test_net.py's, and the slurm run reports real jobs")]


def report(*args):
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "report", "--format=json", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout, p.stderr


def iso(t):
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")


def test_prometheus_report_agrees_with_store_across_a_restart(slurm_tree, spawn, tmp_path):
    job, steps = slurm_tree
    db = str(tmp_path / "accounting.db")
    flags = ("--unit=slurm", f"--storage.path={db}", "--storage.interval=1")
    sent = f'sum(ceemsnet_net_egress_bytes_total{{cgroup=~".*/job_{job}/.*"}})'
    start = time.time()
    peer = Peer()
    e = Exporter(extra=flags)
    prom = None
    try:
        prom = PrometheusServer(tmp_path, [f"127.0.0.1:{e.port}"])
        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [1000]}]),
              steps["step_0"]).go()
        prom.wait_for(sent, 1000)
        rc, err = e.stop()
        assert rc == 0, err
        e = Exporter(extra=flags, port=e.port)  # same target, counters from zero
        prom.wait_for("changes(ceemsnet_process_start_time_seconds[10m])", 1)  # the new run scraped
        mid = time.time()
        # the same step sends more than in the first run: its counter never goes down across the restart
        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [1500, 1500]}]),
              steps["step_0"]).go()
        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [500]}]),
              steps["step_1"]).go()
        prom.wait_for(sent, 3500)  # the second run's last values, scraped: traffic stopped before it
        rc, err = e.stop()
        assert rc == 0, err
        until = time.time()

        rc, out, err = report(f"--prometheus={prom.url}", f"--job={job}", f"--since={iso(start - 5)}",
                              f"--until={iso(until)}")
        assert rc == 0, err
        (from_prom,) = json.loads(out)
        rc, out, err = report(f"--storage.path={db}", f"--job={job}")
        assert rc == 0, err
        (from_store,) = json.loads(out)
        figures = ("net_egress_bytes", "net_ingress_bytes", "net_egress_calls", "net_ingress_calls")
        assert [from_prom[k] for k in figures] == [from_store[k] for k in figures] == [4500, 4500, 4, 4]
        assert from_prom["vfs_read_bytes"] is None and from_prom["skb_egress_bytes"] is None
        assert from_prom["first_seen"] <= from_prom["last_seen"]

        # the range is honoured: from after the restart, only the second run's bytes
        rc, out, err = report(f"--prometheus={prom.url}", f"--job={job}", f"--since={iso(mid)}",
                              f"--until={iso(until)}")
        assert rc == 0, err
        assert [json.loads(out)[0][k] for k in figures] == [3500, 3500, 3, 3]

        rc, out, err = report(f"--prometheus={prom.url}", f"--job=1{job}", f"--since={iso(start - 5)}")
        assert rc == 1 and err.startswith("ceemsnet: error: no job") and err.count("\n") == 1, (rc, out, err)

        # --by=cgroup splits the job into its steps
        rc, out, err = report(f"--prometheus={prom.url}", "--by=cgroup", f"--job={job}",
                              f"--since={iso(start - 5)}", f"--until={iso(until)}")
        assert rc == 0, err
        by_step = {os.path.basename(r["cgroup"]): r["net_egress_bytes"] for r in json.loads(out)}
        assert by_step == {"step_0": 4000, "step_1": 500}
    finally:
        e.stop()
        if prom:
            prom.stop()
        peer.close()
