"""The Prometheus exporter: one custom collector over the subsystem collectors.

Every scrape yields fresh metric families (prometheus_client's custom
collector API). A collector whose read fails reports success 0 and serves
its last good values, so a failed scrape never loses counts already seen.

Two HTTP servers: without --web.config.file a small HTTP/1.1 server of our
own (_HTTPServer: keep-alive, the body sent from its parts with sendmsg, no
http.server, email or ssl modules loaded: docs/performance.md, memory);
with one, wsgiref's server with TLS, basic auth, headers and the rate limit
of the exporter-toolkit configuration, as before. Both run the same WSGI app.
"""

from __future__ import annotations

import ctypes
import html
import logging
import os
import select
import signal
import socket
import threading
import time
import zlib
from dataclasses import dataclass
from urllib.parse import unquote

from ceemsnet import CeemsnetError, __version__
from ceemsnet.attribution.slurm import BackgroundNames
from ceemsnet.attribution.workloads import add_units, fold_name
from ceemsnet.common.metrics import Family, TextRenderer, merge_families
from ceemsnet.pinned.pins import boot_id
from ceemsnet.runtime import libbpf
from ceemsnet.serving import caps
from ceemsnet.serving.store import Store, StoreWriter

log = logging.getLogger("ceemsnet.serving.exporter")


