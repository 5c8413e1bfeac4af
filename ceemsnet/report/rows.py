"""Report rows and their output formats, the same for every source."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

from ceemsnet.serving.store import COLUMNS


# the table's header of each column
HEADERS = {"net_egress_bytes": "NET OUT", "net_ingress_bytes": "NET IN", "net_egress_calls": "CALLS OUT",
           "net_ingress_calls": "CALLS IN", "vfs_read_bytes": "READ", "vfs_write_bytes": "WRITTEN",
           "vfs_ops": "FILE OPS", "skb_egress_bytes": "SKB OUT", "skb_ingress_bytes": "SKB IN",
           "rdma_egress_bytes": "RDMA OUT", "rdma_ingress_bytes": "RDMA IN"}
assert list(HEADERS) == list(COLUMNS)


def make_row(by: str, key, values: dict, first: float, last: float) -> dict:
    """One report row, the same from the store and from Prometheus: the key, every
    column (None where its collector never counted), then first and last seen (UTC)."""
    return {by: key, **{c: values.get(c) for c in COLUMNS}, "first_seen": iso(first), "last_seen": iso(last)}


def iso(t: float) -> str:
    """A Unix time as ISO 8601 UTC, to the second."""
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
    """table (human units, a TOTAL line), csv or json."""
    cols = [by, *COLUMNS, "first_seen", "last_seen"]
    # keys beyond (SLURM's facts from sacct, job_id, jobs), in their order
    extra = [k for k in (rows[0] if rows else {}) if k not in cols]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        cols += extra
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in cols})
        return buf.getvalue().rstrip("\n")
    if not rows:
        return "no accounting data in that time range"
    total = {c: (sum(r[c] for r in rows if r[c] is not None) if any(r[c] is not None for r in rows) else None)
             for c in COLUMNS}
    facts = [k for k in ("job", "user", "account", "state") if k in extra and any(r.get(k) for r in rows)]
    header = [by.upper(), *HEADERS.values()]
    header += [k.upper() for k in facts]
    body = [[str(r[by])] + [_human(r[c], "calls" not in c and c != "vfs_ops") for c in COLUMNS]
            + [str(r.get(k) or "-") for k in facts] for r in rows]
    body.append(["TOTAL"] + [_human(total[c], "calls" not in c and c != "vfs_ops") for c in COLUMNS]
                + [""] * len(facts))
    widths = [max(len(x[i]) for x in [header] + body) for i in range(len(header))]
    lines = ["  ".join(x[i].rjust(widths[i]) if i else x[i].ljust(widths[i]) for i in range(len(header))).rstrip()
             for x in [header] + body]
    return "\n".join(lines)
