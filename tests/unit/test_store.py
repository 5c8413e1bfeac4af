import json
import sqlite3

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.common.metrics import Family
from ceemsnet.report.local import query
from ceemsnet.report.rows import format_rows
from ceemsnet.serving.store import (_MIGRATIONS, SCHEMA_VERSION, Store, StoreWriter, columns_in, open_db,
                                    totals_from_families)
from ceemsnet.attribution.workloads import slurm_job


class Clock:
    t = 1000.0

    def __call__(self):
        return self.t


def fams(step0, step1):
    f = Family("ceemsnet_net_egress_bytes", "h", "counter", ("cgroup", "proto", "family"), [])
    if step0 is not None:
        f.rows.append((("/slurm/uid_7/job_5/step_0", "tcp", "ipv4"), step0))
    f.rows.append((("/slurm/uid_7/job_5/step_1", "udp", "ipv4"), step1))
    f.rows.append((("unknown:99", "udp", "ipv4"), 1))
    return [f]


def test_totals_from_families():
    t = totals_from_families(fams(10, 20))
    assert t["/slurm/uid_7/job_5/step_0"] == {"net_egress_bytes": 10}


def test_store_continues_across_restarts_and_expiry(tmp_path):
    db = str(tmp_path / "a.db")
    clock = Clock()
    s = Store(db, slurm_job, clock)
    s.write(totals_from_families(fams(10, 20)))
    s.write(totals_from_families(fams(15, 20)))      # counters grow within a run
    s.write(totals_from_families(fams(None, 25)))    # step_0's series expired: its row stays
    s.close()
    s = Store(db, slurm_job, clock)                  # a restart: BPF counters start again at 0
    clock.t = 2000
    s.write(totals_from_families(fams(None, 4)))
    s.close()
    rows = {r["cgroup"]: r for r in query(db, "cgroup", 0, 1e12)}
    assert rows["/slurm/uid_7/job_5/step_0"]["net_egress_bytes"] == 15
    assert rows["/slurm/uid_7/job_5/step_1"]["net_egress_bytes"] == 29
    (job,) = query(db, "job", 0, 1e12)
    assert (job["job"], job["net_egress_bytes"], job["vfs_ops"]) == ("5", 44, None)
    (user,) = query(db, "user", 0, 1e12)
    assert user["user"] == "7"
    assert query(db, "job", 1500, 1e12)[0]["net_egress_bytes"] == 29  # only rows seen in the range
    with pytest.raises(CeemsnetError, match="no job '6'"):
        query(db, "job", 0, 1e12, job="6")
    with pytest.raises(CeemsnetError, match="empty time range"):
        query(db, "job", 10, 5)


def test_foreign_databases_are_refused(tmp_path):
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.execute("CREATE TABLE t (x)")
    c.commit()
    c.close()
    with pytest.raises(CeemsnetError, match="not a ceemsnet accounting database"):
        open_db(str(other), create=False)
    with pytest.raises(CeemsnetError, match="no accounting database"):
        open_db(str(tmp_path / "missing.db"), create=False)


def test_formats(tmp_path):
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock())
    s.write(totals_from_families(fams(3 * 2**20, 512)))
    s.close()
    rows = query(db, "job", 0, 1e12)
    table = format_rows(rows, "job", "table")
    assert "3.0 MiB" in table and table.splitlines()[-1].startswith("TOTAL")
    assert json.loads(format_rows(rows, "job", "json"))[0]["net_egress_bytes"] == 3 * 2**20 + 512
    assert format_rows(rows, "job", "csv").splitlines()[0].startswith("job,net_egress_bytes")



# --- generations: counters that continue across runs (pinned maps adopted) or start fresh

A, B = "/slurm/uid_7/job_5/step_0", "/slurm/uid_7/job_5/step_1"


def totals(db):
    return {r["cgroup"]: r for r in query(db, "cgroup", 0, 1e12)}


def run(db, generations, *writes):
    """One exporter run: a Store with these generations, the given writes, then stop (or a crash:
    the counters went on after the last write, which is all a crash is to the store)."""
    s = Store(db, slurm_job, Clock(), generations=generations)
    for w in writes:
        s.write(w)
    s.close()