def _malloc_trim():
    """glibc's malloc_trim(0), or a no-op elsewhere (musl).

    A scrape with 10,000 cgroups makes transient objects (decoded records,
    the renderer's rows and joined text) that glibc keeps mapped once freed:
    about 25 MiB of RSS between scrapes (docs/performance.md). Trimming once
    a scrape's body is sent (about 3 ms) hands it back."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes, trim.restype = (ctypes.c_size_t,), ctypes.c_int
    return lambda: trim(0)


trim_heap = _malloc_trim()

# glibc's mallopt() parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> bool:
    """glibc's malloc set for a server whose scrapes make tens of MiB that live for one scrape: one
    arena for every thread, and blocks of MMAP_THRESHOLD bytes or more always mapped on their own.

    Each HTTP connection has its thread, and glibc gives threads arenas of their own (up to 8 per
    CPU), which keep what a scrape freed between their live blocks; and glibc raises its mmap
    threshold to the largest block freed (a family's text, a map read), so later blocks of that size
    come from the heap and stay. With 10,000 cgroups the exporter then sat at 60-75 MiB, moving by
    10 MiB from scrape to scrape; with both set, 54-55 MiB (docs/performance.md). Python holds the
    GIL, so one arena costs no contention. Call before threads start. Not changed when the
    environment already sets them (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, GLIBC_TUNABLES);
    a no-op without glibc. True if both were set."""
    if any(k in os.environ for k in ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_")) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, 1)) & bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))


class _Body(list):
    """A WSGI body in parts whose close() (called by the server once it is sent) trims the heap."""

    def close(self):
        self.clear()
        trim_heap()


CHUNK = 256 * 1024


class _Stream:
    """A scrape's body made as it is sent: each family whose text is made on demand (a CounterMap's)
    makes it when its turn comes and it is dropped once sent, so a scrape holds one family's text at
    a time, never the whole body (24 MiB with 10,000 cgroups); gzip (gz) compresses as it goes.
    Its length is not known before: our server sends it chunked (HTTP/1.1) or ends the connection
    after it (HTTP/1.0, and wsgiref, which sends a body without Content-Length so)."""

    def __init__(self, items: list, gz: bool = False):
        self.items = items
        self.gz = gz

    def __iter__(self):
        z = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if self.gz else None
        buf, n = [], 0
        for it in self.items:
            for p in (it() if callable(it) else (it,)):
                if z is not None:
                    p = z.compress(p)
                if len(p) >= CHUNK:  # a family's text: sent as it is, not copied into a chunk
                    if buf:
                        yield b"".join(buf)
                        buf, n = [], 0
                    yield p
                elif p:
                    buf.append(p)
                    n += len(p)
                    if n >= CHUNK:
                        yield b"".join(buf)
                        buf, n = [], 0
                del p
        if z is not None:
            buf.append(z.flush())
        if buf:
            yield b"".join(buf)

    def close(self):
        self.items = []
        trim_heap()


def parse_listen_address(addr: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' (all addresses) or '[V6]:PORT' -> (host, port)."""
    host, sep, port = (addr or "").rpartition(":")
    # ASCII digits only: str.isdigit() also passes '²' (int() refuses it) and '٩٩' (int() reads 99);
    # at most 5, so int() never meets Python's 4,300-digit limit
    if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5) or not 0 < int(port) < 65536:
        raise CeemsnetError(f"invalid --web.listen-address {addr!r}: expected HOST:PORT, :PORT or [IPV6]:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise CeemsnetError(f"invalid --web.listen-address {addr!r}: put IPv6 addresses in brackets, [::1]:9977")
    return host or "0.0.0.0", int(port)


class CeemsnetCollector:
    """All ceemsnet metrics: build and hook info, then each subsystem's families.

    gather() returns plain Family objects (fast text rendering);
    collect() is prometheus_client's custom-collector hook over the same data.
    """

    def __init__(self, collectors, hooks, build_labels: dict[str, str], unit_kind: str = "none", names=None,
                 counters: list[tuple[str, str, str]] | None = None, skipped=()):
        self.unit_kind = unit_kind
        # ceemsnet.attribution.slurm.BackgroundNames (--unit=slurm): learn() never waits on SLURM; or None
        self.names = names
        # ceemsnet_counters_info: (subsystem, generation of its counters, the --cgroup.aggregate fold)
        self.counters = list(counters or [])
        self._unit_cache: dict[str, str | None] = {}
        self.collectors = list(collectors)
        self.hooks = list(hooks)  # HookChoice of attached hooks
        self.skipped = list(skipped)  # HookChoice of the functions planned but not hooked (cause: why)
        self.build_labels = build_labels
        self._last: dict[str, list] = {}
        self._lock = threading.Lock()

    def describe(self):
        return []

    def collect(self):
        for fam in self.gather():
            yield fam.to_prometheus()

    def gather(self) -> list[Family]:
        with self._lock:
            return self._gather()

    def _gather(self) -> list[Family]:
        b = Family("ceemsnet_build_info", "ceemsnet version, libbpf and kernel; always 1", "gauge",
                   tuple(self.build_labels))
        b.add(tuple(self.build_labels.values()), 1)
        h = Family("ceemsnet_hook_info",
                   "1 for each kernel function hooked, with the hook family and BPF object used", "gauge",
                   ("subsystem", "function", "hook", "object"))
        for hc in self.hooks:
            h.add((hc.subsystem, hc.function, hc.hook, hc.object), 1)
        # fixed once the subsystems are open: the same series every scrape
        s = Family("ceemsnet_hook_skipped",
                   "1 for each kernel function of the hook plan not hooked; reason: absent, not_served, mismatch, "
                   "attach_failed, unused or refused (docs/metrics.md), detail: the plan's reason in full", "gauge",
                   ("subsystem", "function", "object", "reason", "detail"))
        for hc in self.skipped:
            s.add((hc.subsystem, hc.function, hc.object, hc.cause or "unknown", hc.reason), 1)
        out = [b, h, s]
        if self.counters:
            out.append(counters_info(self.counters))
        dur = Family("ceemsnet_scrape_collector_duration_seconds",
                     "Time a collector took to read its maps this scrape", "gauge", ("collector",))
        ok = Family("ceemsnet_scrape_collector_success",
                    "1 if the collector read its maps this scrape, 0 if it served its last values", "gauge",
                    ("collector",))
        for c in self.collectors:
            t0 = time.perf_counter()
            try:
                fams = c.collect()
                self._last[c.name] = fams
                success = 1
            except Exception as e:  # keep serving what we had
                log.error("collector %s failed: %s", c.name, e, exc_info=log.isEnabledFor(logging.DEBUG))
                fams = self._last.get(c.name, [])
                success = 0
            dur.add((c.name,), time.perf_counter() - t0)
            ok.add((c.name,), success)
            out += fams
        out += [dur, ok]
        if self.unit_kind != "none":
            if len(self._unit_cache) > 200_000:
                self._unit_cache.clear()
            out = add_units(out, self.unit_kind, self._unit_cache, self.names)
        return merge_families(out)


@dataclass
class WebOptions:
    """serve's --web.* flags beside the listen address."""
    config_file: str | None = None  # --web.config.file (exporter-toolkit format)
    telemetry_path: str = "/metrics"
    max_requests: int = 40  # concurrent scrapes; 0: no limit


HANDSHAKE_TIMEOUT = 10.0  # a client that does not finish its TLS handshake in time is dropped


def _wsgiref_server():
    """(server class, handler class) of the wsgiref server that serves a --web.config.file (TLS, basic auth)."""
    # not at the top: only --web.config.file uses them, and http.server (with http.client, email) and ssl
    # (OpenSSL's libcrypto) are 5-7 MiB of the exporter's resident memory (docs/performance.md, memory)
    import ssl
    from socketserver import ThreadingMixIn  # (the same reason)
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer  # (the same reason)

    class QuietHandler(WSGIRequestHandler):
        timeout = 60  # per socket read or write: a stalled client does not hold its thread for ever

        def __init__(self, request, client_address, server, webconfig=None):
            self.webconfig = webconfig  # the web config in force when the connection was accepted
            super().__init__(request, client_address, server)

        def get_environ(self):
            env = super().get_environ()
            env["ceemsnet.serving.webconfig"] = self.webconfig
            if isinstance(self.connection, ssl.SSLSocket):
                env["wsgi.url_scheme"] = "https"
            return env

        def log_message(self, fmt, *args):
            log.debug("http: " + fmt, *args)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        allow_reuse_address = True
        watcher = None  # webconfig.WebConfigWatcher, or None without --web.config.file

        def finish_request(self, request, client_address):
            """In the connection's own thread: the web config in force (reloaded if its files changed),
            then the TLS handshake, then the request."""
            cfg = self.watcher.get() if self.watcher is not None else None
            if cfg is None or cfg.ssl_context is None:
                self.RequestHandlerClass(request, client_address, self, cfg)
                return
            request.settimeout(HANDSHAKE_TIMEOUT)
            try:
                conn = cfg.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("TLS handshake with %s failed: %s", client_address[0], e)
                return
            try:
                if not cfg.san_allowed(conn.getpeercert()):
                    log.debug("client certificate of %s has none of client_allowed_sans", client_address[0])
                    return
                self.RequestHandlerClass(conn, client_address, self, cfg)
            finally:
                self.shutdown_request(conn)
    return Server, QuietHandler


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 408: "Request Timeout", 414: "URI Too Long",
            429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
            503: "Service Unavailable", 505: "HTTP Version Not Supported"}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_IOV_MAX = 1024  # parts per sendmsg (Linux's UIO_MAXIOV)


