"""The PromQL engines `ceemsnet report --prometheus` is tested against, started by a test on
loopback with a 1 s scrape interval and their own storage in the test's temporary directory;
stopped by PID: Debian's prometheus (PrometheusServer) and Debian's victoria-metrics
(VictoriaMetricsServer, its single binary scraping with the same scrape config). Both answer
vector(), query() and wait_for() alike; start_engine() picks one by name."""

import json
import threading
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from .programs import require_program

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


def scrape_config(targets, extra_jobs=(), evaluation=False, interval="1s"):
    """The scrape config both engines read: job `ceemsnet` scraping `targets`, then extra_jobs, each
    {"job_name": ..., "targets": [...], other scrape_config keys (e.g. "honor_labels": True,
    "metric_relabel_configs": [...])}, every `interval` (1s by default)."""
    text = (f"global:\n  scrape_interval: {interval}\n  scrape_timeout: {interval}\n"
            + ("  evaluation_interval: 1s\n" if evaluation else "")
            + "scrape_configs:\n  - job_name: ceemsnet\n    static_configs:\n"
            f"      - targets: {json.dumps(list(targets))}\n")
    for job in extra_jobs:
        job = dict(job)
        text += f"  - job_name: {json.dumps(job.pop('job_name'))}\n"
        text += f"    static_configs:\n      - targets: {json.dumps(list(job.pop('targets')))}\n"
        text += "".join(f"    {k}: {json.dumps(v)}\n" for k, v in job.items())
    return text


class PrometheusServer:
    name = "prometheus"
    # what every query of the helpers below adds (VictoriaMetricsServer: nocache)
    query_args: dict = {}

    def __init__(self, workdir, targets, rule_files=(), extra_jobs=(), interval="1s"):
        """rule_files: loaded, evaluated every second; extra_jobs: more scrape jobs (scrape_config);
        interval: the scrape interval (and timeout)."""
        self.url = f"http://127.0.0.1:{free_port()}"
        cfg = workdir / "prometheus.yml"
        text = scrape_config(targets, extra_jobs, evaluation=bool(rule_files), interval=interval)
        if rule_files:
            text += "rule_files:\n" + "".join(f"  - {json.dumps(str(f))}\n" for f in rule_files)
        cfg.write_text(text)
        self.log = open(workdir / "prometheus.log", "w+")
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                      f"--web.listen-address={self.url.split('//')[1]}", "--log.level=warn"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready("/-/ready")

    def _wait_ready(self, path):
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited: " + self.logs())
            try:
                with urllib.request.urlopen(self.url + path, timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        self.stop()
        pytest.fail(f"{self.name} was not ready within 90 s: " + self.logs())

    def logs(self):
        self.log.seek(0)
        return self.log.read()[-2000:]

    def vector(self, expr):
        """[(labels, value)] of an instant query now."""
        q = urllib.parse.urlencode({"query": expr, **self.query_args})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=10) as r:
            return [(x["metric"], float(x["value"][1])) for x in json.load(r)["data"]["result"]]

    def query(self, expr):
        """(resultType, result) of an instant query now; an error Prometheus answers (a bad expression,
        a failed evaluation) raises QueryError with its message."""
        q = urllib.parse.urlencode({"query": expr, **self.query_args})
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
        pytest.fail(f"{self.name} never saw {expr} = {want} (last {got}): {self.logs()}")

    def stop(self):
        stop_by_pid(self.proc)
        self.log.close()


class VictoriaMetricsServer(PrometheusServer):
    """Debian's victoria-metrics (single node) scraping with the same scrape config, every flag
    but where it listens and stores at its default: a report must be right against the server
    as an admin installs it (its -search.latencyOffset of 30 s included)."""

    name = "victoria-metrics"
    # without it, VictoriaMetrics evaluates a query at `now` 30 s earlier (-search.latencyOffset)
    query_args = {"nocache": "1"}

    def __init__(self, workdir, targets, extra_jobs=()):
        # not super().__init__(), which starts prometheus; the methods are shared
        program = require_program("victoria-metrics", skip=True)
        self.url = f"http://127.0.0.1:{free_port()}"
        cfg = workdir / "victoria-metrics.yml"
        cfg.write_text(scrape_config(targets, extra_jobs))
        self.log = open(workdir / "victoria-metrics.log", "w+")
        self.proc = subprocess.Popen([program, f"-promscrape.config={cfg}", f"-storageDataPath={workdir / 'vmdata'}",
                                      f"-httpListenAddr={self.url.split('//')[1]}", "-loggerLevel=WARN"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_ready("/health")


ENGINES = {"prometheus": PrometheusServer, "victoria-metrics": VictoriaMetricsServer}


def start_engine(name, workdir, targets, extra_jobs=()):
    """The engine `name` (a key of ENGINES) scraping targets and extra_jobs every second, in its own
    subdirectory of workdir; the test skips, saying which package to install, if it is missing."""
    if name == "prometheus" and PROMETHEUS is None:
        require_program("prometheus", skip=True)
    d = workdir / name
    d.mkdir(exist_ok=True)
    return ENGINES[name](d, targets, extra_jobs=extra_jobs)


class FakeQueryAPI:
    """A stand-in for a Prometheus server's query API on loopback, for commands' unit tests: each
    POSTed query (as ceemsnet's PrometheusAPI sends them) is answered by answer(expr, at) ->
    (resultType, result). A subclass gives answer(); close() stops it."""

    def __init__(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                q = urllib.parse.parse_qs(self.rfile.read(int(self.headers.get("Content-Length", 0))).decode())
                rtype, res = fake.answer(q.get("query", [""])[0], float(q.get("time", ["0"])[0]))
                data = json.dumps({"status": "success", "data": {"resultType": rtype, "result": res}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *a):
                pass
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, expr: str, at: float) -> tuple[str, list]:
        raise NotImplementedError

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