def test_fresh_generations_restart_from_zero(tmp_path):
    db = str(tmp_path / "a.db")
    run(db, {"net": "boot1:10"}, {A: {"net_egress_bytes": 10}}, {A: {"net_egress_bytes": 15}})
    run(db, {"net": "boot1:11"}, {A: {"net_egress_bytes": 4}})   # a new map: counters from 0
    run(db, None, {A: {"net_egress_bytes": 1}})                  # old callers: every group fresh
    run(db, {"net": "boot1:11"}, {A: {"net_egress_bytes": 2}})   # None kept no generation: fresh
    run(db, {"net": ""}, {A: {"net_egress_bytes": 3}})           # "" names no generation ...
    run(db, {"net": ""}, {A: {"net_egress_bytes": 5}})           # ... so it never continues
    assert totals(db)[A]["net_egress_bytes"] == 15 + 4 + 1 + 2 + 3 + 5


def test_continuing_generation_across_a_clean_stop(tmp_path):
    db = str(tmp_path / "a.db")
    gen = {"net": "boot1:10"}
    run(db, gen, {A: {"net_egress_bytes": 10}}, {A: {"net_egress_bytes": 15}})  # stop writes the final 15
    run(db, gen, {A: {"net_egress_bytes": 15}})                                 # adopted: the same 15
    assert totals(db)[A]["net_egress_bytes"] == 15
    run(db, gen, {A: {"net_egress_bytes": 22, "net_egress_calls": 3}})
    row = totals(db)[A]
    assert (row["net_egress_bytes"], row["net_egress_calls"]) == (22, 3)


def test_continuing_generation_across_a_crash(tmp_path):
    db = str(tmp_path / "a.db")
    gen = {"net": "boot1:10", "skb": "boot1:12"}
    # last write at 10 / 100, then SIGKILL while the pinned programs went on counting to 17 / 170
    run(db, gen, {A: {"net_egress_bytes": 10, "skb_egress_bytes": 100}})
    assert totals(db)[A]["net_egress_bytes"] == 10          # the store lags the counters ...
    run(db, gen, {A: {"net_egress_bytes": 17, "skb_egress_bytes": 170}})
    row = totals(db)[A]
    assert (row["net_egress_bytes"], row["skb_egress_bytes"]) == (17, 170)  # ... and catches up, exactly
    run(db, gen)                                             # a run that crashed before any write
    run(db, gen, {A: {"net_egress_bytes": 30, "skb_egress_bytes": 200}})
    row = totals(db)[A]
    assert (row["net_egress_bytes"], row["skb_egress_bytes"]) == (30, 200)


def test_generation_change_of_one_group_is_exact_per_column(tmp_path):
    db = str(tmp_path / "a.db")
    run(db, {"net": "n1", "vfs": "v1"},
        {A: {"net_egress_bytes": 10, "vfs_read_bytes": 100, "vfs_ops": 5}, B: {"vfs_read_bytes": 50}})
    # net adopted, vfs reloaded (new map): net continues from 10, vfs counts from 0; B not seen this run
    run(db, {"net": "n1", "vfs": "v2"}, {A: {"net_egress_bytes": 12, "vfs_read_bytes": 3, "vfs_ops": 1}})
    row = totals(db)[A]
    assert (row["net_egress_bytes"], row["vfs_read_bytes"], row["vfs_ops"], row["skb_egress_bytes"]) == \
        (12, 103, 6, None)
    # vfs not running this time: its generation and run values stay for a later run
    run(db, {"net": "n1"}, {A: {"net_egress_bytes": 14}})
    row = totals(db)[A]
    assert (row["net_egress_bytes"], row["vfs_read_bytes"], row["vfs_ops"]) == (14, 103, 6)
    # vfs v2 adopted again: continues from 3 / 1; B's counters of v1 are not in v2 (B counts from 0)
    run(db, {"net": "n1", "vfs": "v2"},
        {A: {"net_egress_bytes": 14, "vfs_read_bytes": 5, "vfs_ops": 1}, B: {"vfs_read_bytes": 2}})
    t = totals(db)
    assert (t[A]["net_egress_bytes"], t[A]["vfs_read_bytes"], t[A]["vfs_ops"]) == (14, 105, 6)
    assert t[B]["vfs_read_bytes"] == 52


