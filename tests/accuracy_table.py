#!/usr/bin/env python3
"""docs/accuracy.md from the ground-truth comparisons the kernel tests recorded (`make accuracy`).

    python tests/accuracy_table.py [LOG ...] [--out docs/accuracy.md]

Reads .build/accuracy/*.jsonl (the host's sessions), the CEEMSNET-ACCURACY lines
of .build/vm-logs/*.log (each VM run's output, kept there when VMs run side by
side) and of every LOG given (a saved `make test` or `make test-vm` output: with
VM_JOBS=1 the VMs' output is only there). Each comparison keeps its latest record
per run and pass. The recorder and the record format: tests/kernel/accuracy.py.
It lives beside the tests, not in bench/: it renders what the tests checked, not
a measurement.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.kernel.accuracy import PREFIX, RECORDS_DIR, parse_line  # noqa: E402

OUT = os.path.join(ROOT, "docs", "accuracy.md")
VM_LOGS = os.path.join(ROOT, ".build", "vm-logs")
# the section a record goes to, by the test file that made it (first match)
SECTIONS = (("tests/kernel/test_net.py", "Network"), ("tests/kernel/test_skb.py", "Network"),
            ("tests/kernel/test_vfs.py", "File IO"), ("tests/kernel/test_continuity.py", "Continuity"),
            ("tests/slurm/", "SLURM"))
ORDER = ("Network", "File IO", "Continuity", "SLURM", "Other")
INTRO = {
    "Network": "Socket payload bytes, calls and errors per cgroup (`--collectors=net`), and the socket-level "
               "bytes beside the cgroup_skb backend.",
    "File IO": "Bytes, calls and errors of reads and writes per file system, and operations with their errors "
               "(`--collectors=vfs`), between two scrapes around the workload.",
    "Continuity": "Counts across exporter restarts, crashes (SIGKILL) and upgrades, from the pinned maps "
                  "([continuity.md](continuity.md)).",
    "SLURM": "A real SLURM cluster (tests/slurm, the `slurm` run): each job's bytes at every "
             "`--cgroup.aggregate` level, and `ceemsnet report` from the store.",
    "Other": "Comparisons from tests outside the files above.",
}


class InputError(Exception):
    """A log or record file that cannot be read: one line to stderr, exit 2."""


def read_records(path: str) -> list[dict]:
    """The records in a JSONL file (one JSON object a line) or a log (PREFIX lines anywhere)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror or e}") from None
    jsonl = path.endswith(".jsonl")
    return [r for r in (parse_line(PREFIX + ln if jsonl else ln) for ln in lines) if r]


def latest(records: list[dict]) -> list[dict]:
    """One record per comparison (run, pass, test, workload, metric): the latest, in the order
    the comparisons were first seen."""
    out: dict[tuple, dict] = {}
    for r in records:
        k = (r.get("run"), r.get("pass"), r.get("node"), r.get("workload"), r.get("metric"))
        if k not in out or (r.get("at") or "") >= (out[k].get("at") or ""):
            out[k] = r  # a key seen before keeps its place
    return list(out.values())


def section(rec: dict) -> str:
    node = rec.get("node") or ""
    return next((name for path, name in SECTIONS if path in node), "Other")


def num(v) -> str:
    if v is None:
        return "no series"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.6g}" if isinstance(v, float) else str(v)


def difference(rec: dict):
    """counted - expected; None where either is missing or not a number."""
    e, c = rec.get("expected"), rec.get("counted")
    if isinstance(e, (int, float)) and isinstance(c, (int, float)):
        return c - e
    return None


def exact(rec: dict) -> bool:
    return rec.get("counted") == rec.get("expected") and rec.get("counted") is not None


def cell(text) -> str:
    """A table cell: pipes escaped, no line breaks."""
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def run_label(rec: dict) -> str:
    return f"{rec.get('run')}/{rec.get('pass')}"


def rows(records: list[dict]) -> list[dict]:
    """The table rows of one section: comparisons alike in all but where they ran (workload,
    metric, expected and counted) are one row, listing each kernel and run; rows of a workload
    and of a metric stay together."""
    out: dict[tuple, dict] = {}
    for r in records:
        k = (r.get("workload"), r.get("truth"), r.get("metric"), r.get("unit"), r.get("expected"), r.get("counted"))
        row = out.setdefault(k, {**r, "where": []})
        w = (r.get("kernel") or "?", f"{r.get('hook') or '?'} ({run_label(r)})")
        if w not in row["where"]:
            row["where"].append(w)
    # each workload's rows together, each metric's rows (other runs' values) together, in first-seen order
    first: dict = {}
    for r in records:
        first.setdefault(r.get("workload"), len(first))
        first.setdefault((r.get("workload"), r.get("metric")), len(first))
    return sorted(out.values(), key=lambda r: (first[r.get("workload")], first[(r.get("workload"), r.get("metric"))]))


