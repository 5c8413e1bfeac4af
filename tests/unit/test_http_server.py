"""The exporter's own HTTP/1.1 server (ceemsnet/serving/exporter.py _HTTPServer: no --web.config.file),
OpenMetrics rendered by ceemsnet (what Prometheus asks for first) and gzip, on 127.0.0.1 with raw sockets.
No BPF: stand-in collectors."""

import gzip
import logging
import socket
import subprocess
import sys
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ceemsnet.common.metrics import Family, PrerenderedFamily, render_rows, sample_name
from ceemsnet.serving import exporter
from ceemsnet.serving.exporter import CeemsnetCollector, build_registry, start_server

from .conftest import examples, within
from .test_fuzz_http import raw_requests

# the Accept headers Prometheus sends: 2.42 (Debian 12's) and 3.x (acceptHeader() for its default
# scrape_protocols); both list OpenMetrics first
PROMETHEUS_2 = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
PROMETHEUS_3 = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
                "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
                "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")


class Stub:
    """net-like families: one with rows, one prerendered in many parts, made when read as CounterMap's
    are (lazy; else ready: then the body has a known length); fail: making them raises."""
    name = "net"

    def __init__(self, paths=3, lazy=True, fail=False):
        self.paths = paths
        self.lazy = lazy
        self.fail = fail

    def _parts(self, parts):
        if self.fail:
            raise RuntimeError("no text today")
        return parts

    def collect(self):
        m = Family("ceemsnet_net_egress_bytes", 'bytes "sent"\\ by a cgroup', "counter", ("cgroup", "proto"))
        for i in range(self.paths):
            m.add((f'/job_{i}/"q"\\n', "udp"), 1000 + i)
        calls = Family("ceemsnet_net_egress_calls", "calls", "counter", ("cgroup",))
        rows = [((f"/job_{i}",), i * 7) for i in range(self.paths)]
        parts = [render_rows(sample_name(calls), calls.labels, [r]).encode() for r in rows]
        pre = PrerenderedFamily(calls.name, calls.help, calls.kind, calls.labels,
                                (lambda: self._parts(parts)) if self.lazy else parts, lambda: rows)
        g = Family("ceemsnet_map_entries", "keys", "gauge", ("map",))
        g.add(("net_stats",), 0.5)
        return [m, pre, g]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server(paths=3, **stub):
    coll = CeemsnetCollector([Stub(paths, **stub)], [], {"version": "t", "libbpf": "1", "kernel": "k"})
    httpd, _ = start_server(f"127.0.0.1:{_free_port()}", lambda: build_registry(coll), coll)
    return httpd, httpd.server_address[1], coll


@pytest.fixture(scope="module")
def server():
    httpd, port, coll = _server()
    yield port, coll
    httpd.shutdown()
    httpd.server_close()


def _read_response(f):
    """(status line, {header: value}, body) of one response read from a socket file."""
    status = f.readline().decode("latin-1").rstrip("\r\n")
    headers = {}
    while True:
        h = f.readline().decode("latin-1").rstrip("\r\n")
        if not h:
            break
        k, _, v = h.partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if not size:
                assert f.readline() == b"\r\n"  # no trailers
                break
            body += f.read(size)
            assert f.read(2) == b"\r\n"
    elif "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    else:  # up to the connection's end
        assert headers.get("connection") == "close", headers
        body = f.read()
    return status, headers, body


