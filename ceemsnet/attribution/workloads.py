"""Which workload a cgroup belongs to: a SLURM job, a systemd unit, a Kubernetes pod.

`--unit` names the kind of workload (slurm, systemd, k8s: "unit" there is
the workload, not a unit of measure). Pure parsers over the cgroup path
(relative to the hierarchy root), so every layout is unit-tested on real
examples; SLURM's paths are read by the one grammar in
ceemsnet/attribution/slurm.py. With a kind chosen, every per-cgroup series
also carries its workload's label, and per-workload sums are exported
(ceemsnet_job_* for SLURM, ceemsnet_unit_*, ceemsnet_pod_*); the levels of
--cgroup.aggregate fold deeper cgroups into their workload's.
"""

from __future__ import annotations

import os
import re

from ceemsnet import CeemsnetError
from ceemsnet.attribution import slurm
from ceemsnet.common.metrics import Family

KINDS = ("none", "slurm", "systemd", "k8s")
LABEL = {"slurm": "job", "systemd": "unit", "k8s": "pod"}

# systemd: the deepest .service/.scope/.socket/.mount/.swap unit, else the deepest .slice
# (\Z, not $: `$` also matches before a final newline, and below a delegated cgroup any name,
# "a.service\n" too, is possible)
_SYSTEMD_UNIT = re.compile(r"^[^/]+\.(service|scope|socket|mount|swap)\Z")
# Kubernetes: systemd driver kubepods-<qos>-pod<uid with _>.slice; cgroupfs driver pod<uid>
_K8S_POD = re.compile(r"(?:^|/)(?:kubepods(?:-[a-z]+)?-)?pod([0-9a-fA-F_-]{8,})(?:\.slice)?(?:/|\Z)")


def slurm_job(path: str) -> str | None:
    """The raw SLURM job id of a cgroup path (numeric, or 26.05's SLUID as it is:
    the numeric id cannot be derived from it), or None outside a job."""
    p = slurm.parse(path)
    return p.job if p is not None else None


def _slurm_job_step(path: str) -> tuple[str, str] | None:
    """(raw job id, step name) of a SLURM cgroup path, or None."""
    p = slurm.parse(path)
    return (p.job, p.step) if p is not None else None


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

# ---- --cgroup.aggregate: deeper cgroups counted in their ancestor's series ----

# per --unit: the levels, finest first; the default is marked in DEFAULT_LEVEL
LEVELS = {"none": ("cgroup",), "slurm": slurm.LEVELS, "systemd": ("cgroup", "unit"),
          "k8s": ("container", "pod")}
DEFAULT_LEVEL = {"none": "cgroup", "slurm": "step", "systemd": "cgroup", "k8s": "container"}


def resolve_level(spec: str, kind: str) -> str:
    """--cgroup.aggregate (auto: the unit's default) for the resolved --unit."""
    if spec in (None, "", "auto"):
        return DEFAULT_LEVEL[kind]
    if spec not in LEVELS[kind]:
        raise CeemsnetError(f"invalid --cgroup.aggregate {spec!r} for --unit={kind}: choose "
                            + ", ".join(("auto",) + LEVELS[kind])
                            + ("" if kind != "none" else " (the levels task, step and job need --unit=slurm)"))
    return spec


def _prefix_through(path: str, keep) -> str:
    """path cut after its deepest component for which keep(component) holds (path itself if none)."""
    parts = path.split("/")
    for i in range(len(parts) - 1, 0, -1):
        if keep(parts[i]):
            return "/".join(parts[:i + 1])
    return path


def folder(kind: str, level: str):
    """path -> the path whose series it counts in at that level; None at the finest level (no fold).
    Answers are kept (the lifecycle and every counters map ask each scrape for every live path)."""
    if level == LEVELS[kind][0]:
        return None
    if kind == "slurm":
        def fold(p):
            return slurm.fold(p, level)
    elif kind == "systemd":
        # the deepest unit; below a .slice with no unit the path stays (a slice's children are units)
        def fold(p):
            return _prefix_through(p, _SYSTEMD_UNIT.match)
    elif kind == "k8s":
        def fold(p):
            m = _K8S_POD.search(p)
            return p[:m.end()].rstrip("/") if m else p
    else:
        return None
    cache: dict[str, str] = {}

    def cached(p: str) -> str:
        f = cache.get(p)
        if f is None:
            if len(cache) > 200_000:
                cache.clear()
            f = cache[p] = fold(p)
        return f
    return cached


def fold_name(kind: str, spec: str, fold=None) -> str:
    """The fold's name, kept by the store and exported in ceemsnet_counters_info: `cgroup` where
    every cgroup is its own series (no fold), else `<unit>:<level>` (slurm:step)."""
    if fold is None:
        return "cgroup"
    return f"{kind}:{resolve_level(spec, kind)}"


def fold_of(name: str):
    """The fold a fold_name() names (None: every cgroup its own series, also for a name this
    ceemsnet does not know)."""
    kind, _, level = (name or "").partition(":")
    if kind not in LEVELS or level not in LEVELS[kind]:
        return None
    return folder(kind, level)


