#!/usr/bin/env python3
"""Per-call cost of the vfs collector.

In one process: a loop of small write(2) calls to a tmpfs file, timed
without ceemsnet's programs, with them attached, and without again; and,
with kernel.bpf_stats_enabled on, the kernel's own run time per program
(run_time_ns / run_cnt from the programs' fdinfo). Prints figures and
ratios. Needs root. Not a test. In a VM, e.g.

    tests/vm/run.sh 6.12 .venv/bin/python bench/vfs_cost.py --hook=fexit
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

from ceemsnet.kernel import KernelBTF, normalize_arch, parse_kernel_version, running_release  # noqa: E402
from ceemsnet.loader import select_and_load  # noqa: E402

STATS = "/proc/sys/kernel/bpf_stats_enabled"


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


def prog_stats(loaded):
    out = {}
    for name in loaded.programs():
        fd = loaded.collection.program_fd(name)
        info = {}
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                k, _, v = line.partition(":")
                info[k.strip()] = v.strip()
        out[name] = (int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0)))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writes", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hook", default="auto")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/vfs_cost.py: needs root")
    d = tempfile.mkdtemp(prefix="ceemsnet-bench-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "ceemsnet-bench", d], check=True)
    old_stats = open(STATS).read().strip()
    path = os.path.join(d, "f")
    try:
        kver = parse_kernel_version(running_release())
        base1 = best_of(path, a.writes, a.size, a.rounds)
        sel = select_and_load("vfs", kver, normalize_arch(platform.machine()), KernelBTF(), forced=a.hook)
        if sel.loaded is None:
            sys.exit(f"no hook family loads: {sel.refusals}")
        traced = best_of(path, a.writes, a.size, a.rounds)
        # run time per program in a separate round: the stats' own clock reads cost time too
        with open(STATS, "w") as f:
            f.write("1")
        before = prog_stats(sel.loaded)
        write_loop(path, a.writes, a.size)
        after = prog_stats(sel.loaded)
        with open(STATS, "w") as f:
            f.write(old_stats)
        sel.loaded.close()
        base2 = best_of(path, a.writes, a.size, a.rounds)
        base = (base1 + base2) / 2
        print(f"kernel {os.uname().release}, vfs {sel.plan.family} object {sel.plan.obj.file}; "
              f"{a.writes} write({a.size} B) calls to tmpfs per round, median of {a.rounds}")
        print(f"  without ceemsnet  {base / 1e3:8.0f} k writes/s  (before {base1 / 1e3:.0f}k, after {base2 / 1e3:.0f}k)")
        print(f"  with ceemsnet     {traced / 1e3:8.0f} k writes/s")
        print(f"  ratio             {traced / base:8.3f}  ({(1 / traced - 1 / base) * 1e9:+.0f} ns per write)")
        print("  kernel run time per program (bpf_stats_enabled):")
        for name in sorted(after):
            dt = after[name][0] - before[name][0]
            dn = after[name][1] - before[name][1]
            if dn:
                print(f"    {name:28s} {dt / dn:7.1f} ns/run  over {dn} runs")
    finally:
        with open(STATS, "w") as f:
            f.write(old_stats)
        subprocess.run(["umount", d], check=False)
        os.rmdir(d)


if __name__ == "__main__":
    main()