def _get(port, path="/metrics", headers=(), method="GET"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
        s.sendall((f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
                   + "\r\n").encode())
        return _read_response(f)


def test_a_scrape_is_the_text_format_and_the_connection_stays_open(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
        for _ in range(3):  # one connection, three scrapes (Prometheus keeps its connections)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            status, h, body = _read_response(f)
            assert status == "HTTP/1.1 200 OK" and h["content-type"] == exporter.TEXT_CONTENT_TYPE
            # made as it is sent (the counters' families): chunked
            assert h["transfer-encoding"] == "chunked" and "content-length" not in h and "connection" not in h
            assert b'ceemsnet_net_egress_calls_total{cgroup="/job_2"} 14\n' in body
            assert b"# TYPE ceemsnet_net_egress_bytes_total counter\n" in body
        s.sendall(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
        status, h, body = _read_response(f)
        assert status == "HTTP/1.1 200 OK" and h["connection"] == "close" and b"<h1>ceemsnet</h1>" in body
        assert f.read() == b""  # closed as asked


def _samples(families):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in families for s in fam.samples}


@pytest.mark.parametrize("accept", [PROMETHEUS_2, PROMETHEUS_3, "application/openmetrics-text; version=1.0.0"])
def test_openmetrics_as_prometheus_asks_matches_prometheus_client(server, accept):
    from prometheus_client.openmetrics.exposition import generate_latest
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
    port, coll = server
    status, h, body = _get(port, headers=[("Accept", accept)])
    assert status == "HTTP/1.1 200 OK" and h["content-type"] == exporter.OPENMETRICS_CONTENT_TYPE
    assert body.endswith(b"\n# EOF\n") and body.count(b"# EOF") == 1
    assert b"# TYPE ceemsnet_net_egress_bytes counter\n" in body
    ours = list(text_string_to_metric_families(body.decode()))  # the strict OpenMetrics parser accepts it
    theirs = list(text_string_to_metric_families(generate_latest(build_registry(coll)).decode()))
    skip = {"ceemsnet_scrape_collector_duration_seconds", "ceemsnet_process_cpu_seconds_total",
            "ceemsnet_process_resident_memory_bytes", "ceemsnet_process_virtual_memory_bytes",
            "ceemsnet_process_open_fds"}  # they move between two scrapes
    a = {k: v for k, v in _samples(ours).items() if k[0] not in skip}
    b = {k: v for k, v in _samples(theirs).items() if k[0] not in skip}
    assert a == b and len(a) >= 8
    assert {(f.name, f.type, f.documentation) for f in ours} == {(f.name, f.type, f.documentation) for f in theirs}


def test_gzip_when_asked_and_the_body_is_large(monkeypatch):
    httpd, port, _ = _server(paths=200)
    try:
        _, h, plain = _get(port, headers=[("Accept-Encoding", "gzip")])
        assert "content-encoding" not in h  # the client is on loopback: not compressed
        monkeypatch.setattr(exporter, "GZIP_LOOPBACK", True)  # as for a client on another host
        _, h, plain = _get(port)
        assert "content-encoding" not in h and len(plain) > exporter.GZIP_MIN
        _, h, gz = _get(port, headers=[("Accept-Encoding", "gzip")])
        assert h["content-encoding"] == "gzip" and h["vary"] == "Accept-Encoding"
        body = gzip.decompress(gz)
        strip = (b"ceemsnet_scrape_collector_duration", b"ceemsnet_process_")  # they move between scrapes
        assert ([ln for ln in body.split(b"\n") if not ln.startswith(strip)]
                == [ln for ln in plain.split(b"\n") if not ln.startswith(strip)])
        assert len(gz) * 5 < len(plain)
        for enc in ("gzip;q=0", "identity", "br", "deflate"):
            _, h, _ = _get(port, headers=[("Accept-Encoding", enc)])
            assert "content-encoding" not in h, enc
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_small_body_is_not_compressed(server):
    port, _ = server
    _, h, body = _get(port, "/", headers=[("Accept-Encoding", "gzip")])
    assert "content-encoding" not in h and b"<h1>ceemsnet</h1>" in body


def test_gzip_parts_is_one_gzip_member_of_the_joined_parts():
    parts = [f"line {i}\n".encode() * (i % 7) for i in range(3000)]
    assert zlib.decompress(exporter.gzip_parts(parts), 31) == b"".join(parts)
    assert gzip.decompress(exporter.gzip_parts([])) == b""


@pytest.mark.parametrize("addr,want", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True),
                                       ("::ffff:127.0.0.1", True), ("10.0.0.1", False), ("::ffff:10.0.0.1", False),
                                       ("2001:db8::1", False), ("", False)])
def test_is_loopback(addr, want):
    assert exporter.is_loopback(addr) is want


@pytest.mark.parametrize("header,want", [("gzip", True), ("GZIP", True), ("br, gzip;q=0.5", True), ("gzip;q=0", False),
                                         ("gzip; q=0.0", False), ("gzip;q=x", False), ("identity", False), ("", False),
                                         ("x-gzip", False), ("*", False)])
def test_gzip_accepted(header, want):
    assert exporter.gzip_accepted(header) is want


def test_a_large_body_goes_out_whole_from_its_parts():
    """Tens of thousands of parts, more than one sendmsg takes (1024): every byte in order."""
    httpd, port, coll = _server(paths=30000)
    try:
        status, h, body = _get(port)
        assert status == "HTTP/1.1 200 OK" and h["transfer-encoding"] == "chunked" and len(body) > 1_500_000
        lines = [ln for ln in body.split(b"\n") if ln.startswith(b"ceemsnet_net_egress_calls_total")]
        assert lines == [f'ceemsnet_net_egress_calls_total{{cgroup="/job_{i}"}} {i * 7}'.encode() for i in range(30000)]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_body_of_ready_parts_has_its_length():
    """Families whose text is all there (no CounterMap's): Content-Length, not chunked, and from the
    same text a body made as it is sent gives."""
    got = {}
    for lazy in (False, True):
        httpd, port, _ = _server(paths=500, lazy=lazy)
        try:
            status, h, body = _get(port)
            assert status == "HTTP/1.1 200 OK" and ("content-length" in h) is (not lazy)
            if not lazy:
                assert len(body) == int(h["content-length"]) and "transfer-encoding" not in h
            got[lazy] = [ln for ln in body.split(b"\n") if ln.startswith(b"ceemsnet_net_")]
        finally:
            httpd.shutdown()
            httpd.server_close()
    assert got[True] == got[False] and len(got[True]) == 1000


