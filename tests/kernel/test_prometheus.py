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
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from .conftest import ROOT, Exporter, free_port, traffic_argv
from .peer import Peer

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus package is not installed "
                                "(make setup installs it)")


class Prometheus:
    def __init__(self, workdir, target):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cfg = workdir / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                       "scrape_configs:\n  - job_name: ceemsnet\n"
                       f"    static_configs:\n      - targets: ['{target}']\n")
        self.log = open(workdir / "prometheus.log", "w+")
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            assert self.proc.poll() is None, self.logs()
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail("prometheus was not ready within 90 s: " + self.logs())

    def logs(self):
        self.log.seek(0)
        return self.log.read()[-2000:]

    def value(self, expr):
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            res = json.load(r)["data"]["result"]
        return float(res[0]["value"][1]) if res else None

    def wait_for(self, expr, want, timeout=90):
        deadline = time.time() + timeout
        got = None
        while time.time() < deadline:
            got = self.value(expr)
            if got == want:
                return
            time.sleep(0.3)
        pytest.fail(f"Prometheus never saw {expr} = {want} (last {got})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


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
        prom = Prometheus(tmp_path, f"127.0.0.1:{e.port}")
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
