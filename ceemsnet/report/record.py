"""A job's totals as one line in its SLURM accounting record (`ceemsnet record`),
and that line read back (`ceemsnet report` for jobs no other source has).

The line is `ceemsnet:` and one compact JSON object, written with every `"`
as a backtick, which is what sacctmgr would make of it anyway (it turns
each quote into one, slurmdb.py): so what is stored is exactly what was
sent, and reading it back turns the backticks into quotes again. The
object's strings (node names) never hold a backtick, quote or backslash.
Keys (docs/reports.md ("The job's record in SLURM") explains each): `v` (format version, 1), `job`,
`complete`, the report's columns that were counted (rows.py: absent when no
collector counted it, never 0 for "not measured"), `start`, `end` (Unix
seconds), `sources` (exporters summed), `missing` (nodes or exporters whose
final totals were not scraped; only when incomplete), `nodes` (per node,
with --per-node).

Merging into a field another tool also writes (pure; `merge`): an empty
field gets the line; a field holding a ceemsnet line gets that line
replaced and every other line kept as it is; a field holding something else
gets the line appended after a newline (SLURM's burst buffer plugins
themselves append their messages to SystemComment as lines), unless that
content cannot be kept byte for byte through sacctmgr, or it is a payload
that must be the whole field (jobstats' `JS1:` in AdminComment): then
nothing is written and the reason is one line.
"""

from __future__ import annotations

import json
import re

from ceemsnet.serving.store import COLUMNS
from ceemsnet.attribution.slurmdb import MAX_FIELD, survives
from ceemsnet.report.rows import make_row

VERSION = 1
PREFIX = "ceemsnet:"
_SAFE = re.compile(r"[^A-Za-z0-9._:@+-]")
# content of other tools that must be the whole field: (prefix, whose)
WHOLE_FIELD = (("JS1:", "jobstats' JS1: summary (gzip+base64, decoded as the whole field)"),)


class Refused(Exception):
    """The field holds content ceemsnet must not change: the one-line reason."""


def safe_name(name: str) -> str:
    """A node or exporter name as the record may hold it (no quote, backtick, backslash, space)."""
    return _SAFE.sub("_", name) or "_"


def build(job: str, totals: dict, start: float | None, end: float | None, sources: int,
          missing: list[str] | None = None, nodes: dict[str, dict] | None = None) -> dict:
    """The record's object: counted columns only, whole numbers."""
    rec: dict = {"v": VERSION, "job": safe_name(job), "complete": not missing}
    for c in COLUMNS:
        if totals.get(c) is not None:
            rec[c] = int(round(totals[c]))
    rec["start"] = None if start is None else int(start)
    rec["end"] = None if end is None else int(end)
    rec["sources"] = sources
    if missing:
        rec["missing"] = sorted(safe_name(m) for m in missing)
    if nodes:
        rec["nodes"] = {safe_name(n): {c: int(round(v[c])) for c in COLUMNS if v.get(c) is not None}
                        for n, v in sorted(nodes.items())}
    return rec


def encode(rec: dict) -> str:
    """The field line: ceemsnet: + compact JSON, quotes as backticks."""
    text = json.dumps(rec, separators=(",", ":"), ensure_ascii=True)
    assert "`" not in text and "\\" not in text and "'" not in text, text
    return PREFIX + text.replace('"', "`")


def decode(text: str | None) -> dict | None:
    """The ceemsnet record in a field's content (any line), or None. Tolerates what sacctmgr
    did to it (quotes as backticks; lower case before 23.02)."""
    for line in (text or "").split("\n"):
        line = line.strip()
        if not line.lower().startswith(PREFIX):
            continue
        try:
            rec, _ = json.JSONDecoder().raw_decode(line[len(PREFIX):].replace("`", '"'))
        except ValueError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("v"), int):
            return rec
    return None


def merge(old: str | None, line: str, field: str, lowers: bool) -> str:
    """The field's new content with `line` as ceemsnet's record in it (module docstring);
    Refused if that would change what another tool wrote."""
    old = old or ""
    if not old.strip():
        return line
    for prefix, whose in WHOLE_FIELD:
        # any case: sacctmgr before 23.02 stored jobstats' own JS1: lower-cased (SchedMD bug 14338)
        if old.lstrip().lower().startswith(prefix.lower()):
            raise Refused(f"{field} holds {whose}, which must stay the whole field: nothing written "
                          f"(choose another --field, e.g. SystemComment)")
    kept = [ln for ln in old.split("\n") if not ln.strip().lower().startswith(PREFIX)]
    others = "\n".join(kept).strip("\n")
    if others and not survives(others, lowers):
        what = "capitals, which this sacctmgr (before 23.02) lower-cases" if lowers and others != others.lower() \
            and survives(others, False) else "quotes, backslashes or edge spaces, which sacctmgr changes"
        raise Refused(f"{field} holds another tool's text with {what}: writing ceemsnet's line would change "
                      f"it, so nothing was written (choose another --field)")
    new = f"{others}\n{line}" if others else line
    if len(new.encode()) > MAX_FIELD:
        raise Refused(f"{field} would hold {len(new.encode())} bytes, more than the database's "
                      f"{MAX_FIELD}: nothing written")
    return new


def row(raw: str, rec: dict) -> dict:
    """A report row (by job) from a record: its columns, first/last seen from its start and end."""
    vals = {c: rec.get(c) if isinstance(rec.get(c), int) else None for c in COLUMNS}
    start = rec.get("start") if isinstance(rec.get("start"), (int, float)) else 0
    end = rec.get("end") if isinstance(rec.get("end"), (int, float)) else start
    return make_row("job", raw, vals, start, end)
