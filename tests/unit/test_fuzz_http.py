"""Fuzzing HTTP requests to the exporter (ceemsnet/serving/exporter.py) behind a web config with basic
auth and headers (ceemsnet/serving/webconfig.py BasicAuth): path, method, query, headers (Accept,
Authorization garbage), bodies.

Two ways in: the WSGI app itself, called with the environ wsgiref would build (fast, many examples);
and the real server on 127.0.0.1, sent raw bytes on a socket (plain HTTP and TLS), where every
connection must end with an answer or a close within 10 s, the server must log no exception, and
a good scrape must still work after each. No BPF: a stand-in collector."""

import base64
import datetime as dt
import io
import logging
import socket
import ssl
import sys
import wsgiref.handlers
import wsgiref.util

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import example, given
from hypothesis import strategies as st

from ceemsnet.common.metrics import Family
from ceemsnet.serving import webconfig
from ceemsnet.serving.exporter import CeemsnetCollector, WebOptions, build_registry, make_app, protect, start_server

from .conftest import examples, tally, within

PASSWORD = "s3cret"
HASH4 = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast enough to fuzz
FAKE4 = bcrypt.hashpw(b"fakepassword", bcrypt.gensalt(4))


class Stub:
    name = "net"

    def collect(self):
        m = Family("ceemsnet_net_egress_bytes", "x", "counter", ("cgroup", "proto", "family"))
        m.add(("/j", "tcp", "ipv4"), 42)
        return [m]


def _collector():
    return CeemsnetCollector([Stub()], [], {"version": "t", "libbpf": "1", "kernel": "k"})


CONFIG = (f"basic_auth_users:\n  alice: {HASH4}\n  b\u00f6b: {HASH4}\n"
          "http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n")


@pytest.fixture(scope="module")
def quick_bcrypt():
    """Unknown users are checked against the toolkit's fake hash (cost 10, ~60 ms): a cost-4 one here."""
    mp = pytest.MonkeyPatch()
    mp.setattr(webconfig, "FAKE_HASH", FAKE4)
    yield
    mp.undo()


# --- the WSGI app -----------------------------------------------------------------------------------------------

def _basic(user: bytes, password: bytes, sep=b":") -> str:
    return "Basic " + base64.b64encode(user + sep + password).decode()


LATIN1 = st.text(st.characters(codec="latin-1"), max_size=12)  # wsgiref decodes request bytes as Latin-1
GOOD = st.sampled_from([_basic(b"alice", PASSWORD.encode()), _basic("b\u00f6b".encode(), PASSWORD.encode()),
                        "basic " + _basic(b"alice", PASSWORD.encode())[6:],
                        "Basic  " + _basic(b"alice", PASSWORD.encode())[6:] + " "])
AUTH = st.one_of(
    st.none(), GOOD, GOOD,
    st.builds(_basic, st.sampled_from([b"alice", "b\u00f6b".encode(), b"", b"mallory", b"\xff", b"a:b"]),
              st.sampled_from([PASSWORD.encode(), b"", b"wrong", b"\xff\xfe", b"\0", b"x" * 100, b":"]),
              st.sampled_from([b":", b"", b"::"])),
    st.builds(lambda s, t: s + t, st.sampled_from(["Basic ", "basic ", "BASIC  ", "Bearer ", "Basic", ""]),
              st.one_of(LATIN1, st.sampled_from(["YWxpY2U6czNjcmV0", "YWxpY2U6czNjcmV0=", "=", "====", "!!!",
                                                 "YWxpY2U6czNjcmV0\n", "\u00e9"]))),
)
PATHS = st.one_of(st.sampled_from(["/metrics", "/", "/metrics/", "/Metrics", "//metrics", "/favicon.ico", "",
                                   "/metrics\0", "/%2e%2e/", "/" + "a" * 5000]), LATIN1.map(lambda s: "/" + s))
METHODS = st.one_of(st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "CONNECT", "get", ""]),
                    LATIN1)
ACCEPTS = st.one_of(st.none(), st.sampled_from(["application/openmetrics-text; version=1.0.0", "text/plain",
                                                "application/openmetrics-text;version=9", "*/*", ";;;", ","]),
                    LATIN1)
QUERIES = st.one_of(st.just(""), st.sampled_from(["name[]=ceemsnet_net_egress_bytes_total", "name[]=", "%ff=%ff",
                                                  "name[]=%00", "a=b&a=c", "name%5B%5D=x"]), LATIN1)


