"""The local accounting store: per-cgroup totals in SQLite, for `ceemsnet report`.

The exporter writes every --storage.interval and on SIGTERM, each write one
transaction in WAL mode: a crash loses at most one interval and never
corrupts the file. BPF counters restart at zero with the exporter, so a
row's stored value is a base (what earlier runs, and series that expired
in this run, contributed) plus this run's current counter: restarting
continues the totals, never doubles or resets them. A column is NULL until
the collector that measures it has run for that cgroup.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time

from . import CeemsnetError

DEFAULT_STORE = "/var/lib/ceemsnet/accounting.db"
SCHEMA_VERSION = 1
APP = "ceemsnet-accounting"
# column -> metric family it sums (over every label but cgroup)
COLUMNS = {
    "net_egress_bytes": "ceemsnet_net_egress_bytes",
    "net_ingress_bytes": "ceemsnet_net_ingress_bytes",
    "net_egress_calls": "ceemsnet_net_egress_calls",
    "net_ingress_calls": "ceemsnet_net_ingress_calls",
    "vfs_read_bytes": "ceemsnet_vfs_read_bytes",
    "vfs_write_bytes": "ceemsnet_vfs_write_bytes",
    "vfs_ops": "ceemsnet_vfs_ops",
    "skb_egress_bytes": "ceemsnet_skb_egress_bytes",
    "skb_ingress_bytes": "ceemsnet_skb_ingress_bytes",
}
_SLURM_UID = re.compile(r"^/slurm(?:_[^/]+)?/uid_(\d+)/")


def user_of(path: str) -> str | None:
    """The uid a SLURM v1 cgroup path carries (/slurm/uid_<u>/...); v2 paths carry none."""
    m = _SLURM_UID.match(path)
    return m.group(1) if m else None


_SCHEMA = [
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE cgroups (path TEXT PRIMARY KEY, job TEXT, user TEXT, first_seen REAL NOT NULL, "
    "last_seen REAL NOT NULL, " + ", ".join(f"{c} INTEGER" for c in COLUMNS) + ")",
    "CREATE INDEX cgroups_job ON cgroups (job)",
]


def open_db(path: str, create: bool) -> sqlite3.Connection:
    """Open (or create) a store; a file that is not one is a clear error."""
    if not create and not os.path.exists(path):
        raise CeemsnetError(f"no accounting database at {path}")
    if create:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and create and not db.execute("SELECT name FROM sqlite_master").fetchall():
            with db:
                for stmt in _SCHEMA:
                    db.execute(stmt)
                db.execute("INSERT INTO meta VALUES ('app', ?)", (APP,))
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            version = SCHEMA_VERSION
        app = db.execute("SELECT value FROM meta WHERE key='app'").fetchone() if version else None
    except sqlite3.DatabaseError as e:
        raise CeemsnetError(f"{path} is not a ceemsnet accounting database ({e})") from None
    if not app or app[0] != APP:
        raise CeemsnetError(f"{path} is not a ceemsnet accounting database")
    if version > SCHEMA_VERSION:
        raise CeemsnetError(f"{path} has schema {version}, newer than this ceemsnet ({SCHEMA_VERSION})")
    # migrations from older schema versions go here, each in one transaction
    return db


def totals_from_families(families) -> dict[str, dict[str, int]]:
    """{cgroup path: {column: value}} from one gather (pure)."""
    wanted = {name: col for col, name in COLUMNS.items()}
    out: dict[str, dict[str, int]] = {}
    for f in families:
        col = wanted.get(f.name)
        if col is None or not f.labels or f.labels[0] != "cgroup":
            continue
        for values, v in f.rows:
            row = out.setdefault(values[0], {})
            row[col] = row.get(col, 0) + int(v)
    return out


class Store:
    def __init__(self, path: str, unit_of=None, clock=time.time):
        self.path = path
        self.db = open_db(path, create=True)
        self.unit_of = unit_of
        self._clock = clock
        self._lock = threading.Lock()
        self.base: dict[str, dict[str, int]] = {}
        for row in self.db.execute("SELECT path, " + ", ".join(COLUMNS) + " FROM cgroups"):
            self.base[row[0]] = {c: v for c, v in zip(COLUMNS, row[1:]) if v is not None}
        self.last: dict[str, dict[str, int]] = {}  # this run's counters as last written

    def write(self, current: dict[str, dict[str, int]]) -> None:
        """One transaction: every cgroup's base + this run's counters."""
        now = self._clock()
        with self._lock:
            for path in [p for p in self.last if p not in current]:
                # its series expired: what it counted becomes base, its row stays as written
                base = self.base.setdefault(path, {})
                for c, v in self.last.pop(path).items():
                    base[c] = base.get(c, 0) + v
            rows = []
            for path, cur in current.items():
                if not path.startswith("/"):
                    continue  # unknown:<id>, never resolved to a path
                base = self.base.get(path, {})
                vals = {c: base.get(c, 0) + cur.get(c, 0) for c in set(base) | set(cur)}
                job = self.unit_of(path) if self.unit_of else None
                rows.append((path, job, user_of(path), now, now,
                             *[vals.get(c) for c in COLUMNS]))
                self.last[path] = dict(cur)
            cols = ", ".join(COLUMNS)
            marks = ", ".join("?" * (5 + len(COLUMNS)))
            update = ", ".join(f"{c}=COALESCE(excluded.{c}, {c})" for c in COLUMNS)
            with self.db:
                self.db.executemany(
                    f"INSERT INTO cgroups (path, job, user, first_seen, last_seen, {cols}) VALUES ({marks}) "
                    f"ON CONFLICT(path) DO UPDATE SET last_seen=excluded.last_seen, "
                    f"job=COALESCE(excluded.job, job), {update}", rows)

    def close(self) -> None:
        self.db.close()


class StoreWriter:
    """Writes collector totals into the store every `interval` seconds and at stop()."""

    def __init__(self, store: Store, gather, interval: float):
        self.store, self.gather, self.interval = store, gather, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store", daemon=True)
        self._thread.start()

    def flush(self) -> None:
        self.store.write(totals_from_families(self.gather()))

    def _run(self) -> None:
        import logging
        log = logging.getLogger("ceemsnet.store")
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as e:  # the next interval tries again
                log.error("writing %s failed: %s", self.store.path, e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.flush()
        self.store.close()