def _http_date(t: float) -> str:
    g = time.gmtime(t)
    return (f"{_DAYS[g.tm_wday]}, {g.tm_mday:02d} {_MONTHS[g.tm_mon - 1]} {g.tm_year} "
            f"{g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d} GMT")


class _BadRequest(Exception):
    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


class _HTTPServer:
    """HTTP/1.1 for the WSGI app, without --web.config.file: what Prometheus's scrapes need and no more.

    A thread per connection (daemon); requests on a connection one after another while the
    client keeps it open (HTTP/1.1, or 1.0 with Connection: keep-alive); a request line or
    header line of at most 65,536 bytes and at most 100 header lines (as http.server: 414,
    431); a request with a body is answered and its connection closed; 60 s per socket read
    or write. The response body goes out from its parts with sendmsg (no copy into one buffer)."""

    timeout = 60
    max_line = 65536
    max_headers = 100

    def __init__(self, host: str, port: int, family: int, app):
        self.app = app
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
            self.sock.listen(128)
        except OSError:
            self.sock.close()
            raise
        self.server_address = self.sock.getsockname()
        self._stop = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        poll = select.poll()
        poll.register(self.sock, select.POLLIN)
        try:
            while not self._stop.is_set():
                if not poll.poll(500):
                    continue
                try:
                    conn, addr = self.sock.accept()
                except OSError:
                    continue  # the client went before we took it (ECONNABORTED), or fds ran out for a moment
                threading.Thread(target=self._connection, args=(conn, addr), name="http-conn", daemon=True).start()
        finally:
            self._stopped.set()

    def shutdown(self) -> None:
        self._stop.set()
        self._stopped.wait()

    def server_close(self) -> None:
        self.sock.close()

    def _connection(self, conn: socket.socket, addr) -> None:
        conn.settimeout(self.timeout)
        rfile = conn.makefile("rb")
        try:
            while self._request(conn, rfile, addr):
                pass
        except (OSError, ValueError):  # the client went, or timed out
            pass
        finally:
            rfile.close()
            conn.close()

    def _line(self, rfile, code: int) -> bytes:
        line = rfile.readline(self.max_line + 1)
        if len(line) > self.max_line:
            raise _BadRequest(code, "line too long")
        return line

    def _request(self, conn: socket.socket, rfile, addr) -> bool:
        """Read and answer one request; True if the connection stays open for another."""
        try:
            line = self._line(rfile, 414)
            if not line:
                return False
            if not line.endswith(b"\n"):
                raise _BadRequest(400, "request line cut")
            words = line.split()
            if len(words) != 3:
                raise _BadRequest(400, "bad request line")
            method, target, version = (w.decode("latin-1") for w in words)
            if not version.startswith("HTTP/") or version[5:] not in ("1.0", "1.1"):
                raise _BadRequest(505 if version[:5] == "HTTP/" else 400, "bad HTTP version")
            env = {}
            for n in range(self.max_headers + 1):
                h = self._line(rfile, 431)
                if h in (b"\r\n", b"\n"):
                    break
                if n == self.max_headers or not h.endswith(b"\n"):
                    raise _BadRequest(431 if n == self.max_headers else 400, "bad headers")
                name, sep, value = h.decode("latin-1").partition(":")
                if not sep or not name or name != name.strip() or not name.isprintable():
                    raise _BadRequest(400, "bad header line")
                key = "HTTP_" + name.upper().replace("-", "_")
                value = value.strip()
                env[key] = f"{env[key]},{value}" if key in env else value
        except _BadRequest as e:
            self._send(conn, e.code, [("Content-Type", "text/plain; charset=utf-8")], [f"{e}\n".encode()], False)
            return False
        keep = (env.get("HTTP_CONNECTION", "").lower() != "close" if version == "HTTP/1.1"
                else env.get("HTTP_CONNECTION", "").lower() == "keep-alive")
        if env.get("HTTP_CONTENT_LENGTH", "0").strip() not in ("", "0") or "HTTP_TRANSFER_ENCODING" in env:
            keep = False  # a request body is not read: the connection ends with this answer
        path, _, query = target.partition("?")
        env.update({"REQUEST_METHOD": method, "PATH_INFO": unquote(path, "iso-8859-1"), "QUERY_STRING": query,
                    "SERVER_PROTOCOL": version, "REMOTE_ADDR": str(addr[0]) if addr else "",
                    "wsgi.url_scheme": "http", "ceemsnet.writev": True})
        if "HTTP_CONTENT_TYPE" in env:
            env["CONTENT_TYPE"] = env.pop("HTTP_CONTENT_TYPE")
        if "HTTP_CONTENT_LENGTH" in env:
            env["CONTENT_LENGTH"] = env.pop("HTTP_CONTENT_LENGTH")
        got: list = []

        def start_response(status, headers, exc_info=None):
            got[:] = [status, headers]
        body = None
        try:
            body = self.app(env, start_response)
            code = int(got[0].split(None, 1)[0])
            headers = [(k, v) for k, v in got[1] if k.lower() != "connection"]
            if isinstance(body, _Stream):
                return self._stream(conn, headers, body, keep and version == "HTTP/1.1", version == "HTTP/1.1",
                                    got[0], method, path)
            parts = body if isinstance(body, list) else list(body)
            self._send(conn, code, headers, [] if method == "HEAD" else parts, keep, got[0])
        except OSError:
            raise
        except Exception:  # a bug of ours: logged, answered 500, the server goes on
            log.exception("HTTP request %s %s failed", method, path)
            self._send(conn, 500, [("Content-Type", "text/plain; charset=utf-8")], [b"internal error\n"], False)
            return False
        finally:
            if body is not None and hasattr(body, "close"):
                body.close()
        return keep

    def _send(self, conn: socket.socket, code: int, headers, parts: list[bytes], keep: bool,
              status: str | None = None) -> None:
        status = status or f"{code} {_REASONS.get(code, '')}"
        if not any(k.lower() == "content-length" for k, _ in headers):
            headers = [*headers, ("Content-Length", str(sum(map(len, parts))))]
        _sendv(conn, [_head(status, headers, keep), *parts])

    def _stream(self, conn: socket.socket, headers, body: _Stream, keep: bool, chunked: bool, status: str,
                method: str, path: str) -> bool:
        """Send a body made as it goes: chunked to an HTTP/1.1 client, else up to the connection's end.
        A failure once the head is out cannot be answered 500: logged, the connection ends without the
        last chunk, so the client sees the body cut, never a short one taken as whole."""
        _sendv(conn, [_head(status, [*headers, ("Transfer-Encoding", "chunked")] if chunked else headers, keep)])
        if method == "HEAD":
            return keep
        try:
            for data in body:
                _sendv(conn, [b"%x\r\n" % len(data), data, b"\r\n"] if chunked else [data])
        except OSError:
            raise
        except Exception:  # a bug of ours: logged, the connection ends with the body cut
            log.exception("HTTP request %s %s failed after its head was sent", method, path)
            return False
        if chunked:
            _sendv(conn, [b"0\r\n\r\n"])
        return keep


