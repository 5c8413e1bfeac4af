"""The ground-truth comparisons the kernel tests make, recorded for docs/accuracy.md.

A test calls record() with what its own workload says it moved (the plan's
bytes, a child's tally of its system calls, ...) and what the exporter
counted, just before it asserts the two equal: recording never changes an
outcome, and a failing comparison is recorded too. At the end of the pytest
session the records go
- to .build/accuracy/<run>-<pass>.jsonl, outside a VM: a test that recorded
  this session replaces its earlier records there, the others stay;
- to the output, one line each: `CEEMSNET-ACCURACY {json}` (the terminal
  summary, tests/kernel/conftest.py; at exit where that conftest is not
  loaded, as in the SLURM suite). A VM's writes to the checkout go with its
  overlay, so its records reach the host in its output
  (.build/vm-logs/<kernel>.log).
`make accuracy` (tests/accuracy_table.py) reads both and writes docs/accuracy.md.
Only the standard library: that script imports this module too.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import json
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDS_DIR = os.path.join(ROOT, ".build", "accuracy")
PREFIX = "CEEMSNET-ACCURACY "
# a record's fields, in the order a line carries them
FIELDS = ("workload", "truth", "metric", "unit", "expected", "counted", "kernel", "arch", "run", "pass", "hook",
          "node", "at")

_pending: list[dict] = []
_atexit = False


def number(v):
    """An exported float that is a whole number as an int (JSON and the table show 100000, not
    100000.0); None (no such series) stays None."""
    if v is None:
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def run_name() -> str:
    """The matrix run (tests/vm/matrix.py) the session belongs to; "host" outside a VM."""
    return os.environ.get("CEEMSNET_VM_RUN") or os.environ.get("CEEMSNET_VM") or "host"


def pass_name() -> str:
    """The run's pass (CEEMSNET_TEST_PASS, e.g. "fexit:hash"), else the requested family."""
    return os.environ.get("CEEMSNET_TEST_PASS") or os.environ.get("CEEMSNET_TEST_HOOK") or "auto"


def hooks_of(samples, subsystem: str) -> str:
    """"family: object" of what the exporter says it attached for `subsystem` (its
    ceemsnet_hook_info series), e.g. "tracepoint: net-tracepoint-6.3-slots"; "" if none."""
    seen = set()
    for name, labels in samples or ():
        if name == "ceemsnet_hook_info":
            d = dict(labels)
            if d.get("subsystem") == subsystem:
                seen.add((d.get("hook", "?"), os.path.basename(d.get("object", "")).removesuffix(".bpf.o")))
    return "; ".join(f"{h}: {o}" if o else h for h, o in sorted(seen))


def record(workload: str, truth: str, metric: str, expected, counted, unit: str = "bytes", *, samples=None,
           subsystem: str = "net") -> None:
    """One comparison: `expected` from the test's own ground truth (`truth` says which), `counted`
    the exporter's value (None: no such series). `samples` (Exporter.samples()) names the hook
    family and object that counted; without it the requested family (CEEMSNET_TEST_HOOK) is shown."""
    global _atexit
    hook = hooks_of(samples, subsystem) or os.environ.get("CEEMSNET_TEST_HOOK", "auto")
    node = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0]
    u = os.uname()
    _pending.append({
        "workload": workload, "truth": truth, "metric": metric, "unit": unit,
        "expected": number(expected), "counted": number(counted),
        "kernel": u.release, "arch": u.machine, "run": run_name(), "pass": pass_name(), "hook": hook,
        "node": node, "at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    })
    if not _atexit:  # where no conftest hook flushes (the SLURM suite), the exit does
        atexit.register(_flush_at_exit)
        _atexit = True


def to_line(rec: dict) -> str:
    """A record as one output line (JSON escapes newlines: one record, one line)."""
    return PREFIX + json.dumps({k: rec.get(k) for k in FIELDS}, ensure_ascii=True, separators=(",", ":"))


def parse_line(line: str) -> dict | None:
    """The record a line carries (anywhere in it: a console may put text before it and a
    carriage return after), or None if it carries none or a broken one."""
    i = line.find(PREFIX)
    if i < 0:
        return None
    try:
        rec, _ = json.JSONDecoder().raw_decode(line[i + len(PREFIX):].lstrip())
    except ValueError:
        return None
    if not isinstance(rec, dict) or not {"workload", "metric", "expected", "counted"} <= rec.keys():
        return None
    return rec


def records_file() -> str:
    """This session's file: .build/accuracy/<run>-<pass>.jsonl."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{run_name()}-{pass_name()}")
    return os.path.join(RECORDS_DIR, f"{safe}.jsonl")


def merge(old: list[dict], new: list[dict]) -> list[dict]:
    """The file's records after a session: the tests that recorded now replace theirs."""
    nodes = {r.get("node") for r in new}
    return [r for r in old if r.get("node") not in nodes] + new


def save(records: list[dict], path: str) -> None:
    """Merge `records` into the JSONL file at `path`, under a lock (sessions may end at once)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = []
        with contextlib.suppress(FileNotFoundError), open(path) as f:
            old = [r for r in (parse_line(PREFIX + ln) for ln in f) if r]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(to_line(r)[len(PREFIX):] + "\n" for r in merge(old, records))
        os.replace(tmp, path)


def flush(write_line) -> int:
    """Save the session's records (outside a VM) and write each as a line; returns how many."""
    recs = list(_pending)
    _pending.clear()
    if not recs:
        return 0
    if not os.environ.get("CEEMSNET_VM"):  # a VM's writes to the checkout are discarded
        try:
            save(recs, records_file())
        except OSError as e:
            write_line(f"accuracy records not saved in {RECORDS_DIR}: {e}")
    for r in recs:
        write_line(to_line(r))
    return len(recs)


def _flush_at_exit():
    flush(lambda s: print(s, flush=True))


def terminal_summary(terminalreporter) -> None:
    """tests/kernel/conftest.py's pytest_terminal_summary: the records, one line each."""
    if _pending:
        terminalreporter.write_sep("-", f"{len(_pending)} accuracy records (make accuracy: docs/accuracy.md)")
        flush(terminalreporter.write_line)
