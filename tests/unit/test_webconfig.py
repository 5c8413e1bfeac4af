"""--web.config.file, --web.telemetry-path and --web.max-requests on the real HTTP server (no BPF: a stand-in
collector). The CAs and certificates are made here with `cryptography`; clients are the standard library's."""

import base64
import datetime as dt
import http.client
import ipaddress
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import time

import bcrypt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ceemsnet import CeemsnetError
from ceemsnet.serving.exporter import CeemsnetCollector, WebOptions, build_registry, start_server
from ceemsnet.common.metrics import Family, PrerenderedFamily
from ceemsnet.serving.webconfig import load

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# --- a test PKI -------------------------------------------------------------------------------------------

def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject, key, issuer, issuer_key, ca=False, sans=(), serial=None, client=False):
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
         .public_key(key.public_key()).serial_number(serial or x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False),
                            critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        names = []
        for s in sans:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(s)))
            except ValueError:
                names.append(x509.DNSName(s))
        if names:
            b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
        b = b.add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                   else x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                            critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


class Pki:
    """A CA with a server certificate (127.0.0.1, localhost) and a client certificate (client.test), and
    another CA with its own client certificate: everything as files in `d`."""

    def __init__(self, d):
        self.d = d
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        self.ca = _cert("ceemsnet test CA", self.ca_key, "ceemsnet test CA", self.ca_key, ca=True)
        self.write("ca.pem", _pem(self.ca))
        self.server_serial = self.issue("server", ("127.0.0.1", "localhost"))
        self.issue("client", ("client.test",), client=True)
        other_key = ec.generate_private_key(ec.SECP256R1())
        other = _cert("another CA", other_key, "another CA", other_key, ca=True)
        self.write("other-ca.pem", _pem(other))
        k = ec.generate_private_key(ec.SECP256R1())
        self.write("other-client.pem", _pem(_cert("client", k, "another CA", other_key, sans=("client.test",),
                                                  client=True)))
        self.write("other-client.key", _pem_key(k))

    def path(self, name):
        return str(self.d / name)

    def write(self, name, data):
        """Atomically, as certificate tools do (a new inode)."""
        tmp = self.d / (name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, self.d / name)

    def issue(self, name, sans, client=False, serial=None):
        """<name>.pem and <name>.key signed by the CA; returns the serial."""
        k = ec.generate_private_key(ec.SECP256R1())
        c = _cert(name, k, "ceemsnet test CA", self.ca_key, sans=sans, serial=serial, client=client)
        self.write(name + ".key", _pem_key(k))
        self.write(name + ".pem", _pem(c))
        return c.serial_number

    def client_context(self, cert=None, ca="ca.pem", **kw):
        ctx = ssl.create_default_context(cafile=self.path(ca))
        if cert:
            ctx.load_cert_chain(self.path(cert + ".pem"), self.path(cert + ".key"))
        for k, v in kw.items():
            setattr(ctx, k, v)
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return Pki(tmp_path_factory.mktemp("pki"))


# --- a server and a client --------------------------------------------------------------------------------