def _head(status: str, headers, keep: bool) -> bytes:
    """A response's status line and headers (with Date, and Connection: close unless kept)."""
    head = [f"HTTP/1.1 {status}\r\nDate: {_http_date(time.time())}\r\n"]
    head += [f"{k}: {v}\r\n" for k, v in headers]
    if not keep:
        head.append("Connection: close\r\n")
    head.append("\r\n")
    return "".join(head).encode("latin-1")


def _sendv(conn: socket.socket, out: list) -> None:
    """Send the buffers in order with sendmsg (at most _IOV_MAX at a time), however the kernel cuts them."""
    i, n = 0, len(out)
    while i < n:
        sent = conn.sendmsg(out[i:i + _IOV_MAX])
        while i < n and sent >= len(out[i]):
            sent -= len(out[i])
            i += 1
        if sent:
            out[i] = memoryview(out[i])[sent:]


def landing_page(telemetry_path: str) -> bytes:
    p = html.escape(telemetry_path)
    return (f"""<html><head><title>ceemsnet</title></head><body>
<h1>ceemsnet</h1><p>Per-cgroup network and filesystem IO accounting with eBPF.</p>
<p><a href="{p}">Metrics</a></p></body></html>
""").encode()


TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# what prometheus_client (0.16, Debian 12) answers to an OpenMetrics request: the same here
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=0.0.1; charset=utf-8"
# a body is gzipped when the client accepts gzip, it is at least GZIP_MIN bytes long and the client is
# not on this host (GZIP_LOOPBACK): on loopback bytes cost nothing and compressing only adds time
# (docs/performance.md, Scrape over HTTP: 10,000 cgroups' 24 MiB take 0.2 s of CPU to compress at
# level 1, more than the scrape; 3 MiB less to send pays only on a network link)
GZIP_MIN = 4096
GZIP_LEVEL = 1
GZIP_LOOPBACK = False


