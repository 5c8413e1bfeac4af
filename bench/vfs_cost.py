#!/usr/bin/env python3
"""Per-write cost of the vfs collector, beside an empty program of the same kind on the same hook.

In one run, on a tmpfs mounted here:
  1. kernel run time per write(2), with kernel.bpf_stats_enabled on
     (restored after): a child in a fresh cgroup does --writes write() calls
     of --size bytes, once per variant and round, with only that variant's
     programs for write() attached:
       empty  programs that only return, on the same hook
              (bench/vfs_empty.bpf.c, built here with clang-19): the floor
       vfs    the catalogued vfs object of the family: fexit_vfs_write;
              kprobe_vfs_write + kretprobe_vfs_write (one write is two
              runs, their times added); tp_sys_exit_write (tracepoint)
     run_time_ns / run_cnt gives ns per write; the median over rounds is
     printed with the floor, "above floor" and the ratio, and the vfs
     object's count of the cgroup's writes to tmpfs is checked against what
     the child wrote (exit 1 if it differs);
  2. the rate of write() calls of this process without ceemsnet, with the
     whole vfs object of the family attached (every hook), and without again.
--rows prints one JSON object per figure (bench/rows.py) instead. Needs
root. Not a test. In a VM, e.g.

    tests/vm/run.sh 6.12 .venv/bin/python bench/vfs_cost.py --hook=fexit   (or --hook=kretprobe)
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ceemsnet import CeemsnetError  # noqa: E402
from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version, running_release  # noqa: E402
from ceemsnet.planning.select import select_and_load  # noqa: E402
from ceemsnet.planning.structs import decode_vfs  # noqa: E402
from ceemsnet.runtime.btf import KernelBTF  # noqa: E402
from ceemsnet.runtime.collection import ObjectSpec, load  # noqa: E402
from hookcost import RUNS_PER_EVENT, bench_run, build_empty, measure, preflight, run_child, run_main  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402

SCRIPT = "bench/vfs_cost.py"
TMPFS_MAGIC = 0x01021994
OP_WRITE = 1  # VFS_OP_WRITE, bpf/include/ceemsnet.h
TARGET_ABOVE = 60.0   # ns above the empty program of the same kind (issue 16)
TARGET_RATIO = 0.95   # write() rate with / without
# the programs one write(2) runs, per hook family
PROGRAMS = {"tracepoint": ("tp_sys_exit_write",), "fexit": ("fexit_vfs_write",),
            "kretprobe": ("kprobe_vfs_write", "kretprobe_vfs_write")}
HOOKS = {"tracepoint": "tp syscalls/sys_exit_write", "fexit": "fexit vfs_write",
         "kretprobe": "kprobe+kretprobe vfs_write"}
CHILD = """
import os, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
fd = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
buf = b"w" * size
sys.stdin.readline()
for _ in range(n):
    if os.write(fd, buf) != size:
        sys.exit("short write")
os.close(fd)
print("done", flush=True)
"""


def write_loop(path, n, size):
    buf = b"w" * size
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        for _ in range(n):
            os.write(fd, buf)
        return n / (time.perf_counter() - t0)
    finally:
        os.close(fd)


def best_of(path, n, size, rounds):
    return statistics.median(write_loop(path, n, size) for _ in range(rounds))


def counted(coll, cid):
    """(bytes, calls, errors) the object counted for the cgroup's writes to tmpfs."""
    stats = coll.maps["vfs_stats"]
    keys, values, n = stats.read_all()
    rec = decode_vfs(keys, values, n, stats.ncpus).get((cid, TMPFS_MAGIC))
    return tuple(rec[3 * OP_WRITE:3 * OP_WRITE + 3]) if rec else (0, 0, 0)


def per_write(a, plan, mnt):
    """{variant: [ns per write, per round]}, {variant: program runs}, the vfs object's
    count for the child's cgroup and what the child wrote (bytes, calls, errors)."""
    programs = PROGRAMS[a.hook]
    missing = [p for p in programs if p not in plan.programs()]
    if missing:
        why = "; ".join(f"{h.function}: {h.reason}" for h in plan.hooks if h.function == "vfs_write")
        raise CeemsnetError(f"{plan.obj.file} does not hook write() on this kernel ({why or 'not planned'})")
    with bench_run() as run:
        colls = run.colls
        colls["empty"] = load(ObjectSpec(build_empty("vfs_empty.bpf.c", run.tmp), programs))
        colls["vfs"] = load(ObjectSpec(plan.obj, programs, settings={"cgrp_v1_subsys": -1}))
        per = {k: [] for k in colls}
        runs = {k: 0 for k in colls}
        writes = 0  # write() calls the child made while the vfs object was attached
        work = lambda: run_child(run.cgroup, CHILD, a.writes, a.size, os.path.join(mnt, "child"))  # noqa: E731
        for _ in range(a.rounds):
            for k, coll in colls.items():
                ns, cnt, tries = measure(coll, programs, work, a.writes, RUNS_PER_EVENT[a.hook])
                per[k].append(ns)
                runs[k] += cnt
                writes += tries * a.writes if k == "vfs" else 0
        got = counted(colls["vfs"], os.stat(run.cgroup).st_ino)
    return per, runs, got, (writes * a.size, writes, 0)


