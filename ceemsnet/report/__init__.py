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
from ceemsnet.attribution.slurm import SacctError
from ceemsnet.attribution.slurmdb import field_name, read_fields
from ceemsnet.report import local, record
from ceemsnet.report.facts import join, regroup
from ceemsnet.report.rows import format_rows

__all__ = ["DEFAULT_STORE", "run"]


def run(args) -> int:
    """The report subcommand, from its parsed flags."""
    by = args.by
    base = "job" if by in ("user", "account") else by
    job = args.job
    shown = job is not None and ("_" in job or "+" in job)  # as SLURM shows it: matched after the join
    field = _record_field(args)
    try:
        rows = _query(args, base, None if shown else job)
    except CeemsnetError as e:
        # a job the source no longer has: its SLURM record, if `ceemsnet record` wrote one
        rows = _from_records(args, field, [job], base) if job is not None and field and base != "cgroup" else []
        if not rows:
            raise
        print(f"ceemsnet report: job {job} from its SLURM record ({field}): {e}", file=sys.stderr)
    else:
        if args.prometheus is not None and field and base == "job" and job is None:
            added = _from_records(args, field, None, base, rows)
            if added:
                print(f"ceemsnet report: {len(added)} job(s) Prometheus has no series of, from their SLURM "
                      f"records ({field})", file=sys.stderr)
                rows = sorted(rows + added, key=lambda r: r["job"])
    cache = getattr(args, "sacct_cache", None)
    rows, note = join(rows, base, getattr(args, "sacct", "sacct"), None if cache == "none" else cache)
    if shown:
        rows = [r for r in rows if r.get("job") == job]
        if not rows and field and base != "cgroup":
            rows, note = join(_from_records(args, field, [job], base), base, getattr(args, "sacct", "sacct"),
                              None if cache == "none" else cache)
            if rows:
                print(f"ceemsnet report: job {job} from its SLURM record ({field})", file=sys.stderr)
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


def _record_field(args) -> str | None:
    f = getattr(args, "record_field", None)
    if not f or f == "none" or getattr(args, "sacct", "sacct") == "none":
        return None
    try:
        return field_name(f)
    except ValueError as e:
        raise CeemsnetError(f"--slurm.record-field: {e}") from None


def _range(args) -> tuple[float, float]:
    now = time.time()
    if args.prometheus is None:
        return parse_time(args.since, now, 0.0), parse_time(args.until, now, now + 1e9)
    until = parse_time(args.until, now, now)
    return parse_time(args.since, now, until - 86400), until


def _from_records(args, field: str, jobs: list[str] | None, by: str, have: list[dict] = ()) -> list[dict]:
    """Rows (by job, raw ids) from the ceemsnet lines in SLURM's job records: of `jobs`, or of
    the jobs sacct lists in the report's range that are not in `have`."""
    known = {r["job"] for r in have}
    try:
        if jobs is None:
            since, until = _range(args)
            found = read_fields(None, field, args.sacct, since, until)
        else:
            found = read_fields(jobs, field, args.sacct)
    except SacctError:
        return []  # the join of sacct's facts says what is wrong with sacct
    out = []
    for raw, f in sorted(found.items()):
        if raw in known or (jobs is not None and jobs[0] not in (raw, f["job"])):
            continue
        rec = record.decode(f["text"])
        if rec is not None:
            out.append(record.row(raw, rec))
    return out


def _query(args, by: str, job: str | None) -> list[dict]:
    if args.prometheus is None:
        since, until = _range(args)
        return local.query(args.storage_path or DEFAULT_STORE, by, since, until, job)
    # imported here: the HTTP/TLS stack is not needed for a local report
    from ceemsnet.report import prometheus
    if args.storage_path is not None:
        raise CeemsnetError("give --storage.path (this node's store) or --prometheus (the cluster), not both")
    since, until = _range(args)
    api = prometheus.PrometheusAPI(args.prometheus, timeout=args.prom_timeout,
                                   bearer_token_file=args.prom_token, ca_file=args.prom_ca)
    progress = prometheus.stderr_progress()
    try:
        return prometheus.query(api, by, since, until, job, selector=args.prom_selector,
                                lookback=args.prom_lookback, chunk=args.prom_chunk, progress=progress)
    finally:
        if progress:
            progress("")
