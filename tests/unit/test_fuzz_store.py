"""Fuzzing the files `ceemsnet report` reads as the accounting store (ceemsnet/serving/store.py open_db,
through ceemsnet/report/local.py query, what `report --storage.path` runs): a store `serve` wrote,
then changed by SQL (a table or column dropped, text that is not UTF-8, values of the wrong type or
that overflow a SUM, another schema version or app) and by bytes (overwritten, truncated); an empty
file, a folder, another program's SQLite file. Each gives report rows or one CeemsnetError line."""

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ceemsnet import CeemsnetError
from ceemsnet.report import local
from ceemsnet.serving.store import Store

from .conftest import examples, tally, within

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """{name: bytes} of the files the variants start from, and a scratch folder."""
    d = tmp_path_factory.mktemp("stores")
    good = str(d / "good.db")
    s = Store(good, unit_of=lambda p: p.split("/job_")[1].split("/")[0] if "/job_" in p else None)
    s.write({"/slurm/uid_1/job_2/step_0": {"net_egress_bytes": 5, "vfs_ops": 1},
             "/slurm/uid_1/job_3": {"net_ingress_bytes": 7}, "/system.slice/a.service": {"vfs_read_bytes": 9}})
    s.close()
    foreign = str(d / "foreign.db")
    db = sqlite3.connect(foreign)
    db.executescript("CREATE TABLE meta (key TEXT, value TEXT); INSERT INTO meta VALUES ('app', 'other');"
                     "CREATE TABLE cgroups (path TEXT); PRAGMA user_version=2;")
    db.close()
    out = {"store": open(good, "rb").read(), "foreign": open(foreign, "rb").read(), "empty": b""}
    scratch = d / "scratch"
    scratch.mkdir()
    return out, scratch


SQL = [
    "DROP TABLE cgroups", "DROP TABLE meta", "ALTER TABLE cgroups DROP COLUMN vfs_ops",
    "ALTER TABLE cgroups RENAME COLUMN last_seen TO seen", "DROP INDEX cgroups_job",
    "UPDATE cgroups SET job = CAST(x'ff' AS TEXT)", "UPDATE cgroups SET path = CAST(x'c3' AS TEXT)",
    "UPDATE cgroups SET first_seen = 'abc', last_seen = x'00'",
    "UPDATE cgroups SET net_egress_bytes = 9223372036854775807",
    "UPDATE cgroups SET job = '2', user = NULL", "UPDATE cgroups SET net_ingress_bytes = 'many'",
    "UPDATE cgroups SET vfs_ops = 1e308", "UPDATE cgroups SET path = NULL", "PRAGMA user_version = 3",
    "PRAGMA user_version = 2", "PRAGMA user_version = 4", "ALTER TABLE cgroups DROP COLUMN rdma_ingress_bytes",
    "UPDATE cgroups SET rdma_egress_bytes = 'lots'",
    "PRAGMA user_version = 1", "PRAGMA user_version = -1", "UPDATE meta SET value = 'other'", "DELETE FROM meta",
    "INSERT INTO meta VALUES ('app2', 'x')", "CREATE TABLE cgroups2 (a)", "PRAGMA journal_mode = DELETE",
    "CREATE VIEW v AS SELECT 1",
]


@examples(150)
@given(base=st.sampled_from(["store", "store", "store", "foreign", "empty", "folder"]),
       sql=st.lists(st.sampled_from(SQL), max_size=3),
       edits=st.one_of(st.just([]), st.lists(st.tuples(
           st.one_of(st.integers(0, 120), st.integers(0, 4200), st.integers(0, 50000)),
           st.binary(min_size=1, max_size=4)), min_size=1, max_size=3)),
       truncate=st.one_of(st.none(), st.none(), st.none(), st.integers(0, 50000)),
       by=st.sampled_from(["job", "cgroup", "user"]), job=st.sampled_from([None, "2", "999", "\0"]))
@example(base="store", sql=["ALTER TABLE cgroups DROP COLUMN vfs_ops"], edits=[], truncate=None, by="cgroup",
         job=None)  # sqlite3.OperationalError: no such column (from the query, past open_db's check)
@example(base="store", sql=["UPDATE cgroups SET job = CAST(x'ff' AS TEXT)"], edits=[], truncate=None, by="job",
         job=None)  # sqlite3.OperationalError: Could not decode to UTF-8 column 'job'
@example(base="store", sql=["UPDATE cgroups SET net_egress_bytes = 9223372036854775807"], edits=[], truncate=None,
         by="cgroup", job=None)  # two rows: sqlite3.OperationalError: integer overflow (SUM)
@example(base="store", sql=[], edits=[(3929, b"\x80")], truncate=None, by="job",
         job=None)  # a schema name not UTF-8: UnicodeDecodeError from SQLite's message quoting it (long profile)
def test_fuzz_store_files_read_by_report(stores, base, sql, edits, truncate, by, job):
    files, scratch = stores
    path = str(scratch / "db")
    for p in (path, path + "-wal", path + "-shm"):
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.unlink(p)
    if base == "folder":
        os.mkdir(path)
    else:
        with open(path, "wb") as f:
            f.write(files[base])
        if sql and base != "empty":
            db = sqlite3.connect(path)
            try:
                for stmt in sql:
                    try:
                        db.execute(stmt)
                        db.commit()
                    except sqlite3.Error:
                        pass  # a statement this file's state does not allow: the others still apply
            finally:
                db.close()
        data = bytearray(open(path, "rb").read())
        for at, b in edits:
            at = min(at, len(data))
            data[at:at + len(b)] = b
        if truncate is not None:
            del data[truncate:]
        with open(path, "wb") as f:
            f.write(bytes(data))
    try:
        with within(20, "report's read of the store"):
            rows = local.query(path, by, 0.0, 2e9, job)
    except CeemsnetError as e:
        msg = str(e)
        assert msg and "\n" not in msg, msg
        tally("store: refused")
        return
    tally(f"store: {len(rows)} rows")
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)


def test_report_leaves_another_programs_sqlite_file_as_it_was(stores):
    """Found by fuzzing: open_db(create=False) set WAL mode (header bytes 18-19 1 -> 2, -wal/-shm beside it)."""
    files, scratch = stores
    path = scratch / "other.db"
    path.write_bytes(files["foreign"])
    with pytest.raises(CeemsnetError, match="not a ceemsnet accounting database"):
        local.query(str(path), "job", 0.0, 2e9)
    assert path.read_bytes() == files["foreign"]


def test_report_on_a_fifo_does_not_hang(tmp_path):
    """A FIFO named as the store: refused, never a read that waits for a writer (in a child: a hang
    inside SQLite's C code would not be interrupted by a signal)."""
    fifo = tmp_path / "fifo.db"
    os.mkfifo(fifo)
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from ceemsnet.report import local\n"
            f"try:\n    local.query({str(fifo)!r}, 'job', 0.0, 2e9)\nexcept Exception as e:\n"
            f"    print(type(e).__name__)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "CeemsnetError", p.stdout + p.stderr
