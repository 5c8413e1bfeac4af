"""`ceemsnet job JOBID`: one job as its user reads it (pure: assembly and rendering).

The command (commands/job.py) gathers; this module turns what it gathered
into one view, a dict that is also the `--format=json` object:

- `job`, `job_id`: the job as SLURM shows it (123_2) and its raw id;
- `facts`: sacct's user, account, partition, job_name, state, start, end,
  elapsed, nodes (null where sacct has none); `node_names`: the node list
  expanded;
- `source`: `prometheus`, `record` (the job's SLURM record, `ceemsnet
  record`) or `none`; `source_detail`: which server or field;
- `totals`: every column (null: not counted); `steps`: one row per SLURM
  step (`step`: 0, batch, extern, ..., or `job` for the job's own
  directory); `nodes`: one row per node (`node`);
- `rates`: {column: [[unix time, per second], ...]} (Prometheus only);
- `notes`: [{rule, message}] from the thresholds (load_rules).

Notes' rules and their defaults are documented in docs/reports.md.
"""

from __future__ import annotations

import datetime as dt
import json

import yaml

from ceemsnet import CeemsnetError
from ceemsnet.attribution.slurm import FACTS, parse
from ceemsnet.serving.store import COLUMNS
from ceemsnet.report.rows import HEADERS, _human

DEFAULT_CONFIG = "/etc/ceemsnet/job-notes.yml"
BLOCKS = "▁▂▃▄▅▆▇█"
# the columns drawn as sparklines, in this order
RATE_COLUMNS = ("net_egress_bytes", "net_ingress_bytes", "vfs_read_bytes", "vfs_write_bytes",
                "rdma_egress_bytes", "rdma_ingress_bytes")
GIB = 1 << 30
MIB = 1 << 20

# rule name -> its default settings; `message` is formatted with the settings and {value}
DEFAULT_RULES = {
    "home_nfs_writes": {
        "threshold": GIB, "home_fstypes": ["nfs"], "scratch_fstypes": ["lustre", "gpfs", "beegfs", "cephfs"],
        "message": "wrote {value_h} to {home} file systems while {scratch} scratch exists: "
                   "put large output on scratch"},
    "no_internode_traffic": {
        "threshold": MIB, "message": "ran on {nodes} nodes but moved only {value_h} over sockets and RDMA: "
                                     "is it really using more than one node?"},
    "many_opens": {
        "threshold": 1_000_000, "message": "opened {value} files: many small files load the metadata "
                                           "servers; consider fewer, larger files"},
}


