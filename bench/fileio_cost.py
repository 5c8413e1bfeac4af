#!/usr/bin/env python3
"""Per-IO cost of the vfs programs for file IO besides read()/write() (--what): AIO
(io_submit, bpf/vfs/vfs_aio.h), sendfile/copy_file_range (bpf/vfs/vfs_splice.h) or opens inside
file systems (finish_open, bpf/vfs/vfs_open.h; fexit and kretprobe only), beside empty programs
on the same hooks, in the same run.

The catalogue's vfs object for this kernel and the given family (default: the tracepoint
family, the only one this project's host allows) is loaded with only those programs attached;
a second object built here with clang-19 holds programs that only return, on the same hooks.
With the kernel's run time statistics on (BPF_ENABLE_STATS), the workload runs once with each
set attached, in alternating rounds: for aio, fio (ioengine=libaio, iodepth 8, buffered, on a
tmpfs) writing then reading; for splice, --count copy_file_range() then sendfile() calls of
--bs bytes each, file to file on the tmpfs; for open, --count O_TMPFILE opens on the tmpfs (they
pass finish_open(), as the opens of NFS, Lustre and the other ->atomic_open file systems do). Each program's run_time_ns / run_cnt is read from
its fdinfo. Printed: ns per program run, runs per IO and ns per IO (fio's total_ios, or the
calls) for both, and the difference. --rows prints one JSON object per line instead. Needs
root (and fio for aio). io_uring has its own script, bench/uring_cost.py.
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

from ceemsnet.planning.catalogue import (AIO_FUNCTIONS, OPEN_FUNCTIONS, SPLICE_FUNCTIONS, BpfObject,  # noqa: E402
                                         slots_twin)
from ceemsnet.planning.choice import plan_family  # noqa: E402
from ceemsnet.planning.kernel import parse_kernel_version, running_release  # noqa: E402
from ceemsnet.runtime.btf import KernelBTF  # noqa: E402
from ceemsnet.runtime.collection import ObjectSpec, load  # noqa: E402
from bpfstats import RunTimeStats, program_stats  # noqa: E402  (bench/, this script's folder)
from hookcost import build_empty  # noqa: E402
from rows import emit, row  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# what each --what measures: the hooks' functions, and the workload's directions
WHAT = {"aio": (AIO_FUNCTIONS, ("write", "read")), "splice": (SPLICE_FUNCTIONS, ("copy_file_range", "sendfile")),
        "open": (OPEN_FUNCTIONS, ("O_TMPFILE open",))}



def programs_of(plan, functions):
    """The programs the plan attaches on this kernel for these functions, each once."""
    out = []
    for h in plan.hooks:
        if h.function in functions and h.status == "ok":
            out += [p for p in h.programs if p not in out]
    return out


def fio_job(fio, path, rw, bs, size):
    """fio libaio, iodepth 8, buffered: its total_ios."""
    p = subprocess.run([fio, "--name=aio", "--ioengine=libaio", "--iodepth=8", f"--rw={rw}", f"--bs={bs}",
                        f"--size={size}", f"--filename={path}", "--output-format=json"],
                       capture_output=True, text=True, check=True)
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    return job["read" if rw == "read" else "write"]["total_ios"]


def splice_calls(path, how, bs, count):
    """count copy_file_range() or sendfile() calls of bs bytes each, from path to path + ".out": the calls."""
    with open(path, "wb") as f:
        f.write(os.urandom(bs))
    src = os.open(path, os.O_RDONLY)
    dst = os.open(path + ".out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for _ in range(count):
            if how == "copy_file_range":
                os.copy_file_range(src, dst, bs, 0, 0)
            else:
                os.sendfile(dst, src, 0, bs)
    finally:
        os.close(src)
        os.close(dst)
        os.unlink(path + ".out")
    return count


def tmpfile_opens(d, count):
    """count O_TMPFILE opens (and closes) in folder d: the opens."""
    for _ in range(count):
        os.close(os.open(d, os.O_TMPFILE | os.O_RDWR, 0o600))
    return count


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
    ap.add_argument("--what", default="aio", choices=tuple(WHAT), help="aio (fio libaio), splice "
                    "(copy_file_range and sendfile) or open (O_TMPFILE opens: finish_open; fexit, kretprobe)")
    ap.add_argument("--family", default="tracepoint", choices=("fexit", "kretprobe", "tracepoint"))
    ap.add_argument("--size", default="64m", help="bytes fio moves per job (fio's --size)")
    ap.add_argument("--bs", default="4k")
    ap.add_argument("--count", type=int, default=20000, help="calls per direction and round (splice, open)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (empty, ours) per direction")
    ap.add_argument("--hash", action="store_true", help="the hash-layout object even where a slot twin exists")
    ap.add_argument("--rows", action="store_true", help="one JSON object per line")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/fileio_cost.py: needs root")
    if a.rounds < 1 or a.count < 1:
        sys.exit("bench/fileio_cost.py: --rounds and --count must be >= 1")
    fio = shutil.which("fio")
    if a.what == "aio" and not fio:
        sys.exit("bench/fileio_cost.py: fio is not installed")
    functions, directions = WHAT[a.what]
    bs = int(a.bs[:-1]) * 1024 if a.bs.endswith("k") else int(a.bs)
    kver = parse_kernel_version(running_release())
    plan = plan_family("vfs", a.family, kver, os.uname().machine, KernelBTF())
    if plan.refused:
        sys.exit(f"bench/fileio_cost.py: the vfs {a.family} family cannot run here: {plan.refused}")
    names = programs_of(plan, functions)
    # what serve loads: the slot-layout twin where there is one (--vfs.slots), else the hash object
    obj = plan.obj if a.hash else (slots_twin(plan.obj) or plan.obj)
    if not names:
        sys.exit(f"bench/fileio_cost.py: {plan.obj.file} serves none of {', '.join(functions)} on this kernel")
    tmp = tempfile.mkdtemp(prefix="ceemsnet-bench-fileio-")
    mnt = os.path.join(tmp, "tmpfs")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m", "ceemsnet-bench", mnt], check=True)
    path = os.path.join(mnt, "f")
    colls, stats = [], None
    results = {label: {d: [] for d in directions} for label in ("empty", "ours")}

    def work(d):
        if a.what == "aio":
            return fio_job(fio, path, d, a.bs, a.size)
        if a.what == "open":
            return tmpfile_opens(mnt, a.count)
        return splice_calls(path, d, bs, a.count)

    try:
        empty = load(ObjectSpec(BpfObject(build_empty("fileio_empty.bpf.c", tmp).path, "vfs", a.family, ("x86_64",), Version("0"), None),
                                programs=tuple(names)))
        ours = load(ObjectSpec(obj, programs=tuple(names)))
        colls += [empty, ours]
        stats = RunTimeStats().__enter__()
        for _ in range(a.rounds):
            for label, coll in (("empty", empty), ("ours", ours)):
                for n in names:
                    coll.attach(n)
                try:
                    for d in directions:
                        results[label][d].append(per_io(coll, names, lambda: work(d)))
                finally:
                    coll.detach(list(coll.links))
                if os.path.exists(path):  # the open workload makes no named file
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
    how = {"aio": f"fio libaio {a.bs} iodepth 8, buffered tmpfs", "splice": f"{a.count} calls of {a.bs}, file to file "
           "on tmpfs", "open": f"{a.count} O_TMPFILE opens on tmpfs"}[a.what]
    for rw in directions:
        med = {}
        for label in ("empty", "ours"):
            rs = results[label][rw]
            med[label] = (statistics.median(r[0] for r in rs), statistics.median(r[1] / r[3] for r in rs),
                          statistics.median(r[2] / r[3] for r in rs))
        rows.append({"what": f"{'AIO ' if a.what == 'aio' else ''}{rw} ({obj.file.removesuffix('.bpf.o')}, {how}): "
                             "kernel run time per IO", "value": round(med["ours"][2], 1),
                     "unit": "ns", "baseline": round(med["empty"][2], 1),
                     "baseline_what": "empty programs on the same hooks, same run",
                     "ns_per_run": round(med["ours"][0], 1), "empty_ns_per_run": round(med["empty"][0], 1),
                     "runs_per_io": round(med["ours"][1], 3), "empty_runs_per_io": round(med["empty"][1], 3)})
    if a.rows:
        for r in rows:  # bench/rows.py's protocol, with this script's extra figures beside
            emit({**row(r["what"], r["value"], r["unit"], r["baseline"], r["baseline_what"]), **r})
        return
    print(f"kernel {os.uname().release}, {obj.file}, programs {', '.join(names)}; {how}, {a.rounds} rounds (medians)")
    for r in rows:
        print(f"  {r['what'].split(' (')[0]:10s} ours {r['ns_per_run']:7.1f} ns/run x {r['runs_per_io']:.3f} runs/IO "
              f"= {r['value']:7.1f} ns/IO | empty {r['empty_ns_per_run']:7.1f} ns/run x {r['empty_runs_per_io']:.3f} "
              f"= {r['baseline']:7.1f} ns/IO | above empty {r['value'] - r['baseline']:+7.1f} ns/IO")


if __name__ == "__main__":
    main()