def test_undeclared_group_counts_from_zero_and_drops_its_generation(tmp_path):
    db = str(tmp_path / "a.db")
    run(db, {"vfs": "v1"}, {A: {"vfs_ops": 100}})
    run(db, {"net": "n1"}, {A: {"net_egress_bytes": 1, "vfs_ops": 5}})  # vfs counted, but no generation given
    run(db, {"vfs": "v1"}, {A: {"vfs_ops": 7}})                         # so v1's run values are void: fresh
    assert totals(db)[A]["vfs_ops"] == 112
    with pytest.raises(ValueError, match="unknown subsystems"):
        Store(db, generations={"tcp": "x"})


def test_series_expiring_mid_run_under_a_continuing_generation(tmp_path):
    db = str(tmp_path / "a.db")
    gen = {"net": "n1"}
    run(db, gen, {A: {"net_egress_bytes": 10}, B: {"net_egress_bytes": 20}})
    # adopted: step_0 counts on to 15, then its cgroup goes (map entry deleted, series expires)
    run(db, gen, {A: {"net_egress_bytes": 15}, B: {"net_egress_bytes": 20}},
        {B: {"net_egress_bytes": 25}}, {B: {"net_egress_bytes": 30}, "unknown:99": {"net_egress_bytes": 1}})
    t = totals(db)
    assert (t[A]["net_egress_bytes"], t[B]["net_egress_bytes"]) == (15, 30)
    # adopted again: the counters hold nothing of step_0 any more; a new cgroup of that path counts from 0
    run(db, gen, {A: {"net_egress_bytes": 3}, B: {"net_egress_bytes": 31}})
    t = totals(db)
    assert (t[A]["net_egress_bytes"], t[B]["net_egress_bytes"]) == (18, 31)
    assert "unknown:99" not in t
    # series gone while the exporter was down: the first write folds what was written, nothing lost
    run(db, gen, {B: {"net_egress_bytes": 31}})
    run(db, gen, {A: {"net_egress_bytes": 1}, B: {"net_egress_bytes": 32}})
    t = totals(db)
    assert (t[A]["net_egress_bytes"], t[B]["net_egress_bytes"]) == (19, 32)
    c = sqlite3.connect(db)
    assert c.execute("SELECT path FROM run ORDER BY path").fetchall() == [(A,), (B,)]
    c.close()


def test_adopted_counter_below_what_was_written_never_goes_backwards(tmp_path):
    # e.g. counts of a removed cgroup that lived only in the previous process (retired totals)
    db = str(tmp_path / "a.db")
    run(db, {"net": "n1"}, {A: {"net_egress_bytes": 100}})
    run(db, {"net": "n1"}, {A: {"net_egress_bytes": 60}})
    assert totals(db)[A]["net_egress_bytes"] == 100
    run(db, {"net": "n1"}, {A: {"net_egress_bytes": 70}})
    assert totals(db)[A]["net_egress_bytes"] == 110


def make_v1(path):
    """A store as schema 1 wrote it."""
    c = sqlite3.connect(path)
    c.execute("PRAGMA journal_mode=WAL")
    cols = ", ".join(f"{col} INTEGER" for col in columns_in(1))
    c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    c.execute("CREATE TABLE cgroups (path TEXT PRIMARY KEY, job TEXT, user TEXT, first_seen REAL NOT NULL, "
              f"last_seen REAL NOT NULL, {cols})")
    c.execute("CREATE INDEX cgroups_job ON cgroups (job)")
    c.execute("INSERT INTO meta VALUES ('app', 'ceemsnet-accounting')")
    c.execute("INSERT INTO cgroups (path, job, user, first_seen, last_seen, net_egress_bytes, vfs_ops) "
              f"VALUES ('{A}', '5', '7', 900, 950, 40, 2)")
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()