def write_rate(a, path):
    """write() rate of this process without, with the whole vfs object of the family, without again."""
    kver = parse_kernel_version(running_release())
    base1 = best_of(path, a.writes, a.size, a.rounds)
    sel = select_and_load("vfs", kver, normalize_arch(platform.machine()), KernelBTF(), forced=a.hook)
    try:
        traced = best_of(path, a.writes, a.size, a.rounds)
    finally:
        sel.loaded.close()
    base2 = best_of(path, a.writes, a.size, a.rounds)
    return base1, traced, base2, sel.loaded.file


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writes", type=int, default=200_000, help="write() calls per round")
    ap.add_argument("--size", type=int, default=64, help="bytes per write()")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hook", choices=sorted(PROGRAMS), default="tracepoint")
    add_rows_flag(ap)
    a = ap.parse_args()
    if a.writes < 1 or a.size < 1 or a.rounds < 1:
        sys.exit(f"{SCRIPT}: --writes, --size and --rounds must be >= 1")
    plan = preflight(SCRIPT, "vfs", a.hook)
    mnt = tempfile.mkdtemp(prefix="ceemsnet-bench-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "ceemsnet-bench", mnt], check=True)
    try:
        per, runs, got, want = per_write(a, plan, mnt)
        base1, traced, base2, rate_obj = write_rate(a, os.path.join(mnt, "f"))
    finally:
        subprocess.run(["umount", mnt], check=False)
        os.rmdir(mnt)
    figs = {k: statistics.median(v) for k, v in per.items()}
    floor, ns = figs["empty"], figs["vfs"]
    base = (base1 + base2) / 2
    hook, obj = HOOKS[a.hook], plan.obj.file.removesuffix(".bpf.o")
    if a.rows:
        emit(row(f"vfs program ({obj}), {hook}: kernel run time per write()", ns, "ns", floor,
                 f"empty program on the same hook ({hook}), same run",
                 f"<= {TARGET_ABOVE:.0f} ns above the empty program", ns - floor <= TARGET_ABOVE))
        emit(row(f"{a.size}-byte write() rate to tmpfs with the vfs collector ({a.hook} family)", traced,
                 "writes/s", base, "without the collector, same run (mean of before and after)",
                 f">= {TARGET_RATIO} of without", traced / base >= TARGET_RATIO))
    else:
        print(f"kernel {os.uname().release}, vfs {a.hook} family, {plan.obj.file}: {a.writes} write() of "
              f"{a.size} B to tmpfs per round, median of {a.rounds} rounds")
        print(f"  kernel run time per write() ({hook}, bpf_stats_enabled, a child in a fresh cgroup):")
        for k in per:
            print(f"    {k:6} {figs[k]:9.1f} ns  {figs[k] - floor:+9.1f} above floor  ratio {figs[k] / floor:5.2f}"
                  f"  rounds {' '.join(f'{x:.0f}' for x in per[k])}  program runs {runs[k]}")
        print(f"    target: <= {TARGET_ABOVE:.0f} ns above the floor "
              f"({'met' if ns - floor <= TARGET_ABOVE else 'not met'})")
        print(f"  write() rate of this process, whole object {rate_obj} attached:")
        print(f"    without ceemsnet  {base / 1e3:8.0f} k writes/s  (before {base1 / 1e3:.0f}k, "
              f"after {base2 / 1e3:.0f}k)")
        print(f"    with ceemsnet     {traced / 1e3:8.0f} k writes/s")
        print(f"    ratio             {traced / base:8.3f}  ({(1 / traced - 1 / base) * 1e9:+.0f} ns per write; "
              f"target >= {TARGET_RATIO})")
    if got != want:
        print(f"# vfs: counted {got[0]} bytes in {got[1]} writes ({got[2]} errors) to tmpfs for the bench "
              f"cgroup, expected {want[0]} in {want[1]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_main(SCRIPT, main)