def is_loopback(addr: str) -> bool:
    """A client address on this host (127.0.0.0/8, ::1, or IPv4 loopback mapped in IPv6)."""
    return addr.startswith(("127.", "::ffff:127.")) or addr == "::1"


def wants_openmetrics(accept: str) -> bool:
    """Whether an Accept header asks for OpenMetrics: prometheus_client's rule (any of its media types is
    application/openmetrics-text, whatever its q), which Prometheus's own header meets (it lists OpenMetrics
    first, text/plain after)."""
    return any(a.split(";", 1)[0].strip() == "application/openmetrics-text" for a in accept.split(","))


def gzip_accepted(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (named, not with q=0)."""
    for a in accept_encoding.split(","):
        coding, *params = a.split(";")
        if coding.strip().lower() == "gzip":
            for p in params:
                k, _, v = p.partition("=")
                if k.strip().lower() == "q":
                    try:
                        return float(v) > 0
                    except ValueError:
                        return False
            return True
    return False


def gzip_parts(parts: list[bytes], level: int = GZIP_LEVEL) -> bytes:
    """The parts as one gzip member, compressed part by part (never joined first)."""
    z = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 16 + 15: the gzip container
    out = [z.compress(p) for p in parts]
    out.append(z.flush())
    return b"".join(out)


class ProcessMetrics:
    """The exporter's own process: the ceemsnet_process_* families prometheus_client's
    ProcessCollector exports (same names, help and values), read from /proc/self."""

    def __init__(self, prefix: str = "ceemsnet_process_"):
        self.prefix = prefix
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.pagesize = os.sysconf("SC_PAGE_SIZE")
        self.btime = 0.0
        try:
            with open("/proc/stat", "rb") as f:
                self.btime = next((float(ln.split()[1]) for ln in f if ln.startswith(b"btime ")), 0.0)
        except OSError:
            pass

    def _gauge(self, name: str, help: str, value, kind: str = "gauge") -> Family:
        f = Family(self.prefix + name.removesuffix("_total"), help, kind, ())
        f.add((), value)
        return f

    def families(self) -> list[Family]:
        if not self.btime:
            return []
        out = []
        try:
            with open("/proc/self/stat", "rb") as f:
                parts = f.read().split(b")")[-1].split()
            out += [self._gauge("virtual_memory_bytes", "Virtual memory size in bytes.", float(parts[20])),
                    self._gauge("resident_memory_bytes", "Resident memory size in bytes.",
                                float(parts[21]) * self.pagesize),
                    self._gauge("start_time_seconds", "Start time of the process since unix epoch in seconds.",
                                float(parts[19]) / self.ticks + self.btime),
                    self._gauge("cpu_seconds_total", "Total user and system CPU time spent in seconds.",
                                (float(parts[11]) + float(parts[12])) / self.ticks, "counter")]
        except OSError:
            pass
        try:
            with open("/proc/self/limits", "rb") as f:
                max_fds = next(float(ln.split()[3]) for ln in f if ln.startswith(b"Max open file"))
            out += [self._gauge("open_fds", "Number of open file descriptors.", len(os.listdir("/proc/self/fd"))),
                    self._gauge("max_fds", "Maximum number of open file descriptors.", max_fds)]
        except (OSError, StopIteration):
            pass
        return out


def make_app(registry, collector: CeemsnetCollector | None = None, telemetry_path: str = "/metrics",
             max_requests: int = 40):
    """The telemetry path: ceemsnet's families rendered directly in the text format,
    then the process metrics; OpenMetrics (if asked for) and everything
    else through prometheus_client, imported on the first such request
    (registry: a prometheus_client registry, or a function making one). At
    most max_requests scrapes at once (0: no limit); beyond, 503 as
    node_exporter's --web.max-requests."""
    made: list = []

    def metrics(environ, start_response):
        if not made:
            # not at the top: only OpenMetrics asks for it, and prometheus_client adds 6-14 ms, 0.8 MiB to a start
            from prometheus_client.exposition import make_wsgi_app
            made.append(make_wsgi_app(registry if hasattr(registry, "collect") else registry()))
        return made[0](environ, start_response)
    renderer = TextRenderer()
    process = ProcessMetrics()
    slots = threading.BoundedSemaphore(max_requests) if max_requests > 0 else None
    landing = landing_page(telemetry_path)

    def scrape(environ, start_response):
        if collector is None or environ.get("QUERY_STRING"):  # name[] filters: prometheus_client's
            return _Body(metrics(environ, start_response))
        om = wants_openmetrics(environ.get("HTTP_ACCEPT", ""))
        # the body stays in parts: tens of MiB with 10,000 cgroups, not copied into one
        items = renderer.render_items(collector.gather() + process.families(), om)
        headers = [("Content-Type", OPENMETRICS_CONTENT_TYPE if om else TEXT_CONTENT_TYPE)]
        gz = (gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", ""))
              and (GZIP_LOOPBACK or not is_loopback(environ.get("REMOTE_ADDR", ""))))
        if any(map(callable, items)):  # families whose text is made as they are sent: no length known
            if gz:
                headers.append(("Content-Encoding", "gzip"))
            start_response("200 OK", headers + [("Vary", "Accept-Encoding")])
            return _Stream(items, gz)
        parts = items
        size = sum(map(len, parts))
        if gz and size >= GZIP_MIN:
            parts = [gzip_parts(parts)]
            size = len(parts[0])
            headers.append(("Content-Encoding", "gzip"))
        headers += [("Vary", "Accept-Encoding"), ("Content-Length", str(size))]
        start_response("200 OK", headers)
        # our server sends the parts with sendmsg; wsgiref writes each item with its own sendall, so
        # for it the parts are joined into chunks as they go (_Stream over ready parts)
        return _Body(parts) if environ.get("ceemsnet.writev") or len(parts) == 1 else _Stream(parts)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == telemetry_path:
            if slots is None:
                return scrape(environ, start_response)
            if not slots.acquire(blocking=False):
                return _text(start_response, "503 Service Unavailable",
                             f"Limit of concurrent requests reached ({max_requests}), try again later.\n")
            try:  # rendered while the slot is held; the body trims the heap once sent
                return scrape(environ, start_response)
            finally:
                slots.release()
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [landing]
        return _text(start_response, "404 Not Found", f"not found: metrics are at {telemetry_path}\n")
    return app


def _text(start_response, status: str, text: str, headers=()):
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                            *headers])
    return [body]


