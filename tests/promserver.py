"""Debian's prometheus, started by a test on loopback with a 1 s scrape interval and its
own TSDB in the test's temporary directory; stopped by PID."""

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest

PROMETHEUS = shutil.which("prometheus")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus package is not installed "
                                      "(make setup installs it)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_by_pid(proc, timeout=30):
    """SIGTERM the process we started; SIGKILL if it does not go."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class QueryError(Exception):
    pass


class PrometheusServer:
    def __init__(self, workdir, targets, rule_files=(), extra_jobs=(), interval="1s"):
        """rule_files: loaded, evaluated every second; extra_jobs: more scrape jobs, each
        {"job_name": ..., "targets": [...], other scrape_config keys (e.g. "honor_labels": True)}."""
        self.url = f"http://127.0.0.1:{free_port()}"
        cfg = workdir / "prometheus.yml"
        text = (f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
                + ("  evaluation_interval: 1s\n" if rule_files else "")
                + "scrape_configs:\n  - job_name: ceemsnet\n    static_configs:\n"
                f"      - targets: {json.dumps(list(targets))}\n")
        for job in extra_jobs:
            job = dict(job)
            text += f"  - job_name: {json.dumps(job.pop('job_name'))}\n"
            text += f"    static_configs:\n      - targets: {json.dumps(list(job.pop('targets')))}\n"
            text += "".join(f"    {k}: {json.dumps(v)}\n" for k, v in job.items())
        if rule_files:
            text += "rule_files:\n" + "".join(f"  - {json.dumps(str(f))}\n" for f in rule_files)
        cfg.write_text(text)
        self.log = open(workdir / "prometheus.log", "w+")
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                      f"--web.listen-address={self.url.split('//')[1]}", "--log.level=warn"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail("prometheus exited: " + self.logs())
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

    def vector(self, expr):
        """[(labels, value)] of an instant query now."""
        q = urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            return [(x["metric"], float(x["value"][1])) for x in json.load(r)["data"]["result"]]

    def query(self, expr):
        """(resultType, result) of an instant query now; an error Prometheus answers (a bad expression,
        a failed evaluation) raises QueryError with its message."""
        q = urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as e:
            body = json.load(e)
        if body.get("status") != "success":
            raise QueryError(f"{expr}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]["resultType"], body["data"]["result"]

    def rule_groups(self):
        """The loaded rule groups (/api/v1/rules): each rule with its health, lastError, lastEvaluation."""
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=10) as r:
            return json.load(r)["data"]["groups"]

    def alerts(self):
        """The alerts Prometheus holds now (/api/v1/alerts): each with labels, annotations, state, value."""
        with urllib.request.urlopen(f"{self.url}/api/v1/alerts", timeout=10) as r:
            return json.load(r)["data"]["alerts"]

    def wait_for(self, expr, want, timeout=90):
        """Until the query answers `want`: a number (its one value) or a callable on the vector."""
        check = want if callable(want) else (lambda v: [x for _, x in v] == [want])
        deadline = time.time() + timeout
        got = None
        while time.time() < deadline:
            try:
                got = self.vector(expr)
                if check(got):
                    return
            except OSError:
                pass
            time.sleep(0.3)
        pytest.fail(f"Prometheus never saw {expr} = {want} (last {got}): {self.logs()}")

    def stop(self):
        stop_by_pid(self.proc)
        self.log.close()
