#!/usr/bin/env python3
"""Soak: a long run of a pinned exporter under churn, scrapes, restarts, SIGKILLs and upgrades.

Workers (this script with --worker) each run in a fresh cgroup below one soak
cgroup and move a known number of bytes: TCP and UDP over loopback (IPv4 and
IPv6, to a peer in this process) and file IO on a private tmpfs, tallying
every call's return value themselves. Cgroups come and go all the time (when
a worker finishes its cgroup is removed and a new worker starts in a new
one). Meanwhile /metrics is scraped every second and the exporter is, on a
seeded random schedule, restarted (SIGTERM, start), SIGKILLed (start) or
upgraded (started with the other of two --net.map-entries: a new net_stats
map, the counts carried over), always with pins and an accounting store.

At the end every cgroup's exported totals (its live series, or the series
the exporter keeps for it once removed) must equal its worker's tally exactly,
per protocol, family and direction (bytes and calls), per read/write (bytes
and calls) and per file operation; so must the store's `ceemsnet report`
rows; no counter may ever go down; the exporter's RSS and the maps' entries
must be flat (flat_verdict()). Exit 0 only then. Root; this host's hook
family (--hook to choose). `make soak` runs it for 30 minutes.

An upgrade detaches the old programs before it attaches the new ones, and
events in between are not counted (docs/continuity.md: a few ms). So the
workload is frozen (cgroup.freeze on the soak cgroup) for an upgrade and thawed
once the new exporter answers: the soak checks the counts an upgrade carries
over, not that window. Restarts and SIGKILLs happen with the workload running.
"""

import argparse
import contextlib
import datetime
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from ceemsnet.attribution.cgroups import find_cgroup2_root  # noqa: E402
from tests.kernel.helpers import remove_cgroup_dir  # noqa: E402
from tests.kernel.peer import Peer  # noqa: E402
from tests.promserver import stop_by_pid  # noqa: E402

MiB = 1 << 20
WORKERS = 6                 # live at once
LIFE_S = (5.0, 30.0)        # a worker's life: longer than an exporter restart, so few cgroups live only while none runs
RETENTION_S = 30            # --cgroup.retention: removed cgroups' series stay this long (several scrapes)
WARMUP_S = 45               # RSS and entries samples this soon after an exporter start are left out of flatness
EVENT_GAP_S = (50.0, 110.0)  # between two disturbances
MAP_ENTRIES = (65536, 70000)  # --net.map-entries: each upgrade switches to the other (a migrate)
READY_S = 120
# keys a cgroup can hold in each counters map (the --*.map-entries help): the bound on map entries
KEYS_PER_CGROUP = {"net_stats": 8, "vfs_stats": 7}
PINNED_MAPS = ("_stats", "_slot_owner", "_retired", "_paths", "_retiring")


# --- pure parts (tests/unit/test_soak.py) ---------------------------------------------------

def median(xs):
    return statistics.median(xs) if xs else 0.0


def flat_verdict(values, rel=0.10, slack=2 * MiB, min_samples=8):
    """Flat: the median of the last quarter of the samples is at most the first quarter's median
    plus `rel` of it or plus `slack`, whichever is more. Returns (flat, first-quarter median,
    last-quarter median, why); too few samples is not flat (nothing was shown)."""
    n = len(values)
    if n < min_samples:
        return False, 0.0, 0.0, f"{n} samples after warm-up, fewer than {min_samples}"
    q = max(1, n // 4)
    m1, m4 = median(values[:q]), median(values[-q:])
    ok = m4 <= max(m1 * (1 + rel), m1 + slack)
    return ok, m1, m4, ("" if ok else f"last-quarter median {m4:g} > first-quarter {m1:g} (+{rel:.0%} or +{slack:g})")


def schedule(seed, seconds, gap=EVENT_GAP_S):
    """Disturbances [(at_s, kind)] over `seconds`: a random gap each, kinds in a random order per
    round of three, so every kind comes once in any three in a row."""
    rnd = random.Random(seed)
    out, t, bag = [], 0.0, []
    while True:
        t += rnd.uniform(*gap)
        if t > seconds - 20:  # none in the last seconds: the last period gets samples too
            return out
        if not bag:
            bag = ["restart", "kill", "upgrade"]
            rnd.shuffle(bag)
        out.append((round(t, 1), bag.pop()))


_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """[(name, {label: value}, float)] of the exposition text's samples."""
    out = []
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        m = _LINE.match(line)
        if m:
            labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in _LABEL.findall(m.group(2) or "")}
            out.append((m.group(1), labels, float(m.group(3))))
    return out


_NET = re.compile(r"ceemsnet_net_(egress|ingress)_(bytes|calls|errors)_total$")
_VFS = re.compile(r"ceemsnet_vfs_(read|write)_(bytes|calls|errors)_total$")


def tally_key(name, labels):
    """The worker-tally key and index a per-cgroup sample adds to, or None:
    net/<proto>/<family>/<dir> [bytes, calls], vfs/<read|write> [bytes, calls] (all file
    systems summed), ops/<op> [count]; errors as err/... (reported, not compared)."""
    m = _NET.match(name)
    if m:
        d, kind = m.groups()
        base = f"net/{labels.get('proto')}/{labels.get('family')}/{d}"
        return (f"err/{base}", 0) if kind == "errors" else (base, 0 if kind == "bytes" else 1)
    m = _VFS.match(name)
    if m:
        op, kind = m.groups()
        return (f"err/vfs/{op}", 0) if kind == "errors" else (f"vfs/{op}", 0 if kind == "bytes" else 1)
    if name == "ceemsnet_vfs_ops_total":
        return f"ops/{labels.get('op')}", 0
    if name == "ceemsnet_vfs_op_errors_total":
        return f"err/ops/{labels.get('op')}", 0
    return None


