"""`ceemsnet report`: per-job, per-cgroup or per-user totals from the local store."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import time

from . import CeemsnetError
from .store import COLUMNS, open_db

DEFAULT_STORE = "/var/lib/ceemsnet/accounting.db"

KEYS = {"job": "job", "cgroup": "path", "user": "user"}
_REL = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str | None, now: float, default: float) -> float:
    """ISO 8601 date or date-time (local time unless it says otherwise), or a
    relative age such as 30m, 24h, 7d (that long ago)."""
    if not text:
        return default
    m = _REL.match(text.strip())
    if m:
        return now - int(m.group(1)) * _UNITS[m.group(2)]
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise CeemsnetError(f"cannot read time {text!r}: use an ISO date (2026-11-22, 2026-11-22T08:00) "
                            "or an age (30m, 24h, 7d)") from None
    return t.timestamp()


def query(path: str, by: str, since: float, until: float, job: str | None = None) -> list[dict]:
    if since > until:
        raise CeemsnetError("empty time range: --since is after --until")
    key = KEYS[by]
    db = open_db(path, create=False)
    try:
        sums = ", ".join(f"SUM({c})" for c in COLUMNS)
        sql = (f"SELECT {key}, {sums}, MIN(first_seen), MAX(last_seen) FROM cgroups "
               f"WHERE last_seen >= ? AND first_seen <= ? AND {key} IS NOT NULL")
        args: list = [since, until]
        if job is not None:
            sql += " AND job = ?"
            args.append(job)
        rows = db.execute(sql + f" GROUP BY {key} ORDER BY {key}", args).fetchall()
        if job is not None and not rows:
            known = db.execute("SELECT COUNT(*) FROM cgroups WHERE job = ?", (job,)).fetchone()[0]
            raise CeemsnetError(f"no job {job} in {path}" + (" in that time range" if known else ""))
    finally:
        db.close()
    return [make_row(by, r[0], dict(zip(COLUMNS, r[1:])), r[-2], r[-1]) for r in rows]


def make_row(by: str, key, values: dict, first: float, last: float) -> dict:
    """One report row, the same from the store and from Prometheus: the key, every
    column (None where its collector never counted), then first and last seen (UTC)."""
    return {by: key, **{c: values.get(c) for c in COLUMNS}, "first_seen": _iso(first), "last_seen": _iso(last)}


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="seconds")


def _human(v, unit=True) -> str:
    if v is None:
        return "-"
    if not unit:
        return str(v)
    for u in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(v) < 1024 or u == "TiB":
            return f"{v} B" if u == "B" else f"{v:.1f} {u}"
        v /= 1024
    return str(v)


def format_rows(rows: list[dict], by: str, fmt: str) -> str:
    cols = [by, *COLUMNS, "first_seen", "last_seen"]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in cols})
        return buf.getvalue().rstrip("\n")
    if not rows:
        return "no accounting data in that time range"
    total = {c: (sum(r[c] for r in rows if r[c] is not None) if any(r[c] is not None for r in rows) else None)
             for c in COLUMNS}
    header = [by.upper(), "NET OUT", "NET IN", "CALLS OUT", "CALLS IN", "READ", "WRITTEN", "FILE OPS", "SKB OUT",
              "SKB IN"]
    body = [[str(r[by])] + [_human(r[c], "calls" not in c and c != "vfs_ops") for c in COLUMNS] for r in rows]
    body.append(["TOTAL"] + [_human(total[c], "calls" not in c and c != "vfs_ops") for c in COLUMNS])
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    lines = ["  ".join(x[i].rjust(widths[i]) if i else x[i].ljust(widths[i]) for i in range(len(header)))
             for x in [header] + body]
    return "\n".join(lines)


def run(args) -> int:
    now = time.time()
    if args.prometheus is None:
        since = parse_time(args.since, now, 0.0)
        until = parse_time(args.until, now, now + 1e9)
        rows = query(args.storage_path or DEFAULT_STORE, args.by, since, until, args.job)
    else:
        from . import promreport
        if args.storage_path is not None:
            raise CeemsnetError("give --storage.path (this node's store) or --prometheus (the cluster), not both")
        until = parse_time(args.until, now, now)
        since = parse_time(args.since, now, until - 86400)
        api = promreport.PrometheusAPI(args.prometheus, timeout=args.prom_timeout,
                                       bearer_token_file=args.prom_token, ca_file=args.prom_ca)
        progress = promreport.stderr_progress()
        try:
            rows = promreport.query(api, args.by, since, until, args.job, selector=args.prom_selector,
                                    lookback=args.prom_lookback, chunk=args.prom_chunk, progress=progress)
        finally:
            if progress:
                progress("")
    print(format_rows(rows, args.by, args.format))
    return 0