def version(path):
    c = sqlite3.connect(path)
    try:
        return c.execute("PRAGMA user_version").fetchone()[0], \
            {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        c.close()


def test_v1_store_is_read_as_is_and_migrated_by_the_exporter(tmp_path):
    db = str(tmp_path / "a.db")
    make_v1(db)
    (job,) = query(db, "job", 0, 1e12)              # report reads v1 and changes nothing
    assert (job["job"], job["net_egress_bytes"], job["vfs_ops"]) == ("5", 40, 2)
    assert version(db) == (1, {"meta", "cgroups"})
    run(db, {"net": "n1", "vfs": "v1"}, {A: {"net_egress_bytes": 5}})  # the exporter migrates: fresh counters
    assert version(db) == (SCHEMA_VERSION, {"meta", "cgroups", "generations", "run"})
    row = totals(db)[A]
    assert (row["net_egress_bytes"], row["vfs_ops"]) == (45, 2)
    run(db, {"net": "n1", "vfs": "v1"}, {A: {"net_egress_bytes": 6}})  # and then continues
    assert totals(db)[A]["net_egress_bytes"] == 46


def test_migration_is_one_transaction(tmp_path):
    db = str(tmp_path / "a.db")
    make_v1(db)
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE run (x)")  # the migration's second statement will fail
    c.commit()
    c.close()
    with pytest.raises(CeemsnetError, match="already exists"):
        Store(db)
    assert version(db) == (1, {"meta", "cgroups", "run"})  # no generations table, still version 1
    assert query(db, "job", 0, 1e12)[0]["net_egress_bytes"] == 40


def make_v2(path):
    """A store as schema 2 wrote it: v1 and the run and generations tables, no rdma columns;
    job 5's counters pinned (generation n1) with 30 of its 40 bytes in this run."""
    make_v1(path)
    c = sqlite3.connect(path)
    for stmt in _MIGRATIONS[2]:
        c.execute(stmt)
    c.execute("INSERT INTO generations VALUES ('net', 'n1')")
    c.execute(f"INSERT INTO run (path, net_egress_bytes) VALUES ('{A}', 30)")
    c.execute("PRAGMA user_version=2")
    c.commit()
    c.close()


def columns(path, table):
    c = sqlite3.connect(path)
    try:
        return [r[1] for r in c.execute(f"PRAGMA table_info({table})")]
    finally:
        c.close()


def test_v2_store_is_read_as_is_and_migrated_to_rdma_columns(tmp_path):
    db = str(tmp_path / "a.db")
    make_v2(db)
    (job,) = query(db, "job", 0, 1e12)              # report reads v2: no rdma columns, shown as not counted
    assert (job["net_egress_bytes"], job["vfs_ops"], job["rdma_egress_bytes"], job["rdma_ingress_bytes"]) == \
        (40, 2, None, None)
    assert format_rows([job], "job", "table").splitlines()[1].split()[-2:] == ["-", "-"]
    assert version(db) == (2, {"meta", "cgroups", "generations", "run"})
    assert "rdma_egress_bytes" not in columns(db, "cgroups")
    # the exporter migrates (one transaction, run values kept) and net's pinned counters continue: 30 -> 36
    run(db, {"net": "n1", "rdma": None}, {A: {"net_egress_bytes": 36, "rdma_egress_bytes": 7,
                                               "rdma_ingress_bytes": 0}})
    assert version(db) == (3, {"meta", "cgroups", "generations", "run"})
    for table in ("cgroups", "run"):
        assert columns(db, table)[-2:] == ["rdma_egress_bytes", "rdma_ingress_bytes"]
    row = totals(db)[A]
    assert (row["net_egress_bytes"], row["vfs_ops"], row["rdma_egress_bytes"], row["rdma_ingress_bytes"]) == \
        (46, 2, 7, 0)
    # rdma's counters are not pinned: every run starts them from zero, and the store adds them up
    run(db, {"net": "n1", "rdma": None}, {A: {"net_egress_bytes": 36, "rdma_egress_bytes": 5}})
    row = totals(db)[A]
    assert (row["net_egress_bytes"], row["rdma_egress_bytes"], row["rdma_ingress_bytes"]) == (46, 12, 0)


def test_rdma_columns_sum_one_family_by_direction(tmp_path):
    f = Family("ceemsnet_rdma_bytes", "h", "counter", ("cgroup", "device", "port", "direction"), [
        ((A, "rxe0", "1", "egress"), 1000), ((A, "rxe0", "1", "ingress"), 300),
        ((A, "rxe1", "1", "egress"), 24), ((B, "rxe0", "1", "ingress"), 64),
        (("", "rxe0", "1", "egress"), 5),            # a queue pair made before the collector: no cgroup
    ])
    objects = Family("ceemsnet_rdma_objects", "h", "gauge", ("cgroup", "device", "type"), [((A, "rxe0", "qp"), 2)])
    ports = Family("ceemsnet_rdma_port_bytes", "h", "counter", ("device", "port", "direction"),
                   [(("rxe0", "1", "egress"), 9999)])
    odd = Family("ceemsnet_rdma_bytes", "h", "counter", ("cgroup", "device"), [((A, "rxe0"), 77)])  # no direction
    t = totals_from_families([f, objects, ports, odd])
    assert t == {A: {"rdma_egress_bytes": 1024, "rdma_ingress_bytes": 300}, B: {"rdma_ingress_bytes": 64},
                 "": {"rdma_egress_bytes": 5}}
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock(), generations={"net": None, "rdma": None})
    s.write(t)                                       # "" is no cgroup: not stored
    s.write(totals_from_families([f, fams(10, 20)[0]]))
    s.close()
    rows = {r["cgroup"]: r for r in query(db, "cgroup", 0, 1e12)}
    assert (rows[A]["rdma_egress_bytes"], rows[A]["rdma_ingress_bytes"], rows[A]["net_egress_bytes"]) == \
        (1024, 300, 10)
    assert (rows[B]["rdma_egress_bytes"], rows[B]["rdma_ingress_bytes"]) == (None, 64)
    (job,) = query(db, "job", 0, 1e12)
    assert (job["rdma_egress_bytes"], job["rdma_ingress_bytes"]) == (1024, 364)