def metric_cell(metric: str, unit: str) -> str:
    """The series in code, what the test adds after it ("}, sender 1") and the unit in words."""
    name, sep, rest = (metric or "").partition("}, ")
    text = f"`{cell(name + sep[:1])}`" + (f", {cell(rest)}" if sep else "")
    return text + (f" ({cell(unit)})" if unit else "")


def render_row(row: dict, same_workload: bool = False) -> str:
    """A table row; `same_workload`: the row above has the same workload, left blank here if exact."""
    d = difference(row)
    if exact(row):
        diff = "0"
    elif d is not None:
        diff = f"**{d:+,} (differs)**"
    else:
        diff = "**differs**"
    counted = num(row.get("counted")) if exact(row) else f"**{num(row.get('counted'))}**"
    kernels = "<br>".join(cell(k) for k, _ in row["where"])
    hooks = "<br>".join(cell(h) for _, h in row["where"])
    mark = "**≠** " if not exact(row) else ""
    workload = "" if same_workload and exact(row) else cell(row.get("workload"))  # a difference names it
    return (f"| {(mark + workload).strip()} | {cell(row.get('truth'))} | {metric_cell(row.get('metric'), row.get('unit'))} "
            f"| {num(row.get('expected'))} | {counted} | {diff} | {kernels} | {hooks} |")


