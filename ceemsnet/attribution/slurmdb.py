"""A job's record in SLURM's accounting database: read with `sacct`, written
with `sacctmgr -i modify job where jobid=J set <Field>=<value>` (no SLURM
protocol is spoken; what `ceemsnet record` and `report` use).

What sacctmgr does to a value (read in SchedMD/slurm, src/sacctmgr/common.c
strip_quotes() and job_functions.c _set_rec(), tags slurm-22-05-9-1 and
master at 284c3b95f0):

- every `"` and `'` in it becomes a backtick, in every release: it is the only
  guard against SQL quoting before slurmdbd puts the value between '...'
  (as_mysql_modify_job() does not escape it); a backslash then reaches MySQL
  as an escape character;
- before 23.02 (commit 933bf55510, "do not force AdminComment/Comment/
  SystemComment to lower-case") the whole value is lower-cased;
- leading spaces go (and, from 23.02, trailing ones).

So a value survives byte for byte only without quotes and backslashes, and,
on 22.05, without capitals: `survives()` says whether one does.

Which job `jobid=` matches (as_mysql_jobacct_process.c setup_job_cond_limits()):
`jobid=N` selects id_job N *or* het_job_id N *or* id_array_job N, so the raw
id of an array's first task, or of a heterogeneous leader, names every task or
component: jobs are named as sacct shows them (123_2, 100+1), which match one.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess

from packaging.version import InvalidVersion, Version

from ceemsnet.attribution.slurm import FINAL_STATES, SacctError

# the job record's text fields `sacctmgr modify job set` takes, as sacct names them
# (Extra from 23.02; the others in 22.05, Debian 12's release, and every one since)
FIELDS = {"systemcomment": "SystemComment", "admincomment": "AdminComment", "comment": "Comment",
          "extra": "Extra"}
# MySQL's TEXT column (admin_comment, system_comment, derived_es, extra in job_table)
MAX_FIELD = 65535
_HOSTLIST = re.compile(r"([^,\[]+)(?:\[([^\]]*)\])?(,|$)")


def field_name(text: str) -> str:
    """--field's value -> sacct's spelling of it; an error naming the choices."""
    f = FIELDS.get(text.strip().lower())
    if f is None:
        raise ValueError(f"not a job record field sacctmgr can set: {text!r} (choose one of "
                         f"{', '.join(FIELDS.values())})")
    return f


def expand_hostlist(text: str | None) -> list[str]:
    """SLURM's node list (node[01-03,7],gpu1) -> its names, in order (pure; what
    `scontrol show hostnames` prints, for the forms sacct's NodeList uses)."""
    if not text or text in ("None assigned", "(null)"):
        return []
    out: list[str] = []
    pos = 0
    while pos < len(text):
        m = _HOSTLIST.match(text, pos)
        if m is None:
            raise ValueError(f"cannot read SLURM's node list {text!r}")
        prefix, ranges = m.group(1), m.group(2)
        if ranges is None:
            out.append(prefix)
        else:
            for part in ranges.split(","):
                lo, _, hi = part.partition("-")
                if not lo.isdigit() or (hi and not hi.isdigit()):
                    raise ValueError(f"cannot read SLURM's node list {text!r}")
                width = len(lo)
                for n in range(int(lo), int(hi or lo) + 1):
                    out.append(f"{prefix}{n:0{width}d}")
        pos = m.end()
    return out


def survives(value: str, lowers: bool) -> bool:
    """True if sacctmgr stores `value` byte for byte (module docstring); `lowers`: this
    sacctmgr lower-cases (before 23.02)."""
    if any(c in value for c in "\"'\\"):
        return False
    if value != value.strip(" \t\n"):
        return False
    return not (lowers and value != value.lower())


def _exe(program: str, what: str) -> str:
    exe = shutil.which(program)
    if exe is None:
        raise SacctError(f"{what} is not installed (not on PATH)" if program == what else
                         f"{program} ({what}) is not installed (not on PATH)")
    return exe


def _run(argv: list[str], what: str, timeout: float) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                           stdin=subprocess.DEVNULL, env={**os.environ, "SLURM_TIME_FORMAT": "%s"})
    except subprocess.TimeoutExpired:
        raise SacctError(f"{what} did not answer within {timeout:g} s") from None
    except OSError as e:
        raise SacctError(f"cannot run {what}: {e.strerror or e}") from None
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise SacctError(f"{what} failed: {msg.strip()}")
    return r.stdout


