"""The Prometheus exporter: one custom collector over the subsystem collectors.

Every scrape yields fresh metric families (prometheus_client's custom
collector API). A collector whose read fails reports success 0 and serves
its last good values, so a failed scrape never loses counts already seen.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import generate_latest, make_wsgi_app

from . import CeemsnetError, __version__
from .metrics import Family, TextRenderer, merge_families

log = logging.getLogger("ceemsnet.exporter")


def parse_listen_address(addr: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' (all addresses) or '[V6]:PORT' -> (host, port)."""
    host, sep, port = (addr or "").rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
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

    def __init__(self, collectors, hooks, build_labels: dict[str, str], unit_kind: str = "none"):
        self.unit_kind = unit_kind
        self._unit_cache: dict[str, str | None] = {}
        self.collectors = list(collectors)
        self.hooks = list(hooks)  # HookChoice of attached hooks
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
        out = [b, h]
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
            from .units import add_units
            if len(self._unit_cache) > 200_000:
                self._unit_cache.clear()
            out = add_units(out, self.unit_kind, self._unit_cache)
        return merge_families(out)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        log.debug("http: " + fmt, *args)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


LANDING = b"""<html><head><title>ceemsnet</title></head><body>
<h1>ceemsnet</h1><p>Per-cgroup network and filesystem IO accounting with eBPF.</p>
<p><a href="/metrics">Metrics</a></p></body></html>
"""


TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def make_app(registry, collector: CeemsnetCollector | None = None):
    """/metrics: ceemsnet's families rendered directly in the text format,
    then the process metrics; OpenMetrics (if asked for) and everything
    else through prometheus_client."""
    metrics = make_wsgi_app(registry)
    renderer = TextRenderer()
    others = CollectorRegistry(auto_describe=False)
    ProcessCollector(namespace="ceemsnet", registry=others)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics":
            accept = environ.get("HTTP_ACCEPT", "")
            if collector is None or "application/openmetrics-text" in accept or environ.get("QUERY_STRING"):
                return metrics(environ, start_response)
            body = (renderer.render(collector.gather()) + generate_latest(others).decode()).encode()
            start_response("200 OK", [("Content-Type", TEXT_CONTENT_TYPE), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/":
            start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
            return [LANDING]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: metrics are at /metrics\n"]
    return app


def build_registry(collector: CeemsnetCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    ProcessCollector(namespace="ceemsnet", registry=reg)
    return reg


def start_server(listen: str, registry, collector: CeemsnetCollector | None = None
                 ) -> tuple[WSGIServer, threading.Thread]:
    host, port = parse_listen_address(listen)
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise CeemsnetError(f"cannot resolve listen address {host!r}: {e.strerror}") from None

    class Server(_Server):
        address_family = family

    try:
        httpd = make_server(host, port, make_app(registry, collector), server_class=Server, handler_class=_QuietHandler)
    except OSError as e:
        raise CeemsnetError(f"cannot listen on {listen}: {e.strerror}") from None
    t = threading.Thread(target=httpd.serve_forever, name="http", daemon=True)
    t.start()
    return httpd, t


def build_labels(kernel_release: str) -> dict[str, str]:
    from . import libbpf
    try:
        lbv = libbpf.version()
    except OSError:
        lbv = "unavailable"
    return {"version": __version__, "libbpf": lbv, "kernel": kernel_release}


def serve(subsystems, ctx, listen: str, storage_path: str, storage_interval: float) -> None:
    """Serve the subsystems' counters on `listen` (and keep the store) until SIGTERM or SIGINT."""
    collector = CeemsnetCollector(subsystems, [h for s in subsystems for h in s.hooks()],
                                  build_labels(ctx.release), ctx.unit_kind)
    writer = None
    if storage_path != "none":
        from .store import Store, StoreWriter
        # counters that continue (adopted pins) keep their generation: the store then adds nothing twice
        gens = {s.name: (getattr(s, "generation", "") or None) if ctx.pins else None for s in subsystems}
        writer = StoreWriter(Store(storage_path, ctx.unit_of, generations=gens), collector.gather, storage_interval)
        log.info("accounting store %s, written every %gs", storage_path, storage_interval)
    httpd, _ = start_server(listen, build_registry(collector), collector)
    from . import caps  # programs attached, pins made, socket bound: what the rest needs is fds
    caps.apply(getattr(ctx.args, "keep_caps", None) or "all")
    log.info("serving /metrics on %s", listen)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(3600):
        pass
    log.info("stopping: writing the store, detaching BPF programs")
    httpd.shutdown()
    httpd.server_close()
    if writer is not None:
        writer.stop()
