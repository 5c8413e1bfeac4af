#!/usr/bin/env python3
"""Benchmark: the scrape end to end over HTTP, as Prometheus scrapes, beside the WSGI-only scrape.

Part 1 (bench/scrape.py's set-up, imported from it): the net object this
kernel accepts, N real cgroups, net_stats filled from user space, the
exporter's WSGI app (incremental renderer, lifecycle, with the cgroup
watcher serve starts) served by the exporter's own HTTP server
(exporter._HTTPServer, what `serve` runs without --web.config.file) in
this process. A client in another process
keeps one connection open and sends Prometheus's headers (Accept as
Prometheus 3 sends it: OpenMetrics first; or text/plain; Accept-Encoding:
gzip); a scrape's time is from the request to the whole body in the
client's hands, decompressed. Each figure's baseline is the WSGI app
called directly in the same run, alternating with the HTTP scrapes:
nothing moved, and 10% of the cgroups' counters moved before each scrape.
Then gzip against identity for the same bodies on loopback (the server
compresses on loopback only here: exporter.GZIP_LOOPBACK).

Part 2 (--real N, default 2000): the real `ceemsnet serve --collectors=net`
(a subprocess, from this checkout), N real cgroups and a child that moves
itself through them sending UDP datagrams on loopback all along (so
counters move between scrapes, counted by the attached programs), scraped
as Prometheus does; the baseline is the server's own collector time in the
same scrapes (ceemsnet_scrape_collector_duration_seconds).

Needs root. Not a test.

    sudo .venv/bin/python bench/scrape_http.py [--cgroups 10000] [--rounds 10] [--real 2000] [--rows]
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from ceemsnet.attribution import cgwatch  # noqa: E402
from ceemsnet.attribution.cgroups import find_cgroup2_root  # noqa: E402
from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version, running_release  # noqa: E402
from ceemsnet.planning.select import select_and_load  # noqa: E402
from ceemsnet.runtime.btf import KernelBTF  # noqa: E402
from ceemsnet.serving import exporter as exp  # noqa: E402
from tests.kernel.helpers import remove_cgroup_dir  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402
from scrape import exporter, fill  # noqa: E402

# Prometheus 3's Accept header for its default scrape_protocols (scrape.acceptHeader()); 2.x sends
# application/openmetrics-text;version=1.0.0,...;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1
PROMETHEUS = ("application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
              "application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,"
              "text/plain;version=0.0.4;q=0.3,*/*;q=0.2")
TEXT = "text/plain;version=0.0.4"
ACCEPTS = {"openmetrics": PROMETHEUS, "text": TEXT}


# --- the client (its own process: Prometheus is not in the exporter's process) ------------------------------

def client(port: int) -> None:
    """Read 'ACCEPT-NAME GZIP(0/1)' lines; for each, scrape once and print 'seconds body-bytes wire-bytes'.
    The connection is kept while the server keeps it (HTTP/1.1); else a scrape's time includes its connect."""
    s = f = None
    for line in sys.stdin:
        name, gz = line.split()
        req = (f"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: Prometheus/3\r\n"
               f"Accept: {ACCEPTS[name]}\r\n" + ("Accept-Encoding: gzip\r\n" if gz == "1" else "")
               + "X-Prometheus-Scrape-Timeout-Seconds: 10\r\n\r\n").encode()
        t0 = time.perf_counter()
        if s is None:
            s = socket.create_connection(("127.0.0.1", port))
            f = s.makefile("rb")
        s.sendall(req)
        status = f.readline()
        headers = {}
        while True:
            h = f.readline()
            if h in (b"\r\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        n = headers.get("content-length")
        chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        if chunked:  # a body made as it is sent (the exporter's counters)
            parts = []
            while True:
                size = int(f.readline().split(b";")[0], 16)
                if not size:
                    f.readline()
                    break
                parts.append(f.read(size))
                f.read(2)
            wire = b"".join(parts)
        else:
            wire = f.read(int(n)) if n is not None else f.read()
        body = zlib.decompress(wire, 31) if headers.get("content-encoding") == "gzip" else wire
        dt = time.perf_counter() - t0
        if not status.startswith(b"HTTP/1.") or status.split()[1:2] != [b"200"]:
            raise SystemExit(f"scrape failed: {status!r}")
        if status.startswith(b"HTTP/1.0") or headers.get("connection", "").lower() == "close" or (n is None and not chunked):
            f.close()
            s.close()
            s = f = None
        print(f"{dt} {len(body)} {len(wire)}", flush=True)


class Client:
    def __init__(self, port: int):
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--client", str(port)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def scrape(self, accept: str, gz: bool) -> tuple[float, int, int]:
        self.p.stdin.write(f"{accept} {int(gz)}\n")
        self.p.stdin.flush()
        line = self.p.stdout.readline()
        if not line:
            raise SystemExit("the client process ended")
        dt, size, wire = line.split()
        return float(dt), int(size), int(wire)

    def close(self):
        self.p.stdin.close()
        self.p.wait(timeout=30)


def wsgi(app, accept: str) -> float:
    """One scrape through the WSGI app, called directly (bench/scrape.py's figure): its time."""
    env = {"PATH_INFO": "/metrics", "REQUEST_METHOD": "GET", "QUERY_STRING": "", "HTTP_ACCEPT": ACCEPTS[accept],
           "HTTP_ACCEPT_ENCODING": "gzip", "REMOTE_ADDR": "127.0.0.1", "ceemsnet.writev": True}
    t0 = time.perf_counter()
    body = app(env, lambda status, headers: None)
    sum(map(len, body))
    body.close()
    return time.perf_counter() - t0


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def serve_in_process(app):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    httpd = exp._HTTPServer("127.0.0.1", port, socket.AF_INET, app)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, port


def part1(a, say):
    kver = parse_kernel_version(running_release())
    sel = select_and_load("net", kver, normalize_arch(os.uname().machine), KernelBTF(),
                          map_entries={"net_stats": a.cgroups * 16 + 65536})
    if sel.loaded is None:
        sys.exit(f"no hook family loads here: {sel.refusals}")
    root = find_cgroup2_root()
    base = os.path.join(root, f"ceemsnet-bench-http-{os.getpid()}")
    os.mkdir(base)
    made, out = [], []
    httpd = cl = None
    try:
        for i in range(a.cgroups):
            p = os.path.join(base, f"job_{i}")
            os.mkdir(p)
            made.append((p, os.stat(p).st_ino))
        ids = [cid for _, cid in made]
        m = sel.loaded.maps["net_stats"]
        fill(m, ids)
        step = max(1, int(1 / a.moving))
        moved = [0]

        def move():
            i = moved[0] = moved[0] + 1
            fill(m, ids[i % step::step], seed=i)
        # the cgroup watcher serve starts (the lifecycle reads removals from it, not every directory)
        cgwatch.start(root, lambda cid, path: None)
        app = exporter(sel, m, root, True)
        httpd, port = serve_in_process(app)
        cl = Client(port)
        wsgi(app, "text")  # the first scrape renders every path
        res = {}
        for accept in ("openmetrics", "text"):
            for moving in (False, True):
                w, h = [], []
                sizes = None
                for _ in range(a.rounds):  # alternating: the two see the same load
                    if moving:
                        move()
                    w.append(wsgi(app, accept))
                    if moving:
                        move()
                    dt, size, wire = cl.scrape(accept, True)
                    h.append(dt)
                    sizes = (size, wire)
                res[(accept, moving)] = (w, h, sizes)
                say(f"{accept:>11} {'10% moved' if moving else 'still':>9}: WSGI p50 {statistics.median(w) * 1000:6.1f} "
                    f"p90 {pct(w, 90) * 1000:6.1f} ms; HTTP p50 {statistics.median(h) * 1000:6.1f} "
                    f"p90 {pct(h, 90) * 1000:6.1f} ms; body {sizes[0] / 2**20:.1f} MiB, sent {sizes[1] / 2**20:.1f} MiB")
        # gzip against identity on loopback, same bodies (nothing moved, then 10% moved)
        gzr = {}
        for moving in (False, True):
            ident, gz = [], []
            for _ in range(max(3, a.rounds // 2)):
                if moving:
                    move()
                exp.GZIP_LOOPBACK = False
                ident.append(cl.scrape("openmetrics", True))
                if moving:
                    move()
                exp.GZIP_LOOPBACK = True
                gz.append(cl.scrape("openmetrics", True))
            exp.GZIP_LOOPBACK = False
            gzr[moving] = (ident, gz)
            say(f"loopback, {'10% moved' if moving else 'still'}: identity p50 "
                f"{statistics.median(x[0] for x in ident) * 1000:.1f} ms ({ident[-1][2] / 2**20:.1f} MiB); gzip level "
                f"{exp.GZIP_LEVEL} p50 {statistics.median(x[0] for x in gz) * 1000:.1f} ms "
                f"({gz[-1][2] / 2**20:.2f} MiB, x{ident[-1][2] / gz[-1][2]:.1f} smaller)")
        N, series = a.cgroups, a.cgroups * 24
        for accept in ("openmetrics", "text"):
            how = "Prometheus's Accept (OpenMetrics)" if accept == "openmetrics" else "Accept: text/plain"
            for moving in (False, True):
                w, h, _ = res[(accept, moving)]
                what = "10% of cgroups' counters moved" if moving else "no counter moved"
                for p in (50, 90):
                    v = pct(h, p) * 1000
                    out.append(row(f"scrape over HTTP, {N} cgroups ({series} series), {what}, {how}, gzip asked, client "
                                   f"included, p{p}", v, "ms", pct(w, p) * 1000, f"WSGI app alone, p{p}, same run",
                                   "<= 100 ms", v <= 100))
        for moving in (False, True):
            ident, gz = gzr[moving]
            g, i = statistics.median(x[0] for x in gz) * 1000, statistics.median(x[0] for x in ident) * 1000
            out.append(row(f"scrape over loopback, {N} cgroups, {'10% moved' if moving else 'nothing moved'}, gzip "
                           f"level {exp.GZIP_LEVEL} ({gz[-1][2] / 2**20:.1f} MiB sent), p50", g, "ms", i,
                           f"identity ({ident[-1][2] / 2**20:.1f} MiB sent), same run"))
    finally:
        if cl:
            cl.close()
        if httpd:
            httpd.shutdown()
            httpd.server_close()
        sel.loaded.close()
        for p, _ in reversed(made):
            os.rmdir(p)
        os.rmdir(base)
    return out


# --- part 2: the real serve, real cgroups, real traffic --------------------------------------------------

MOVER = r"""
import os, socket, sys, time
pause, home, dirs = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); sink.bind(("127.0.0.1", 0)); sink.setblocking(False)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("ready", flush=True)
try:
    while True:
        for d in dirs:
            with open(os.path.join(d, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            s.sendto(b"m" * 200, sink.getsockname())
            try:
                while True:
                    sink.recv(4096)
            except BlockingIOError:
                pass
            time.sleep(pause)
except KeyboardInterrupt:
    pass
finally:
    with open(os.path.join(home, "cgroup.procs"), "w") as f:  # back where it started, so the cgroups can go
        f.write(str(os.getpid()))
"""


def part2(a, say):
    root = find_cgroup2_root()
    base = os.path.join(root, f"ceemsnet-bench-http-real-{os.getpid()}")
    os.mkdir(base)
    dirs = []
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve = mover = cl = None
    out = []
    try:
        for i in range(a.real):
            d = os.path.join(base, f"job_{i}")
            os.mkdir(d)
            dirs.append(d)
        serve = subprocess.Popen([sys.executable, "-m", "ceemsnet.cli", "serve", f"--web.listen-address=127.0.0.1:{port}",
                                  "--collectors=net", "--unit=none", "--storage.path=none", "--bpf.pin-path=none",
                                  "--log.level=error"], cwd=ROOT, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if serve.poll() is not None or time.time() > deadline:
                    raise SystemExit("ceemsnet serve did not start")
                time.sleep(0.2)
        # a full round through the cgroups in about 4 s: between two scrapes some of them move
        with open("/proc/self/cgroup") as f:
            home = root + f.read().strip().split("::", 1)[1].rstrip("/")
        mover = subprocess.Popen([sys.executable, "-c", MOVER, str(4.0 / a.real), home, *dirs], stdout=subprocess.PIPE,
                                 text=True)
        mover.stdout.readline()
        time.sleep(6)  # every cgroup has counted once
        cl = Client(port)
        for accept in ("openmetrics", "text"):
            cl.scrape(accept, True)
        res = {}
        for accept in ("openmetrics", "text"):
            h, srv, sizes = [], [], None
            for _ in range(a.rounds):
                dt, size, wire = cl.scrape(accept, True)
                h.append(dt)
                sizes = (size, wire)
                time.sleep(0.2)
            res[accept] = (h, sizes)
        # the server's own collector time, from a text scrape's body (a separate scrape: it is in the body)
        srv = []
        for _ in range(a.rounds):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read().decode()
            srv.append(sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                           if ln.startswith("ceemsnet_scrape_collector_duration_seconds{")))
        series = sum(1 for ln in text.splitlines() if ln.startswith("ceemsnet_net_") and "job_" in ln)
        for accept in ("openmetrics", "text"):
            h, sizes = res[accept]
            say(f"real: {a.real} cgroups ({series} series), {accept}: HTTP p50 {statistics.median(h) * 1000:.1f} "
                f"p90 {pct(h, 90) * 1000:.1f} ms, body {sizes[0] / 2**20:.2f} MiB sent {sizes[1] / 2**20:.2f} MiB; "
                f"server's collector time p50 {statistics.median(srv) * 1000:.1f} ms")
            how = "Prometheus's Accept (OpenMetrics)" if accept == "openmetrics" else "Accept: text/plain"
            v = statistics.median(h) * 1000
            out.append(row(f"scrape over HTTP, ceemsnet serve, {a.real} real cgroups with real traffic ({series} "
                           f"series), {how}, gzip asked, client included, p50", v, "ms",
                           statistics.median(srv) * 1000, "the server's collector time (map read to families), p50",
                           "<= 20 ms", v <= 20))
    finally:
        if cl:
            cl.close()
        if mover:
            mover.send_signal(2)  # SIGINT: it moves itself back to its own cgroup and ends
            mover.wait(timeout=30)
        if serve:
            serve.terminate()  # our own child, by its PID
            serve.wait(timeout=60)
        for d in reversed(dirs):
            remove_cgroup_dir(d)
        os.rmdir(base)
    return out


def main():
    if sys.argv[1:2] == ["--client"]:
        return client(int(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cgroups", type=int, default=10000, help="part 1's cgroups (0: skip part 1)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--moving", type=float, default=0.1, help="share of cgroups whose counters move per scrape")
    ap.add_argument("--real", type=int, default=2000, help="real cgroups with real traffic under ceemsnet serve (0: skip)")
    add_rows_flag(ap)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/scrape_http.py: needs root (loads BPF programs, creates cgroups)")
    say = (lambda *x, **k: print(*x, file=sys.stderr, **k)) if a.rows else print
    out = part1(a, say) if a.cgroups else []
    if a.real:
        out += part2(a, say)
    for r in out:
        if a.rows:
            emit(r)
        else:
            print(f"{r['what']}: {r['value']:.1f} {r['unit']} ({r['baseline_what']}: {r['baseline']:.1f}, "
                  f"x{r['ratio']:.3f}; target {r['target']})")


if __name__ == "__main__":
    main()
