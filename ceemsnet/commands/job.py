"""`ceemsnet job JOBID`: one job as its user reads it; the view itself is ceemsnet/report/job.py."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ceemsnet import CeemsnetError
from ceemsnet.attribution import slurmdb
from ceemsnet.attribution.slurm import FactsCache, SacctError, job_facts
from ceemsnet.commands.shared import add_log_level, add_prometheus, add_record_field, add_sacct
from ceemsnet.common.timeparse import duration_arg
from ceemsnet.report import job as view_of
from ceemsnet.report import record
from ceemsnet.serving.store import COLUMNS

POINTS = 60


def add_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser(
        "job", help="one job as its user reads it: sacct's facts, totals per step and node, rates, notes",
        description="One SLURM job: sacct's facts as a header (user, account, partition, state, start, end, "
                    "elapsed, nodes); what its processes moved over sockets, files and RDMA, in total, per "
                    "step and per node, from Prometheus (every node's exporter); its rates over the job's "
                    "life as sparklines; and notes where it crosses a threshold of the --config file (heavy "
                    "writes to NFS while a scratch file system exists, a multi-node job with no network "
                    "traffic, a million files opened). Without --prometheus, or when Prometheus has no series "
                    "of the job, the totals come from the job's SLURM record (`ceemsnet record`), and the "
                    "output says so. Rules and the JSON keys: docs/reports.md.")
    r.add_argument("job", metavar="JOBID", help="the job, as SLURM shows it (123, 123_2, 100+1) or its raw id")
    add_prometheus(r, "the Prometheus server that scrapes every node's exporter, e.g. http://prometheus:9090 "
                      "(user:password@ in the URL for basic auth); without it, the job's SLURM record only")
    r.add_argument("--config", metavar="FILE",
                   help=f"the notes' thresholds, YAML (default {view_of.DEFAULT_CONFIG} if it exists, else "
                        "built-in defaults)")
    r.add_argument("--rates.step", dest="rates_step", type=duration_arg, default=30.0, metavar="DURATION",
                   help="the sparklines' shortest step (default 30s): at least Prometheus' scrape interval, or a "
                        "step without a new sample shows as idle; a job longer than 60 steps gets 60 wider ones")
    r.add_argument("--format", default="table", choices=("table", "json"), help="output (default table)")
    add_sacct(r, "the sacct that knows the job (default sacct on PATH)")
    add_record_field(r, "read when Prometheus has nothing")
    add_log_level(r)
    return r


def _say(msg: str) -> None:
    print(f"ceemsnet job: {msg}", file=sys.stderr)


def _rules(args) -> dict:
    if args.config:
        return view_of.load_rules(args.config)
    if os.path.exists(view_of.DEFAULT_CONFIG):
        return view_of.load_rules(view_of.DEFAULT_CONFIG)
    return view_of.load_rules(None)


def _from_prometheus(args, raw: str, start: float, until: float) -> dict | None:
    """The Prometheus part of the view, None if Prometheus has no series of the job."""
    # imported here: the HTTP/TLS stack is not needed when the record alone answers
    from ceemsnet.report import final, prometheus
    api = prometheus.PrometheusAPI(args.prometheus, timeout=args.prom_timeout,
                                   bearer_token_file=args.prom_token, ca_file=args.prom_ca)
    sel, look = args.prom_selector, args.prom_lookback
    per = prometheus.job_split(api, raw, start - 60.0, until, sel, look, args.prom_chunk)
    if not per:
        return None
    totals, steps, nodes = view_of.split(per, final.node_of)
    rates = {c: prometheus.job_rates(api, raw, c, start, until, POINTS, sel, args.rates_step)
             for c in view_of.RATE_COLUMNS if totals.get(c) is not None}
    extra = {
        "writes_by_fstype": prometheus.job_by_label(api, raw, start - 60.0, until, COLUMNS["vfs_write_bytes"]
                                                    + "_total", "fstype", sel, look),
        "fstypes_present": prometheus.label_values(api, COLUMNS["vfs_write_bytes"] + "_total", "fstype",
                                                   start, until, sel)
        | prometheus.label_values(api, COLUMNS["vfs_read_bytes"] + "_total", "fstype", start, until, sel),
        "ops_by_op": prometheus.job_by_label(api, raw, start - 60.0, until, COLUMNS["vfs_ops"] + "_total",
                                             "op", sel, look),
    }
    return {"source": "prometheus", "source_detail": f"Prometheus at {api.base}", "totals": totals,
            "steps": steps, "nodes": nodes, "rates": rates, "range": [start, until], "_extra": extra}


def _from_record(args, rec_text: str | None) -> dict | None:
    rec = record.decode(rec_text)
    if rec is None:
        return None
    totals = {c: rec.get(c) if isinstance(rec.get(c), int) else None for c in COLUMNS}
    nodes = [{"node": n, **{c: v.get(c) if isinstance(v.get(c), int) else None for c in COLUMNS}}
             for n, v in sorted((rec.get("nodes") or {}).items()) if isinstance(v, dict)]
    detail = f"the job's SLURM record in {args.record_field}, written by ceemsnet record"
    if not rec.get("complete", True):
        detail += " (incomplete: " + ", ".join(rec.get("missing") or []) + " not scraped)"
    return {"source": "record", "source_detail": detail, "totals": totals, "steps": [], "nodes": nodes,
            "rates": {}, "_extra": {}}


def run(args) -> int:
    rules = _rules(args)
    if args.sacct == "none":
        raise CeemsnetError("--slurm.sacct=none: ceemsnet job needs sacct to find the job (its id, start and nodes)")
    field = args.record_field if args.record_field != "none" else "SystemComment"
    try:
        sj = slurmdb.job_end(args.job, field, args.sacct)
    except SacctError as e:
        raise CeemsnetError(str(e)) from None
    if sj is None:
        raise CeemsnetError(f"sacct knows no job {args.job!r}")
    raw = sj["raw"]
    facts, note = job_facts([raw], FactsCache(None), args.sacct)
    if note:
        _say(note)
    now = time.time()
    start = sj["start"]
    if start is None:
        raise CeemsnetError(f"job {sj['job']} has not started (state {sj['state'] or 'unknown'}): nothing to show")
    until = min(now, sj["end"] + 60.0) if sj["end"] is not None else now
    part = None
    why = "no --prometheus given"
    if args.prometheus:
        part = _from_prometheus(args, raw, start, max(until, start + 1.0))
        why = f"Prometheus at {args.prometheus} has no series of job {sj['job']}"
    if part is None:
        part = _from_record(args, sj["text"]) if args.record_field != "none" else None
        if part is None:
            part = {"source": "none", "source_detail": f"nothing: {why}, and the job's SLURM record holds "
                    "no ceemsnet line" if args.record_field != "none" else f"nothing: {why}",
                    "totals": {c: None for c in COLUMNS}, "steps": [], "nodes": [], "rates": {}, "_extra": {}}
        else:
            part["source_detail"] += f"; {why}"
    extra = part.pop("_extra")
    view = {"job": sj["job"], "job_id": raw, "facts": facts.get(raw, {}), "node_names": sj["nodes"], **part}
    view["notes"] = view_of.notes(rules, view, **extra)
    if args.format == "json":
        print(view_of.to_json(view))
    else:
        print(view_of.render(view, POINTS))
    return 0
