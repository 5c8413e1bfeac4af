"""`ceemsnet record`: write a finished job's totals into its SLURM accounting record."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ceemsnet import CeemsnetError
from ceemsnet.attribution.slurm import SacctError
from ceemsnet.attribution import slurmdb
from ceemsnet.commands.shared import add_log_level, add_prometheus, add_sacct, record_field_arg
from ceemsnet.common.timeparse import duration_arg, duration_or_zero_arg
from ceemsnet.report import record
from ceemsnet.serving.store import COLUMNS

DEFAULT_FIELD = "SystemComment"
DEFAULT_TIMEOUT = 120.0
DEFAULT_SETTLE = 5.0


def add_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser(
        "record", help="write a finished job's totals into its SLURM accounting record (EpilogSlurmctld)",
        description="Once a job has ended: wait (at most --timeout) until Prometheus has scraped every one of "
                    "the job's nodes after the job's End in sacct, sum what each node's exporter counted for "
                    "the job, and write it as one line, `ceemsnet:` and a compact JSON object, into the job's "
                    "record in SLURM's accounting database with `sacctmgr -i modify job where jobid=J set "
                    "<--field>=...` (SLURM's administrators, SlurmUser or root only). `sacct -j J -o <field>` then "
                    "shows it, with backticks for quotes (sacctmgr turns every quote into one), and `ceemsnet "
                    "report` reads it back for jobs Prometheus no longer has. Another tool's content in the field "
                    "is kept: the line replaces only an earlier ceemsnet line, or is added after a newline, and "
                    "where that would change the other content (jobstats' JS1: payload, quotes, capitals on "
                    "SLURM before 23.02) nothing is written. On timeout the record is written with what was "
                    "scraped, marked incomplete, and stderr names the nodes missing. Exit status 1 only when "
                    "nothing could be written. As EpilogSlurmctld (packaging/slurm/): the job is "
                    "$SLURM_JOB_ID. Keys and the field's choice: docs/reports.md.")
    r.add_argument("job", nargs="?", metavar="JOBID",
                   help="the job, as SLURM shows it (123, 123_2 for an array task, 100+1) or its raw id "
                        "(default: $SLURM_JOB_ID, as slurmctld sets it for EpilogSlurmctld)")
    r.add_argument("--field", type=lambda t: record_field_arg(t, allow_none=False), default=DEFAULT_FIELD, metavar="FIELD",
                   help=f"the job record's field to write (default {DEFAULT_FIELD}, which no common tool but "
                        "SLURM's burst buffer plugins writes, and only administrators can change; AdminComment "
                        "is jobstats'; Comment can be changed by the job's own user; Extra needs SLURM 23.02+)")
    add_prometheus(r, "the Prometheus server that scrapes every node's exporter, e.g. http://prometheus:9090 "
                      "(required; user:password@ in the URL for basic auth)")
    r.add_argument("--timeout", type=duration_arg, default=DEFAULT_TIMEOUT, metavar="DURATION",
                   help="wait at most this long for the job's End in sacct and every node's final scrape "
                        f"(default {DEFAULT_TIMEOUT:g}s; above Prometheus' scrape interval), then write what is "
                        "there, marked incomplete")
    r.add_argument("--settle", type=duration_or_zero_arg, default=DEFAULT_SETTLE, metavar="DURATION",
                   help="a scrape counts as final when taken this long after the job's End "
                        f"(default {DEFAULT_SETTLE:g}s: SLURM ends the steps just after it records End)")
    r.add_argument("--per-node", action="store_true", help="also each node's totals (key `nodes`)")
    r.add_argument("--dry-run", action="store_true",
                   help="print the JSON object on stdout and write nothing")
    add_sacct(r, "the sacct to ask for the job's End, nodes and the field's content (default sacct on PATH)")
    r.add_argument("--slurm.sacctmgr", dest="sacctmgr", default="sacctmgr", metavar="PROGRAM",
                   help="the sacctmgr that writes the record (default sacctmgr on PATH)")
    add_log_level(r)
    return r


def _say(msg: str) -> None:
    print(f"ceemsnet record: {msg}", file=sys.stderr)


def _job_end(job: str, field: str, sacct: str, deadline: float) -> dict:
    """sacct's record of the job, polled until it shows the End or the deadline passes."""
    while True:
        try:
            facts = slurmdb.job_end(job, field, sacct)
        except SacctError as e:
            raise CeemsnetError(str(e)) from None
        if facts is not None and facts["end"] is not None:
            return facts
        if time.time() >= deadline:
            if facts is None:
                raise CeemsnetError(f"sacct knows no job {job!r}: nothing written")
            return facts
        time.sleep(1.0)


