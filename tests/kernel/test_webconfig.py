"""Debian's real Prometheus scrapes a real `ceemsnet serve` over mTLS + basic auth.

The CA, the exporter's certificate and Prometheus' client certificate are
made here (tests/unit/test_webconfig.py's Pki); Prometheus authenticates
with its own `tls_config` and `basic_auth`. It records the bytes a process
in a fresh cgroup sent, exactly; scrape jobs without the client
certificate, with a certificate of another CA and with a wrong password
are refused (`up` 0). A certificate rotated while Prometheus scrapes is
served without a restart.
"""

import base64
import contextlib
import http.client
import subprocess
import sys
import time

import bcrypt
import pytest

from ..promserver import PrometheusServer, free_port, needs_prometheus, stop_by_pid
from ..unit.test_webconfig import Pki, peer_serial
from .helpers import HOOK, ROOT, host_only, traffic_argv
from .peer import Peer

pytestmark = [needs_prometheus, host_only("TLS and basic auth do not depend on the kernel")]

PATH = "/node/metrics"


class TlsExporter:
    """`ceemsnet serve --web.config.file=...`, ready when an authenticated mTLS scrape answers 200."""

    def __init__(self, pki, web_config, password):
        self.port = free_port()
        self.pki, self.password = pki, password
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ceemsnet.cli", "serve", f"--web.listen-address=127.0.0.1:{self.port}",
             f"--web.config.file={web_config}", f"--web.telemetry-path={PATH}", "--collectors=net",
             f"--hook={HOOK}", "--unit=none", "--storage.path=none", "--bpf.pin-path=none"],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"ceemsnet serve exited with {self.proc.returncode}: {self.proc.communicate()[1]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.get()[0] == 200:
                    return
            time.sleep(0.2)
        self.stop()
        pytest.fail("ceemsnet serve did not answer over mTLS within 60 s")

    def get(self, path=PATH, cert="prometheus"):
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10,
                                           context=self.pki.client_context(cert))
        auth = base64.b64encode(f"prometheus:{self.password}".encode()).decode()
        try:
            conn.request("GET", path, headers={"Authorization": "Basic " + auth})
            r = conn.getresponse()
            return r.status, r.read().decode()
        finally:
            conn.close()

    def stop(self):
        stop_by_pid(self.proc)
        return self.proc.returncode, self.proc.communicate()[1]


def test_prometheus_scrapes_over_mtls_and_basic_auth(tmp_path, make_cgroup, spawn):
    pki = Pki(tmp_path)
    pki.issue("prometheus", ("prometheus.test",), client=True)
    password = "scrape-secret"
    (tmp_path / "password").write_text(password)
    (tmp_path / "wrong-password").write_text("not-it")
    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(10)).decode()
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
                   "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
                   "http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n"
                   f"basic_auth_users:\n  prometheus: {h}\n")
    target = None
    prom = None
    peer = Peer()
    cg = make_cgroup()
    e = TlsExporter(pki, web, password)
    try:
        target = [f"127.0.0.1:{e.port}"]
        tls = {"ca_file": pki.path("ca.pem"), "cert_file": pki.path("prometheus.pem"),
               "key_file": pki.path("prometheus.key")}
        scrape = {"scheme": "https", "metrics_path": PATH}
        prom = PrometheusServer(tmp_path, [], extra_jobs=[
            {"job_name": "mtls", "targets": target, **scrape, "tls_config": tls,
             "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "password")}},
            {"job_name": "no-client-cert", "targets": target, **scrape,
             "tls_config": {"ca_file": pki.path("ca.pem")},
             "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "password")}},
            {"job_name": "other-ca", "targets": target, **scrape,
             "tls_config": {**tls, "cert_file": pki.path("other-client.pem"),
                            "key_file": pki.path("other-client.key")},
             "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "password")}},
            {"job_name": "wrong-password", "targets": target, **scrape, "tls_config": tls,
             "basic_auth": {"username": "prometheus", "password_file": str(tmp_path / "wrong-password")}},
        ])
        prom.wait_for('up{job="mtls"}', 1)
        for job in ("no-client-cert", "other-ca", "wrong-password"):
            prom.wait_for(f'count_over_time(up{{job="{job}"}}[1m])', lambda v: v and v[0][1] >= 2)
            prom.wait_for(f'max_over_time(up{{job="{job}"}}[1m])', 0)

        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [1234, 766]}]), cg).go()
        prom.wait_for(f'sum(ceemsnet_net_egress_bytes_total{{job="mtls",cgroup="{cg.rel}"}})', 2000)
        prom.wait_for(f'sum(ceemsnet_net_egress_calls_total{{job="mtls",cgroup="{cg.rel}"}})', 2)

        # a certificate rotated while Prometheus scrapes: served at the next connection, no restart
        serial = pki.issue("server", ("127.0.0.1", "localhost"), serial=4242)
        assert peer_serial(e.port, pki.client_context("prometheus")) == serial
        t = time.time()
        prom.wait_for(f'(timestamp(up{{job="mtls"}}) > bool {t:.3f}) * up{{job="mtls"}}', 1, timeout=30)
        assert e.proc.poll() is None
    finally:
        rc, err = e.stop()
        if prom:
            prom.stop()
        peer.close()
    assert rc == 0, err