def refold_baselines(old: dict[str, float], new: dict[str, float], old_fold: str,
                     new_fold: str) -> dict[str, float]:
    """A change of fold (--unit, --cgroup.aggregate; by fold_name()) over counters that
    continue: how much of each new series' first value the old series already counted (pure).

    old: {path: last value} of the series before the change, new: {path: first value} of
    those after, for one counter. An old series P and a new series S hold counts of the
    same cgroups when S is P folded the new way (the new level is as coarse or coarser, or
    P is outside any unit), or P is S folded the old way (the new level is finer). Each old
    series' value goes to those new series, the first kind first, then in path order, never
    more than a new series holds. What no new series holds (a retired cgroup that expired
    meanwhile) goes nowhere, so a count is neither doubled nor dropped. Returns {new path:
    baseline}: the new series count from there."""
    fold_new = fold_of(new_fold) or (lambda p: p)
    fold_old = fold_of(old_fold) or (lambda p: p)
    below: dict[str, list[str]] = {}
    for p in sorted(new):
        f = fold_old(p)
        if f != p:
            below.setdefault(f, []).append(p)
    base = {p: 0.0 for p in new}
    for p in sorted(old):
        left = old[p]
        for c in [fold_new(p)] + below.get(p, []):
            if left <= 0:
                break
            room = new.get(c, 0) - base.get(c, 0)
            if c in new and room > 0:
                take = min(room, left)
                base[c] += take
                left -= take
    return {p: b for p, b in base.items() if b}


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


# the per-cgroup families that get the unit's label and a per-unit sum: counters by prefix, gauges by name
UNIT_COUNTERS = ("ceemsnet_net_", "ceemsnet_vfs_", "ceemsnet_skb_", "ceemsnet_rdma_")
UNIT_GAUGES = ("ceemsnet_rdma_objects",)


def add_units(families: list, kind: str, cache: dict | None = None, names=None) -> list:
    """Give every per-cgroup counter its workload's label (`--unit` kind), and add
    per-workload sums (pure but for `names`: ceemsnet.attribution.slurm.BackgroundNames in
    the exporter, whose learn() hands new jobs to its thread and returns at once; a
    SlurmNames asks squeue and sacct in the call).

    ceemsnet_net_egress_bytes{cgroup,proto,family} gains `job` (SLURM) and is
    joined by ceemsnet_job_net_egress_bytes{job,proto,family}, the sum over
    the job's cgroups (its steps, live and retired); the same for every per-cgroup counter of
    net, vfs, skb and rdma, and for the gauges in UNIT_GAUGES (ceemsnet_job_rdma_objects: the
    job's live RDMA objects). SLURM series also gain
    `step`, the step as sacct names it (123.0, 123.batch, 123_2.extern; empty
    for the job's own cgroup). The job label is the cgroup's job id, or what
    SLURM shows for it (123_2, 100+1) where `names` knows it (from the first
    gather after its answer: until then the raw id). Cgroups outside
    any workload get empty labels and no sum.
    """
    if kind == "none":
        return families
    label = LABEL[kind]
    cache = {} if cache is None else cache
    is_slurm = kind == "slurm"
    parse = _slurm_job_step if is_slurm else PARSERS[kind]

    def unit(path):
        u = cache.get(path, False)
        if u is False:
            u = cache[path] = parse(path) if path.startswith("/") else None
        return u

    to_learn: set = set()
    fams = []
    for f in families:
        if not f.labels or f.labels[0] != "cgroup" or not (
                (f.kind == "counter" and f.name.startswith(UNIT_COUNTERS)) or f.name in UNIT_GAUGES):
            fams.append((f, None))
            continue
        us = [unit(values[0]) for values, _ in f.rows]
        if is_slurm and names is not None:
            to_learn.update(u[0] for u in us if u is not None)
        fams.append((f, us))
    if to_learn:
        names.learn(to_learn)
    show = names.display if (is_slurm and names is not None) else (lambda j: j)
    out = []
    sums = []
    for f, us in fams:
        if us is None:
            out.append(f)
            continue
        rows, acc = [], {}
        for (values, v), u in zip(f.rows, us):
            if is_slurm:
                job = show(u[0]) if u is not None else None
                extra = (job or "", f"{job}.{u[1]}" if u is not None and u[1] else "")
            else:
                job = u
                extra = (u or "",)
            rows.append((values + extra, v))
            if job is not None:
                key = (job,) + tuple(values[1:])
                acc[key] = acc.get(key, 0) + v
        out.append(Family(f.name, f.help, f.kind, f.labels + ((label, "step") if is_slurm else (label,)), rows))
        sums.append(Family(f"ceemsnet_{label}_" + f.name[len("ceemsnet_"):],
                           f"Sum per {label} of {f.name}" + ("_total" if f.kind == "counter" else ""), f.kind,
                           (label,) + f.labels[1:],
                           sorted(acc.items())))
    return out + sums