def _is_good(auth) -> bool:
    """Right credentials, as RFC 7617 reads them (the scheme in any case, then base64 of user:password)."""
    if not auth or auth[:6].lower() != "basic ":
        return False
    try:
        raw = base64.b64decode(auth[6:].strip(), validate=True)
    except ValueError:
        return False
    return raw in (b"alice:" + PASSWORD.encode(), "b\u00f6b:".encode() + PASSWORD.encode())


def _environ(method, path, query, accept, auth, encoding, body):
    env = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
           "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))}
    if accept is not None:
        env["HTTP_ACCEPT"] = accept
    if auth is not None:
        env["HTTP_AUTHORIZATION"] = auth
    if encoding is not None:
        env["HTTP_ACCEPT_ENCODING"] = encoding
    wsgiref.util.setup_testing_defaults(env)
    return env


@pytest.fixture(scope="module")
def app(tmp_path_factory, quick_bcrypt):
    cfg = tmp_path_factory.mktemp("httpapp") / "web.yml"
    cfg.write_text(CONFIG, encoding="utf-8")
    watcher = webconfig.WebConfigWatcher(str(cfg))
    coll = _collector()
    return protect(make_app(lambda: build_registry(coll), coll, "/metrics", 40), watcher, webconfig.BasicAuth())


@examples(300)
@given(method=METHODS, path=PATHS, query=QUERIES, accept=ACCEPTS, auth=AUTH,
       encoding=st.one_of(st.none(), st.sampled_from(["gzip", "identity", "gzip;q=0", "*"])),
       body=st.binary(max_size=64))
@example(method="GET", path="/metrics", query="", accept=None, auth=_basic(b"alice", PASSWORD.encode()),
         encoding=None, body=b"")
@example(method="GET", path="/metrics", query="name[]=x", accept=None,
         auth=_basic("b\u00f6b".encode(), PASSWORD.encode()), encoding="gzip", body=b"")
def test_fuzz_wsgi_requests(app, method, path, query, accept, auth, encoding, body):
    calls = []

    def start_response(status, headers, exc_info=None):
        calls.append((status, headers))
        return lambda data: None
    with within(10, "the WSGI app"):
        out = app(_environ(method, path, query, accept, auth, encoding, body), start_response)
        try:
            chunks = list(out)
        finally:
            if hasattr(out, "close"):
                out.close()
    assert len(calls) == 1, calls
    status, headers = calls[0]
    code = int(status.split()[0])
    tally(f"wsgi: {code}")
    for k, v in headers:
        k.encode("latin-1"), v.encode("latin-1")  # what wsgiref sends
        assert "\n" not in k + v and "\r" not in k + v
    assert ("X-Frame-Options", "deny") in headers  # the config's headers on every answer
    assert all(isinstance(c, bytes) for c in chunks)
    if not _is_good(auth):
        assert code == 401 and ("WWW-Authenticate", "Basic") in headers
    elif path == "/metrics":
        assert code == 200
        if not query and "application/openmetrics-text" not in (accept or ""):  # our own renderer
            assert b"ceemsnet_net_egress_bytes" in b"".join(chunks)
    else:
        assert code == (200 if path == "/" else 404)


# --- the real server, raw bytes on a socket ----------------------------------------------------------------------

def _tls_files(d):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    (d / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return f"tls_server_config:\n  cert_file: {d / 'c.pem'}\n  key_file: {d / 'k.pem'}\n"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """A plain and a TLS exporter on 127.0.0.1; every exception either logs is kept in `errors`."""

    def __init__(self, d):
        self.errors = []
        self.mp = pytest.MonkeyPatch()
        self.mp.setattr(wsgiref.handlers.BaseHandler, "log_exception",
                        lambda handler, exc_info: self.errors.append(exc_info))
        self.servers = {}
        for name, extra in (("plain", ""), ("tls", _tls_files(d))):
            cfg = d / f"{name}.yml"
            cfg.write_text(extra + CONFIG, encoding="utf-8")
            port = _free_port()
            coll = _collector()
            httpd, _ = start_server(f"127.0.0.1:{port}", lambda c=coll: build_registry(c), coll,
                                    WebOptions(str(cfg)))
            httpd.handle_error = lambda request, address: self.errors.append(sys.exc_info())
            self.servers[name] = (httpd, port)

    def close(self):
        for httpd, _ in self.servers.values():
            httpd.shutdown()
            httpd.server_close()
        self.mp.undo()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, quick_bcrypt):
    s = Servers(tmp_path_factory.mktemp("httpservers"))
    # the server logs a TLS handshake or client error at debug: keep test output quiet either way
    logging.getLogger("ceemsnet.serving.exporter").setLevel(logging.INFO)
    yield s
    s.close()


