#!/usr/bin/env python3
"""Per-IO cost of the AIO (io_submit) programs of the running kernel's vfs object, beside empty
programs on the same hooks, in the same run.

The catalogue's vfs object for this kernel and the given family (default: the tracepoint
family, the only one this project's host allows) is loaded with only its AIO programs
(bpf/vfs/vfs_aio.h) attached; a second object built here with clang-19 holds programs that
only return, on the same hooks. With the kernel's run time statistics on (BPF_ENABLE_STATS),
fio (ioengine=libaio, iodepth 8, buffered, on a tmpfs) runs once with each set attached, in
alternating rounds; each program's run_time_ns / run_cnt is read from its fdinfo. Printed: ns
per program run, runs per IO and ns per IO (fio's total_ios) for both, and the difference.
--rows prints one JSON object per line instead. Needs root and fio.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from packaging.version import Version  # noqa: E402

from ceemsnet.planning.catalogue import AIO_FUNCTIONS, BpfObject, slots_twin  # noqa: E402
from ceemsnet.planning.choice import plan_family  # noqa: E402
from ceemsnet.planning.kernel import parse_kernel_version, running_release  # noqa: E402
from ceemsnet.runtime.btf import KernelBTF  # noqa: E402
from ceemsnet.runtime.collection import ObjectSpec, load  # noqa: E402
from bpfstats import RunTimeStats, program_stats  # noqa: E402  (bench/, this script's folder)
from rows import emit, row  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Programs that only return, one per hook kind the AIO programs use (the section decides the hook).
EMPTY_SRC = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
char LICENSE[] SEC("license") = "GPL";
#define EMPTY(sec, name) SEC(sec) int name(void *ctx) { return 0; }
EMPTY("tp/syscalls/sys_enter_io_submit", tp_sys_enter_io_submit)
EMPTY("tp/syscalls/sys_exit_io_getevents", tp_sys_exit_io_getevents)
EMPTY("tp/syscalls/sys_exit_io_pgetevents", tp_sys_exit_io_pgetevents)
EMPTY("fentry/aio_read", fentry_aio_read)
EMPTY("fexit/aio_read", fexit_aio_read)
EMPTY("fentry/aio_write", fentry_aio_write)
EMPTY("fexit/aio_write", fexit_aio_write)
EMPTY("fentry/aio_complete_rw", fentry_aio_complete_rw)
EMPTY("kprobe/aio_read", kprobe_aio_read)
EMPTY("kretprobe/aio_read", kretprobe_aio_read)
EMPTY("kprobe/aio_write", kprobe_aio_write)
EMPTY("kretprobe/aio_write", kretprobe_aio_write)
EMPTY("kprobe/aio_complete_rw", kprobe_aio_complete_rw)
"""


def build_empty(out_dir):
    src, obj = os.path.join(out_dir, "aio_empty.bpf.c"), os.path.join(out_dir, "aio_empty.bpf.o")
    with open(src, "w") as f:
        f.write(EMPTY_SRC)
    subprocess.run(["clang-19", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86",
                    "-I", os.path.join(ROOT, "bpf", "include"), "-c", src, "-o", obj], check=True)
    return obj


def aio_programs(plan):
    """The AIO programs the plan attaches on this kernel, each once."""
    out = []
    for h in plan.hooks:
        if h.function in AIO_FUNCTIONS and h.status == "ok":
            out += [p for p in h.programs if p not in out]
    return out


def fio_job(fio, path, rw, bs, size):
    """fio libaio, iodepth 8, buffered: its total_ios."""
    p = subprocess.run([fio, "--name=aio", "--ioengine=libaio", "--iodepth=8", f"--rw={rw}", f"--bs={bs}",
                        f"--size={size}", f"--filename={path}", "--output-format=json"],
                       capture_output=True, text=True, check=True)
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    return job["read" if rw == "read" else "write"]["total_ios"]


