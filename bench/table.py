#!/usr/bin/env python3
"""Run benchmarks with --rows and print one table of all their figures (`make bench`).

    bench/table.py [--vm KERNEL]... SCRIPT[:ARGS] ...

Each SCRIPT (a path under bench/, with optional space-separated ARGS after a
colon) runs as `python SCRIPT --rows ARGS`, on the host or, with --vm, in
each named VM: one boot per kernel (tests/vm/run.sh KERNEL sh -c ...) runs
every script in turn, each one's output after a marker line. A script that
is missing, or that fails, gets one line saying so in the table instead of
its rows. The rows protocol is in bench/rows.py.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = os.path.join(ROOT, ".venv", "bin", "python")
KEYS = ("what", "value", "unit", "baseline", "baseline_what", "ratio", "target", "meets")


MARK = "@@ceemsnet-bench@@"


def parse(lines: list[str]) -> tuple[list[dict], int]:
    """The well-formed rows among a script's output lines, and how many were malformed."""
    rows, bad = [], 0
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if not all(k in r for k in KEYS):
            bad += 1
            continue
        rows.append(r)
    return rows, bad


def verdict(script: str, where: str, rows: list[dict], bad: int, rc: int | None) -> str | None:
    if rc is None:
        return f"{script} ({where}): did not finish (the VM stopped first; see its output above)"
    if rc != 0:
        return f"{script} ({where}): exited {rc} (see its output above)"
    if not rows:
        return f"{script} ({where}): printed no rows" + (f" ({bad} malformed)" if bad else "")
    return None


def argv_of(spec: str) -> tuple[str, list[str]]:
    script, _, args = spec.partition(":")
    return script, [".venv/bin/python", script, "--rows", *shlex.split(args)]


def run(spec: str) -> tuple[list[dict], str | None]:
    """One script on the host."""
    script, argv = argv_of(spec)
    if not os.path.exists(os.path.join(ROOT, script)):
        return [], f"{script}: not in this checkout, skipped"
    print(f"== {script} on the host: {' '.join(argv)}", file=sys.stderr, flush=True)
    t0 = time.time()
    p = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    rows, bad = parse(p.stdout.splitlines())
    for r in rows:
        r["where"] = "host"
    print(f"== {script} on the host: {len(rows)} rows in {time.time() - t0:.0f} s, exit {p.returncode}",
          file=sys.stderr, flush=True)
    return rows, verdict(script, "host", rows, bad, p.returncode)


EMPTY_DIR = "CEEMSNET_BENCH_EMPTY_DIR"  # bench/hookcost.py reads it


def build_empties() -> str:
    """bench/*_empty.bpf.c built on this machine into .build/bench-empty (relative to the
    checkout, which the guest sees at the same path), as bench/hookcost.build_empty builds them."""
    out = os.path.join(".build", "bench-empty")
    os.makedirs(os.path.join(ROOT, out), exist_ok=True)
    arch = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip() \
        or "x86_64-linux-gnu"
    for src in ("net_empty.bpf.c", "vfs_empty.bpf.c", "fileio_empty.bpf.c", "uring_empty.bpf.c", "rdma_empty.bpf.c"):
        name = src.replace("_", "-").removesuffix(".c") + ".o"
        subprocess.run(["clang-19", "-g", "-O2", "-target", "bpf", "-Wall", "-Werror", "-Ibpf/include",
                        f"-I/usr/include/{arch}", "-c", os.path.join("bench", src), "-o", os.path.join(out, name)],
                       cwd=ROOT, check=True)
    return out


def run_vm(specs: list[str], vm: str) -> tuple[list[dict], list[str]]:
    """Every script in one boot of the VM: each one's output follows a marker line
    naming it, and a marker line with its exit code ends it."""
    where, notes, steps = f"VM {vm}", [], []
    for spec in specs:
        script, argv = argv_of(spec)
        if not os.path.exists(os.path.join(ROOT, script)):
            notes.append(f"{script}: not in this checkout, skipped")
            continue
        steps.append((script, argv))
    if not steps:
        return [], notes
    guest = "; ".join(f"echo {MARK} start {i}; {shlex.join(argv)}; echo {MARK} exit {i} $?"
                      for i, (_, argv) in enumerate(steps))
    env = ["PYTHONDONTWRITEBYTECODE=1"]
    if vm.startswith("arm64-"):
        # the aarch64 guest's root file system has no clang-19: the empty programs are built here
        env.append(f"{EMPTY_DIR}={build_empties()}")
    argv = ["tests/vm/run.sh", vm, "env", *env, "sh", "-c", guest]
    print(f"== {len(steps)} scripts in one boot of the {where}: {' '.join(s for s, _ in steps)}",
          file=sys.stderr, flush=True)
    t0 = time.time()
    p = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    out: dict[int, list[str]] = {}
    rcs: dict[int, int] = {}
    at = None
    for line in p.stdout.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == MARK:
            i = int(words[2])
            if words[1] == "start":
                at = i
                out[i] = []
            else:
                rcs[i] = int(words[3]) if len(words) > 3 else 1
                at = None
        elif at is not None:
            out[at].append(line)
    rows = []
    for i, (script, _) in enumerate(steps):
        got, bad = parse(out.get(i, []))
        for r in got:
            r["where"] = where
        rows += got
        note = verdict(script, where, got, bad, rcs.get(i))
        if note:
            notes.append(note)
    print(f"== {where}: {len(rows)} rows in {time.time() - t0:.0f} s (boot included), exit {p.returncode}",
          file=sys.stderr, flush=True)
    return rows, notes


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def table(rows: list[dict], notes: list[str]) -> str:
    head = ("where", "what", "value", "baseline (same run)", "ratio", "target", "meets")
    body = []
    for r in rows:
        meets = "-" if r["target"] in ("-", "") else ("yes" if r["meets"] else "NO")
        body.append((r["where"], r["what"], f"{fmt(r['value'])} {r['unit']}",
                     f"{fmt(r['baseline'])} {r['unit']} ({r['baseline_what']})", f"{r['ratio']:.3f}",
                     r["target"], meets))
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(cells) + " |" for cells in body]
    out += [f"| - | {n} | | | | | |" for n in notes]
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vm", action="append", default=[], metavar="KERNEL",
                    help="run the scripts in this VM (tests/vm/run.sh KERNEL); repeatable")
    ap.add_argument("scripts", nargs="+", metavar="SCRIPT[:ARGS]")
    a = ap.parse_args()
    rows, notes = [], []
    if a.vm:
        for vm in a.vm:
            got, more = run_vm(a.scripts, vm)
            rows += got
            notes += more
    else:
        for spec in a.scripts:
            got, note = run(spec)
            rows += got
            if note:
                notes.append(note)
    print(table(rows, notes))
    sys.exit(0)


if __name__ == "__main__":
    main()