def load_rules(path: str | None, text: str | None = None) -> dict[str, dict]:
    """{rule: settings} from the YAML file (or text): each rule's settings over its defaults; a rule
    with `enabled: false` is left out. Without a file, the defaults. Errors: one-line CeemsnetError."""
    if path is None and text is None:
        return {k: dict(v) for k, v in DEFAULT_RULES.items()}
    where = path or "config"
    if text is None:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise CeemsnetError(f"cannot read --config {path}: {e.strerror or e}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise CeemsnetError(f"{where} is not YAML: {' '.join(str(e).split())}") from None
    rules = doc.get("rules", {}) if isinstance(doc, dict) else None
    if not isinstance(rules, dict):
        raise CeemsnetError(f"{where}: expected a mapping with `rules:` of rule name -> settings")
    out = {k: dict(v) for k, v in DEFAULT_RULES.items()}
    for name, settings in rules.items():
        if name not in DEFAULT_RULES:
            raise CeemsnetError(f"{where}: unknown rule {name!r} (known: {', '.join(DEFAULT_RULES)})")
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise CeemsnetError(f"{where}: rule {name}: expected a mapping of settings")
        for k, v in settings.items():
            if k not in DEFAULT_RULES[name] and k != "enabled":
                raise CeemsnetError(f"{where}: rule {name}: unknown setting {k!r}")
            if k == "threshold" and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise CeemsnetError(f"{where}: rule {name}: threshold must be a number >= 0, not {v!r}")
            if k.endswith("_fstypes") and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                raise CeemsnetError(f"{where}: rule {name}: {k} must be a list of fstype names")
            if k == "message" and not isinstance(v, str):
                raise CeemsnetError(f"{where}: rule {name}: message must be a string")
        if settings.get("enabled", True) is False:
            out.pop(name)
            continue
        out[name].update({k: v for k, v in settings.items() if k != "enabled"})
    return out


def notes(rules: dict[str, dict], view: dict, writes_by_fstype: dict[str, float] | None = None,
          fstypes_present: set[str] | None = None, ops_by_op: dict[str, float] | None = None) -> list[dict]:
    """[{rule, message}] of the rules the job crosses (pure). writes_by_fstype: the job's file
    writes per fstype label; fstypes_present: fstype labels any job wrote or read in the job's
    time; ops_by_op: the job's file operations per op. A rule whose data is missing says nothing."""
    out = []
    totals = view.get("totals", {})

    def say(name, value, **extra):
        r = rules[name]
        fields = {**r, **extra, "value": int(value), "value_h": _human(int(value))}
        try:
            msg = r["message"].format(**fields)
        except (KeyError, IndexError, ValueError) as e:
            msg = f"{r['message']} (message placeholder error: {e})"
        out.append({"rule": name, "message": msg})

    r = rules.get("home_nfs_writes")
    if r and writes_by_fstype is not None and fstypes_present is not None:
        home = sum(v for k, v in writes_by_fstype.items() if k in r["home_fstypes"])
        scratch = sorted(set(r["scratch_fstypes"]) & fstypes_present)
        if scratch and home > r["threshold"]:
            say("home_nfs_writes", home, home=",".join(r["home_fstypes"]), scratch=",".join(scratch))
    r = rules.get("no_internode_traffic")
    nodes = _node_count(view)
    if r and nodes > 1 and any(totals.get(c) is not None for c in ("net_egress_bytes", "rdma_egress_bytes")):
        moved = sum(totals.get(c) or 0 for c in ("net_egress_bytes", "net_ingress_bytes",
                                                  "rdma_egress_bytes", "rdma_ingress_bytes"))
        if moved <= r["threshold"]:
            say("no_internode_traffic", moved, nodes=nodes)
    r = rules.get("many_opens")
    if r:
        opens = None
        if ops_by_op is not None:
            opens = ops_by_op.get("open", 0) + ops_by_op.get("create", 0)
        if opens is not None and opens > r["threshold"]:
            say("many_opens", opens)
    return out


def _node_count(view: dict) -> int:
    listed = view.get("node_names") or []
    return max(len(listed), len(view.get("nodes") or []))


def split(per: dict[tuple, dict[str, float]], node_of) -> tuple[dict, list[dict], list[dict]]:
    """{(instance, cgroup): {column: value}} -> (totals, per-step rows, per-node rows) (pure).
    A column nobody counted stays None."""
    totals = {c: None for c in COLUMNS}
    steps: dict[str, dict] = {}
    nodes: dict[str, dict] = {}
    for (inst, cgroup), vals in sorted(per.items()):
        p = parse(cgroup)
        step = (p.step or "job") if p else "job"
        for key, acc in ((step, steps), (node_of(inst), nodes)):
            row = acc.setdefault(key, {c: None for c in COLUMNS})
            for c, v in vals.items():
                row[c] = (row[c] or 0) + round(v)
        for c, v in vals.items():
            totals[c] = (totals[c] or 0) + round(v)
    return (totals, [{"step": k, **v} for k, v in sorted(steps.items(), key=lambda kv: _step_order(kv[0]))],
            [{"node": k, **v} for k, v in sorted(nodes.items())])


def _step_order(step: str):
    first = step.split("+")[0]
    return (0, int(first), step) if first.isdigit() else (1, 0, step)


def sparkline(values: list[float | None]) -> str:
    """One block character per value, the highest a full block; a gap (None) is a space (pure)."""
    top = max((v for v in values if v is not None), default=0.0)
    out = []
    for v in values:
        if v is None:
            out.append(" ")
        elif top <= 0 or v <= 0:
            out.append(BLOCKS[0])
        else:
            out.append(BLOCKS[max(1, min(len(BLOCKS) - 1, round(v / top * (len(BLOCKS) - 1))))])
    return "".join(out)


def resample(series: list[tuple[float, float]], since: float, until: float, points: int) -> list[float | None]:
    """(t, v) samples -> `points` buckets across (since, until], each the mean of its samples or None."""
    width = max(1e-9, (until - since) / points)
    sums, counts = [0.0] * points, [0] * points
    for t, v in series:
        i = min(points - 1, max(0, int((t - since) / width)))
        sums[i] += v
        counts[i] += 1
    return [sums[i] / counts[i] if counts[i] else None for i in range(points)]


def _rate(v: float) -> str:
    for u in ("B/s", "KiB/s", "MiB/s", "GiB/s"):
        if v < 1024 or u == "GiB/s":
            return f"{v:.0f} {u}" if u == "B/s" else f"{v:.1f} {u}"
        v /= 1024
    return str(v)


def _table(rows: list[dict], key: str, cols: list[str]) -> list[str]:
    header = [key.upper(), *(HEADERS[c] for c in cols)]
    body = [[str(r[key])] + [_human(r[c], "calls" not in c and c != "vfs_ops") for c in cols] for r in rows]
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    return ["  " + "  ".join(x[i].rjust(widths[i]) if i else x[i].ljust(widths[i])
                             for i in range(len(header))).rstrip() for x in [header] + body]


def _when(t) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")


def render(view: dict, width: int = 60) -> str:
    """The terminal view: header, totals, per step, per node, rates, notes, source."""
    f = view.get("facts") or {}
    lines = [f"Job {view['job']}" + (f" (raw id {view['job_id']})" if view.get("job_id") not in (None, view["job"])
                                     else "") + (f"  {f['job_name']}" if f.get("job_name") else "")]
    pairs = [("User", f.get("user")), ("Account", f.get("account")), ("Partition", f.get("partition")),
             ("State", f.get("state")), ("Start", f.get("start")), ("End", f.get("end")),
             ("Elapsed", f.get("elapsed")), ("Nodes", f.get("nodes"))]
    for k, v in pairs:
        lines.append(f"  {k + ':':<10} {v if v is not None else '-'}")
    totals = view.get("totals") or {}
    cols = [c for c in COLUMNS if totals.get(c) is not None]
    lines.append("")
    if not cols:
        lines.append("Totals: nothing counted")
    else:
        lines.append("Totals")
        for c in cols:
            lines.append(f"  {HEADERS[c] + ':':<10} {_human(totals[c], 'calls' not in c and c != 'vfs_ops')}")
        if view.get("steps"):
            lines += ["", "Per step"] + _table(view["steps"], "step", cols)
        if view.get("nodes"):
            lines += ["", "Per node"] + _table(view["nodes"], "node", cols)
    rates = view.get("rates") or {}
    drawn = [c for c in RATE_COLUMNS if c in rates and any(v for _, v in rates[c])]
    if drawn:
        t0, t1 = view["range"]
        lines += ["", f"Rates over the job's life ({_when(t0)} .. {_when(t1)})"]
        for c in drawn:
            # a short job has fewer samples than the width: one character each, no gaps between them
            vals = [v for _, v in rates[c]] if len(rates[c]) <= width else resample(rates[c], t0, t1, width)
            peak = max(v for v in vals if v is not None)
            lines.append(f"  {HEADERS[c]:<9} {sparkline(vals)}  peak {_rate(peak)}")
    if view.get("notes"):
        lines += ["", "Notes"] + [f"  - {n['message']}  [{n['rule']}]" for n in view["notes"]]
    lines += ["", f"Source: {view.get('source_detail') or view.get('source')}"]
    return "\n".join(lines)


def to_json(view: dict) -> str:
    out = dict(view)
    out["facts"] = {k: (view.get("facts") or {}).get(k) for k in FACTS}
    out["rates"] = {c: [[t, v] for t, v in s] for c, s in (view.get("rates") or {}).items()}
    return json.dumps(out, indent=2)