def _exchange(port: int, data: bytes, tls: bool, timeout: float = 10.0) -> bytes:
    """Send `data`, close our side, read until the server closes: what it answered."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock = raw
    try:
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            sock = ctx.wrap_socket(raw)
        try:
            sock.sendall(data)
            if not tls:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the server answered and closed before reading it all (431, 414): read what it said
        out = b""
        while True:
            try:
                b = sock.recv(65536)
            except (ssl.SSLError, ConnectionResetError):
                break
            if not b:
                break
            out += b
        return out
    finally:
        sock.close()


def _scrape_works(port: int, tls: bool) -> bool:
    auth = _basic(b"alice", PASSWORD.encode())
    out = _exchange(port, f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode(), tls)
    return out.startswith(b"HTTP/1.0 200") and b"ceemsnet_net_egress_bytes" in out


@st.composite
def raw_requests(draw):
    """Request bytes: a good request line and headers, then mutated (bytes replaced, cut, repeated)."""
    method = draw(st.sampled_from([b"GET", b"POST", b"HEAD", b"G\xffT", b""]))
    path = draw(st.sampled_from([b"/metrics", b"/", b"/metrics?name[]=x", b"/\xff\xfe", b"*", b"http://h/metrics",
                                 b"/" + b"a" * 65600]))
    version = draw(st.sampled_from([b" HTTP/1.1", b" HTTP/1.0", b"", b" HTTP/9.9", b" HTTP/1.1 x"]))
    headers = draw(st.lists(st.sampled_from([
        b"Host: x", b"Authorization: " + _basic(b"alice", PASSWORD.encode()).encode(), b"Authorization: Basic \xff",
        b"Authorization: " + _basic(b"alice", b"\xff" * 80).encode(), b"Accept: application/openmetrics-text",
        b"Content-Length: 5", b"Content-Length: -1", b"Content-Length: 99999999999999999999",
        b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Connection: keep-alive", b": x", b"X",
        b"X:" + b"y" * 65600,
        b"Accept-Encoding: gzip", b" folded"]), max_size=5))
    if draw(st.integers(0, 4)) == 0:  # http.server refuses more than 100
        headers += [b"X: y"] * draw(st.sampled_from([99, 101]))
    data = method + b" " + path + version + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    data += draw(st.binary(max_size=20))
    for _ in range(draw(st.integers(0, 2))):
        i = draw(st.integers(0, len(data)))
        data = data[:i] + draw(st.sampled_from([b"", b"\r\n", b"\n", b"\0", b"\xff", b" ", b":"])) + data[i + 1:]
    return data


@examples(60)
@given(data=st.one_of(raw_requests(), raw_requests(), raw_requests(), st.binary(max_size=64)), tls=st.booleans())
@example(data=b"\x16\x03\x01\x00", tls=False)  # a TLS hello to the plain server
@example(data=b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n", tls=False)  # too many headers: 431
@example(data=b"GET /metrics HTTP/1.1\r\nAuthorization: Basic \xff\xfe\r\n\r\n", tls=True)
def test_fuzz_raw_http_to_the_server(servers, data, tls):
    httpd, port = servers.servers["tls" if tls else "plain"]
    if tls:  # our side cannot half-close a TLS stream: end the request's headers instead
        data += b"\r\n\r\n"
    with within(30, "a connection to the exporter"):
        try:
            out = _exchange(port, data, tls)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            out = b""  # the server refused the handshake or closed while we sent: an answer too
        assert not servers.errors, servers.errors
        # an answer with a status line; to an HTTP/0.9 request (no version) the body alone
        http09 = len(data.split(b"\n", 1)[0].split()) == 2
        assert out == b"" or out.startswith(b"HTTP/1.") or out.startswith(b"<!DOCTYPE HTML>") or http09, out[:200]
        tally("raw: " + (out[:12].decode("latin-1") if out else "closed"))
        assert _scrape_works(port, tls)
