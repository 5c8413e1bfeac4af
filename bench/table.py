#!/usr/bin/env python3
"""Run benchmarks with --rows and print one table of all their figures (`make bench`).

    bench/table.py [--vm KERNEL]... SCRIPT[:ARGS] ...

Each SCRIPT (a path under bench/, with optional space-separated ARGS after a
colon) runs as `python SCRIPT --rows ARGS`, on the host or, with --vm, in
each named VM (tests/vm/run.sh KERNEL ...). A script that is missing, or
that fails, gets one line saying so in the table instead of its rows. The
rows protocol is in bench/rows.py.
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


def run(spec: str, vm: str | None) -> tuple[list[dict], str | None]:
    script, _, args = spec.partition(":")
    if not os.path.exists(os.path.join(ROOT, script)):
        return [], f"{script}: not in this checkout, skipped"
    argv = [".venv/bin/python", script, "--rows", *shlex.split(args)]
    if vm:
        argv = ["tests/vm/run.sh", vm, "env", "PYTHONDONTWRITEBYTECODE=1", *argv]
    where = f"VM {vm}" if vm else "host"
    print(f"== {script} on the {where}: {' '.join(argv)}", file=sys.stderr, flush=True)
    t0 = time.time()
    p = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    rows, bad = [], 0
    for line in p.stdout.splitlines():
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
        r["where"] = where
        rows.append(r)
    print(f"== {script} on the {where}: {len(rows)} rows in {time.time() - t0:.0f} s, exit {p.returncode}",
          file=sys.stderr, flush=True)
    if p.returncode != 0:
        return rows, f"{script} ({where}): exited {p.returncode} (see its output above)"
    if not rows:
        return rows, f"{script} ({where}): printed no rows" + (f" ({bad} malformed)" if bad else "")
    return rows, None


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
    for where in a.vm or [None]:
        for spec in a.scripts:
            got, note = run(spec, where)
            rows += got
            if note:
                notes.append(note)
    print(table(rows, notes))
    sys.exit(0)


if __name__ == "__main__":
    main()