class Stub:
    name = "net"

    def __init__(self, gate=None):
        self.gate = gate

    def collect(self):
        if self.gate is not None:
            self.gate.wait(30)
        m = Family("ceemsnet_net_egress_bytes", "x", "counter", ("cgroup", "proto", "family"))
        m.add(("/j", "tcp", "ipv4"), 42)
        # a family whose text is made as the body is sent, as CounterMap's: a body of unknown length
        calls = PrerenderedFamily("ceemsnet_net_egress_calls", "y", "counter", ("cgroup",),
                                  lambda: [b'ceemsnet_net_egress_calls_total{cgroup="/j"} 7\n'], lambda: [(("/j",), 7)])
        return [m, calls]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, config_text=None, d=None, gate=None, **web):
        cfg = None
        if config_text is not None:
            cfg = str(d / "web.yml")
            with open(cfg, "w") as f:
                f.write(config_text)
        self.config = cfg
        self.port = free_port()
        coll = CeemsnetCollector([Stub(gate)], [], {"version": "t", "libbpf": "1", "kernel": "k"})
        self.httpd, self.thread = start_server(f"127.0.0.1:{self.port}", build_registry(coll), coll,
                                               WebOptions(cfg, **web))

    def rewrite(self, text):
        tmp = self.config + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.config)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path):
    made = []

    def make(config_text=None, **kw):
        s = Server(config_text, tmp_path, **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.close()


def get(port, path="/metrics", ctx=None, user=None, password=None, host="127.0.0.1"):
    """(status, headers dict, body) of one GET; TLS with ctx."""
    conn = (http.client.HTTPSConnection(host, port, context=ctx, timeout=10) if ctx
            else http.client.HTTPConnection(host, port, timeout=10))
    headers = {}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    try:
        conn.request("GET", path, headers=headers)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def peer_serial(port, ctx):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return x509.load_der_x509_certificate(s.getpeercert(binary_form=True)).serial_number


def refused(port, ctx):
    """True if the server refuses this TLS client: at the handshake (TLS 1.2) or, with TLS 1.3 (where the
    server checks the client certificate after the client finished), at the first read."""
    try:
        status, _, _ = get(port, ctx=ctx)
    except (ssl.SSLError, ConnectionError, http.client.RemoteDisconnected):
        return True
    return False


def tls_config(pki, **extra):
    lines = ["tls_server_config:", f"  cert_file: {pki.path('server.pem')}", f"  key_file: {pki.path('server.key')}"]
    lines += [f"  {k}: {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


# --- TLS ---------------------------------------------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls_with_the_test_ca(pki, server):
    s = server(tls_config(pki))
    status, headers, body = get(s.port, ctx=pki.client_context())
    assert status == 200 and 'ceemsnet_net_egress_bytes_total{cgroup="/j",proto="tcp",family="ipv4"} 42' in body
    # made as it is sent: wsgiref sends it without a length, up to the connection's end
    assert 'ceemsnet_net_egress_calls_total{cgroup="/j"} 7\n' in body and "Content-Length" not in headers
    assert body.rstrip("\n").splitlines()[-1].startswith("ceemsnet_process_")
    with pytest.raises(ssl.SSLCertVerificationError):  # a client that does not trust the test CA
        get(s.port, ctx=pki.client_context(ca="other-ca.pem"))
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
        get(s.port)  # plain HTTP to a TLS port gets no answer
    # the toolkit's default min_version is TLS 1.2
    with pytest.raises(ssl.SSLError):
        get(s.port, ctx=pki.client_context(maximum_version=ssl.TLSVersion.TLSv1_1))


@pytest.mark.parametrize("version", ["TLS12", "TLS13"])
def test_mtls_refuses_a_client_without_a_certificate_and_one_of_another_ca(pki, server, version):
    s = server(tls_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.path("ca.pem"),
                          min_version=version, max_version=version))
    assert get(s.port, ctx=pki.client_context("client"))[0] == 200
    assert refused(s.port, pki.client_context())
    assert refused(s.port, pki.client_context("other-client"))
    assert get(s.port, ctx=pki.client_context("client"))[0] == 200  # still serving after the refusals


def test_verify_client_cert_if_given(pki, server):
    s = server(tls_config(pki, client_auth_type="VerifyClientCertIfGiven", client_ca_file=pki.path("ca.pem")))
    assert get(s.port, ctx=pki.client_context())[0] == 200
    assert get(s.port, ctx=pki.client_context("client"))[0] == 200
    assert refused(s.port, pki.client_context("other-client"))


def test_client_allowed_sans(pki, server):
    s = server(tls_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.path("ca.pem"),
                          client_allowed_sans='["client.test"]'))
    assert get(s.port, ctx=pki.client_context("client"))[0] == 200
    s2 = server(tls_config(pki, client_auth_type="RequireAndVerifyClientCert", client_ca_file=pki.path("ca.pem"),
                           client_allowed_sans='["someone.else", "10.0.0.1"]'))
    assert refused(s2.port, pki.client_context("client"))


def test_cipher_suites_are_go_names_mapped_to_openssl(pki, server):
    s = server(tls_config(pki, max_version="TLS12",
                          cipher_suites='["TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"]'))
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
        with pki.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as c:
            assert c.cipher()[0] == "ECDHE-ECDSA-AES256-GCM-SHA384"
    ctx = pki.client_context()
    ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):  # a suite the file does not list
        get(s.port, ctx=ctx)


