"""`ceemsnet report`: per-job, per-cgroup or per-user totals.

Two sources give the same rows (rows.py): this node's SQLite store
(local.py) or the Prometheus server that scrapes every node
(prometheus.py). This module only picks the source and prints; the
imports flow one way, from here to the sources to rows, store, units and
timeparse, never back.
"""

from __future__ import annotations

import sys
import time

from ceemsnet import CeemsnetError
from ceemsnet.serving.store import DEFAULT_STORE
from ceemsnet.common.timeparse import parse_time
from ceemsnet.report import local
from ceemsnet.report.facts import join, regroup
from ceemsnet.report.rows import format_rows

__all__ = ["DEFAULT_STORE", "run"]


def run(args) -> int:
    """The report subcommand, from its parsed flags."""
    by = args.by
    base = "job" if by in ("user", "account") else by
    job = args.job
    shown = job is not None and ("_" in job or "+" in job)  # as SLURM shows it: matched after the join
    rows = _query(args, base, None if shown else job)
    cache = getattr(args, "sacct_cache", None)
    rows, note = join(rows, base, getattr(args, "sacct", "sacct"), None if cache == "none" else cache)
    if shown:
        rows = [r for r in rows if r.get("job") == job]
        if not rows:
            raise CeemsnetError(f"no job {job!r}" + (f" ({note})" if note else ""))
    if base != by:
        grouped = regroup(rows, by)
        left = sum(1 for r in rows if r.get(by) is None)
        if by == "user" and not grouped:
            # no sacct answer at all: SLURM's cgroup v1 paths carry the uid (uid_<u>)
            grouped = _query(args, "user", job)
            if grouped:
                note = (note + "; " if note else "") + "users are the uids in cgroup v1 paths"
        elif left:
            note = (note + "; " if note else "") + f"{left} job(s) with no {by} from sacct left out"
        rows = grouped
    if note:
        print(f"ceemsnet report: {note}", file=sys.stderr)
    print(format_rows(rows, by, args.format))
    return 0


def _query(args, by: str, job: str | None) -> list[dict]:
    now = time.time()
    if args.prometheus is None:
        since = parse_time(args.since, now, 0.0)
        until = parse_time(args.until, now, now + 1e9)
        return local.query(args.storage_path or DEFAULT_STORE, by, since, until, job)
    # imported here: the HTTP/TLS stack is not needed for a local report
    from ceemsnet.report import prometheus
    if args.storage_path is not None:
        raise CeemsnetError("give --storage.path (this node's store) or --prometheus (the cluster), not both")
    until = parse_time(args.until, now, now)
    since = parse_time(args.since, now, until - 86400)
    api = prometheus.PrometheusAPI(args.prometheus, timeout=args.prom_timeout,
                                   bearer_token_file=args.prom_token, ca_file=args.prom_ca)
    progress = prometheus.stderr_progress()
    try:
        return prometheus.query(api, by, since, until, job, selector=args.prom_selector,
                                lookback=args.prom_lookback, chunk=args.prom_chunk, progress=progress)
    finally:
        if progress:
            progress("")
