#!/usr/bin/env python3
"""Per-event cost and node-wide tax of the vfs tracepoint family, beside its floors.

In one run, with the kernel's run time statistics on (BPF_ENABLE_STATS, as
kernel.bpf_stats_enabled=1 but untouched by others writing that sysctl), its
own run time per program run (run_time_ns / run_cnt) of:
  - an empty program of each kind on the same hook (bench/bpf/vfs_floor.bpf.c,
    built here with clang-19): tp/syscalls/sys_exit_write and tp_btf/sys_exit;
  - the catalogued vfs tracepoint object (bpf/objs), per write() and per getpid();
  - the object it replaced (bench/objs/vfs-tracepoint-5.11-x86.bpf.o: one
    raw sys_exit program that ran on every system call), the same way;
and the rate of 64-byte write() calls to a tmpfs file in alternating rounds
(stats off): without programs, with the empty tp/syscalls/sys_exit_write
program alone (the rate's floor: a syscall tracepoint sends every task's
system calls through the kernel's slow path), with the catalogued object, and
with the object `serve` loads by default (its -slots twin, as select_and_load
picks it).
Prints figures, floors, "above floor" and ratios; --rows prints one JSON
object per line instead (make bench builds its table from them). Needs root.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from packaging.version import Version  # noqa: E402

from ceemsnet.planning.catalogue import BpfObject  # noqa: E402
from ceemsnet.planning.choice import plan_family  # noqa: E402
from ceemsnet.planning.kernel import parse_kernel_version, running_release  # noqa: E402
from ceemsnet.planning.select import load_object, select_and_load  # noqa: E402
from ceemsnet.runtime import libbpf  # noqa: E402
from ceemsnet.runtime.btf import KernelBTF  # noqa: E402
from ceemsnet.runtime.collection import ObjectSpec, load  # noqa: E402
from bpfstats import RunTimeStats, program_stats  # noqa: E402  (bench/, this script's folder)
from vfs_cost import write_loop  # noqa: E402  (bench/, this script's folder)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OLD_OBJ = os.path.join(HERE, "objs", "vfs-tracepoint-5.11-x86.bpf.o")
FLOOR_SRC = os.path.join(HERE, "bpf", "vfs_floor.bpf.c")
TARGET_ABOVE = 60.0   # ns above the empty program of the same kind (issue 16)
TARGET_RATIO = 0.95   # write() rate with / without


def build_floor(out_dir):
    obj = os.path.join(out_dir, "vfs_floor.bpf.o")
    subprocess.run(["clang-19", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    "-I", os.path.join(ROOT, "bpf", "include"), "-c", FLOOR_SRC, "-o", obj], check=True)
    return obj


def raw_object(path, family):
    """A collection of an uncatalogued object file with all its programs (not attached)."""
    return load(ObjectSpec(BpfObject(os.path.abspath(path), "vfs", family, ("x86_64",), Version("0"), None)))


def program_names(coll):
    lb, out = libbpf.lib(), []
    p = lb.bpf_object__next_program(coll._obj, None)
    while p:
        out.append(lb.bpf_program__name(p).decode())
        p = lb.bpf_object__next_program(coll._obj, p)
    return out


def prog_stats(coll, names):
    return {name: program_stats(coll, name) for name in names}


def getpid_loop(n):
    for _ in range(n):
        os.getpid()


def per_run(coll, names, work):
    """(ns per run, runs) of the programs `names` while work() runs; stats must be on."""
    before = prog_stats(coll, names)
    work()
    after = prog_stats(coll, names)
    dt = sum(after[n][0] - before[n][0] for n in names)
    dn = sum(after[n][1] - before[n][1] for n in names)
    return (dt / dn if dn else 0.0), dn


def measure_object(coll, attach, path, n, getpids):
    """Attach `attach` programs of coll, measure per write() and per getpid(), detach."""
    for name in attach:
        coll.attach(name)
    names = [ln.program for ln in coll.links]
    try:
        ns_write, runs_write = per_run(coll, names, lambda: write_loop(path, n, 64))
        _, runs_getpid = per_run(coll, names, lambda: getpid_loop(getpids))
    finally:
        coll.detach(list(coll.links))
    return ns_write, runs_write / n, runs_getpid / getpids


def row(what, value, unit, baseline, baseline_what, target, meets):
    return {"what": what, "value": round(value, 3), "unit": unit, "baseline": round(baseline, 3),
            "baseline_what": baseline_what, "ratio": round(value / baseline, 3) if baseline else 0.0,
            "target": target, "meets": bool(meets)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--writes", type=int, default=200_000, help="write() calls per round")
    ap.add_argument("--getpids", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=4, help="ABAB rounds of the write rate")
    ap.add_argument("--rows", action="store_true", help="one JSON object per line, for make bench's table")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/vfs_tp_cost.py: needs root")
    if a.writes < 1 or a.getpids < 1 or a.rounds < 1:
        sys.exit("bench/vfs_tp_cost.py: --writes, --getpids and --rounds must be >= 1")
    kver = parse_kernel_version(running_release())
    plan = plan_family("vfs", "tracepoint", kver, "x86_64", KernelBTF())
    if plan.refused:
        sys.exit(f"bench/vfs_tp_cost.py: the vfs tracepoint family cannot run here: {plan.refused}")
    tmp = tempfile.mkdtemp(prefix="ceemsnet-bench-")
    mnt = os.path.join(tmp, "tmpfs")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "ceemsnet-bench", mnt], check=True)
    path = os.path.join(mnt, "f")
    colls, stats = [], None
    try:
        floor = raw_object(build_floor(tmp), "tracepoint")
        old = raw_object(OLD_OBJ, "tracepoint")
        colls += [floor, old]
        stats = RunTimeStats().__enter__()
        fl_tp = measure_object(floor, ["empty_sys_exit_write"], path, a.writes, a.getpids)
        fl_raw = measure_object(floor, ["empty_sys_exit"], path, a.writes, a.getpids)
        was = measure_object(old, program_names(old), path, a.writes, a.getpids)
        new_loaded = load_object(plan)
        new_coll = new_loaded.collection
        colls.append(new_coll)
        names = [ln.program for ln in new_coll.links]
        ns_new, runs_new = per_run(new_coll, names, lambda: write_loop(path, a.writes, 64))
        _, runs_getpid_new = per_run(new_coll, names, lambda: getpid_loop(a.getpids))
        runs_getpid_new /= a.getpids
        # the object serve loads by default (the -slots twin where there is one)
        sel = select_and_load("vfs", kver, "x86_64", KernelBTF(), forced="tracepoint")
        dflt = sel.loaded.collection
        colls.append(dflt)
        dnames = [ln.program for ln in dflt.links]
        ns_dflt, _ = per_run(dflt, dnames, lambda: write_loop(path, a.writes, 64))
        stats.__exit__()
        stats = None
        dflt.detach(list(dflt.links))
        new_coll.detach(list(new_coll.links))
        # write() rate, rounds alternating: without programs, the empty program, the object, the default object
        rates: dict[str, list[float]] = {"without": [], "empty": [], "object": [], "default": []}
        for _ in range(a.rounds):
            for what, coll, progs in (("without", None, ()), ("empty", floor, ["empty_sys_exit_write"]),
                                      ("object", new_coll, names), ("default", dflt, dnames)):
                for name in progs:
                    coll.attach(name)
                rates[what].append(write_loop(path, a.writes, 64))
                if coll is not None:
                    coll.detach(list(coll.links))
        without, with_ = rates["without"], rates["default"]
        rate_without, rate_with = statistics.median(without), statistics.median(with_)
        rate_empty, rate_obj = statistics.median(rates["empty"]), statistics.median(rates["object"])
    finally:
        if stats is not None:
            stats.__exit__()
        for c in colls:
            c.close()
        subprocess.run(["umount", mnt], check=False)
        os.rmdir(mnt)
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    obj = plan.obj.file.removesuffix(".bpf.o")
    dobj = os.path.basename(sel.loaded.file).removesuffix(".bpf.o")
    rows = [
        row(f"vfs tracepoint ({obj}): kernel run time per write()", ns_new, "ns", fl_tp[0],
            "empty tp/syscalls/sys_exit_write program", f"<= {TARGET_ABOVE:.0f} ns above the empty program",
            ns_new - fl_tp[0] <= TARGET_ABOVE),
        row(f"vfs tracepoint ({obj}): program runs per getpid()", runs_getpid_new, "runs",
            was[2], "runs per getpid() of the object it replaced (raw sys_exit)",
            "< 0.05: runs only for the system calls it counts (what moves it is other processes' IO "
            "meanwhile)", runs_getpid_new < 0.05),
        row(f"vfs tracepoint, serve's default ({dobj}): kernel run time per write()", ns_dflt, "ns", fl_tp[0],
            "empty tp/syscalls/sys_exit_write program", f"<= {TARGET_ABOVE:.0f} ns above the empty program",
            ns_dflt - fl_tp[0] <= TARGET_ABOVE),
        row(f"64-byte write() rate to tmpfs with the vfs collector (tracepoint family, {dobj})", rate_with,
            "writes/s", rate_without, "without the collector, same run (alternating)", f">= {TARGET_RATIO} of without",
            rate_with / rate_without >= TARGET_RATIO),
        row(f"64-byte write() rate to tmpfs with the vfs collector (tracepoint family, {obj})", rate_obj,
            "writes/s", rate_without, "without the collector, same run (alternating)", f">= {TARGET_RATIO} of without",
            rate_obj / rate_without >= TARGET_RATIO),
        row("64-byte write() rate to tmpfs with an empty tp/syscalls/sys_exit_write program (the floor)", rate_empty,
            "writes/s", rate_without, "without any program, same run (alternating)", "-", True),
    ]
    if a.rows:
        for r in rows:
            print(json.dumps(r))
        return
    print(f"kernel {os.uname().release}; {a.writes} write(64 B) calls to tmpfs, {a.getpids} getpid() calls")
    print("  kernel run time per program run (BPF_ENABLE_STATS), runs per call:")
    for what, (ns, rw, rg) in (("empty tp/syscalls/sys_exit_write", fl_tp), ("empty tp_btf/sys_exit", fl_raw),
                               ("before: vfs-tracepoint-5.11-x86", was),
                               (f"now:    {obj}", (ns_new, runs_new / a.writes, runs_getpid_new))):
        print(f"    {what:40s} {ns:7.1f} ns/run  {rw:5.2f} runs/write()  {rg:5.2f} runs/getpid()")
    print(f"    serve's default: {dobj:31s} {ns_dflt:7.1f} ns per write()")
    print(f"  above floor: now {ns_new - fl_tp[0]:+.1f} ns (target <= {TARGET_ABOVE:.0f}), "
          f"before {was[0] - fl_raw[0]:+.1f} ns")
    print(f"  write() rate without {rate_without / 1e3:.0f}k/s, with {rate_with / 1e3:.0f}k/s: "
          f"ratio {rate_with / rate_without:.3f} (target >= {TARGET_RATIO}; {dobj}); {obj} "
          f"{rate_obj / rate_without:.3f}; the empty program alone {rate_empty / rate_without:.3f} (the floor)")
    for what, xs in rates.items():
        print(f"    rounds {what:8s} {', '.join(f'{x / 1e3:.0f}k' for x in xs)}")


if __name__ == "__main__":
    main()
