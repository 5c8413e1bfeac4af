import json
import sqlite3

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.metrics import Family
from ceemsnet.report.local import query
from ceemsnet.report.rows import format_rows
from ceemsnet.store import Store, open_db, totals_from_families
from ceemsnet.units import slurm_job


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
    with pytest.raises(CeemsnetError, match="no job 6"):
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