def compared_keys(collectors):
    """Prefixes of the tally keys a run with these collectors must match."""
    return tuple(p for c, p in (("net", ("net/",)), ("vfs", ("vfs/", "ops/"))) if c in collectors for p in p)


def diff_totals(tally, exported, prefixes):
    """[(key, index, tallied, exported)] where they differ, over the keys either side has."""
    out = []
    for key in sorted(set(tally) | set(exported)):
        if not key.startswith(prefixes):
            continue
        want, got = tally.get(key, []), exported.get(key, [])
        for i in range(max(len(want), len(got))):
            w = want[i] if i < len(want) else 0
            g = got[i] if i < len(got) else 0
            if w != g:
                out.append((key, i, w, g))
    return out


def store_view(tally):
    """A worker's tally in the store report's JSON fields (`ceemsnet report --format=json`)."""
    def s(prefix, suffix, i):
        return sum(v[i] for k, v in tally.items() if k.startswith(prefix) and k.endswith(suffix) and len(v) > i)
    return {"net_egress_bytes": s("net/", "/egress", 0), "net_ingress_bytes": s("net/", "/ingress", 0),
            "net_egress_calls": s("net/", "/egress", 1), "net_ingress_calls": s("net/", "/ingress", 1),
            "vfs_read_bytes": s("vfs/read", "", 0), "vfs_write_bytes": s("vfs/write", "", 0),
            "vfs_ops": s("ops/", "", 0)}


STORE_FIELDS = {"net": ("net_egress_bytes", "net_ingress_bytes", "net_egress_calls", "net_ingress_calls"),
                "vfs": ("vfs_read_bytes", "vfs_write_bytes", "vfs_ops")}


def entry_id(hexbytes):
    """The little-endian u64 in the first 8 bytes of a bpftool -j key or value (a cgroup id)."""
    raw = bytes(int(x, 16) for x in (hexbytes or [])[:8])
    return int.from_bytes(raw, "little") if len(raw) == 8 else None


def soak_owned(entry, ids, marker, counters):
    """Whether a bpftool -j map entry is one of the soak's cgroups': a counters key (or slot
    owner, the value) by cgroup id; a ledger entry by the cgroup id its key starts with or the
    soak cgroup's path in its key or value."""
    if entry_id(entry.get("key")) in ids or (counters and entry_id(entry.get("value")) in ids):
        return True
    if counters:
        return False
    raw = bytes(int(x, 16) for x in (entry.get("key") or []) + (entry.get("value") or [])
                if isinstance(x, str))
    return marker in raw


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{n:.0f} B"
        n /= 1024
    return str(n)


def percentile(xs, p):
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def markdown_table(rows, header=("figure", "value")):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --- the worker: runs in its own cgroup -----------------------------------------------------