def test_inline_cert_and_key(pki, server):
    cert = open(pki.path("server.pem")).read()
    key = open(pki.path("server.key")).read()
    indent = lambda t: "\n".join("    " + x for x in t.splitlines())  # noqa: E731
    s = server(f"tls_server_config:\n  cert: |\n{indent(cert)}\n  key: |\n{indent(key)}\n")
    assert get(s.port, ctx=pki.client_context())[0] == 200


def test_rotated_certificate_is_served_without_restart(pki, server, tmp_path):
    for f in ("server.pem", "server.key"):
        (tmp_path / f).write_bytes(open(pki.path(f), "rb").read())
    s = server(f"tls_server_config:\n  cert_file: {tmp_path / 'server.pem'}\n  key_file: server.key\n")
    ctx = pki.client_context()
    assert peer_serial(s.port, ctx) == pki.server_serial
    old = Pki.__new__(Pki)
    old.d, old.ca_key = tmp_path, pki.ca_key
    # renamed into place (certbot, cert-manager): a new inode
    new_serial = old.issue("server", ("127.0.0.1",), serial=1001)
    assert peer_serial(s.port, ctx) == new_serial
    # rewritten in place: the same inode, another size or mtime
    k = ec.generate_private_key(ec.SECP384R1())
    c = _cert("server", k, "ceemsnet test CA", pki.ca_key, sans=("127.0.0.1",), serial=1002)
    with open(tmp_path / "server.key", "wb") as f:
        f.write(_pem_key(k))
    with open(tmp_path / "server.pem", "wb") as f:
        f.write(_pem(c))
    assert peer_serial(s.port, ctx) == 1002


# --- basic auth and headers ---------------------------------------------------------------------------------

def _users():
    h = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode()
    # htpasswd writes $2y$ (the same algorithm): accepted like the toolkit
    return {"alice": h, "bob": "$2y$" + bcrypt.hashpw(b"hunter2", bcrypt.gensalt(4)).decode()[4:]}


def test_basic_auth_refuses_a_wrong_password_and_an_unknown_user(server):
    u = _users()
    s = server("basic_auth_users:\n" + "".join(f"  {k}: {v}\n" for k, v in u.items()))
    assert get(s.port, user="alice", password="s3cret")[0] == 200
    assert get(s.port, user="bob", password="hunter2")[0] == 200
    for user, pw in (("alice", "wrong"), ("alice", "hunter2"), ("mallory", "s3cret"), ("", "")):
        status, headers, _ = get(s.port, user=user, password=pw)
        assert status == 401 and headers["WWW-Authenticate"] == "Basic", (user, pw)
    assert get(s.port)[0] == 401  # no credentials
    assert get(s.port, "/")[0] == 401  # every path
    assert get(s.port, user="alice", password="s3cret")[0] == 200  # the cache keeps no wrong answer


def test_headers_on_every_answer(server):
    s = server("http_server_config:\n  headers:\n    X-Frame-Options: deny\n    X-Content-Type-Options: nosniff\n"
               "    Strict-Transport-Security: max-age=31536000\n    Content-Security-Policy: \"\"\n"
               "basic_auth_users:\n  alice: " + _users()["alice"] + "\n")
    for path, user, want in (("/metrics", "alice", 200), ("/nope", "alice", 404), ("/metrics", None, 401)):
        status, headers, _ = get(s.port, path, user=user, password="s3cret")
        assert status == want
        assert headers["X-Frame-Options"] == "deny" and headers["X-Content-Type-Options"] == "nosniff"
        assert headers["Strict-Transport-Security"] == "max-age=31536000"
        assert "Content-Security-Policy" not in headers  # blank: unset, as in the toolkit


def test_rate_limit(server):
    s = server("rate_limit:\n  interval: 1h\n  burst: 2\n")
    assert [get(s.port)[0] for _ in range(3)] == [200, 200, 429]


def test_empty_file_is_plain_http(server, tmp_path):
    s = server("")
    assert get(s.port)[0] == 200


# --- broken files ---------------------------------------------------------------------------------------------