def per_io(coll, names, work):
    """(ns per program run, program runs, ns in all of them, IOs) while work() runs."""
    before = {n: program_stats(coll, n) for n in names}
    ios = work()
    after = {n: program_stats(coll, n) for n in names}
    ns = sum(after[n][0] - before[n][0] for n in names)
    runs = sum(after[n][1] - before[n][1] for n in names)
    return (ns / runs if runs else 0.0), runs, ns, ios


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="tracepoint", choices=("fexit", "kretprobe", "tracepoint"))
    ap.add_argument("--size", default="64m", help="bytes fio moves per job (fio's --size)")
    ap.add_argument("--bs", default="4k")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (empty, ours) per direction")
    ap.add_argument("--hash", action="store_true", help="the hash-layout object even where a slot twin exists")
    ap.add_argument("--rows", action="store_true", help="one JSON object per line")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/aio_cost.py: needs root")
    if a.rounds < 1:
        sys.exit("bench/aio_cost.py: --rounds must be >= 1")
    fio = shutil.which("fio")
    if not fio:
        sys.exit("bench/aio_cost.py: fio is not installed")
    kver = parse_kernel_version(running_release())
    plan = plan_family("vfs", a.family, kver, os.uname().machine, KernelBTF())
    if plan.refused:
        sys.exit(f"bench/aio_cost.py: the vfs {a.family} family cannot run here: {plan.refused}")
    names = aio_programs(plan)
    # what serve loads: the slot-layout twin where there is one (--vfs.slots), else the hash object
    obj = plan.obj if a.hash else (slots_twin(plan.obj) or plan.obj)
    if not names:
        sys.exit(f"bench/aio_cost.py: {plan.obj.file} serves no AIO function on this kernel")
    tmp = tempfile.mkdtemp(prefix="ceemsnet-bench-aio-")
    mnt = os.path.join(tmp, "tmpfs")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "ceemsnet-bench", mnt], check=True)
    path = os.path.join(mnt, "f")
    colls, stats = [], None
    results = {"empty": {"write": [], "read": []}, "ours": {"write": [], "read": []}}
    try:
        empty = load(ObjectSpec(BpfObject(build_empty(tmp), "vfs", a.family, ("x86_64",), Version("0"), None),
                                programs=tuple(names)))
        ours = load(ObjectSpec(obj, programs=tuple(names)))
        colls += [empty, ours]
        stats = RunTimeStats().__enter__()
        for _ in range(a.rounds):
            for label, coll in (("empty", empty), ("ours", ours)):
                for n in names:
                    coll.attach(n)
                try:
                    for rw in ("write", "read"):
                        results[label][rw].append(per_io(coll, names, lambda: fio_job(fio, path, rw, a.bs, a.size)))
                finally:
                    coll.detach(list(coll.links))
                os.unlink(path)
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
    rows = []
    for rw in ("write", "read"):
        med = {}
        for label in ("empty", "ours"):
            rs = results[label][rw]
            med[label] = (statistics.median(r[0] for r in rs), statistics.median(r[1] / r[3] for r in rs),
                          statistics.median(r[2] / r[3] for r in rs))
        rows.append({"what": f"AIO {rw} ({obj.file.removesuffix('.bpf.o')}, fio libaio {a.bs} iodepth 8, "
                             f"buffered tmpfs): kernel run time per IO", "value": round(med["ours"][2], 1),
                     "unit": "ns", "baseline": round(med["empty"][2], 1),
                     "baseline_what": "empty programs on the same hooks, same run",
                     "ns_per_run": round(med["ours"][0], 1), "empty_ns_per_run": round(med["empty"][0], 1),
                     "runs_per_io": round(med["ours"][1], 3), "empty_runs_per_io": round(med["empty"][1], 3)})
    if a.rows:
        for r in rows:  # bench/rows.py's protocol, with this script's extra figures beside
            emit({**row(r["what"], r["value"], r["unit"], r["baseline"], r["baseline_what"]), **r})
        return
    print(f"kernel {os.uname().release}, {obj.file}, programs {', '.join(names)}; "
          f"fio libaio bs {a.bs} iodepth 8 size {a.size} buffered on tmpfs, {a.rounds} rounds (medians)")
    for r in rows:
        print(f"  {r['what'].split(' (')[0]:10s} ours {r['ns_per_run']:7.1f} ns/run x {r['runs_per_io']:.3f} runs/IO "
              f"= {r['value']:7.1f} ns/IO | empty {r['empty_ns_per_run']:7.1f} ns/run x {r['empty_runs_per_io']:.3f} "
              f"= {r['baseline']:7.1f} ns/IO | above empty {r['value'] - r['baseline']:+7.1f} ns/IO")


if __name__ == "__main__":
    main()