def test_formats_rdma_columns(tmp_path):
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock(), generations={"net": None, "rdma": None})
    s.write({A: {"net_egress_bytes": 1, "rdma_egress_bytes": 3 * 2**30, "rdma_ingress_bytes": 512},
             "/slurm/uid_7/job_6/step_0": {"net_egress_bytes": 2}})   # job 6: no rdma
    s.close()
    rows = query(db, "job", 0, 1e12)
    lines = format_rows(rows, "job", "table").splitlines()
    assert lines[0].split()[-4:] == ["RDMA", "OUT", "RDMA", "IN"]
    assert lines[1].split()[0] == "5" and lines[1].split()[-4:] == ["3.0", "GiB", "512", "B"]
    assert lines[2].split()[0] == "6" and lines[2].split()[-2:] == ["-", "-"]
    assert lines[3].split()[0] == "TOTAL" and lines[3].split()[-4:] == ["3.0", "GiB", "512", "B"]
    doc = {r["job"]: r for r in json.loads(format_rows(rows, "job", "json"))}
    assert (doc["5"]["rdma_egress_bytes"], doc["5"]["rdma_ingress_bytes"]) == (3 * 2**30, 512)
    assert (doc["6"]["rdma_egress_bytes"], doc["6"]["rdma_ingress_bytes"]) == (None, None)
    csv_lines = format_rows(rows, "job", "csv").splitlines()
    header = csv_lines[0].split(",")
    assert header[header.index("skb_ingress_bytes") + 1:header.index("skb_ingress_bytes") + 3] == \
        ["rdma_egress_bytes", "rdma_ingress_bytes"]
    i = header.index("rdma_egress_bytes")
    assert csv_lines[1].split(",")[i:i + 2] == [str(3 * 2**30), "512"]
    assert csv_lines[2].split(",")[i:i + 2] == ["", ""]


def test_newer_schema_is_refused(tmp_path):
    db = str(tmp_path / "a.db")
    Store(db).close()
    c = sqlite3.connect(db)
    c.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    c.commit()
    c.close()
    for opener in (lambda: open_db(db, create=False), lambda: Store(db)):
        with pytest.raises(CeemsnetError, match="newer than this ceemsnet"):
            opener()


# ---- a change of fold (--unit, --cgroup.aggregate) over counters that continue ----------------------

JOB = "/system.slice/slurmstepd.scope/job_9"


def net(**paths):
    """{path: {net_egress_bytes: v}} with paths given as step_0__task_1=... (__ for /)."""
    return {f"{JOB}/" + k.replace("__", "/"): {"net_egress_bytes": v} for k, v in paths.items()}


def job_bytes(db):
    (row,) = query(db, "job", 0, 1e12)
    return row["net_egress_bytes"]