BAD = {
    "junk": ("}{ not yaml: [", "not valid YAML"),
    "not a mapping": ("- a\n- b\n", "expected a mapping"),
    "unknown key": ("tls_server_confg: {}\n", "unknown key 'tls_server_confg'"),
    "unknown tls key": ("tls_server_config:\n  certfile: a\n", "unknown key 'certfile'"),
    "duplicate key": ("basic_auth_users:\n  a: x\n  a: y\n", "key 'a' given twice"),
    "no key": ("tls_server_config:\n  cert_file: {cert}\n", "missing one of key or key_file"),
    "no cert": ("tls_server_config:\n  key_file: {key}\n", "missing one of cert or cert_file"),
    "missing file": ("tls_server_config:\n  cert_file: nope.pem\n  key_file: {key}\n", "cert_file: cannot read"),
    "key of another cert": ("tls_server_config:\n  cert_file: {cert}\n  key_file: {dir}/client.key\n",
                            "cannot load"),
    "not a cert": ("tls_server_config:\n  cert_file: {key}\n  key_file: {key}\n", "cannot load"),
    "bad client auth": ("{tls}  client_auth_type: Always\n", "client_auth_type: invalid 'Always'"),
    "unverified client cert": ("{tls}  client_auth_type: RequireAnyClientCert\n  client_ca_file: {ca}\n",
                               "cannot be expressed with Python's ssl module"),
    "request client cert": ("{tls}  client_auth_type: RequestClientCert\n", "cannot be expressed"),
    "verify without ca": ("{tls}  client_auth_type: RequireAndVerifyClientCert\n", "needs client_ca_file"),
    "ca without auth": ("{tls}  client_ca_file: {ca}\n", "without a Client Auth Policy"),
    "bad ca": ("{tls}  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {key}\n",
               "cannot load client_ca_file"),
    "bad version": ("{tls}  min_version: TLS14\n", "unknown TLS version 'TLS14'"),
    "tls10": ("{tls}  min_version: TLS10\n", "TLS 1.0 and 1.1 are refused by OpenSSL 3"),
    "min above max": ("{tls}  min_version: TLS13\n  max_version: TLS12\n", "min_version is above max_version"),
    "curves": ("{tls}  curve_preferences: [X25519]\n", "curve_preferences cannot be expressed"),
    "unknown curve": ("{tls}  curve_preferences: [Curve25519]\n", "unknown curve"),
    "unknown cipher": ("{tls}  cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]\n", "unknown cipher"),
    "only tls13 ciphers": ("{tls}  cipher_suites: [TLS_AES_128_GCM_SHA256]\n", "cannot be configured"),
    "tls options without cert": ("tls_server_config:\n  min_version: TLS13\n", "TLS would be off"),
    "header": ("http_server_config:\n  headers:\n    Server: x\n", "HTTP header 'Server' can not be configured"),
    "header value": ("http_server_config:\n  headers:\n    X-Frame-Options: allow\n", "invalid value for X-Frame"),
    "bad hash": ("basic_auth_users:\n  alice: s3cret\n", "basic_auth_users.alice: not a bcrypt hash"),
    "rate limit": ("rate_limit:\n  interval: 1 second\n", "not a duration"),
    "http2 type": ("http_server_config:\n  http2: yes please\n", "expected true or false"),
}


def _bad(name, pki):
    text, want = BAD[name]
    for k, v in (("{cert}", pki.path("server.pem")), ("{key}", pki.path("server.key")),
                 ("{ca}", pki.path("ca.pem")), ("{dir}", str(pki.d)), ("{tls}", tls_config(pki))):
        text = text.replace(k, v)
    return text, want


@pytest.mark.parametrize("name", sorted(BAD))
def test_broken_file_refused_at_start(name, pki, tmp_path):
    text, want = _bad(name, pki)
    (tmp_path / "web.yml").write_text(text)
    with pytest.raises(CeemsnetError) as e:
        load(str(tmp_path / "web.yml"))
    assert want in str(e.value) and "\n" not in str(e.value)
    assert str(e.value).startswith(f"--web.config.file {tmp_path / 'web.yml'}: ")