def protect(app, watcher, auth):
    """The web config's request side, in the toolkit's order: headers on every answer, the rate limit (429),
    then basic auth (401, checked by auth: a webconfig.BasicAuth) before the app."""

    def guarded(environ, start_response):
        cfg = environ.get("ceemsnet.serving.webconfig") or watcher.current
        extra = list(cfg.headers.items())

        def respond(status, headers, exc_info=None):
            return start_response(status, list(headers) + extra, exc_info)
        if cfg.limiter is not None and not cfg.limiter.allow():
            return _text(respond, "429 Too Many Requests", "Too Many Requests\n")
        if cfg.users and not auth.check(cfg.users, environ.get("HTTP_AUTHORIZATION")):
            return _text(respond, "401 Unauthorized", "Unauthorized\n", [("WWW-Authenticate", "Basic")])
        return app(environ, respond)
    return guarded


def build_registry(collector: CeemsnetCollector):
    """A prometheus_client registry over the collector and the process metrics (OpenMetrics)."""
    # not at the top: only OpenMetrics asks for it (the first such request, make_app), see there
    from prometheus_client import CollectorRegistry, ProcessCollector
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    ProcessCollector(namespace="ceemsnet", registry=reg)
    return reg


def start_server(listen: str, registry, collector: CeemsnetCollector | None = None,
                 web: WebOptions | None = None) -> tuple[object, threading.Thread]:
    """Listen and serve in a thread. A bad --web.config.file is a CeemsnetError here (one line at start)."""
    web = web or WebOptions()
    host, port = parse_listen_address(listen)
    watcher = None
    if web.config_file:
        # not at the top: only --web.config.file needs it, and its PyYAML adds 11-20 ms, 2 MiB to a start
        from ceemsnet.serving.webconfig import BasicAuth, WebConfigWatcher
        watcher = WebConfigWatcher(web.config_file)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise CeemsnetError(f"cannot resolve listen address {host!r}: {e.strerror}") from None

    app = make_app(registry, collector, web.telemetry_path, web.max_requests)
    try:
        if watcher is None:
            httpd = _HTTPServer(host, port, family, app)
        else:
            server, handler = _wsgiref_server()

            class Server(server):
                address_family = family

            Server.watcher = watcher
            # not at the top: only --web.config.file uses wsgiref (see _wsgiref_server)
            from wsgiref.simple_server import make_server
            httpd = make_server(host, port, protect(app, watcher, BasicAuth()), server_class=Server,
                                handler_class=handler)
    except OSError as e:
        raise CeemsnetError(f"cannot listen on {listen}: {e.strerror}") from None
    t = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    t.start()
    if watcher is not None:
        log.info("web config %s: %s", web.config_file, watcher.current.summary())
    return httpd, t


