"""The local accounting store: per-cgroup totals in SQLite, for `ceemsnet report`.

The exporter writes every --storage.interval and on SIGTERM, each write one
transaction in WAL mode: a crash loses at most one interval and never
corrupts the file. A row's stored value is a base (what earlier runs, and
series that expired in this run, contributed) plus this run's current
counter. A column is NULL until the collector that measures it has run for
that cgroup.

BPF counters either start at zero with the exporter or continue from an
earlier run (maps pinned in bpffs and adopted). The store tells the two
apart per column group (net_*, vfs_*, skb_*, rdma_*) by a generation: an opaque
string naming the lifetime of that subsystem's counters, stored with the
run's own counter values as last written, in the same transaction as the
totals. At start, a group whose generation is the stored one continues:
its counters already hold the run values last written, so
base = total - run value (and those values are this run's "last written",
so a series gone meanwhile is folded like any expired one). A group with
another generation, or none stored, starts from zero: base = total. Either
way a restart neither resets nor doubles a total, and after a crash the
next write is exact again: the store only lagged the counters.

Rows are keyed by the series' cgroup path, which the fold (--unit,
--cgroup.aggregate) chooses: a task cgroup's counts are its own row at
`task`, its step's at `step`. So the fold that named a group's run values is
kept beside them (meta `aggregate.<group>`). A restart that continues the
counters under another fold does not continue the old rows: they keep their
totals, and at the first write that has the group's counters each new row
starts from the part of its counters the old rows already hold
(workloads.refold_baselines: an old and a new row share counts where one
is the other folded), in the same transaction that records the new fold
and voids the old run values. Until that write nothing changes, so a crash
before it only repeats it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager

from ceemsnet import CeemsnetError
from ceemsnet.attribution.slurm import parse as slurm_parse
from ceemsnet.attribution.workloads import refold_baselines

log = logging.getLogger("ceemsnet.serving.store")

DEFAULT_STORE = "/var/lib/ceemsnet/accounting.db"
SCHEMA_VERSION = 3
APP = "ceemsnet-accounting"
# column -> metric family it sums (over every label but cgroup, within COLUMN_LABELS)
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
    "rdma_egress_bytes": "ceemsnet_rdma_bytes",
    "rdma_ingress_bytes": "ceemsnet_rdma_bytes",
}
# columns that sum only the family's series with these label values (one family, two directions)
COLUMN_LABELS = {
    "rdma_egress_bytes": (("direction", "egress"),),
    "rdma_ingress_bytes": (("direction", "ingress"),),
}
# column -> the schema version that added it (the others are in version 1)
COLUMN_SINCE = {"rdma_egress_bytes": 3, "rdma_ingress_bytes": 3}
# subsystem -> the columns its counters feed (by prefix)
GROUPS = {g: tuple(c for c in COLUMNS if c.startswith(g + "_")) for g in ("net", "vfs", "skb", "rdma")}
assert sorted(c for cs in GROUPS.values() for c in cs) == sorted(COLUMNS)
assert set(COLUMN_LABELS) <= set(COLUMNS) and set(COLUMN_SINCE) <= set(COLUMNS)


def columns_in(version: int) -> list[str]:
    """The COLUMNS a store of this schema version has (in COLUMNS' order)."""
    return [c for c in COLUMNS if COLUMN_SINCE.get(c, 1) <= version]


def user_of(path: str) -> str | None:
    """The uid a SLURM v1 cgroup path carries (/slurm/uid_<u>/...); v2 paths carry none."""
    p = slurm_parse(path)
    return p.uid if p is not None else None


_SCHEMA = [  # version 1
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE cgroups (path TEXT PRIMARY KEY, job TEXT, user TEXT, first_seen REAL NOT NULL, "
    "last_seen REAL NOT NULL, " + ", ".join(f"{c} INTEGER" for c in columns_in(1)) + ")",
    "CREATE INDEX cgroups_job ON cgroups (job)",
]
# version -> statements that bring version - 1 to it
_MIGRATIONS = {
    2: [
        # per subsystem, the generation of the counters whose values `run` holds
        "CREATE TABLE generations (subsystem TEXT PRIMARY KEY, generation TEXT NOT NULL)",
        # per cgroup path, the running counters as last written (included in cgroups' totals);
        # NULL: this generation's counters hold nothing of that path's total
        "CREATE TABLE run (path TEXT PRIMARY KEY, " + ", ".join(f"{c} INTEGER" for c in columns_in(2)) + ")",
    ],
    # the rdma collector's bytes; NULL in the rows written before (as for any collector that did not run)
    3: [f"ALTER TABLE {t} ADD COLUMN {c} INTEGER" for t in ("cgroups", "run")
        for c in columns_in(3) if c not in columns_in(2)],
}
assert sorted(_MIGRATIONS) == list(range(2, SCHEMA_VERSION + 1))


@contextmanager
def _transaction(db: sqlite3.Connection):
    """BEGIN IMMEDIATE ... COMMIT (DDL too: the sqlite3 module only opens transactions for DML)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.commit()
    except BaseException:
        # also a failed COMMIT (disk full): a transaction left open would fail every later BEGIN
        db.rollback()
        raise


def open_db(path: str, create: bool) -> sqlite3.Connection:
    """Open a store; a file that is not one is a clear error.

    create=True (the exporter) creates a missing store and migrates an older
    schema to SCHEMA_VERSION, each in one transaction. create=False (report)
    changes nothing: it reads every version up to SCHEMA_VERSION as it is
    (columns_in(version): a column added later reads as NULL, as for a collector
    that did not run).
    """
    if not create and not os.path.exists(path):
        raise CeemsnetError(f"no accounting database at {path}")
    if create:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    db = None
    try:
        db = sqlite3.connect(path, timeout=30, check_same_thread=False)
        if create:  # the exporter's store; a read must not rewrite the file's header (nor leave -wal, -shm)
            db.execute("PRAGMA journal_mode=WAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and create and not db.execute("SELECT name FROM sqlite_master").fetchall():
            with _transaction(db):
                # under the write lock: another process may have created it meanwhile
                if not db.execute("SELECT name FROM sqlite_master").fetchall():
                    for stmt in _SCHEMA + [s for v in sorted(_MIGRATIONS) for s in _MIGRATIONS[v]]:
                        db.execute(stmt)
                    db.execute("INSERT INTO meta VALUES ('app', ?)", (APP,))
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
        app = db.execute("SELECT value FROM meta WHERE key='app'").fetchone() if version else None
        if app and app[0] == APP and create and version < SCHEMA_VERSION:
            with _transaction(db):
                version = db.execute("PRAGMA user_version").fetchone()[0]  # under the write lock
                for v in range(version + 1, SCHEMA_VERSION + 1):
                    for stmt in _MIGRATIONS[v]:
                        db.execute(stmt)
                if version < SCHEMA_VERSION:
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            version = db.execute("PRAGMA user_version").fetchone()[0]
    except (sqlite3.Error, UnicodeDecodeError) as e:
        if db is not None:
            db.close()
        raise store_error(path, e) from None
    if not app or app[0] != APP:
        db.close()
        raise CeemsnetError(f"{path} is not a ceemsnet accounting database")
    if version > SCHEMA_VERSION:
        db.close()
        raise CeemsnetError(f"{path} has schema {version}, newer than this ceemsnet ({SCHEMA_VERSION})")
    return db


def store_error(path: str, e: Exception) -> CeemsnetError:
    """The one-line error for a SQLite error on the store at path: locked, a dropped table or
    column, text that is not UTF-8 (OperationalError, or the UnicodeDecodeError the sqlite3
    module raises for some values), a SUM that overflows (OperationalError), or a file that is no
    SQLite database or has malformed pages (DatabaseError)."""
    detail = " ".join(str(e).split()) or type(e).__name__
    if isinstance(e, UnicodeDecodeError):  # a name in the schema, or SQLite's message quoting one
        return CeemsnetError(f"cannot read the accounting database {path}: text in it is not UTF-8 (damaged?)")
    if isinstance(e, sqlite3.OperationalError):
        return CeemsnetError(f"cannot read the accounting database {path}: {detail}")
    return CeemsnetError(f"{path} is not a ceemsnet accounting database ({detail})")


def totals_from_families(families) -> dict[str, dict[str, int]]:
    """{cgroup path: {column: value}} from one gather (pure)."""
    wanted: dict[str, list[str]] = {}
    for col, name in COLUMNS.items():
        wanted.setdefault(name, []).append(col)
    out: dict[str, dict[str, int]] = {}
    for f in families:
        cols = wanted.get(f.name)
        if cols is None or not f.labels or f.labels[0] != "cgroup":
            continue
        for col in cols:
            try:
                where = [(f.labels.index(k), want) for k, want in COLUMN_LABELS.get(col, ())]
            except ValueError:  # a family without the label this column selects on: not this column's
                continue
            for values, v in f.rows:
                if all(values[i] == want for i, want in where):
                    row = out.setdefault(values[0], {})
                    row[col] = row.get(col, 0) + int(v)
    return out


_GROUP_OF = {c: g for g, cs in GROUPS.items() for c in cs}


class Store:
    """The exporter's writer.

    `generations` is {subsystem: generation} for the subsystems running now
    (subsystem one of GROUPS: "net", "vfs", "skb", "rdma"; a generation an opaque
    string naming the lifetime of that subsystem's counters, the same when
    they were adopted from the previous run). Equal to the stored one: the
    counters continue. Another (or None, or ""): they started from zero. None for
    the whole argument: every group started from zero and no generation is
    kept. A group left out keeps its stored generation and run values for a
    later run, unless its columns show up in a write: then it is taken as
    started from zero.
    """

    def __init__(self, path: str, unit_of=None, clock=time.time, generations: dict[str, str | None] | None = None,
                 aggregate: str | None = None):
        if generations is None:
            generations = dict.fromkeys(GROUPS)
        generations = {g: gen or None for g, gen in generations.items()}  # "": no generation, fresh
        unknown = set(generations) - set(GROUPS)
        if unknown:
            raise ValueError(f"unknown subsystems {sorted(unknown)}; known: {', '.join(GROUPS)}")
        self.path = path
        self.db = open_db(path, create=True)
        self.unit_of = unit_of
        self._clock = clock
        self._lock = threading.Lock()
        self.base: dict[str, dict[str, int]] = {}
        # this run's counters as last written; for a continuing group, first the run values stored
        self.last: dict[str, dict[str, int]] = {}
        self.groups: dict[str, str | None] = {}  # the groups this run writes -> generation
        self._gone: set[str] = set()  # paths whose run row is still to be rewritten
        # the fold naming the series (workloads.fold_name); None: not kept (each run takes the stored one)
        self.aggregate = aggregate
        # continuing groups whose run values another fold named: {group: (that fold, {path: {column: run value}})}
        self._refold: dict[str, tuple[str, dict[str, dict[str, int]]]] = {}
        try:
            with _transaction(self.db):
                for row in self.db.execute("SELECT path, " + ", ".join(COLUMNS) + " FROM cgroups"):
                    self.base[row[0]] = {c: v for c, v in zip(COLUMNS, row[1:]) if v is not None}
                stored = dict(self.db.execute("SELECT subsystem, generation FROM generations"))
                folds = dict(self.db.execute("SELECT key, value FROM meta WHERE key LIKE 'aggregate.%'"))
                for group, gen in generations.items():
                    was = folds.get(f"aggregate.{group}")
                    if gen is not None and stored.get(group) == gen:
                        if aggregate is not None and was is not None and was != aggregate:
                            self._refold_from(group, was)
                            log.info("store: %s counters continue with another fold (%s, was %s): the new "
                                     "rows count from what the old rows hold", group, aggregate, was)
                        else:
                            self._continue(group)
                            self._keep_fold(group)
                    else:
                        self._start(group, gen)
        except (sqlite3.Error, UnicodeDecodeError) as e:  # a table or column dropped, text not UTF-8: one line
            self.db.close()
            raise store_error(path, e) from None
        except BaseException:
            self.db.close()
            raise
        self.groups = dict(generations)

    def _continue(self, group: str) -> None:
        """The counters continue: they already hold the run values last written."""
        cols = GROUPS[group]
        for path, *vals in self.db.execute(f"SELECT path, {', '.join(cols)} FROM run"):
            for c, v in zip(cols, vals):
                if v is not None:
                    base = self.base.setdefault(path, {})
                    base[c] = base.get(c, 0) - v
                    self.last.setdefault(path, {})[c] = v

    def _start(self, group: str, gen: str | None) -> None:
        """The counters start from zero: the run values stored are already in the totals, and void."""
        self.db.execute("UPDATE run SET " + ", ".join(f"{c} = NULL" for c in GROUPS[group]))
        self.db.execute("DELETE FROM run WHERE " + " AND ".join(f"{c} IS NULL" for c in COLUMNS))
        if gen is None:
            self.db.execute("DELETE FROM generations WHERE subsystem = ?", (group,))
        else:
            self.db.execute("INSERT OR REPLACE INTO generations VALUES (?, ?)", (group, gen))
        self._keep_fold(group)

    def _keep_fold(self, group: str) -> None:
        """Record the fold naming this group's run values from now on (in the caller's transaction)."""
        if self.aggregate is not None:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"aggregate.{group}", self.aggregate))

    def _refold_from(self, group: str, was: str) -> None:
        """The counters continue, but another fold named the run values: the old rows keep their
        totals (base = total), and the first write that has this group's counters rebases the new
        rows (_apply_refold). The run values stay stored until then."""
        cols = GROUPS[group]
        old: dict[str, dict[str, int]] = {}
        for path, *vals in self.db.execute(f"SELECT path, {', '.join(cols)} FROM run"):
            got = {c: v for c, v in zip(cols, vals) if v is not None}
            if got:
                old[path] = got
        self._refold[group] = (was, old)

    def _apply_refold(self, current: dict[str, dict[str, int]], undo: list) -> list[str]:
        """Rebase the new rows of each refolded group whose counters this write has (under the
        store's lock; `undo` gets each change, for a failed transaction); returns those groups,
        whose old run values the write's transaction voids."""
        done = []
        for group, (was, old) in self._refold.items():
            cols = GROUPS[group]
            if not any(c in cur for cur in current.values() for c in cols):
                continue  # not read yet (a collector's first read failed): rebase at a later write
            for c in cols:
                first = {p: cur[c] for p, cur in current.items() if c in cur}
                for p, b in refold_baselines({p: v[c] for p, v in old.items() if c in v}, first, was,
                                             self.aggregate).items():
                    base = self.base.setdefault(p, {})
                    base[c] = base.get(c, 0) - int(b)
                    undo.append((p, c, int(b)))
            done.append(group)
        return done

    def write(self, current: dict[str, dict[str, int]]) -> None:
        """One transaction: every cgroup's base + this run's counters, and the counters as run values."""
        now = self._clock()
        with self._lock:
            current = {p: cur for p, cur in current.items() if p.startswith("/")}  # not unknown:<id>
            undo: list = []
            refolded = self._apply_refold(current, undo) if self._refold else []
            for path, prev in list(self.last.items()):
                cur = current.get(path, {})
                for c, v in prev.items():
                    # its series expired (or, after an adoption, holds less than was written):
                    # what the store has counted becomes base, the row stays as written
                    if v > cur.get(c, 0):
                        base = self.base.setdefault(path, {})
                        base[c] = base.get(c, 0) + v - cur.get(c, 0)
                if path not in current:
                    del self.last[path]
                    self._gone.add(path)
            new = {_GROUP_OF[c] for cur in current.values() for c in cur} - set(self.groups)
            rows = []
            for path, cur in current.items():
                base = self.base.get(path, {})
                vals = {c: base.get(c, 0) + cur.get(c, 0) for c in set(base) | set(cur)}
                job = self.unit_of(path) if self.unit_of else None
                rows.append((path, job, user_of(path), now, now,
                             *[vals.get(c) for c in COLUMNS]))
                self.last[path] = dict(cur)
            running = [c for g in [*self.groups, *sorted(new)] for c in GROUPS[g]]
            run_paths = [*current, *(self._gone - current.keys())]
            runs = [(p, *[self.last.get(p, {}).get(c) for c in running]) for p in run_paths]
            try:
                self._commit(rows, runs, running, new, refolded)
            except BaseException:
                for p, c, b in undo:  # the next write rebases again
                    self.base[p][c] += b
                raise
            self._gone.clear()
            self.groups.update(dict.fromkeys(new))
            for group in refolded:
                del self._refold[group]

    def _commit(self, rows, runs, running: list[str], new: set[str], refolded: list[str]) -> None:
        """write()'s one transaction."""
        cols = ", ".join(COLUMNS)
        marks = ", ".join("?" * (5 + len(COLUMNS)))
        update = ", ".join(f"{c}=COALESCE(excluded.{c}, {c})" for c in COLUMNS)
        with _transaction(self.db):
            for group in sorted(new):  # columns of a subsystem not declared: taken as fresh
                self._start(group, None)
            for group in refolded:  # the old fold's run values are in the old rows' totals: void
                self.db.execute("UPDATE run SET " + ", ".join(f"{c} = NULL" for c in GROUPS[group]))
                self.db.execute("DELETE FROM run WHERE " + " AND ".join(f"{c} IS NULL" for c in COLUMNS))
                self._keep_fold(group)
            self.db.executemany(
                f"INSERT INTO cgroups (path, job, user, first_seen, last_seen, {cols}) VALUES ({marks}) "
                f"ON CONFLICT(path) DO UPDATE SET last_seen=excluded.last_seen, "
                f"job=COALESCE(excluded.job, job), {update}", rows)
            if running:
                self.db.executemany(
                    f"INSERT INTO run (path, {', '.join(running)}) VALUES ({', '.join('?' * (1 + len(running)))}) "
                    f"ON CONFLICT(path) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in running), runs)
            self.db.executemany(
                "DELETE FROM run WHERE path = ? AND " + " AND ".join(f"{c} IS NULL" for c in COLUMNS),
                [(p,) for p in self._gone])

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
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception as e:  # the next interval tries again
                log.error("writing %s failed: %s", self.store.path, e)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        try:
            self.flush()
        except Exception as e:  # one line, and the store still closed (the pins, if kept, still hold the counts)
            raise CeemsnetError(f"writing {self.store.path} at stop failed: {' '.join(str(e).split())}") from None
        finally:
            self.store.close()
