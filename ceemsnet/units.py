"""Cgroup path -> workload unit: SLURM job, systemd unit, Kubernetes pod.

Pure parsers over the cgroup path (relative to the hierarchy root), so
every layout is unit-tested on real examples. With a resolver active,
every per-cgroup series also carries the unit's label, and per-unit sums
are exported (ceemsnet_job_* for SLURM, ceemsnet_unit_*, ceemsnet_pod_*).
"""

from __future__ import annotations

import os
import re

from . import CeemsnetError

KINDS = ("none", "slurm", "systemd", "k8s")
LABEL = {"slurm": "job", "systemd": "unit", "k8s": "pod"}

# SLURM cgroup v1 (task/cgroup, proctrack/cgroup): /slurm[_<node>]/uid_<u>/job_<j>/step_<s>/task_<t>
_SLURM_V1 = re.compile(r"^/slurm(?:_[^/]+)?/uid_\d+/job_(\d+)(?:/|$)")
# SLURM cgroup v2 (cgroup/v2 plugin): <slice>/[<node>_]slurmstepd.scope/job_<j>/step_<s>/user/task_<t>
_SLURM_V2 = re.compile(r"/(?:[^/]+_)?slurmstepd\.scope/([^/]+)(?:/|$)")
_JOB_DIR = re.compile(r"^job_(\d+)$")
# systemd: the deepest .service/.scope/.socket/.mount/.swap unit, else the deepest .slice
_SYSTEMD_UNIT = re.compile(r"^[^/]+\.(service|scope|socket|mount|swap)$")
# Kubernetes: systemd driver kubepods-<qos>-pod<uid with _>.slice; cgroupfs driver pod<uid>
_K8S_POD = re.compile(r"(?:^|/)(?:kubepods(?:-[a-z]+)?-)?pod([0-9a-fA-F_-]{8,})(?:\.slice)?(?:/|$)")


def slurm_job(path: str) -> str | None:
    """The SLURM job of a cgroup path, or None.

    v2: job_<id> -> "<id>" (every release before 26.05, and 26.05.2+ with
    CgroupJobIdPaths=yes in cgroup.conf). 26.05's default names the job
    directory by the job's SLUID (e.g. sEKNKTV3WPV500): that is used as the
    job label as it is, since the numeric id cannot be derived from it.
    """
    m = _SLURM_V1.match(path)
    if m:
        return m.group(1)
    m = _SLURM_V2.search(path)
    if m:
        d = m.group(1)
        if d == "system":  # slurmstepd's own processes, not a job
            return None
        j = _JOB_DIR.match(d)
        return j.group(1) if j else d
    return None


def systemd_unit(path: str) -> str | None:
    parts = [p for p in path.split("/") if p]
    for p in reversed(parts):
        if _SYSTEMD_UNIT.match(p):
            return p
    for p in reversed(parts):
        if p.endswith(".slice") and p != "-.slice":
            return p
    return None


def k8s_pod(path: str) -> str | None:
    m = _K8S_POD.search(path)
    return m.group(1).replace("_", "-") if m else None


PARSERS = {"slurm": slurm_job, "systemd": systemd_unit, "k8s": k8s_pod}


def detect(root: str) -> str:
    """--unit=auto: slurm if a SLURM tree is mounted here, else none."""
    try:
        names = os.listdir(root)
    except OSError:
        return "none"
    if any(n == "slurm" or n.startswith("slurm_") for n in names):
        return "slurm"
    for top in ("system.slice", ""):
        try:
            if any(n.endswith("slurmstepd.scope") for n in os.listdir(os.path.join(root, top))):
                return "slurm"
        except OSError:
            continue
    return "none"


def resolve_kind(spec: str, root: str) -> str:
    if spec == "auto":
        return detect(root)
    if spec not in KINDS:
        raise CeemsnetError(f"unknown --unit {spec!r}: choose auto, " + ", ".join(KINDS))
    return spec


def add_units(families: list, kind: str, cache: dict | None = None) -> list:
    """Give every per-cgroup counter the unit label, and add per-unit sums (pure).

    ceemsnet_net_egress_bytes{cgroup,proto,family} gains `job` (SLURM) and is
    joined by ceemsnet_job_net_egress_bytes{job,proto,family}, the sum over
    the job's cgroups (its steps, live and retired). Cgroups outside any
    unit get an empty label and no sum.
    """
    from .metrics import Family
    if kind == "none":
        return families
    parse, label = PARSERS[kind], LABEL[kind]
    cache = {} if cache is None else cache

    def unit(path):
        u = cache.get(path, False)
        if u is False:
            u = cache[path] = parse(path) if path.startswith("/") else None
        return u

    out = []
    sums = []
    for f in families:
        if f.kind != "counter" or not f.labels or f.labels[0] != "cgroup" or not (
                f.name.startswith(("ceemsnet_net_", "ceemsnet_vfs_", "ceemsnet_skb_"))):
            out.append(f)
            continue
        rows, acc = [], {}
        for values, v in f.rows:
            u = unit(values[0])
            rows.append((values + (u or "",), v))
            if u is not None:
                key = (u,) + tuple(values[1:])
                acc[key] = acc.get(key, 0) + v
        out.append(Family(f.name, f.help, f.kind, f.labels + (label,), rows))
        sums.append(Family(f"ceemsnet_{label}_" + f.name[len("ceemsnet_"):],
                           f"Sum per {label} of {f.name}_total", "counter", (label,) + f.labels[1:],
                           sorted(acc.items())))
    return out + sums
