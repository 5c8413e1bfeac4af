"""`serve --web.config.file`: the Prometheus exporter-toolkit web configuration.

The format is the toolkit's (docs/web-configuration.md in
prometheus/exporter-toolkit), so a node's admin can reuse the file they
wrote for node_exporter: `tls_server_config`, `http_server_config`,
`basic_auth_users` (bcrypt hashes) and `rate_limit`. Keys are checked as
strictly as the toolkit's yaml.UnmarshalStrict (unknown or repeated keys are
errors). What Python's `ssl` module cannot do the way Go's crypto/tls does
is refused with a one-line reason, never accepted and ignored.

The file, and the certificate, key and CA files it names, are watched: each
new connection compares their (device, inode, size, mtime) with those of the
configuration in force and loads again when they differ, so a rotated
certificate is served without a restart. A file that does not load is
refused (logged once) and the configuration in force stays.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import os
import re
import ssl
import stat
import threading
import time
from dataclasses import dataclass, field

import bcrypt
import yaml

from ceemsnet import CeemsnetError

log = logging.getLogger("ceemsnet.serving.webconfig")


class WebConfigError(CeemsnetError):
    pass


TOP_KEYS = ("tls_server_config", "http_server_config", "basic_auth_users", "rate_limit")
TLS_KEYS = ("cert", "key", "client_ca", "cert_file", "key_file", "client_auth_type", "client_ca_file",
            "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
            "curve_preferences")
HTTP_KEYS = ("http2", "headers")
RATE_KEYS = ("interval", "burst")

# client_auth_type -> ssl verify mode; None: Python's ssl cannot express it (it has no verify callback,
# so it can ask for a client certificate only in order to verify it against client CAs)
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": None,
    "RequireAnyClientCert": None,
    "RequireClientCert": None,  # the toolkit's old name for RequireAnyClientCert
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's tls.CipherSuites() names -> IANA ids (the low 16 bits of OpenSSL's cipher id). TLS 1.3 suites
# cannot be configured in Go either: they are accepted and always on.
GO_CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": 0xC009, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": 0xC00A,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": 0xC013, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": 0xC014,
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": 0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": 0xC02C,
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": 0xC02F, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": 0xC030,
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA8,
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": 0xCCA9,
}
GO_TLS13_CIPHERS = ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
GO_CURVES = ("CurveP256", "CurveP384", "CurveP521", "X25519")
# the only headers the toolkit lets a file set, with the values it accepts (None: any)
HEADERS = {"Strict-Transport-Security": None, "X-Content-Type-Options": ("nosniff",),
           "X-Frame-Options": ("deny", "sameorigin"), "X-XSS-Protection": None, "Content-Security-Policy": None}
_BCRYPT = re.compile(r"\$2[abxy]?\$(\d\d)\$[./A-Za-z0-9]{53}")
# the toolkit's hash of "fakepassword": unknown users cost one bcrypt too, so timing does not tell them apart
FAKE_HASH = b"$2y$10$QOauhQNbBCuQDKes6eFzPeMqBSjb7Mr5DUmpZ/VcEd00UAV/LDeSi"
_HEADER_BAD = re.compile(r"[^\t\x20-\x7e\x80-\xff]")
_GO_DURATION = re.compile(r"(?:(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h))+")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice (Go's UnmarshalStrict does; PyYAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for k, _ in node.value:
            key = self.construct_object(k, deep=True)
            try:
                twice = key in seen
            except TypeError:  # `? [a]`: a list or mapping as a key (PyYAML refuses it too, but later)
                raise WebConfigError(f"line {k.start_mark.line + 1}: a key must be a scalar, "
                                     f"not a {type(key).__name__}") from None
            if twice:
                raise WebConfigError(f"line {k.start_mark.line + 1}: key {key!r} given twice")
            seen.add(key)
        return super().construct_mapping(node, deep)


class RateLimiter:
    """A token bucket like golang.org/x/time/rate: one token every `interval`, at most `burst` saved."""

    def __init__(self, interval: float, burst: int):
        self.interval, self.burst = interval, burst
        self._tokens = float(burst)
        self._t = time.monotonic()
        self._lock = threading.Lock()

    def allow(self) -> bool:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._t) / self.interval)
            self._t = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


@dataclass
class WebConfig:
    """One loaded file: what a connection and a request need."""
    path: str | None = None
    ssl_context: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    allowed_sans: frozenset[str] | None = None
    limiter: RateLimiter | None = None
    files: tuple[str, ...] = ()  # the config file, then the certificate, key and CA files it names
    signature: tuple = ()  # of `files`, taken before each was read

    @property
    def tls(self) -> bool:
        return self.ssl_context is not None

    def summary(self) -> str:
        parts = ["TLS" if self.tls else "plain HTTP"]
        if self.ssl_context is not None and self.ssl_context.verify_mode != ssl.CERT_NONE:
            parts.append("client certificates " + ("required" if self.ssl_context.verify_mode == ssl.CERT_REQUIRED
                                                   else "verified if given"))
        if self.users:
            parts.append(f"basic auth ({len(self.users)} users)")
        if self.limiter:
            parts.append("rate limit")
        return ", ".join(parts)

    def san_allowed(self, peercert: dict | None) -> bool:
        """client_allowed_sans: one of the verified client certificate's SANs is listed."""
        if self.allowed_sans is None:
            return True
        for kind, value in (peercert or {}).get("subjectAltName", ()):
            if kind == "IP Address":
                try:
                    value = str(ipaddress.ip_address(value.strip()))
                except ValueError:
                    pass
            if value in self.allowed_sans:
                return True
        return False