def test_a_finer_to_coarser_fold_change_counts_nothing_twice(tmp_path):
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock(), generations={"net": "g1"}, aggregate="cgroup")
    s.write(net(step_0__user__task_0=10, step_0__user__task_1=20, step_1__user__task_0=5))
    s.close()
    # the same pinned counters (generation g1), now folded per step; task_0 counted 3 more meanwhile
    s = Store(db, slurm_job, Clock(), generations={"net": "g1"}, aggregate="slurm:step")
    s.close()                                        # a crash before the first write: nothing changed
    assert job_bytes(db) == 35
    s = Store(db, slurm_job, Clock(), generations={"net": "g1"}, aggregate="slurm:step")
    s.write(net(step_0=33, step_1=5))
    assert job_bytes(db) == 38
    s.write(net(step_0=40, step_1=5))
    s.close()
    assert job_bytes(db) == 45
    rows = {r["cgroup"][len(JOB):]: r["net_egress_bytes"] for r in query(db, "cgroup", 0, 1e12)}
    # the old rows keep what they counted; the new ones count from what the old ones hold
    assert rows == {"/step_0/user/task_0": 10, "/step_0/user/task_1": 20, "/step_1/user/task_0": 5,
                    "/step_0": 10, "/step_1": 0}
    # and a restart at the same fold continues as always
    s = Store(db, slurm_job, Clock(), generations={"net": "g1"}, aggregate="slurm:step")
    s.write(net(step_0=41, step_1=6))
    s.close()
    assert job_bytes(db) == 47


def test_a_coarser_to_finer_fold_change_counts_nothing_twice(tmp_path):
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock(), generations={"net": "g1"}, aggregate="slurm:job")
    s.write({JOB: {"net_egress_bytes": 100}})
    s.close()
    s = Store(db, slurm_job, Clock(), generations={"net": "g1"}, aggregate="slurm:step")
    s.write({})                                      # no net counters read yet: the rebase waits for them
    s.write(net(step_0=70, step_1=40))               # 10 more since the last write
    s.write(net(step_0=75, step_1=40))
    s.close()
    assert job_bytes(db) == 115
    rows = {r["cgroup"]: r["net_egress_bytes"] for r in query(db, "cgroup", 0, 1e12)}
    assert rows[JOB] == 100 and sum(rows.values()) == 115


def test_a_fold_change_with_new_counters_adds_them_all(tmp_path):
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock(), generations={"net": "g1"}, aggregate="slurm:task")
    s.write(net(step_0__user__task_0=10))
    s.close()
    s = Store(db, slurm_job, Clock(), generations={"net": "g2"}, aggregate="slurm:step")  # counters from zero
    s.write(net(step_0=4))
    s.close()
    assert job_bytes(db) == 14
    # a store written before folds were kept: the first run that keeps one continues as before
    db2 = str(tmp_path / "b.db")
    s = Store(db2, slurm_job, Clock(), generations={"net": "g1"})
    s.write(net(step_0=10))
    s.close()
    s = Store(db2, slurm_job, Clock(), generations={"net": "g1"}, aggregate="slurm:step")
    s.write(net(step_0=12))
    s.close()
    assert job_bytes(db2) == 12


# ---- a store file that is not as serve left it: one line naming the file, never a traceback ------

def _changed(tmp_path, *sql):
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock())
    s.write({A: {"net_egress_bytes": 5}, B: {"net_egress_bytes": 7}})
    s.close()
    c = sqlite3.connect(db)
    for stmt in sql:
        c.execute(stmt)
    c.commit()
    c.close()
    return db


@pytest.mark.parametrize("sql,by,needle", [
    # each of these was a sqlite3.OperationalError out of report's query (past open_db's check)
    (["ALTER TABLE cgroups DROP COLUMN vfs_ops"], "cgroup", "no such column: vfs_ops"),
    (["DROP TABLE cgroups"], "job", "no such table: cgroups"),
    (["UPDATE cgroups SET job = CAST(x'ff' AS TEXT)"], "job", "decode to UTF-8"),
    (["UPDATE cgroups SET net_egress_bytes = 9223372036854775807"], "job", "integer overflow"),
])
def test_report_on_a_damaged_store_is_one_line(tmp_path, sql, by, needle):
    db = _changed(tmp_path, *sql)
    with pytest.raises(CeemsnetError, match=needle) as e:
        query(db, by, 0, 1e12)
    assert db in str(e.value) and "\n" not in str(e.value)


