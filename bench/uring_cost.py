#!/usr/bin/env python3
"""Per-CQE cost of the io_uring program of the running kernel's vfs object, beside an empty
program on the same tracepoint, in the same run.

The catalogue's vfs object for this kernel (the tracepoint family: the only one this project's
host allows; --family to choose), and its slot-layout twin where it has one, are loaded with only
the io_uring alternative this kernel's BTF selects (bpf/vfs/vfs_uring.h); a third object, built
here with clang-19, holds a tp_btf program that only returns, on io_uring:io_uring_complete. With
the kernel's run time statistics on (BPF_ENABLE_STATS, what kernel.bpf_stats_enabled=1 turns on),
fio (ioengine=io_uring, iodepth 8, buffered 4 KiB reads and writes, on a tmpfs) runs with the
empty program and one of ours attached together, each of ours in turn, for --rounds rounds; each
program's run_time_ns / run_cnt is read from its fdinfo. Printed: ns per run (the median round)
of each, runs per fio IO, and the difference. --rows prints one JSON object per line instead.
Needs root and fio.
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

from ceemsnet.planning.catalogue import BpfObject, slots_twin  # noqa: E402
from ceemsnet.planning.choice import plan_family  # noqa: E402
from ceemsnet.planning.kernel import parse_kernel_version, running_release  # noqa: E402
from ceemsnet.runtime.btf import KernelBTF  # noqa: E402
from ceemsnet.runtime.collection import ObjectSpec, load  # noqa: E402
from bpfstats import RunTimeStats, program_stats  # noqa: E402  (bench/, this script's folder)
from hookcost import build_empty  # noqa: E402
from rows import emit, row  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def fio_round(fio, path, size):
    """One fio job writing then reading `size` bytes with io_uring; the number of IOs."""
    ios = 0
    for rw in ("write", "read"):
        p = subprocess.run([fio, "--name=bench", f"--filename={path}", f"--rw={rw}", f"--size={size}", "--bs=4k",
                            "--ioengine=io_uring", "--iodepth=8", "--output-format=json"],
                           capture_output=True, text=True, check=True)
        (job,) = json.loads(p.stdout[p.stdout.index("{"):])["jobs"]
        ios += job[rw]["total_ios"]
    os.unlink(path)
    return ios


def measure(pairs, fio, path, size):
    """{label: (ns per run, runs)} while one fio round runs; pairs: label -> (collection, program)."""
    before = {k: program_stats(c, p) for k, (c, p) in pairs.items()}
    ios = fio_round(fio, path, size)
    after = {k: program_stats(c, p) for k, (c, p) in pairs.items()}
    out = {}
    for k in pairs:
        dt, dn = after[k][0] - before[k][0], after[k][1] - before[k][1]
        out[k] = (dt / dn if dn else 0.0, dn)
    return out, ios


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--family", default="tracepoint", choices=("fexit", "kretprobe", "tracepoint"))
    ap.add_argument("--size-mib", type=int, default=64, help="MiB written and read per fio round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", action="store_true", help="one JSON object per line, for make bench's table")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/uring_cost.py: needs root")
    fio = shutil.which("fio")
    if not fio:
        sys.exit("bench/uring_cost.py: fio is not installed")
    if a.size_mib < 1 or a.rounds < 1:
        sys.exit("bench/uring_cost.py: --size-mib and --rounds must be >= 1")
    btf = KernelBTF()
    kver = parse_kernel_version(running_release())
    plan = plan_family("vfs", a.family, kver, os.uname().machine, btf)
    if plan.refused:
        sys.exit(f"bench/uring_cost.py: the vfs {a.family} family cannot be planned here: {plan.refused}")
    (hook,) = [h for h in plan.hooks if h.function == "io_uring"]
    if hook.status != "ok":
        sys.exit(f"bench/uring_cost.py: io_uring is not counted on this kernel: {hook.reason}")
    done = [p for p in hook.programs if p != "tp_btf_uring_sqe"]  # the one on io_uring_complete
    objs = [plan.obj] + [t for t in (slots_twin(plan.obj),) if t is not None]
    tmp = tempfile.mkdtemp(prefix="ceemsnet-bench-")
    mnt = os.path.join(tmp, "tmpfs")
    os.mkdir(mnt)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={a.size_mib + 16}m", "ceemsnet-bench", mnt], check=True)
    colls, stats = [], None
    try:
        empty = load(ObjectSpec(BpfObject(build_empty("uring_empty.bpf.c", tmp).path, "vfs", "tracepoint",
                                          ("x86_64",), Version("0"), None)))
        colls.append(empty)
        ours = {}
        for o in objs:
            c = load(ObjectSpec(o, tuple(hook.programs)))
            colls.append(c)
            ours[o.file.removesuffix(".bpf.o")] = c
        stats = RunTimeStats().__enter__()
        results = {k: [] for k in ours}
        empties = {k: [] for k in ours}
        ios_per_round = []
        for _ in range(a.rounds):
            for label, c in ours.items():  # each of ours beside the empty one, in turn
                empty.attach("empty_uring_complete")
                for p in hook.programs:
                    c.attach(p)
                try:
                    got, ios = measure({"empty": (empty, "empty_uring_complete"), label: (c, done[0])},
                                       fio, os.path.join(mnt, "f"), a.size_mib << 20)
                finally:
                    c.detach(list(c.links))
                    empty.detach(list(empty.links))
                results[label].append(got[label])
                empties[label].append(got["empty"])
                ios_per_round.append(ios)
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
        btf.close()
    rows = []
    for label in ours:
        ns = statistics.median(r[0] for r in results[label])
        floor = statistics.median(r[0] for r in empties[label])
        runs = statistics.median(r[1] for r in results[label])
        rows.append({"what": f"io_uring ({label}, {hook.reason.split(' prototype')[0]} prototype, {done[0]}): "
                             "kernel run time per CQE", "value": round(ns, 1), "unit": "ns",
                     "baseline": round(floor, 1), "baseline_what": "empty tp_btf/io_uring_complete program, same run",
                     "above": round(ns - floor, 1), "runs_per_io": round(runs / statistics.median(ios_per_round), 3),
                     "rounds": [round(r[0], 1) for r in results[label]],
                     "empty_rounds": [round(r[0], 1) for r in empties[label]]})
    if a.rows:
        for r in rows:  # bench/rows.py's protocol, with this script's extra figures beside
            emit({**row(r["what"], r["value"], r["unit"], r["baseline"], r["baseline_what"]), **r})
        return
    print(f"kernel {os.uname().release}; per round: fio io_uring write then read {a.size_mib} MiB in 4 KiB IOs "
          f"on tmpfs ({statistics.median(ios_per_round)} IOs), {a.rounds} rounds, medians")
    for r in rows:
        print(f"  {r['what']}: {r['value']:.1f} ns/run, empty program {r['baseline']:.1f} ns/run, "
              f"above {r['above']:+.1f} ns; {r['runs_per_io']:.3f} runs per IO")
        print(f"    rounds: ours {r['rounds']}, empty {r['empty_rounds']}")


if __name__ == "__main__":
    main()