def sacctmgr_lowers(sacctmgr: str = "sacctmgr", timeout: float = 30.0) -> bool:
    """True if this sacctmgr lower-cases what it sets (releases before 23.02); unknown: True."""
    out = _run([_exe(sacctmgr, "sacctmgr"), "--version"], "sacctmgr --version", timeout)
    m = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    try:
        return m is None or Version(m.group(0)) < Version("23.02")
    except InvalidVersion:
        return True


def _time(text: str) -> float | None:
    """Start or End as sacct prints it with SLURM_TIME_FORMAT=%s: Unix seconds. (Not an ISO time with
    %z: 22.05's sacct prints a date into a buffer of the field's width, 19 characters for Start and
    End, print_fields_date(), and an offset does not fit.)"""
    text = text.strip()
    return float(text) if text.isdigit() else None


def parse_records(text: str, fields: tuple[str, ...]) -> dict[str, dict]:
    """`sacct -X -P --noheader --format=JobIDRaw,...,<text field>` -> {raw id: {field: value}} (pure).

    The last field is free text that may hold '|' and newlines (a burst buffer's
    messages are lines): a line that starts `<raw id>|` with the right number of
    fields before the last opens a job; any other line continues the one before."""
    out: dict[str, dict] = {}
    cur = None
    n = len(fields)
    for line in text.split("\n"):
        cols = line.split("|", n - 1)
        if len(cols) == n and re.fullmatch(r"[0-9]+|s[0-9A-Z]{13}", cols[0]) and "." not in cols[1]:
            cur = out[cols[0]] = dict(zip(fields, cols))
        elif cur is not None:
            cur[fields[-1]] += "\n" + line
    for rec in out.values():
        rec[fields[-1]] = rec[fields[-1]].rstrip("\n")
    return out


def job_end(job: str, field: str, sacct: str = "sacct", timeout: float = 30.0) -> dict | None:
    """One job's allocation record: {raw, job (as SLURM shows it), state, start, end (Unix times or
    None), nodes [names], text (the field's content)}; None if sacct does not know it."""
    fields = ("JobIDRaw", "JobID", "State", "Start", "End", "NodeList", field)
    out = _run([_exe(sacct, "sacct"), "-X", "-P", "--noheader", "--format=" + ",".join(fields),
                "--starttime=1970-01-01", "-j", job], "sacct", timeout)
    recs = parse_records(out, fields)
    # asked by the id SLURM shows (123_2) or the raw one (125)
    rec = next((r for r in recs.values() if job in (r["JobIDRaw"], r["JobID"])), None)
    if rec is None:
        return None
    state = rec["State"].split()[0] if rec["State"].strip() else ""
    end = _time(rec["End"])
    return {"raw": rec["JobIDRaw"], "job": rec["JobID"] or rec["JobIDRaw"], "state": state,
            "start": _time(rec["Start"]), "end": end if state in FINAL_STATES else None,
            "nodes": expand_hostlist(rec["NodeList"]), "text": rec[field]}


def read_fields(jobs: list[str] | None, field: str, sacct: str = "sacct", since: float | None = None,
                until: float | None = None, timeout: float = 60.0) -> dict[str, dict]:
    """{raw id: {"job": as shown, "text": the field}} of these jobs, or of every user's jobs that ran
    between since and until (sacct -a -S -E)."""
    fields = ("JobIDRaw", "JobID", field)
    argv = [_exe(sacct, "sacct"), "-X", "-P", "--noheader", "--format=" + ",".join(fields)]
    if jobs:
        argv += ["--starttime=1970-01-01", "-j", ",".join(jobs)]
    else:
        fmt = "%Y-%m-%dT%H:%M:%S"
        argv += ["-a", "-S", dt.datetime.fromtimestamp(since).strftime(fmt),
                 "-E", dt.datetime.fromtimestamp(until).strftime(fmt)]
    recs = parse_records(_run(argv, "sacct", timeout), fields)
    return {k: {"job": r["JobID"] or k, "text": r[field]} for k, r in recs.items()}


def write_field(job: str, field: str, value: str, sacctmgr: str = "sacctmgr", timeout: float = 60.0) -> str:
    """`sacctmgr -i modify job where jobid=<job> set <field>=<value>`: sacctmgr's own words.
    `job` as SLURM shows it (123_2, 100+1), so that it names one record."""
    out = _run([_exe(sacctmgr, "sacctmgr"), "-i", "modify", "job", "where", f"jobid={job}", "set",
                f"{field}={value}"], "sacctmgr", timeout)
    if "Nothing modified" in out or "Modified" not in out:
        raise SacctError(f"sacctmgr modified nothing for job {job}: {' '.join(out.split())[:200] or 'no output'}")
    return out