def render(records: list[dict], sources: list[str], now: datetime.datetime) -> str:
    """docs/accuracy.md from the records (latest() already applied) and the files they came from."""
    runs: dict[str, list[dict]] = {}
    for r in records:
        runs.setdefault(run_label(r), []).append(r)
    differing = [r for r in records if not exact(r)]
    out = [
        "# Accuracy: what \"exact\" was checked against",
        "",
        "<!-- generated by `make accuracy` (tests/accuracy_table.py); do not edit, regenerate -->",
        "",
        "Every row is a comparison a test makes on a real kernel: a process in a fresh cgroup moves a "
        "known number of bytes (or makes known calls), and the test compares the exporter's counter "
        "with that ground truth, which the test makes itself and never reads from the exporter. "
        "*Expected* is the ground truth, *counted* the exporter's value, *difference* counted minus "
        "expected. The hook family column names the family and BPF object that counted (from "
        "`ceemsnet_hook_info`), and the run and pass of the test matrix ([testing.md](testing.md#the-vm-suite)). "
        "Rows alike but for where they ran are one row, listing each kernel and run; a workload's name "
        "is given on its first row.",
        "",
        f"Generated {now.strftime('%Y-%m-%d %H:%M UTC')} from {len(records)} comparisons in "
        f"{len(runs)} {'run' if len(runs) == 1 else 'runs'} (run/pass of the matrix), read from {', '.join(f'`{s}`' for s in sources) or 'no file'}.",
        "",
        "| run/pass | kernel | arch | hook families | comparisons | differ | recorded |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, recs in sorted(runs.items()):
        kernels = sorted({r.get("kernel") or "?" for r in recs})
        arches = sorted({r.get("arch") or "?" for r in recs})
        families = sorted({h.split(":")[0].strip() for r in recs for h in (r.get("hook") or "?").split(";")})
        ats = sorted(r.get("at") or "" for r in recs)
        when = ats[0][:10] if ats[0][:10] == ats[-1][:10] else f"{ats[0][:10]} - {ats[-1][:10]}"
        bad = sum(not exact(r) for r in recs)
        out.append(f"| {cell(label)} | {cell(', '.join(kernels))} | {cell(', '.join(arches))} | "
                   f"{cell(', '.join(families))} | {len(recs)} | {f'**{bad}**' if bad else 0} | {when} |")
    out += ["", "## Differences", ""]
    if differing:
        out.append(f"{len(differing)} of {len(records)} comparisons differ (marked **≠** in the tables below):")
        out.append("")
        for r in differing:
            d = difference(r)
            out.append(f"- {cell(r.get('workload'))}: `{cell(r.get('metric'))}` expected {num(r.get('expected'))}, "
                       f"counted {num(r.get('counted'))}{f' ({d:+,})' if d is not None else ''}; "
                       f"{cell(r.get('kernel'))}, {cell(r.get('hook'))} ({run_label(r)}), `{cell(r.get('node'))}`")
    else:
        out.append(f"None: all {len(records)} comparisons were exact.")
    out += ["", "## What \"exact\" means here, and what is not exact", "",
            "- Network counters are the **payload bytes** a task passes through TCP and UDP socket calls, "
            "attributed to the task's cgroup at the call. Headers, retransmissions and ACKs are not in them; "
            "the cgroup_skb backend counts at the IP layer, where a test can only bound its bytes "
            "(payload + headers, [kernels.md](kernels.md#the-cgroup_skb-backend---collectorsskb-and-ceemsnet-compare)); "
            "only its UDP counts, with a known 28 B of headers per datagram, are compared exactly here.",
            "- Calls are compared with the child's own count of its system calls, except for `sendfile()`: "
            "since 6.5 one call becomes several `sendmsg` calls inside the kernel.",
            "- What the counters do not see at all (RDMA, kernel-side NFS/Lustre clients, `MSG_PEEK`, "
            "`splice()` from TCP, MPTCP, SCTP, ...): [kernels.md, \"What is counted, and what is not\"]"
            "(kernels.md#what-is-counted-and-what-is-not).",
            "- Hook families that the kernel can preempt inside our program (fexit and, from 7.0, tracepoint, "
            "on kernels with full or lazy preemption) lose events when several tasks share a CPU: on 7.3, "
            "283 of 12,000 sends with the tracepoint family. `auto` puts them last there; the runs that load "
            "them on such kernels check that they load and attach, not that they count exactly, so they have "
            "no rows here ([kernels.md, \"Kernels and objects\"](kernels.md#kernels-and-objects)).",
            "- File IO is counted at the VFS layer per file system type; pipe, socket and procfs IO are left "
            "out ([kernels.md](kernels.md#filesystem-io---collectorsvfs)).",
            "- A run that is not in the table was not recorded: regenerate after `make test` "
            "(the host in `.build/accuracy`, the VMs in `.build/vm-logs`; with `VM_JOBS=1` save the output "
            "and pass it: `make accuracy LOGS=saved.log`).",
            ]
    by_section: dict[str, list[dict]] = {}
    for r in records:
        by_section.setdefault(section(r), []).append(r)
    for name in ORDER:
        recs = by_section.get(name)
        if not recs:
            continue
        out += ["", f"## {name}", "", INTRO[name], "",
                "| workload | source of truth | metric | expected | counted | difference | kernel | hook family (run/pass) |",
                "|---|---|---|---|---|---|---|---|"]
        table_rows = rows(recs)
        out += [render_row(row, i > 0 and row.get("workload") == table_rows[i - 1].get("workload"))
                for i, row in enumerate(table_rows)]
        tests = sorted({r.get("node") or "?" for r in recs})
        out += ["", "Tests: " + ", ".join(f"`{t}`" for t in tests) + "."]
    return "\n".join(out) + "\n"


def sources_of(records_dir: str, vm_logs: str, logs: list[str]) -> list[str]:
    return (sorted(glob.glob(os.path.join(records_dir, "*.jsonl"))) + sorted(glob.glob(os.path.join(vm_logs, "*.log")))
            + list(logs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="*", metavar="LOG", help="saved test output with CEEMSNET-ACCURACY lines")
    ap.add_argument("--out", default=OUT, help="the Markdown file to write (default docs/accuracy.md)")
    ap.add_argument("--records", default=RECORDS_DIR, help="the host's records (default .build/accuracy)")
    ap.add_argument("--vm-logs", default=VM_LOGS, help="the VM runs' logs (default .build/vm-logs)")
    args = ap.parse_args(argv)
    paths = sources_of(args.records, args.vm_logs, args.logs)
    try:
        recs, used = [], []
        for p in paths:
            got = read_records(p)
            recs += got
            if got:
                used.append(os.path.relpath(p, ROOT) if os.path.abspath(p).startswith(ROOT + os.sep) else p)
    except InputError as e:
        print(f"accuracy_table: {e}", file=sys.stderr)
        return 2
    if not recs:
        print(f"accuracy_table: no accuracy records in {len(paths)} files: run the kernel tests first "
              "(make test, or .venv/bin/pytest tests/kernel as root)", file=sys.stderr)
        return 1
    recs = latest(recs)
    text = render(recs, used, datetime.datetime.now(datetime.timezone.utc))
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, args.out)
    bad = sum(not exact(r) for r in recs)
    print(f"{os.path.relpath(args.out)}: {len(recs)} comparisons from {len(used)} files, {bad} differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