def test_serve_refuses_a_broken_file_in_one_line(tmp_path):
    """Before anything is loaded (and before the root check): exit 1, one `ceemsnet: error:` line."""
    (tmp_path / "web.yml").write_text("basic_auth_users:\n  alice: plain\n")
    for cfg in (tmp_path / "web.yml", tmp_path / "missing.yml"):
        p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "serve", f"--web.config.file={cfg}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and p.stderr.startswith("ceemsnet: error: --web.config.file ") \
            and p.stderr.count("\n") == 1, p.stderr


def test_broken_file_at_reload_is_logged_and_the_old_config_kept(server, caplog, pki):
    u = _users()
    s = server(tls_config(pki) + f"basic_auth_users:\n  alice: {u['alice']}\n")
    ctx = pki.client_context()
    assert get(s.port, ctx=ctx, user="alice", password="s3cret")[0] == 200
    caplog.set_level(logging.INFO, logger="ceemsnet.serving.webconfig")
    s.rewrite(tls_config(pki) + "basic_auth_users:\n  alice: plain\n")
    for _ in range(3):
        assert get(s.port, ctx=ctx, user="alice", password="s3cret")[0] == 200
        assert get(s.port, ctx=ctx, user="alice", password="plain")[0] == 401
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "not a bcrypt hash" in errors[0].getMessage(), caplog.text  # once, not per request
    assert "the one in force stays" in errors[0].getMessage()
    # turning TLS off needs a restart: refused too
    s.rewrite(f"basic_auth_users:\n  bob: {u['bob']}\n")
    assert get(s.port, ctx=ctx, user="alice", password="s3cret")[0] == 200
    assert "turning TLS off needs a restart" in caplog.text
    # a good file is taken at the next connection
    s.rewrite(tls_config(pki) + f"basic_auth_users:\n  bob: {u['bob']}\n")
    assert get(s.port, ctx=ctx, user="alice", password="s3cret")[0] == 401
    assert get(s.port, ctx=ctx, user="bob", password="hunter2")[0] == 200
    assert "web config reloaded: TLS, basic auth (1 users)" in caplog.text


def test_refused_file_naming_a_file_that_appears_later(server, pki, tmp_path, monkeypatch):
    from ceemsnet.serving.webconfig import WebConfigWatcher
    monkeypatch.setattr(WebConfigWatcher, "RETRY", 0.2)
    s = server(tls_config(pki))
    ctx = pki.client_context()
    s.rewrite(f"tls_server_config:\n  cert_file: {tmp_path}/new.pem\n  key_file: {tmp_path}/new.key\n")
    assert peer_serial(s.port, ctx) == pki.server_serial  # refused: new.pem is not there yet
    q = Pki.__new__(Pki)
    q.d, q.ca_key = tmp_path, pki.ca_key
    serial = q.issue("new", ("127.0.0.1",))
    time.sleep(0.3)
    assert peer_serial(s.port, ctx) == serial


# --- telemetry path and max requests ---------------------------------------------------------------------------

def test_telemetry_path_and_landing_page(server):
    s = server(telemetry_path="/x/metrics")
    status, _, body = get(s.port, "/x/metrics")
    assert status == 200 and "ceemsnet_net_egress_bytes_total" in body
    assert get(s.port, "/metrics")[0] == 404
    status, headers, body = get(s.port, "/")
    assert status == 200 and '<a href="/x/metrics">' in body and headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("limit", [2, 0])
def test_max_requests(server, limit):
    gate = threading.Event()
    s = server(gate=gate, max_requests=limit)
    results = []
    threads = [threading.Thread(target=lambda: results.append(get(s.port)[0])) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # both scrapes are in the (blocked) collector
    try:
        if limit:
            status, _, body = get(s.port)
            assert status == 503 and "Limit of concurrent requests reached (2)" in body
            assert get(s.port, "/")[0] == 200  # only scrapes are limited
    finally:
        gate.set()
        for t in threads:
            t.join(30)
    assert results == [200, 200]
    assert get(s.port)[0] == 200  # the slots are given back


@pytest.mark.parametrize("flag", ["--web.telemetry-path=metrics", "--web.max-requests=-1", "--web.max-requests=x"])
def test_bad_web_flags_are_usage_errors(flag):
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "serve", flag], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "ceemsnet: error:" in p.stderr