def worker(spec):
    """Prints "ready", waits for a line (the soak moves it into its cgroup meanwhile), then moves
    bytes for spec["seconds"] and prints its tally as JSON. Everything it needs is imported
    already: after "ready" the only file IO is the tallied one on the soak's tmpfs."""
    rnd = random.Random(spec["seed"])
    tally = {}

    def note(key, *vals):
        t = tally.setdefault(key, [0] * len(vals))
        for i, v in enumerate(vals):
            t[i] += v

    def tcp(af, addr):
        fam = "ipv6" if af == socket.AF_INET6 else "ipv4"
        with socket.socket(af, socket.SOCK_STREAM) as s:
            s.connect(tuple(addr))
            view = memoryview(b"\x5a" * rnd.randint(1, 128 * 1024))
            while view:
                n = s.send(view)
                note(f"net/tcp/{fam}/egress", n, 1)
                view = view[n:]
            s.shutdown(socket.SHUT_WR)
            while True:  # the peer answers and closes: the final 0-byte receive is a call too
                n = len(s.recv(65536))
                note(f"net/tcp/{fam}/ingress", n, 1)
                if not n:
                    break

    def udp(af, addr):
        fam = "ipv6" if af == socket.AF_INET6 else "ipv4"
        with socket.socket(af, socket.SOCK_DGRAM) as s:
            s.settimeout(5)  # polls before it receives: a lost echo is no failed call, just none
            for _ in range(rnd.randint(1, 16)):
                n = s.sendto(b"\xa5" * rnd.randint(1, 8192), tuple(addr))
                note(f"net/udp/{fam}/egress", n, 1)
                try:
                    note(f"net/udp/{fam}/ingress", len(s.recv(65536)), 1)
                except TimeoutError:
                    pass

    def files(i):
        path = os.path.join(spec["dir"], f"f{i}")
        size = rnd.randint(1, 256 * 1024)
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        note("ops/open", 1)
        note("ops/create", 1)
        left = size
        while left:
            chunk = min(left, rnd.randint(1024, 64 * 1024))
            if rnd.random() < 0.25:
                n = os.writev(fd, [b"w" * (chunk // 2), b"v" * (chunk - chunk // 2)])
            else:
                n = os.write(fd, b"w" * chunk)
            note("vfs/write", n, 1)
            left -= n
        os.close(fd)
        fd = os.open(path, os.O_RDONLY)
        note("ops/open", 1)
        left = size
        while left:  # exactly what was written: no end-of-file read
            n = len(os.read(fd, min(left, rnd.randint(1024, 64 * 1024))))
            note("vfs/read", n, 1)
            if not n:
                break
            left -= n
        os.close(fd)
        os.unlink(path)
        note("ops/unlink", 1)

    print("ready", flush=True)
    sys.stdin.readline()
    end = time.monotonic() + spec["seconds"]
    i = 0
    while True:
        what = rnd.random()
        six = rnd.random() < 0.5
        if "net" in spec["collectors"] and what < 0.35:
            tcp(socket.AF_INET6 if six else socket.AF_INET, spec["tcp6" if six else "tcp4"])
        elif "net" in spec["collectors"] and what < 0.7:
            udp(socket.AF_INET6 if six else socket.AF_INET, spec["udp6" if six else "udp4"])
        elif "vfs" in spec["collectors"]:
            files(i)
        i += 1
        if time.monotonic() >= end:
            break
        time.sleep(rnd.uniform(0.1, 0.5))  # a steady load, not a flood: the machine is shared
    print(json.dumps(tally), flush=True)


# --- the soak -----------------------------------------------------------------------------

class Interrupted(Exception):
    pass


def _interrupt(signum, frame):
    raise Interrupted(signal.Signals(signum).name)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class Worker:
    def __init__(self, n, cgroup_dir, rel, proc, seconds):
        self.n, self.dir, self.rel, self.proc, self.seconds = n, cgroup_dir, rel, proc, seconds
        self.id = os.stat(cgroup_dir).st_ino
        self.tally = None
        self.started = time.monotonic()
        self.exited = None   # monotonic time its exit was seen
        self.removed = None  # monotonic time its cgroup was removed
        self.error = None


class Period:
    """One exporter process: from its start to how it ended."""

    def __init__(self, n, proc, map_entries, started):
        self.n, self.proc, self.map_entries, self.started = n, proc, map_entries, started
        self.ended, self.ended_by = None, None
        self.rss = []      # (t, bytes)
        self.entries = []  # (t, {map: entries}, {map: bound})


class Soak:
    def __init__(self, a):
        self.a = a
        self.collectors = tuple(c for c in a.collectors.split(",") if c)
        self.prefixes = compared_keys(self.collectors)
        self.rnd = random.Random(a.seed)
        self.work = tempfile.mkdtemp(prefix="ceemsnet-soak-")
        self.fs = os.path.join(self.work, "fs")
        self.logs = os.path.join(self.work, "logs")
        os.mkdir(self.fs)
        os.mkdir(self.logs)
        self.mounted = False
        self.store = os.path.join(self.work, "accounting.db")
        self.root = find_cgroup2_root()
        self.parent_rel = f"/ceemsnet-soak-{os.getpid()}"
        self.parent = os.path.join(self.root, self.parent_rel.lstrip("/"))
        self.pins = a.pin_path or f"/sys/fs/bpf/ceemsnet-soak-{os.getpid()}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.peer = None
        self.lock = threading.Lock()
        self.live, self.done, self.unremoved = [], [], []
        self.by_id = {}
        self.periods = []
        self.up = False
        self.frozen = False
        self.stop_scraping = threading.Event()
        self.scrapes, self.refused, self.failed_up = 0, 0, []
        self.latency = []
        self.latest = {}        # cgroup label -> {key: (start of the last scrape that had it, [values])}
        self.seen = {}          # cgroup label -> {subsystem: [first, last scrape start with its series]}
        self.decreases = []     # (label, key, before, after)
        self.last_values = {}   # (label, key, index) -> value
        self.objects = set()
        self.unknown_labels = set()
        self.events = []        # (elapsed, kind, seconds it took, frozen seconds)
        self.ledger = []        # (elapsed, {pinned map: the soak's entries}, {map: all}, {map: bound})
        self.n = 0
        self.t0 = time.monotonic()

    # --- the exporter ---
    def start_exporter(self, map_entries):
        log = open(os.path.join(self.logs, f"serve-{len(self.periods)}.log"), "w")
        argv = [sys.executable, "-m", "ceemsnet.cli", "serve", f"--web.listen-address=127.0.0.1:{self.port}",
                f"--collectors={','.join(self.collectors)}", f"--hook={self.a.hook}", "--unit=none",
                f"--storage.path={self.store}", "--storage.interval=5s", f"--bpf.pin-path={self.pins}",
                f"--cgroup.retention={RETENTION_S}s", *((f"--net.map-entries={map_entries}",) if "net" in self.collectors else ())]
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        t = time.monotonic()
        p = Period(len(self.periods), proc, map_entries, t)
        self.periods.append(p)
        while time.monotonic() - t < READY_S:
            if proc.poll() is not None:
                raise SoakError(f"serve exited with {proc.returncode} at start (log {self.logs}/serve-{p.n}.log)")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(self.url, timeout=5).read()
                self.up = True
                return time.monotonic() - t
            time.sleep(0.1)
        raise SoakError(f"serve did not answer within {READY_S} s (log {self.logs}/serve-{p.n}.log)")

    def end_exporter(self, how):
        p = self.periods[-1]
        self.up = False
        if p.proc.poll() is None:
            if how == "kill":
                p.proc.kill()  # our own child, by its PID
            else:
                p.proc.terminate()
            try:
                p.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait()
                how += " (SIGTERM ignored 60 s: SIGKILLed)"
        elif p.ended_by is None:
            how = f"exited by itself with {p.proc.returncode}"
        if p.ended_by is None:
            p.ended, p.ended_by = time.monotonic(), how
        return p.proc.returncode

    # --- scrapes ---
    def scrape_loop(self):
        while not self.stop_scraping.is_set():
            t = time.monotonic()
            self.scrape_once()
            self.stop_scraping.wait(max(0.0, 1.0 - (time.monotonic() - t)))

    def scrape_once(self):
        t = time.monotonic()
        up_before = self.up
        p = self.periods[-1] if self.periods else None
        try:
            with urllib.request.urlopen(self.url, timeout=20) as r:
                text = r.read().decode()
        except OSError as e:
            with self.lock:
                if up_before and self.up:
                    self.failed_up.append((round(t - self.t0, 1), str(e)))
                else:
                    self.refused += 1
            return
        took = time.monotonic() - t
        samples = parse_metrics(text)
        per, cgroups_of, entries = {}, {}, {}
        for name, labels, v in samples:
            cg = labels.get("cgroup")
            if name == "ceemsnet_map_entries":
                entries[labels.get("map")] = v
            elif name == "ceemsnet_hook_info":
                self.objects.add(labels.get("object"))
            if cg is None:
                continue
            sub = name.split("_")[1]
            cgroups_of.setdefault(sub, set()).add((cg, labels.get("fstype")) if sub == "vfs" else cg)
            if not (cg.startswith(self.parent_rel + "/") or cg.startswith("unknown:")):
                continue
            k = tally_key(name, labels)
            if k:
                vals = per.setdefault(cg, {}).setdefault(k[0], [0, 0])
                vals[k[1]] += int(v)
        bounds = {m: KEYS_PER_CGROUP[m] * len(cgroups_of.get(m.split("_")[0], ()))
                  for m in entries if m in KEYS_PER_CGROUP}
        with self.lock:
            self.scrapes += 1
            self.latency.append(took)
            for cg, vals in per.items():
                if cg.startswith("unknown:"):
                    self.unknown_labels.add(cg)
                for key, vs in vals.items():
                    for i, v in enumerate(vs):
                        last = self.last_values.get((cg, key, i))
                        if last is not None and v < last:
                            self.decreases.append((cg, key, i, last, v, round(t - self.t0, 1)))
                        self.last_values[(cg, key, i)] = max(v, last or 0)
                mine = self.latest.setdefault(cg, {})
                seen = self.seen.setdefault(cg, {})
                for key, vs in vals.items():
                    mine[key] = (t, vs)
                    sub = key.split("/")[1] if key.startswith("err/") else key.split("/")[0]
                    sub = "vfs" if sub == "ops" else sub
                    seen.setdefault(sub, [t, t])[1] = t
            if p is not None and self.up and p is self.periods[-1]:
                rss = rss_bytes(p.proc.pid)
                if rss is not None:
                    p.rss.append((t, rss))
                p.entries.append((t, entries, bounds))

    # --- workers and cgroups ---
    def start_worker(self):
        self.n += 1
        rel = f"{self.parent_rel}/w{self.n}"
        d = os.path.join(self.root, rel.lstrip("/"))
        wdir = os.path.join(self.fs, f"w{self.n}")
        os.mkdir(wdir)
        seconds = round(self.rnd.uniform(*LIFE_S), 2)
        spec = {"seed": self.rnd.getrandbits(32), "seconds": seconds, "dir": wdir, "collectors": list(self.collectors),
                "tcp4": self.peer.tcp4, "tcp6": self.peer.tcp6, "udp4": self.peer.udp4,
                "udp6": self.peer.udp6}
        os.mkdir(d)
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        w = Worker(self.n, d, rel, proc, seconds)
        self.live.append(w)
        self.by_id[w.id] = w
        if not select.select([proc.stdout], [], [], 60)[0] or proc.stdout.readline().strip() != "ready":
            raise SoakError(f"worker {self.n} did not start: {proc.stderr.read() if proc.poll() is not None else ''}")
        with open(os.path.join(d, "cgroup.procs"), "w") as f:  # loaded: its start-up IO stays out of its cgroup
            f.write(str(proc.pid))
        proc.stdin.write("go\n")
        proc.stdin.close()
        proc.stdin = None  # communicate() at the end must not flush it

    def reap(self):
        for w in list(self.live):
            if w.proc.poll() is None:
                continue
            w.exited = time.monotonic()
            out, err = w.proc.communicate()
            if w.proc.returncode != 0:
                w.error = f"exit {w.proc.returncode}: {err.strip()[-300:]}"
            else:
                try:
                    w.tally = json.loads(out.strip().splitlines()[-1])
                except (ValueError, IndexError):
                    w.error = f"no tally: {out[-200:]!r}"
            shutil.rmtree(os.path.join(self.fs, f"w{w.n}"), ignore_errors=True)
            self.live.remove(w)
            self.done.append(w)
            self.unremoved.append(w)
        for w in list(self.unremoved):
            try:
                os.rmdir(w.dir)
            except FileNotFoundError:
                pass
            except OSError:
                continue  # an exited task can take a moment to leave its cgroup: next tick
            w.removed = time.monotonic()
            self.unremoved.remove(w)

    def freeze(self, on):
        with open(os.path.join(self.parent, "cgroup.freeze"), "w") as f:
            f.write("1" if on else "0")
        self.frozen = on
        if on:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with open(os.path.join(self.parent, "cgroup.events")) as f:
                    if "frozen 1" in f.read():
                        return
                time.sleep(0.02)
            raise SoakError("the soak cgroup did not freeze within 30 s")

    # --- pinned maps: the counters and the lifecycle's ledger, the soak's own entries apart ---
    def pinned_entries(self):
        """({map: the soak's entries}, {map: all entries}, {map: bound on the soak's}), read with
        bpftool: the exporter counts every cgroup on the host, and other users' churn must not
        pass for the soak's growth. A counters key or slot is the soak's by its cgroup id; a
        ledger entry by its cgroup id or the soak cgroup's path in it."""
        ids = set(self.by_id)
        marker = self.parent_rel.encode()
        now = time.monotonic()
        live = len(self.live) + len(self.unremoved)
        recent = {r: sum(1 for w in self.done if w.removed is not None and now - w.removed < r)
                  for r in (5, RETENTION_S + 15)}
        mine, every, bound, dumps = {}, {}, {}, []
        for d, _, names in os.walk(self.pins):
            for name in names:
                if not (name.startswith("map__") and name.endswith(PINNED_MAPS)):
                    continue
                p = subprocess.run(["bpftool", "-j", "map", "dump", "pinned", os.path.join(d, name)],
                                   capture_output=True, text=True)
                try:
                    entries = json.loads(p.stdout) if p.returncode == 0 else []
                except ValueError:
                    continue
                dumps.append((name[len("map__"):], entries))
        # the retired totals are keyed by path id (ceemsnet/pinned/ledger.py): the soak's are the
        # ids its paths have in the _paths maps
        ids |= {entry_id(e.get("key")) for m, entries in dumps if m.endswith("_paths") for e in entries
                if soak_owned(e, (), marker, False)}
        for m, entries in dumps:
            counters = m.endswith(("_stats", "_slot_owner"))
            if m.endswith("_slot_owner"):  # an array: owned slots only
                entries = [e for e in entries if entry_id(e.get("value")) != 0]
            every[m] = every.get(m, 0) + len(entries)
            mine[m] = mine.get(m, 0) + sum(1 for e in entries if soak_owned(e, ids, marker, counters))
            bound[m] = 8 * (live + recent[5 if counters else RETENTION_S + 15])
        return mine, every, bound

    # --- the run ---
    def disturb(self, kind):
        t = time.monotonic()
        frozen = 0.0
        prev = self.periods[-1].map_entries
        if kind == "upgrade":
            self.freeze(True)
            tf = time.monotonic()
            self.end_exporter("upgrade")
            self.start_exporter(MAP_ENTRIES[1] if prev == MAP_ENTRIES[0] else MAP_ENTRIES[0])
            self.freeze(False)
            frozen = time.monotonic() - tf
        else:
            self.end_exporter("SIGKILL" if kind == "kill" else "restart (SIGTERM)")
            self.start_exporter(prev)
        self.events.append((round(t - self.t0, 1), kind, time.monotonic() - t, frozen))

    def progress(self):
        with self.lock:
            p = self.periods[-1]
            rss = p.rss[-1][1] if p.rss else 0
            ent = p.entries[-1][1] if p.entries else {}
            scrapes, bad = self.scrapes, len(self.failed_up)
        moved = sum(sum(v[0] for k, v in w.tally.items() if k.startswith(("net/", "vfs/"))) for w in self.done if w.tally)
        el = time.monotonic() - self.t0
        kinds = [e[1] for e in self.events]
        print(f"[{int(el // 60):3d}:{int(el % 60):02d}] cgroups live {len(self.live)} removed "
              f"{len(self.done) - len(self.unremoved)} | moved {human(moved)} | scrapes {scrapes} ({bad} failed while up) | "
              f"restarts {kinds.count('restart')} kills {kinds.count('kill')} upgrades {kinds.count('upgrade')} | "
              f"RSS {rss / MiB:.1f} MiB | entries {' '.join(f'{m}={v:.0f}' for m, v in sorted(ent.items()))}", flush=True)

    def run(self):
        os.mkdir(self.parent)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=0700", "ceemsnet-soak", self.fs], check=True)
        self.mounted = True
        self.peer = Peer()
        self.start_exporter(MAP_ENTRIES[0])
        self.t0 = time.monotonic()
        self.ledger.append((0.0, *self.pinned_entries()))
        scraper = threading.Thread(target=self.scrape_loop, daemon=True)
        scraper.start()
        seconds = self.a.minutes * 60
        events = schedule(self.a.seed, seconds, self.a.gap)
        print(f"soak: {self.a.minutes:g} min, seed {self.a.seed}, collectors {','.join(self.collectors)}, pins "
              f"{self.pins}, cgroups below {self.parent}; disturbances at "
              f"{', '.join(f'{t:.0f}s {k}' for t, k in events) or 'none'}", flush=True)
        next_progress = 60.0
        while time.monotonic() - self.t0 < seconds:
            self.reap()
            while len(self.live) < WORKERS:
                self.start_worker()
            el = time.monotonic() - self.t0
            if events and el >= events[0][0]:
                self.disturb(events.pop(0)[1])
            if el >= next_progress:
                self.progress()
                self.ledger.append((round(el, 1), *self.pinned_entries()))
                next_progress += 60
            time.sleep(0.1)
        # drain: no new workers; wait for the live ones and their cgroups' removal
        deadline = time.monotonic() + LIFE_S[1] + 60
        while (self.live or self.unremoved) and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.1)
        if self.live or self.unremoved:
            raise SoakError(f"{len(self.live)} workers still running, {len(self.unremoved)} cgroups not removable "
                            "60 s after their end")
        # two more scrapes that start after the last removal, then the store's last write (SIGTERM)
        with self.lock:
            n = self.scrapes
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with self.lock:
                if self.scrapes >= n + 2:
                    break
            time.sleep(0.2)
        self.progress()
        self.ledger.append((round(time.monotonic() - self.t0, 1), *self.pinned_entries()))
        self.drain_s = time.monotonic() - self.t0 - seconds
        self.stop_scraping.set()
        scraper.join(timeout=30)
        rc = self.end_exporter("end of the soak (SIGTERM)")
        if rc != 0:
            raise SoakError(f"serve exited with {rc} on SIGTERM (log {self.logs}/serve-{len(self.periods) - 1}.log)")

    def report_rows(self):
        p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "report", f"--storage.path={self.store}",
                            "--by=cgroup", "--format=json", "--slurm.sacct=none", "--slurm.sacct-cache=none"],
                           cwd=ROOT, capture_output=True, text=True)
        if p.returncode != 0:
            raise SoakError(f"ceemsnet report failed: {p.stderr.strip()}")
        return {r.get("cgroup"): r for r in json.loads(p.stdout)}

    def cleanup(self):
        """Everything this run made goes, whatever happened: workers, cgroups, the exporter, pins,
        the tmpfs. Logs stay only when the run failed."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        self.stop_scraping.set()
        problems = []
        if self.frozen or os.path.isdir(self.parent):
            with contextlib.suppress(OSError):
                self.freeze(False)
        for w in self.live:
            if w.proc.poll() is None:
                w.proc.kill()  # our own worker, by its PID
            w.proc.wait()
            self.unremoved.append(w)
        for p in self.periods:
            stop_by_pid(p.proc, timeout=60)  # our own children
        for d in [w.dir for w in self.unremoved] + [self.parent]:
            if not remove_cgroup_dir(d, tries=100):
                problems.append(f"cannot remove {d}")
        if self.peer is not None:
            self.peer.close()
        if os.path.isdir(self.pins):
            r = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "detach", f"--bpf.pin-path={self.pins}"],
                               cwd=ROOT, capture_output=True, text=True)
            if r.returncode != 0 or os.path.exists(self.pins):
                problems.append(f"ceemsnet detach --bpf.pin-path={self.pins}: {r.stderr.strip()}")
        if self.mounted:
            r = subprocess.run(["umount", self.fs], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"umount {self.fs}: {r.stderr.strip()}")
        return problems


class SoakError(Exception):
    pass


def verdicts(s, rows):
    """(passed, markdown) from a finished soak."""
    fails = []
    mismatches = []      # (label, where, key, index, tallied, exported)
    checked_retired = checked_live_only = 0
    tallied = [w for w in s.done if w.tally is not None]
    for w in s.done:
        if w.error:
            fails.append(f"worker {w.n} failed: {w.error}")
    for w in tallied:
        exported, stale, last = {}, {}, 0.0
        for label in (w.rel, f"unknown:{w.id}"):
            for k, (t, vs) in s.latest.get(label, {}).items():
                if t < w.exited:  # last exported while the worker still ran: not its total
                    stale[k] = t
                    continue
                last = max(last, t)
                acc = exported.setdefault(k, [0, 0])
                for i, v in enumerate(vs):
                    acc[i] += v
        for k, t in stale.items():
            if k not in exported and k.startswith(s.prefixes):
                mismatches.append((w.rel, "/metrics", k, f"not exported after the worker ended (last at {t - s.t0:.0f} s)",
                                   "", ""))
        if not exported:
            mismatches.append((w.rel, "/metrics", "-", "not exported after its worker ended", "", ""))
            continue
        if w.removed is not None and last >= w.removed:
            checked_retired += 1
        else:
            checked_live_only += 1
        exp = {k: [v for v in vs] for k, vs in exported.items()}
        for k in list(exp):  # a 2-slot value whose second slot no metric fills (ops): compare the first only
            if k.startswith("ops/"):
                exp[k] = exp[k][:1]
        for key, i, want, got in diff_totals(w.tally, exp, s.prefixes):
            mismatches.append((w.rel, "/metrics", key, ("bytes", "calls")[i] if not key.startswith("ops/") else "ops",
                               want, got))
        want_store = store_view(w.tally)
        row = dict(rows.get(w.rel) or {})
        extra = rows.get(f"unknown:{w.id}")
        for c in s.collectors:
            for f in STORE_FIELDS.get(c, ()):
                got = (row.get(f) or 0) + ((extra or {}).get(f) or 0)
                if not row and not extra:
                    got = None
                if got != want_store[f]:
                    mismatches.append((w.rel, "store", f, "", want_store[f], got))
    exact = len({m[0] for m in mismatches})
    if mismatches:
        fails.append(f"{len(mismatches)} totals differ, in {exact} cgroups")
    if s.decreases:
        fails.append(f"{len(s.decreases)} counter decreases seen")

    # RSS and map entries over time: per period, and flat over the run (samples after warm-up)
    rss_all, ent_all, bound_over = [], {}, []
    for p in s.periods:
        for t, v in p.rss:
            if t - p.started >= WARMUP_S:
                rss_all.append(v)
        for t, ent, bounds in p.entries:
            for m, v in ent.items():
                if t - p.started >= WARMUP_S:
                    ent_all.setdefault(m, []).append(v)
                if m in bounds and v > bounds[m]:
                    bound_over.append((round(t - s.t0, 1), m, v, bounds[m]))
    rss_ok, r1, r4, rss_why = flat_verdict(rss_all)
    if not rss_ok:
        fails.append(f"RSS not flat: {rss_why}")
    ent_verdicts = {}
    for m, vs in sorted(ent_all.items()):
        ok, e1, e4, why = flat_verdict(vs, slack=2 * KEYS_PER_CGROUP.get(m, 8))
        ent_verdicts[m] = (ok, e1, e4, max(vs))
        if not ok:
            fails.append(f"{m} entries not flat: {why}")
    ledger_vals, ledger_all, ledger_over = {}, {}, []
    for el, mine, every, bound in s.ledger:
        for k, v in mine.items():
            ledger_vals.setdefault(k, []).append(v)
            if v > bound.get(k, v):
                ledger_over.append((el, k, v, bound[k]))
        for k, v in every.items():
            ledger_all.setdefault(k, []).append(v)
    ledger_bad = []
    for k, vs in sorted(ledger_vals.items()):
        ok, _, _, why = flat_verdict(vs[1:-1], slack=8 * WORKERS, min_samples=4)  # without the first and the drained last
        if len(vs) > 5 and not ok:
            ledger_bad.append(f"{k}: {why}")
    if ledger_bad:
        fails.append("pinned maps growing with the soak's cgroups: " + "; ".join(ledger_bad))
    if ledger_over:
        fails.append(f"{len(ledger_over)} samples of the soak's pinned entries above 8 per live or just removed "
                     f"cgroup (first: {ledger_over[0]})")
    drained = {k: v[-1] for k, v in ledger_vals.items() if k.endswith(("_stats", "_slot_owner")) and v[-1]}
    if drained:
        fails.append(f"counters keys of removed soak cgroups left after the end: {drained}")
    if s.failed_up:
        fails.append(f"{len(s.failed_up)} scrapes failed while the exporter was up (first: {s.failed_up[0]})")

    kinds = [e[1] for e in s.events]
    net_moved = sum(v[0] for w in tallied for k, v in w.tally.items() if k.startswith("net/"))
    vfs_moved = sum(v[0] for w in tallied for k, v in w.tally.items() if k.startswith("vfs/"))
    ops = sum(v[0] for w in tallied for k, v in w.tally.items() if k.startswith("ops/"))
    lat = s.latency
    ups = [e for e in s.events]
    passed = not fails
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    figures = [
        ("run", f"{s.a.minutes:g} min of churn and disturbances + {s.drain_s:.0f} s drain; {when}; seed {s.a.seed}"),
        ("kernel, objects", f"{os.uname().release} {os.uname().machine}; {', '.join(sorted(o for o in s.objects if o))}"),
        ("collectors", ",".join(s.collectors)),
        ("cgroups made and removed", f"{len(s.done)} ({WORKERS} workers at a time, each {LIFE_S[0]:g}-{LIFE_S[1]:g} s)"),
        ("moved (the workers' own tallies)", f"net {human(net_moved)}, file IO {human(vfs_moved)}, {ops} file ops"),
        ("scrapes", f"{s.scrapes} answered, {s.refused} refused while no exporter ran, {len(s.failed_up)} failed while one did"),
        ("scrape latency", f"p50 {percentile(lat, 50) * 1000:.0f} ms, p99 {percentile(lat, 99) * 1000:.0f} ms, "
                           f"max {max(lat, default=0) * 1000:.0f} ms"),
        ("disturbances", f"{kinds.count('restart')} restarts (SIGTERM), {kinds.count('kill')} SIGKILLs, "
                         f"{kinds.count('upgrade')} upgrades (the other --net.map-entries); exporter back in "
                         f"{median([e[2] for e in ups]):.1f} s median, {max([e[2] for e in ups], default=0):.1f} s max; "
                         f"workload frozen {sum(e[3] for e in ups):.1f} s in all for upgrades"),
        ("totals exact on /metrics and in the store",
         f"{len(tallied) - exact} of {len(tallied)} cgroups ({checked_retired} checked on their retained series after "
         f"removal, {checked_live_only} on their last live ones); {len(mismatches)} differences"),
        ("counter decreases", str(len(s.decreases))),
        ("errors counted (not compared: the workers make none; a freeze can interrupt a blocked receive)",
         str(sum(v for keys in s.latest.values() for k, (_, vs) in keys.items() if k.startswith("err/")
                 for v in vs))),
        ("unknown:<id> labels", str(len(s.unknown_labels))),
        ("exporter RSS (after warm-up)", f"first-quarter median {r1 / MiB:.1f} MiB, last-quarter {r4 / MiB:.1f} MiB, "
                                         f"max {max(rss_all, default=0) / MiB:.1f} MiB: {'flat' if rss_ok else 'NOT flat'}"),
    ]
    for m, (ok, e1, e4, mx) in ent_verdicts.items():
        figures.append((f"ceemsnet_map_entries{{map={m}}}", f"first-quarter median {e1:.0f}, last-quarter {e4:.0f}, "
                        f"max {mx:.0f}: {'flat' if ok else 'NOT flat'} (host-wide: every cgroup's keys; above keys per cgroup x "
                        f"exported cgroups {sum(1 for b in bound_over if b[1] == m)} times, not judged)"))
    if ledger_vals:
        figures.append(("pinned maps, the soak's entries (bpftool, each minute: first -> last, max)", ", ".join(
            f"{k} {v[0]} -> {v[-1]} ({max(v)})" for k, v in sorted(ledger_vals.items()))))
        figures.append(("pinned maps, all entries (other cgroups on the host too)", ", ".join(
            f"{k} {v[0]} -> {v[-1]} ({max(v)})" for k, v in sorted(ledger_all.items()))))
    figures.append(("result", "PASS" if passed else "FAIL: " + "; ".join(fails)))
    out = [f"### Soak: {s.a.minutes:g} minutes", "", markdown_table(figures), ""]
    prow = []
    for p in s.periods:
        rss = [v for _, v in p.rss]
        ents = {}
        for _, e, _b in p.entries:
            for m, v in e.items():
                ents.setdefault(m, []).append(v)
        prow.append((p.n, p.ended_by or "-", f"{((p.ended or time.monotonic()) - p.started):.0f} s",
                     p.map_entries if "net" in s.collectors else "-",
                     " / ".join(f"{x / MiB:.1f}" for x in (rss[0], rss[-1], max(rss))) if rss else "-",
                     *(" / ".join(f"{x:.0f}" for x in (v[0], v[-1], max(v))) if (v := ents.get(m)) else "-"
                       for m in sorted(KEYS_PER_CGROUP) if m.split("_")[0] in s.collectors)))
    out += ["Per exporter run (first / last / max):", "",
            markdown_table(prow, ("run", "ended by", "length", "--net.map-entries", "RSS MiB",
                                  *(f"{m} entries" for m in sorted(KEYS_PER_CGROUP) if m.split("_")[0] in s.collectors))),
            ""]
    if mismatches:
        byw = {w.rel: w for w in s.done}
        per = {}
        for m in mismatches:
            per.setdefault(m[0], []).append(m)
        summary = []
        for rel, ms in per.items():
            w = byw.get(rel)
            at = (lambda t: f"{t - s.t0:.1f}" if t is not None else "-")
            keys = sorted({f"{m[1]}:{m[2].split('/')[0]}" for m in ms})
            seen = "; ".join(f"{sub} {at(a)}-{at(b)}" for sub, (a, b) in sorted(s.seen.get(rel, {}).items()))
            summary.append((rel, f"{at(w.started)}-{at(w.exited)}" if w else "-", at(w.removed) if w else "-", seen,
                            ", ".join(keys), sum(m[4] for m in ms if isinstance(m[4], int)),
                            sum(m[5] for m in ms if isinstance(m[5], int))))
        out += ["Cgroups whose totals differ (times in s since the start; disturbances at "
                + ", ".join(f"{e[0]:.0f} {e[1]}" for e in s.events) + "):", "",
                markdown_table(summary, ("cgroup", "worker ran", "removed at", "series seen", "where:what", "tallied (sum)",
                                         "exported (sum)")), ""]
        out += ["Differences (first 30):", "",
                markdown_table(mismatches[:30], ("cgroup", "where", "key", "what", "tallied", "exported")), ""]
    if s.decreases:
        out += ["Counter decreases (first 10):", "",
                markdown_table(s.decreases[:10], ("cgroup", "key", "index", "before", "after", "at s")), ""]
    return passed, "\n".join(out)


def main():
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        worker(json.loads(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30, help="how long the churn and disturbances run (default 30)")
    ap.add_argument("--collectors", default="net,vfs", help="net, vfs or both (default net,vfs)")
    ap.add_argument("--seed", type=int, default=None, help="the schedule's and workload's seed (default: random, printed)")
    ap.add_argument("--pin-path", default=None,
                    help="bpffs directory for the pins (default a fresh /sys/fs/bpf/ceemsnet-soak-<pid>); "
                         "removed at the end with `ceemsnet detach`")
    ap.add_argument("--hook", default="auto", help="serve --hook (default auto: this kernel's best family)")
    ap.add_argument("--gap", default=f"{EVENT_GAP_S[0]:g},{EVENT_GAP_S[1]:g}", metavar="MIN,MAX",
                    help="seconds between two disturbances, drawn uniformly (default %(default)s)")
    ap.add_argument("--report", default=None, metavar="FILE", help="also write the markdown tables to FILE")
    a = ap.parse_args()
    bad = [c for c in a.collectors.split(",") if c not in ("net", "vfs")]
    if bad or not a.collectors:
        print(f"bench/soak.py: --collectors={a.collectors}: only net and vfs", file=sys.stderr)
        return 2
    if a.minutes <= 0:
        print(f"bench/soak.py: --minutes={a.minutes}: must be positive", file=sys.stderr)
        return 2
    try:
        a.gap = tuple(float(x) for x in a.gap.split(","))
        if len(a.gap) != 2 or not 0 < a.gap[0] <= a.gap[1]:
            raise ValueError
    except ValueError:
        print(f"bench/soak.py: --gap={a.gap}: two numbers MIN,MAX of seconds, 0 < MIN <= MAX", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("bench/soak.py: needs root (BPF, cgroups, a tmpfs mount)", file=sys.stderr)
        return 2
    if a.pin_path and os.path.exists(a.pin_path):
        print(f"bench/soak.py: --pin-path={a.pin_path} exists: give a fresh directory (it is removed at the end)",
              file=sys.stderr)
        return 2
    if not shutil.which("bpftool"):
        print("bench/soak.py: bpftool not found (make setup installs it)", file=sys.stderr)
        return 2
    if a.seed is None:
        a.seed = random.SystemRandom().randrange(1 << 31)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    s = None
    passed, text, problems = False, "", []
    try:
        s = Soak(a)
        s.run()
        rows = s.report_rows()
        passed, text = verdicts(s, rows)
    except (SoakError, Interrupted) as e:
        print(f"bench/soak.py: {'interrupted by ' if isinstance(e, Interrupted) else ''}{e}", file=sys.stderr)
    finally:
        if s is not None:
            problems = s.cleanup()
            for p in problems:
                print(f"bench/soak.py: cleanup: {p}", file=sys.stderr)
            if passed and not problems:
                shutil.rmtree(s.work, ignore_errors=True)
            elif os.path.isdir(s.logs):
                with contextlib.suppress(OSError):
                    os.rmdir(s.fs)
                print(f"bench/soak.py: the exporter's logs are kept in {s.logs}", file=sys.stderr)
    if text:
        print(text)
        if a.report:
            os.makedirs(os.path.dirname(os.path.abspath(a.report)), exist_ok=True)
            with open(a.report, "w") as f:
                f.write(text + "\n")
    return 0 if passed and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