def test_http_1_0_gets_the_body_up_to_the_connections_end(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
        s.sendall(b"GET /metrics HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        status, h, body = _read_response(f)
        assert status == "HTTP/1.1 200 OK" and h["connection"] == "close" and "transfer-encoding" not in h
        assert b'ceemsnet_net_egress_calls_total{cgroup="/job_2"} 14\n' in body
        assert body.endswith(b"\n") and b"ceemsnet_process_open_fds" in body


def test_a_body_that_fails_while_it_is_made_is_cut_not_shortened():
    """The head is out when a family's text fails: no 500 can follow; the last chunk never comes and
    the connection ends, so a client cannot take a short body for a whole one."""
    httpd, port, _ = _server(fail=True)
    errors = Errors()
    logging.getLogger("ceemsnet.serving.exporter").addHandler(errors)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
            s.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            with pytest.raises((AssertionError, ValueError)):
                _read_response(f)  # no terminating chunk: the body ends early
        assert any("after its head was sent" in r.getMessage() for r in errors.records)
        assert _server_alive(port)
    finally:
        logging.getLogger("ceemsnet.serving.exporter").removeHandler(errors)
        httpd.shutdown()
        httpd.server_close()


def _server_alive(port):
    status, _, body = _get(port, "/")
    return status == "HTTP/1.1 200 OK" and b"<h1>ceemsnet</h1>" in body


def test_head_sends_the_headers_only(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
        s.sendall(b"HEAD /metrics HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n")
        status = f.readline()
        assert status.startswith(b"HTTP/1.1 200")
        while f.readline() not in (b"\r\n", b""):
            pass
        assert f.readline().startswith(b"HTTP/1.1 404")  # no body came between the two answers


@pytest.mark.parametrize("raw,code", [
    (b"GARBAGE\r\n\r\n", 400), (b"GET /metrics HTTP/2.0\r\n\r\n", 505), (b"GET /metrics FTP/1.0\r\n\r\n", 400),
    (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 101 + b"\r\n", 431),
    (b"GET / HTTP/1.1\r\nX: " + b"y" * 70000 + b"\r\n\r\n", 431),
    (b"GET / HTTP/1.1\r\n folded\r\n\r\n", 400), (b"GET / HTTP/1.1\r\nnocolon\r\n\r\n", 400),
])
def test_bad_requests_get_a_status_and_a_close(server, raw, code):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
        try:
            s.sendall(raw)
        except OSError:
            pass  # answered and closed before we sent it all
        status, h, _ = _read_response(f)
        assert status.startswith(f"HTTP/1.1 {code} ") and h["connection"] == "close"
        assert f.read() == b""


def test_a_request_with_a_body_is_answered_then_closed(server):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s, s.makefile("rb") as f:
        s.sendall(b"POST /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello")
        status, h, body = _read_response(f)
        assert status == "HTTP/1.1 200 OK" and h["connection"] == "close" and b"ceemsnet_net" in body
        assert f.read() == b""


class Errors(logging.Handler):
    def __init__(self):
        super().__init__(logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(scope="module")
def fuzz_server():
    httpd, port, _ = _server()
    errors = Errors()
    logging.getLogger("ceemsnet.serving.exporter").addHandler(errors)
    yield port, errors
    logging.getLogger("ceemsnet.serving.exporter").removeHandler(errors)
    httpd.shutdown()
    httpd.server_close()


@examples(60)
@given(data=st.one_of(raw_requests(), st.binary(max_size=64)))
def test_fuzz_raw_http_to_our_server(fuzz_server, data):
    port, errors = fuzz_server
    with within(30, "a connection to the exporter"):
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        out = b""
        try:
            try:
                raw.sendall(data)
                raw.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            while True:
                try:
                    b = raw.recv(65536)
                except ConnectionResetError:
                    break
                if not b:
                    break
                out += b
        finally:
            raw.close()
        assert not errors.records, [r.getMessage() for r in errors.records]
        assert out == b"" or out.startswith(b"HTTP/1.1 "), out[:200]
        assert _get(port)[0] == "HTTP/1.1 200 OK"


def test_serving_without_a_web_config_loads_no_http_server_ssl_or_email():
    """What the own server is for: the exporter's memory (docs/performance.md)."""
    code = ("import socket, sys\n"
            "from ceemsnet.serving.exporter import CeemsnetCollector, build_registry, start_server\n"
            "c = CeemsnetCollector([], [], {'version': 't'})\n"
            "p = socket.socket(); p.bind(('127.0.0.1', 0)); port = p.getsockname()[1]; p.close()\n"
            "h, _ = start_server(f'127.0.0.1:{port}', lambda: build_registry(c), c)\n"
            "before = set(sys.modules)\n"
            "import http.client\n"  # the client side of this check, not the exporter's
            "s = http.client.HTTPConnection('127.0.0.1', h.server_address[1]); s.request('GET', '/metrics')\n"
            "assert s.getresponse().status == 200\n"
            "print(' '.join(m for m in sorted(before) if m.split('.')[0] in ('ssl', '_ssl', 'http', 'email', "
            "'wsgiref', 'socketserver', 'prometheus_client', 'yaml', 'bcrypt')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""