def counters_info(counters) -> Family:
    """ceemsnet_counters_info{subsystem,generation,aggregate} 1: what `report --prometheus` needs to tell
    counters that continued across an exporter restart (pins adopted: same generation) from counters
    that started again at zero, and a change of the fold that names the series (--unit,
    --cgroup.aggregate) from new cgroups (docs/reports.md)."""
    f = Family("ceemsnet_counters_info", "1 per subsystem: the generation of its counters (the same while "
               "pinned counters continue across restarts) and the --cgroup.aggregate fold naming its series",
               "gauge", ("subsystem", "generation", "aggregate"))
    for sub, gen, agg in counters:
        f.add((sub, gen, agg), 1)
    return f


def run_generation(s, pinned: bool) -> str:
    """The generation exported for a subsystem's counters: theirs when pinned (kept by an adoption),
    else one of this process's own (its counters end with it)."""
    gen = getattr(s, "generation", "") if pinned else ""
    return str(gen) if gen else f"run:{boot_id()}:{os.getpid()}:{time.time():.6f}"


def build_labels(kernel_release: str) -> dict[str, str]:
    try:
        lbv = libbpf.version()
    except OSError:
        lbv = "unavailable"
    return {"version": __version__, "libbpf": lbv, "kernel": kernel_release}