def run(args) -> int:
    # imported here: the HTTP/TLS stack is needed by this command alone
    from ceemsnet.report import final, prometheus

    job = args.job or os.environ.get("SLURM_JOB_ID")
    if not job:
        raise CeemsnetError("no job: give JOBID, or run as EpilogSlurmctld (which sets SLURM_JOB_ID)")
    if not args.prometheus:
        raise CeemsnetError("--prometheus URL is required: the server that scrapes the nodes' exporters")
    api = prometheus.PrometheusAPI(args.prometheus, timeout=args.prom_timeout,
                                   bearer_token_file=args.prom_token, ca_file=args.prom_ca)
    t0 = time.time()
    deadline = t0 + args.timeout
    facts = _job_end(job, args.field, args.sacct, deadline)
    raw, shown = facts["raw"], facts["job"]
    start = facts["start"] if facts["start"] is not None else t0 - 86400
    if facts["end"] is None:
        _say(f"job {shown} has no End in sacct after {args.timeout:g}s (state {facts['state'] or 'unknown'}): "
             "its totals so far are written, marked incomplete")
        miss, by_node, seen = list(facts["nodes"]) or ["end"], True, set()
    else:
        miss, by_node, seen = final.wait_final(api, raw, facts["nodes"], start, facts["end"], deadline, args.settle,
                                               args.prom_selector, args.prom_lookback)
    until = time.time()
    per = final.totals(api, raw, start, until, args.prom_selector, args.prom_lookback, args.prom_chunk)
    if not per:
        raise CeemsnetError(f"Prometheus at {api.base} has no series of job {shown} "
                            f"(raw id {raw}): nothing written")
    tot: dict = {}
    for vals in per.values():
        for c, v in vals.items():
            tot[c] = tot.get(c, 0.0) + v
    nodes = {(final.node_of(i) if by_node else i): v for i, v in per.items()} if args.per_node else None
    rec = record.build(shown, tot, facts["start"], facts["end"], len(per), miss, nodes)
    if miss:
        what = "node(s)" if by_node else "exporter(s)"
        _say(f"job {shown}: no final scrape after {args.timeout:g}s from {what} {', '.join(miss)}: "
             "the record says complete=false")
    if args.dry_run:
        print(json.dumps(rec, separators=(",", ":")))
        return 0
    try:
        lowers = slurmdb.sacctmgr_lowers(args.sacctmgr)
        line = record.encode(rec)
        try:
            new = record.merge(facts["text"], line, args.field, lowers)
        except record.Refused as e:
            if "bytes" in str(e) and "nodes" in rec:  # without the per-node detail it may fit
                rec.pop("nodes")
                line = record.encode(rec)
                new = record.merge(facts["text"], line, args.field, lowers)
                _say("the per-node totals did not fit the field: left out")
            else:
                raise
        slurmdb.write_field(shown, args.field, new, args.sacctmgr)
        back = slurmdb.job_end(shown, args.field, args.sacct)
    except record.Refused as e:
        raise CeemsnetError(str(e)) from None
    except SacctError as e:
        raise CeemsnetError(f"{e}: nothing written") from None
    got = record.decode(back["text"] if back else None)
    if got is None or any(got.get(c) != rec.get(c) for c in COLUMNS):
        raise CeemsnetError(f"sacctmgr answered, but sacct -j {shown} -o {args.field} does not hold the record "
                            "written (another writer at the same moment?)")
    return 0
