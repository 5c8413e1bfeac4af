"""Report rows from this node's accounting store (the SQLite file `serve` writes)."""

from __future__ import annotations

import sqlite3

from ceemsnet import CeemsnetError
from ceemsnet.serving.store import COLUMNS, columns_in, open_db, store_error
from ceemsnet.report.rows import make_row

# --by -> the store's column holding that key
KEYS = {"job": "job", "cgroup": "path", "user": "user"}


def query(path: str, by: str, since: float, until: float, job: str | None = None) -> list[dict]:
    """Whole totals of every cgroup seen in [since, until], grouped by `by`."""
    if since > until:
        raise CeemsnetError("empty time range: --since is after --until")
    key = KEYS[by]
    db = open_db(path, create=False)
    try:
        # an older schema's store lacks the later columns (rdma_*): NULL, as where a collector never ran
        have = set(columns_in(db.execute("PRAGMA user_version").fetchone()[0]))
        sums = ", ".join(f"SUM({c})" if c in have else "NULL" for c in COLUMNS)
        sql = (f"SELECT {key}, {sums}, MIN(first_seen), MAX(last_seen) FROM cgroups "
               f"WHERE last_seen >= ? AND first_seen <= ? AND {key} IS NOT NULL")
        args: list = [since, until]
        if job is not None:
            sql += " AND job = ?"
            args.append(job)
        rows = db.execute(sql + f" GROUP BY {key} ORDER BY {key}", args).fetchall()
        if job is not None and not rows:
            known = db.execute("SELECT COUNT(*) FROM cgroups WHERE job = ?", (job,)).fetchone()[0]
            raise CeemsnetError(f"no job {job!r} in {path}" + (" in that time range" if known else ""))
    # past open_db's check: a table or column dropped, text not UTF-8, a SUM that overflows
    except (sqlite3.Error, UnicodeDecodeError) as e:
        raise store_error(path, e) from None
    finally:
        db.close()
    return [make_row(by, r[0], dict(zip(COLUMNS, r[1:])), r[-2], r[-1]) for r in rows]