def serve(subsystems, ctx, listen: str, storage_path: str, storage_interval: float,
          web: WebOptions | None = None) -> None:
    """Serve the subsystems' counters on `listen` (and keep the store) until SIGTERM or SIGINT."""
    # first: a SIGTERM that comes while starting (a test, systemd) must still stop us cleanly
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    names = None
    sacct = getattr(ctx.args, "sacct", "none")
    squeue = getattr(ctx.args, "squeue", "none")
    if ctx.unit_kind == "slurm" and (sacct, squeue) != ("none", "none"):
        names = BackgroundNames(sacct, squeue)  # its thread starts with the first scrape
    agg = fold_name(ctx.unit_kind, getattr(ctx.args, "aggregate", "auto"), ctx.fold)
    counters = [(s.name, run_generation(s, ctx.pins is not None), agg) for s in subsystems]
    collector = CeemsnetCollector(subsystems, [h for s in subsystems for h in s.hooks()],
                                  build_labels(ctx.release), ctx.unit_kind, names, counters,
                                  [h for s in subsystems for h in s.skipped()])
    writer = None
    if storage_path != "none":
        # counters that continue (adopted pins) keep their generation: the store then adds nothing twice
        gens = {s.name: (s.generation or None) if ctx.pins else None for s in subsystems}
        writer = StoreWriter(Store(storage_path, ctx.unit_of, generations=gens, aggregate=agg), collector.gather,
                             storage_interval)
        log.info("accounting store %s, written every %gs", storage_path, storage_interval)
    web = web or WebOptions()
    httpd, _ = start_server(listen, lambda: build_registry(collector), collector, web)
    # programs attached, pins made, socket bound: what the rest needs is fds
    caps.apply(getattr(ctx.args, "keep_caps", None) or "all")
    log.info("serving %s on %s", web.telemetry_path, listen)
    # wake each second: Python runs a signal's handler only in the main thread, at its next
    # bytecode, and a SIGTERM the kernel hands to another thread does not end the main
    # thread's wait; a wait of an hour could then ignore the SIGTERM for up to an hour
    while not stop.wait(1.0):
        pass
    log.info("stopping: writing the store; %s", "the pinned programs go on counting (ceemsnet detach stops them)"
             if ctx.pins else "detaching the BPF programs")
    if names is not None:
        names.stop()  # a sacct or squeue in flight is killed: it must not hold up the stop
    httpd.shutdown()
    httpd.server_close()
    if writer is not None:
        writer.stop()
