"""`ceemsnet report`: its flags; the report itself is ceemsnet/report/."""

from __future__ import annotations

import argparse

from ceemsnet import report
from ceemsnet.commands.shared import add_log_level, add_prometheus, add_record_field, add_sacct, add_storage_path
from ceemsnet.serving.store import DEFAULT_STORE

DEFAULT_SACCT_CACHE = "/var/cache/ceemsnet/sacct.json"


def add_parser(sub) -> argparse.ArgumentParser:
    r = sub.add_parser("report", help="per-job, per-cgroup or per-user totals, from the local store or Prometheus",
                       description="Totals grouped by SLURM job, cgroup, user or account, with SLURM's facts per "
                                   "job from sacct where it answers (user, account, partition, state, ...). "
                                   "By default from the SQLite store this node's exporter keeps (serve "
                                   "--storage.path): whole totals of every cgroup seen in the range. With "
                                   "--prometheus: what every scraped node counted inside the range, from the "
                                   "Prometheus server's HTTP API (exact sample differences, counter resets and "
                                   "exporter restarts handled).")
    add_storage_path(r, None, f"the local store (default {DEFAULT_STORE})")
    add_prometheus(r, "report from this Prometheus server instead (e.g. http://prometheus:9090; "
                      "user:password@ in the URL for basic auth)")
    r.add_argument("--by", default="job", choices=("job", "cgroup", "user", "account"),
                   help="grouping (default job); user and account are sacct's (without sacct, user falls back "
                        "to the uid in SLURM cgroup v1 paths)")
    r.add_argument("--job", help="only this job: its cgroups' id, or as SLURM shows it (123_2, 100+1) "
                                 "(error if there is no such job)")
    add_sacct(r, "join SLURM's facts per job (user, account, partition, job_name, state, start, end, "
                 "elapsed, nodes) from `sacct -P`, batched; 'none': do not ask. Without an answer the "
                 "report still works, and says on stderr what is missing")
    r.add_argument("--slurm.sacct-cache", dest="sacct_cache", default=DEFAULT_SACCT_CACHE, metavar="FILE|none",
                   help=f"finished jobs' sacct facts, kept between reports (default {DEFAULT_SACCT_CACHE}; "
                        "skipped where it cannot be written; running jobs are always asked again)")
    add_record_field(r, "a --job that the store or Prometheus no longer has, and with --prometheus the jobs sacct "
                        "lists in the range that Prometheus has no series of, are read back from it")
    r.add_argument("--since", help="start: ISO date or time, or an age such as 24h, 7d (default: everything in "
                                   "the store; 24h with --prometheus)")
    r.add_argument("--until", help="end: ISO date or time, or an age (default: now)")
    r.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output (default table)")
    add_log_level(r)
    return r


def run(args) -> int:
    return report.run(args)