def test_a_store_with_malformed_pages_is_one_line(tmp_path):
    db = _changed(tmp_path, "PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(open(db, "rb").read())
    data[4096:8192] = b"\xff" * 4096  # the second page (a table's b-tree) overwritten
    open(db, "wb").write(bytes(data))
    for reader in (lambda: query(db, "job", 0, 1e12), lambda: Store(db, slurm_job, Clock())):
        with pytest.raises(CeemsnetError, match="malformed") as e:
            reader()
        assert db in str(e.value) and "\n" not in str(e.value)


def test_a_store_whose_schema_is_not_utf8_is_one_line(tmp_path):
    """A byte of an index's name overwritten (found by the long fuzz profile): SQLite's error
    message quotes the name, and the sqlite3 module raised UnicodeDecodeError decoding it."""
    db = _changed(tmp_path, "PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(open(db, "rb").read())
    data[data.index(b"sqlite_autoindex_cgroups_1") + 20] = 0x80
    open(db, "wb").write(bytes(data))
    for reader in (lambda: query(db, "job", 0, 1e12), lambda: Store(db, slurm_job, Clock())):
        with pytest.raises(CeemsnetError, match="not UTF-8") as e:
            reader()
        assert db in str(e.value) and "\n" not in str(e.value)


def test_serve_on_a_store_missing_a_table_is_one_line(tmp_path):
    db = _changed(tmp_path, "DROP TABLE run")  # was a sqlite3.OperationalError out of Store()
    with pytest.raises(CeemsnetError, match="no such table: run") as e:
        Store(db, slurm_job, Clock())
    assert db in str(e.value)


def test_report_changes_nothing_in_another_programs_file(tmp_path):
    """open_db(create=False) set WAL mode: it rewrote the file's header and left -wal and -shm."""
    other = tmp_path / "other.db"
    c = sqlite3.connect(other)
    c.executescript("CREATE TABLE meta (key TEXT, value TEXT); INSERT INTO meta VALUES ('app', 'other');"
                    "PRAGMA user_version=2;")
    c.close()
    before = other.read_bytes()
    assert before[18:20] == b"\x01\x01"  # the rollback journal, not WAL
    with pytest.raises(CeemsnetError, match="not a ceemsnet accounting database"):
        query(str(other), "job", 0, 1e12)
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]
    # the exporter's own store is in WAL mode
    db = _changed(tmp_path)
    assert open(db, "rb").read()[18:20] == b"\x02\x02"


def test_a_failed_write_loses_nothing_and_the_next_one_goes_through(tmp_path):
    """A write whose COMMIT fails (here a deferred constraint; a full disk, too): the transaction
    is rolled back (it stayed open, and every later write failed), and the next write stores every
    count, those of the failed write's interval included (StoreWriter logs a failed interval)."""
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock())
    s.write({A: {"net_egress_bytes": 5}})
    s.db.execute("PRAGMA foreign_keys=ON")
    c = sqlite3.connect(db)
    c.executescript("CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                    "CREATE TABLE child (p INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);"
                    "CREATE TRIGGER fail AFTER INSERT ON cgroups BEGIN INSERT INTO child VALUES (1); END;")
    c.close()
    w = StoreWriter(s, lambda: fams(7, 20), interval=3600)
    with pytest.raises(sqlite3.IntegrityError):
        w.flush()  # fails at COMMIT
    assert query(db, "job", 0, 1e12)[0]["net_egress_bytes"] == 5
    c = sqlite3.connect(db)
    c.execute("DROP TRIGGER fail")
    c.commit()
    c.close()
    s.write({A: {"net_egress_bytes": 9}, B: {"net_egress_bytes": 20}})  # was: "cannot start a transaction
    assert query(db, "job", 0, 1e12)[0]["net_egress_bytes"] == 29       # within a transaction", for good
    w.stop()


def test_a_failed_write_at_stop_is_one_line_and_closes_the_store(tmp_path):
    db = str(tmp_path / "a.db")
    s = Store(db, slurm_job, Clock())
    s.write({A: {"net_egress_bytes": 5}})
    c = sqlite3.connect(db)
    c.execute("CREATE TRIGGER fail BEFORE UPDATE ON cgroups BEGIN SELECT RAISE(ABORT, 'disk on fire'); END")
    c.commit()
    c.close()
    w = StoreWriter(s, lambda: fams(7, 20), interval=3600)
    with pytest.raises(CeemsnetError, match=f"writing {db} at stop failed: disk on fire"):
        w.stop()
    with pytest.raises(sqlite3.ProgrammingError):  # closed
        s.db.execute("SELECT 1")
