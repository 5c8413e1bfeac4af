"""SLURM's own facts in the report: sacct's user, account, partition, ... joined per job.

Rows from either source (store, Prometheus) carry the cgroups' raw job ids
(a number, or a 26.05 SLUID). sacct is asked about all of them at once
(ceemsnet/attribution/slurm.py: batched, finished jobs cached in a file); each row then
gains the keys in slurm.FACTS, and `job` becomes the id SLURM shows (123_2
for an array task, 100+1 for a heterogeneous component) with the raw id in
`job_id`. --by=user and --by=account regroup the per-job rows by sacct's
answer. Without sacct the rows are the same with those keys null, and one
line on stderr says what is missing.
"""

from __future__ import annotations

from ceemsnet.attribution.slurm import FACTS, FactsCache, job_facts
from ceemsnet.serving.store import COLUMNS
from ceemsnet.attribution.workloads import slurm_job


def _raw_job(by: str, row: dict) -> str | None:
    if by == "job":
        return row["job"]
    if by == "cgroup":
        return slurm_job(row["cgroup"])
    return None


def join(rows: list[dict], by: str, sacct: str = "sacct", cache_path: str | None = None) -> tuple[list[dict], str | None]:
    """Rows (by job or cgroup) with SLURM's facts; (rows, note of what is missing or None)."""
    ids = {j for j in (_raw_job(by, r) for r in rows) if j}
    if not ids:
        return rows, None
    if sacct == "none":
        facts, note = {}, f"--slurm.sacct=none: rows carry no {', '.join(FACTS)}"
    else:
        facts, note = job_facts(ids, FactsCache(cache_path), sacct)
    out = []
    for r in rows:
        raw = _raw_job(by, r)
        f = facts.get(raw, {}) if raw else {}
        r = dict(r)
        if by == "job":
            r["job"] = f.get("job") or raw
            r["job_id"] = raw
        elif raw:
            r["job"] = f.get("job") or raw
        for k in FACTS:
            r[k] = f.get(k)
        out.append(r)
    return out, note


def regroup(rows: list[dict], by: str) -> list[dict]:
    """Per-job rows (joined) -> rows per sacct `user` or `account`; jobs sacct did not answer are left out."""
    groups: dict[str, dict] = {}
    for r in rows:
        k = r.get(by)
        if k is None:
            continue
        g = groups.get(k)
        if g is None:
            g = groups[k] = {by: k, **{c: None for c in COLUMNS}, "first_seen": r["first_seen"],
                             "last_seen": r["last_seen"], "jobs": 0}
        for c in COLUMNS:
            if r[c] is not None:
                g[c] = (g[c] or 0) + r[c]
        g["first_seen"] = min(g["first_seen"], r["first_seen"])  # ISO 8601 UTC strings sort as times
        g["last_seen"] = max(g["last_seen"], r["last_seen"])
        g["jobs"] += 1
    return [groups[k] for k in sorted(groups)]