def _show(v) -> str:
    """A name or path as it is when printable, else quoted: an error stays one line."""
    return v if isinstance(v, str) and v.isprintable() else repr(v)


def _one_line(v) -> str:
    return " ".join(str(v).split())


def _mapping(v, where: str, keys) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise WebConfigError(f"{where}: expected a mapping, got {type(v).__name__}")
    for k in v:
        if k not in keys:
            raise WebConfigError(f"{where}: unknown key {k!r} (known: {', '.join(keys)})")
    return v


def _string(v, where: str) -> str:
    if v is None:
        return ""
    if not isinstance(v, str):
        raise WebConfigError(f"{where}: expected a string, got {v!r}")
    return v


def _strings(v, where: str) -> list[str]:
    if v is None:
        return []
    if not isinstance(v, list):
        raise WebConfigError(f"{where}: expected a list of strings, got {v!r}")
    return [_string(x, where) for x in v]


def _bool(v, where: str, default: bool) -> bool:
    if v is None:
        return default
    if not isinstance(v, bool):
        raise WebConfigError(f"{where}: expected true or false, got {v!r}")
    return v


def parse_go_duration(v, where: str) -> float:
    """Seconds from a Go duration ("1s", "500ms", "1m30s", "0") or an integer of nanoseconds, as yaml.v2 reads
    time.Duration."""
    if isinstance(v, int) and not isinstance(v, bool):
        if not -2**63 <= v < 2**63:  # time.Duration: an int64 of nanoseconds
            raise WebConfigError(f"{where}: out of range: a whole number is nanoseconds, at most 2^63-1")
        return v * 1e-9
    if isinstance(v, str) and v == "0":
        return 0.0
    if isinstance(v, str) and _GO_DURATION.fullmatch(v):
        return sum(float(n) * _GO_UNITS[u] for n, u in re.findall(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)", v))
    raise WebConfigError(f"{where}: not a duration: {v!r} (e.g. 1s, 500ms, 1m30s)")


def _memfile(data: str, name: str) -> str:
    """A path to inline PEM text (cert, key, client_ca), for ssl's file-only loaders: an anonymous memfd,
    never a file on disk. The caller closes the fd (returned in the path)."""
    fd = os.memfd_create(f"ceemsnet-{name}", os.MFD_CLOEXEC)
    os.write(fd, data.encode())
    return f"/proc/self/fd/{fd}"


def _no_password():
    raise WebConfigError("the key is encrypted: give an unencrypted key (readable by the service only)")


def _tls_context(t: dict, base: str) -> tuple[ssl.SSLContext | None, frozenset[str] | None, list[str], tuple]:
    """(context or None for plain HTTP, allowed SANs, files read, their signature) from tls_server_config."""
    w = "tls_server_config"
    s = {k: t.get(k) for k in TLS_KEYS}
    cert, key, client_ca = (_string(s[k], f"{w}.{k}") for k in ("cert", "key", "client_ca"))
    cert_file, key_file, ca_file = (_string(s[k], f"{w}.{k}") for k in ("cert_file", "key_file", "client_ca_file"))
    auth = _string(s["client_auth_type"], f"{w}.client_auth_type")
    for k, v in (("cert_file", cert_file), ("key_file", key_file), ("client_ca_file", ca_file)):
        if "\0" in v:  # os.stat and open would raise ValueError
            raise WebConfigError(f"{w}.{k}: a path cannot hold a NUL character")
    for k, v in (("cert", cert), ("key", key), ("client_ca", client_ca)):
        if not v.isascii():  # PEM is ASCII (RFC 7468); ssl's cadata takes nothing else
            raise WebConfigError(f"{w}.{k}: not PEM (ASCII text between -----BEGIN and -----END lines)")
    # relative paths are relative to the config file's folder, as in the toolkit (SetDirectory)
    cert_file, key_file, ca_file = (os.path.join(base, p) if p else "" for p in (cert_file, key_file, ca_file))
    if not (cert or key or client_ca or cert_file or key_file or ca_file or auth):
        other = [k for k in TLS_KEYS if s[k] is not None]
        if other:
            raise WebConfigError(f"{w} sets {', '.join(other)} but no cert_file/key_file: TLS would be off")
        return None, None, [], ()
    for a, b in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
        if s[a] and s[b]:
            raise WebConfigError(f"{w}: give one of {a} (inline) or {b}, not both")
    if not (cert or cert_file):
        raise WebConfigError(f"{w}: missing one of cert or cert_file")
    if not (key or key_file):
        raise WebConfigError(f"{w}: missing one of key or key_file")
    auth = auth or "NoClientCert"
    if auth not in CLIENT_AUTH:
        raise WebConfigError(f"{w}.client_auth_type: invalid {auth!r} (one of {', '.join(CLIENT_AUTH)})")
    mode = CLIENT_AUTH[auth]
    if mode is None:
        raise WebConfigError(f"{w}.client_auth_type: {auth} (a client certificate that is not verified) cannot be "
                             "expressed with Python's ssl module; use RequireAndVerifyClientCert (or "
                             "VerifyClientCertIfGiven) with client_ca_file")
    has_ca = bool(client_ca or ca_file)
    if has_ca and mode == ssl.CERT_NONE:
        raise WebConfigError(f"{w}: client CA's have been configured without a Client Auth Policy "
                             "(set client_auth_type: RequireAndVerifyClientCert)")
    if mode != ssl.CERT_NONE and not has_ca:
        # Go would verify against the system's roots: any public CA's client certificate would pass
        raise WebConfigError(f"{w}.client_auth_type: {auth} needs client_ca_file (or client_ca): the CA that "
                             "signs the clients' certificates")
    versions = []
    for k, default in (("min_version", "TLS12"), ("max_version", "TLS13")):
        v = _string(s[k], f"{w}.{k}") or default
        if v not in TLS_VERSIONS:
            raise WebConfigError(f"{w}.{k}: unknown TLS version {v!r} (one of {', '.join(TLS_VERSIONS)})")
        versions.append(TLS_VERSIONS[v])
    if versions[0] > versions[1]:
        raise WebConfigError(f"{w}: min_version is above max_version")
    if versions[0] < ssl.TLSVersion.TLSv1_2:
        # measured with Debian 12's OpenSSL 3.0: the server's handshake fails at its security level
        raise WebConfigError(f"{w}.min_version: TLS 1.0 and 1.1 are refused by OpenSSL 3 at its default security "
                             "level (and deprecated by RFC 8996): use TLS12 or TLS13")
    curves = _strings(s["curve_preferences"], f"{w}.curve_preferences")
    for c in curves:
        if c not in GO_CURVES:
            raise WebConfigError(f"{w}.curve_preferences: unknown curve {c!r} (one of {', '.join(GO_CURVES)})")
    if curves:
        raise WebConfigError(f"{w}.curve_preferences cannot be expressed with Python's ssl module (it sets no "
                             "list of key exchange groups); remove it to use OpenSSL's default groups")
    suites = _strings(s["cipher_suites"], f"{w}.cipher_suites")
    for c in suites:
        if c not in GO_CIPHERS and c not in GO_TLS13_CIPHERS:
            raise WebConfigError(f"{w}.cipher_suites: unknown cipher {c!r} (Go's tls.CipherSuites() names, e.g. "
                                 "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")
    prefer = _bool(s["prefer_server_cipher_suites"], f"{w}.prefer_server_cipher_suites", True)
    sans = _strings(s["client_allowed_sans"], f"{w}.client_allowed_sans") if s["client_allowed_sans"] is not None \
        else None
    if sans is not None and mode == ssl.CERT_NONE:
        raise WebConfigError(f"{w}.client_allowed_sans needs verified client certificates "
                             "(client_auth_type: RequireAndVerifyClientCert)")

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version, ctx.maximum_version = versions
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    tls12 = [c for c in suites if c in GO_CIPHERS]
    if tls12:
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        probe.set_ciphers("ALL:@SECLEVEL=0")
        names = {c["id"] & 0xFFFF: c["name"] for c in probe.get_ciphers()}
        missing = [c for c in tls12 if GO_CIPHERS[c] not in names]
        if missing:
            raise WebConfigError(f"{w}.cipher_suites: this OpenSSL ({ssl.OPENSSL_VERSION}) lacks {', '.join(missing)}")
        ctx.set_ciphers(":".join(names[GO_CIPHERS[c]] for c in tls12))
    elif suites:
        raise WebConfigError(f"{w}.cipher_suites names only TLS 1.3 suites, which cannot be configured (as in "
                             "Go): list TLS 1.2 suites or remove it")
    files = [f for f in (s["cert_file"] and cert_file, s["key_file"] and key_file, s["client_ca_file"] and ca_file)
             if f]
    sig = signature(files)  # before reading: a change meanwhile is seen at the next connection
    for k, f in zip(("cert_file", "key_file", "client_ca_file"), (cert_file, key_file, ca_file)):
        if s[k]:
            try:  # not blocking: a FIFO with no writer would hang open() (and ssl's own open) for ever
                fd = os.open(f, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    regular = stat.S_ISREG(os.fstat(fd).st_mode)
                finally:
                    os.close(fd)
            except OSError as e:
                raise WebConfigError(f"{w}.{k}: cannot read {_show(f)}: {e.strerror}") from None
            if not regular:
                raise WebConfigError(f"{w}.{k}: cannot read {_show(f)}: not a regular file")
    fds = []
    try:
        if cert:
            cert_file = _memfile(cert, "cert")
            fds.append(cert_file)
        if key:
            key_file = _memfile(key, "key")
            fds.append(key_file)
        try:
            ctx.load_cert_chain(cert_file, key_file, password=_no_password)
        except (ssl.SSLError, OSError, ValueError) as e:
            what = " and ".join(x for x in (
                f"cert_file {_show(s['cert_file'])}" if s["cert_file"] else "cert",
                f"key_file {_show(s['key_file'])}" if s["key_file"] else "key"))
            raise WebConfigError(f"{w}: cannot load {what}: {_reason(e)}") from None
        if has_ca:
            try:
                if client_ca:
                    ctx.load_verify_locations(cadata=client_ca)
                else:
                    ctx.load_verify_locations(cafile=ca_file)
            except (ssl.SSLError, OSError, ValueError) as e:
                what = f"client_ca_file {_show(s['client_ca_file'])}" if ca_file else "client_ca"
                raise WebConfigError(f"{w}: cannot load {what}: {_reason(e)}") from None
            ctx.verify_mode = mode
    finally:
        for p in fds:
            os.close(int(p.rsplit("/", 1)[1]))
    return ctx, (frozenset(_norm_san(x) for x in sans) if sans is not None else None), files, sig


def _norm_san(v: str) -> str:
    try:
        return str(ipaddress.ip_address(v))
    except ValueError:
        return v


def _reason(e: Exception) -> str:
    if isinstance(e, ssl.SSLError):
        if e.reason in (None, "PEM lib"):
            return "not PEM (a certificate, then its unencrypted key)"
        return e.reason
    if isinstance(e, OSError):
        return e.strerror or str(e)
    return str(e)


def _users(v) -> dict[str, bytes]:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise WebConfigError("basic_auth_users: expected a mapping of user: bcrypt hash")
    out = {}
    for user, h in v.items():
        h = _string(h, f"basic_auth_users.{_show(user)}")
        m = _BCRYPT.fullmatch(h)
        if not m or not 4 <= int(m.group(1)) <= 31:
            raise WebConfigError(f"basic_auth_users.{_show(user)}: not a bcrypt hash (make one with "
                                 "`htpasswd -nBC 10 \"\" | tr -d ':\\n'`)")
        out[str(user)] = h.encode()
    return out


def _headers(v) -> dict[str, str]:
    v = v or {}
    if not isinstance(v, dict):
        raise WebConfigError("http_server_config.headers: expected a mapping")
    out = {}
    for k, val in v.items():
        if k not in HEADERS:
            raise WebConfigError(f"http_server_config.headers: HTTP header {k!r} can not be configured "
                                 f"(only {', '.join(HEADERS)})")
        val = _string(val, f"http_server_config.headers.{k}")
        if HEADERS[k] and val not in HEADERS[k]:
            raise WebConfigError(f"http_server_config.headers: invalid value for {k}: expected one of "
                                 f"{', '.join(HEADERS[k])}, but got {val!r}")
        if _HEADER_BAD.search(val):  # wsgiref sends headers in Latin-1; a newline would split the answer
            raise WebConfigError(f"http_server_config.headers: invalid value for {k}: control characters and "
                                 f"characters beyond Latin-1 cannot be sent in an HTTP header, got {val!r}")
        if val:  # "Unset if blank"
            out[k] = val
    return out


def load(path: str, warn: bool = True) -> WebConfig:
    """Read and check the file; a WebConfigError names what is wrong in one line."""
    sig = _stat(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise WebConfigError(f"--web.config.file {_show(path)}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise WebConfigError(f"--web.config.file {_show(path)}: not UTF-8 text") from None
    try:
        return _build(path, text, sig, warn)
    except WebConfigError as e:
        raise WebConfigError(f"--web.config.file {_show(path)}: {e}") from None


def _build(path: str, text: str, sig, warn: bool) -> WebConfig:
    try:
        doc = yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise WebConfigError(f"not valid YAML: {where}{_one_line(getattr(e, 'problem', None) or e)}") from None
    except (ArithmeticError, AttributeError, LookupError, TypeError, ValueError) as e:
        # PyYAML's constructors for tagged and implicit scalars raise these on values they cannot build:
        # 2001-13-45 (ValueError), `!!float` empty (IndexError), `!!bool x` (KeyError), `!!timestamp x`
        raise WebConfigError(f"not valid YAML: {type(e).__name__}: {_one_line(e)}") from None
    except RecursionError:  # PyYAML composes nested collections recursively
        raise WebConfigError("not valid YAML: collections nested too deeply") from None
    top = _mapping(doc, "the file", TOP_KEYS)
    ctx, sans, files, file_sig = _tls_context(_mapping(top.get("tls_server_config"), "tls_server_config", TLS_KEYS),
                                    os.path.dirname(os.path.abspath(path)))
    http = _mapping(top.get("http_server_config"), "http_server_config", HTTP_KEYS)
    if _bool(http.get("http2"), "http_server_config.http2", True) and "http2" in http and warn:
        log.warning("%s: http_server_config.http2: HTTP/2 is not served (HTTP/1.1 only; clients negotiate it)",
                    path)
    rate = _mapping(top.get("rate_limit"), "rate_limit", RATE_KEYS)
    limiter = None
    if rate:
        interval = parse_go_duration(rate.get("interval", 0), "rate_limit.interval")
        burst = rate.get("burst", 0)
        if not isinstance(burst, int) or isinstance(burst, bool) or burst < 0:
            raise WebConfigError(f"rate_limit.burst: expected a whole number, got {burst!r}")
        if burst >= 2**63:  # Go's int; and float(burst) overflows far below PyYAML's largest int
            raise WebConfigError("rate_limit.burst: out of range: at most 2^63-1")
        if interval > 0:
            limiter = RateLimiter(interval, burst)
    return WebConfig(path=path, ssl_context=ctx, users=_users(top.get("basic_auth_users")),
                     headers=_headers(http.get("headers")), allowed_sans=sans, limiter=limiter,
                     files=(path, *files), signature=(sig, *file_sig))


def _stat(f: str):
    try:
        st = os.stat(f)
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError as e:
        return e.errno


def signature(files) -> tuple:
    """What tells a changed file: (device, inode, size, mtime) of each (an errno if it cannot be read)."""
    return tuple(_stat(f) for f in files)


class WebConfigWatcher:
    """The configuration in force, loaded again when its files change (checked on each connection).

    A file that fails to load is logged (once per distinct error) and the configuration in force stays;
    so is one that would turn TLS on or off (that needs a restart, as with the toolkit). A refused file
    is tried again when its files change, and every RETRY seconds (it may name files that appear later)."""

    RETRY = 5.0

    def __init__(self, path: str):
        self.current = load(path)
        self._refused: tuple | None = None  # (signature, when)
        self._logged = ""
        self._lock = threading.Lock()

    def get(self) -> WebConfig:
        cur = self.current
        sig = signature(cur.files)
        if sig == cur.signature:
            return cur
        with self._lock:
            cur = self.current
            sig = signature(cur.files)
            if sig == cur.signature:
                return cur
            if self._refused and self._refused[0] == sig and time.monotonic() - self._refused[1] < self.RETRY:
                return cur
            try:
                new = load(cur.path)
                if new.tls != cur.tls:
                    raise WebConfigError(f"--web.config.file {cur.path}: turning TLS "
                                         f"{'on' if new.tls else 'off'} needs a restart")
            except WebConfigError as e:
                if str(e) != self._logged:
                    log.error("web config not reloaded, the one in force stays: %s", e)
                    self._logged = str(e)
                self._refused = (sig, time.monotonic())
                return cur
            self.current, self._refused, self._logged = new, None, ""
            log.info("web config reloaded: %s", new.summary())
            return new


class BasicAuth:
    """basic_auth_users checked with bcrypt, one check at a time (it is CPU heavy), results cached by a
    digest of user, hash and password (never the password itself), as the toolkit does."""

    CACHE = 1000

    def __init__(self):
        self._lock = threading.Lock()
        self._cache: dict[bytes, bool] = {}

    def check(self, users: dict[str, bytes], header: str | None) -> bool:
        if not header or not header[:6].lower() == "basic ":
            return False
        try:
            user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if not sep:
            return False
        known = user in users
        h = users.get(user, FAKE_HASH)
        key = hashlib.sha256(b"\0".join((user.encode(), h, password.encode()))).digest()
        ok = self._cache.get(key)
        if ok is None:
            with self._lock:
                try:
                    ok = bcrypt.checkpw(password.encode(), h)
                except ValueError:  # e.g. bcrypt 5 refuses passwords over 72 bytes
                    ok = False
                if len(self._cache) >= self.CACHE:
                    self._cache.clear()
                self._cache[key] = ok
        return known and ok
