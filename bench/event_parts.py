#!/usr/bin/env python3
"""Per-event cost of each part of the net and vfs tracepoint programs (issue 27).

The programs of the tracepoint family, cut into cumulative partial programs
(bench/parts/*.bpf.c, built here with clang-19 into bench/objs/parts/, one
object per part), each measured with the kernel's own run time statistics
(BPF_ENABLE_STATS: run_time_ns / run_cnt per program, bench/bpfstats.py) in
the same run, one part attached at a time, parts in alternating order from
round to round:

  net, tp_btf sock_send_length + sock_recv_length; a child in a fresh cgroup
  does --events 64-byte UDP sendto() + recv() pairs on loopback (two events
  each): empty; + cgroup id; + the socket's field reads and filters; + the
  map update in three layouts (old: a 16-byte key and a 24-byte value per
  counter; slots: owner array + per-CPU array; new: one per-CPU hash record
  per cgroup keyed by its id, value v[8]), plus the alternatives tried;

  vfs, tp/syscalls/sys_exit_write; a child in a fresh cgroup does --writes
  64-byte write() calls to a file on a tmpfs mounted here: empty; + cgroup
  id; + task and saved registers (the fd); + the fd table's slot (the file);
  + the file's inode, mode and file system; + the map update (old: key with
  the op, 24-byte value, atomic adds; new: key (cgroup, magic), value v[7],
  plain adds), plus the alternatives tried.

The catalogued objects this kernel gets (bpf/objs, "objs", "objs-slots") and
any --extra object (a build being tried) are measured beside them, whole. Printed per part:
median ns per event over the rounds, and its increment over the part it
builds on (the median of the per-round differences: same round, same
load). The map-update parts' counts for the child's cgroup are checked
against what it did (exit 1 if any differs). --rows prints one JSON object
per figure (bench/rows.py). Needs root. Not a test.

  .venv/bin/python bench/event_parts.py [--only net|vfs] [--rounds 7] [--rows]
"""

import argparse
import os
import statistics
import struct
import subprocess
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ceemsnet import CeemsnetError  # noqa: E402
from ceemsnet.collectors import slots as net_slots  # noqa: E402
from ceemsnet.collectors import vfs_slots  # noqa: E402
from ceemsnet.planning.catalogue import slots_twin  # noqa: E402
from ceemsnet.planning.structs import SLOT_MAPS  # noqa: E402
from ceemsnet.runtime.collection import ObjectSpec, load  # noqa: E402
from bpfstats import RunTimeStats, program_stats  # noqa: E402  (bench/, this script's folder)
from hookcost import bench_run, preflight, run_child, run_main  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402
from vfs_cost import CHILD as VFS_CHILD  # noqa: E402  (the same writer child as bench/vfs_cost.py)

SCRIPT = "bench/event_parts.py"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "objs", "parts")
TMPFS_MAGIC = 0x01021994
TARGET = {"net": 30.0, "vfs": 60.0}  # ns above the empty program (issue 27)
PROGRAMS = {"net": ("tp_btf_sock_send_length", "tp_btf_sock_recv_length"), "vfs": ("tp_sys_exit_write",)}
HOOKS = {"net": "tp_btf sock_send_length/sock_recv_length", "vfs": "tp/syscalls/sys_exit_write"}

# (label, defines, the part it adds to, what it adds); layout: how to check its counts
NET_PARTS = (
    ("empty", "NET_LEVEL=0", None, "empty program (the floor)"),
    ("cgid", "NET_LEVEL=1", "empty", "+ cgroup id: ceemsnet_cgroup_id() (bpf_get_current_cgroup_id())"),
    ("cgid-task", "NET_LEVEL=1,CEEMSNET_HOOK_TRACEPOINT", "empty",
     "+ cgroup id as cgroup.h reads it for tracepoint objects (BTF loads task->cgroups->dfl_cgrp->kn->id)"),
    ("sock", "NET_LEVEL=2", "cgid", "+ socket field reads (family, protocol, type) and filters"),
    ("map-old", "NET_LEVEL=3,NET_MAP=1", "sock",
     "+ map update, old layout: per-CPU hash, 16-byte key per counter, 24-byte value, atomic adds"),
    ("map-slots", "NET_LEVEL=3,NET_MAP=2", "sock",
     "+ map update, slot layout: owner array + per-CPU array of v[8], plain adds"),
    ("map-new", "NET_LEVEL=3,NET_MAP=3", "sock",
     "+ map update, new layout: per-CPU hash keyed by cgroup id, value v[8], plain adds"),
    ("map-new-atomic", "NET_LEVEL=3,NET_MAP=3,NET_ATOMIC", "sock",
     "+ map update, new layout with atomic adds (what the fexit/kretprobe objects do)"),
    ("sock-task", "NET_LEVEL=2,CEEMSNET_HOOK_TRACEPOINT", "cgid-task", "+ socket reads and filters, after cgid-task"),
    ("map-slots-task", "NET_LEVEL=3,NET_MAP=2,CEEMSNET_HOOK_TRACEPOINT", "sock-task",
     "+ map update, slot layout, after sock-task (the whole program, cut applied)"),
    ("map-new-task", "NET_LEVEL=3,NET_MAP=3,CEEMSNET_HOOK_TRACEPOINT", "sock-task",
     "+ map update, new layout, after sock-task (the whole program, cut applied)"),
)
VFS_PARTS = (
    ("empty", "VFS_LEVEL=0", None, "empty program (the floor)"),
    ("cgid", "VFS_LEVEL=1", "empty", "+ cgroup id: ceemsnet_cgroup_id() (bpf_get_current_cgroup_id())"),
    ("cgid-task", "VFS_LEVEL=1,CEEMSNET_HOOK_TRACEPOINT", "empty",
     "+ cgroup id as cgroup.h reads it for tracepoint objects (BTF loads task->cgroups->dfl_cgrp->kn->id)"),
    ("regs", "VFS_LEVEL=2", "cgid", "+ task (bpf_get_current_task_btf) and bpf_task_pt_regs()->di (the fd)"),
    ("fd", "VFS_LEVEL=3", "regs", "+ fd -> file: files->fdt, max_fds, slot by bpf_probe_read_kernel() (shipped)"),
    ("fd-cast", "VFS_LEVEL=3,FD_CAST", "regs",
     "+ fd -> file: files->fdt, max_fds, slot by one load through bpf_rdonly_cast() (alternative)"),
    ("file", "VFS_LEVEL=4", "fd", "+ f_inode, i_mode (regular only), i_sb->s_magic through bpf_rdonly_cast()"),
    ("file-cast", "VFS_LEVEL=4,FD_CAST", "fd-cast", "the same after fd-cast"),
    ("map-old", "VFS_LEVEL=5,VFS_MAP=1", "file",
     "+ map update, old layout: key (cgroup, magic, op), 24-byte value, atomic adds"),
    ("map-new", "VFS_LEVEL=5,VFS_MAP=3", "file",
     "+ map update, new layout: key (cgroup, magic), value v[7], plain adds"),
    ("regs-stack", "VFS_LEVEL=2,REGS_STACK", "cgid",
     "+ task and the fd by two loads at task->stack + an offset learnt once (alternative)"),
    ("file-cuts", "VFS_LEVEL=4,FD_CAST,REGS_STACK,CEEMSNET_HOOK_TRACEPOINT", "empty",
     "cgid-task + regs-stack + fd-cast + file: every part but the map update, cuts applied"),
    ("map-new-cuts", "VFS_LEVEL=5,VFS_MAP=3,FD_CAST,REGS_STACK,CEEMSNET_HOOK_TRACEPOINT", "file-cuts",
     "+ map update, new layout, after file-cuts (the whole program, cuts applied)"),
)
PARTS = {"net": NET_PARTS, "vfs": VFS_PARTS}
SOURCES = {"net": "net_parts.bpf.c", "vfs": "vfs_parts.bpf.c"}

NET_CHILD = """
import socket, sys
n, size = int(sys.argv[1]), int(sys.argv[2])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 0))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
addr, buf = rx.getsockname(), b"u" * size
sys.stdin.readline()
for _ in range(n):
    tx.sendto(buf, addr)
    rx.recv(2048)
print("done", flush=True)
"""


def build(sub, label, defines):
    """bench/parts/<source> with -D<defines> -> bench/objs/parts/<sub>-<label>.bpf.o, compiled as the
    Makefile compiles bpf/ (clang-19, -O2 -g, relative paths), to a scratch name then moved."""
    os.makedirs(OUT, exist_ok=True)
    arch = subprocess.run(["gcc", "-dumpmachine"], capture_output=True, text=True).stdout.strip() \
        or "x86_64-linux-gnu"
    name = f"{sub}-{label}.bpf.o"
    scratch = os.path.join(OUT, f".{name}.tmp")
    subprocess.run(["clang-19", "-g", "-O2", "-target", "bpf", "-Wall", "-Werror", f"-ffile-prefix-map={ROOT}=.",
                    "-D__TARGET_ARCH_x86", *[f"-D{d}" for d in defines.split(",")], f"-I{ROOT}/bpf/include",
                    f"-I/usr/include/{arch}", "-c", os.path.join(HERE, "parts", SOURCES[sub]), "-o", scratch],
                   check=True)
    os.replace(scratch, os.path.join(OUT, name))
    return types.SimpleNamespace(path=os.path.join(OUT, name), file=name, family="bench")


def percpu_sum(raw, off, stride, ncpus, words):
    """Sum over CPUs of `words` u64 at byte offset off of a per-CPU value (stride bytes per CPU)."""
    tot = [0] * words
    for c in range(ncpus):
        for i, w in enumerate(struct.unpack_from(f"<{words}Q", raw, c * stride + off)):
            tot[i] += w
    return tot


def each_value(m):
    keys, vals, n = m.read_all()
    vsize = m.value_stride * m.ncpus
    for i in range(n):
        yield keys[i * m.key_size:(i + 1) * m.key_size], vals[i * vsize:(i + 1) * vsize]


def net_counted(label, coll, cid):
    """(bytes, calls) the part counted for the cgroup as UDP/IPv4, both directions; None: no map."""
    if label.startswith("map-old"):
        m, b, c = coll.maps["part_stats"], 0, 0
        for k, v in each_value(m):
            kid, proto, fam, _d = struct.unpack_from("<QBBB", k)
            if (kid, proto, fam) == (cid, 1, 0):
                s = percpu_sum(v, 0, m.value_stride, m.ncpus, 3)
                b, c = b + s[0], c + s[1]
        return b, c
    if label.startswith("map-slots"):
        owners = dict((struct.unpack("<I", k)[0], struct.unpack_from("<Q", v)[0])
                      for k, v in each_value(coll.maps["part_owner"]))
        m, b, c = coll.maps["part_slots"], 0, 0
        for k, v in each_value(m):
            if owners.get(struct.unpack("<I", k)[0]) == cid:
                for idx in (4, 5):  # (UDP << 2) | (IPv4 << 1) | egress, ingress
                    s = percpu_sum(v, idx * 24, m.value_stride, m.ncpus, 3)
                    b, c = b + s[0], c + s[1]
        return b, c
    if label.startswith("map-new"):
        m, b, c = coll.maps["part_stats"], 0, 0
        for k, v in each_value(m):
            if struct.unpack("<Q", k)[0] == cid:
                for idx in (4, 5):
                    s = percpu_sum(v, idx * 24, m.value_stride, m.ncpus, 3)
                    b, c = b + s[0], c + s[1]
        return b, c
    return None


def vfs_counted(label, coll, cid):
    """(bytes, calls) the part counted for the cgroup's writes to tmpfs; None: no map."""
    if not label.startswith("map-"):
        return None
    m, b, c = coll.maps["part_stats"], 0, 0
    for k, v in each_value(m):
        kid, magic, op = struct.unpack_from("<QIB", k)
        if (kid, magic) != (cid, TMPFS_MAGIC):
            continue
        if label.startswith("map-old") and op == 1:
            s = percpu_sum(v, 0, m.value_stride, m.ncpus, 3)
        elif label.startswith("map-new"):
            s = percpu_sum(v, 1 * 24, m.value_stride, m.ncpus, 3)  # v[VFS_OP_WRITE]
        else:
            continue
        b, c = b + s[0], c + s[1]
    return b, c


def whole_spec(sub, obj):
    """ObjectSpec of a whole net or vfs object (a -slots one sized as the loader sizes it)."""
    if obj.file.removesuffix(".bpf.o").endswith("-slots"):
        n = (net_slots if sub == "net" else vfs_slots).default_slots(os.cpu_count() or 1)
        owner, vals, mask = SLOT_MAPS[sub]
        return ObjectSpec(obj, PROGRAMS[sub], {owner: n, vals: n}, {mask: n - 1})
    return ObjectSpec(obj, PROGRAMS[sub])


def whole_objects(sub, extra):
    """{label: ObjectSpec} of the catalogued tracepoint objects this kernel gets, and of the
    --extra objects of sub (builds being tried), for reference rows."""
    plan = preflight(SCRIPT, sub, "tracepoint")
    out = {"objs": whole_spec(sub, plan.obj)}
    twin = slots_twin(plan.obj)
    if twin is not None:
        out["objs-slots"] = whole_spec(sub, twin)
    for spec in extra:
        s, _, rest = spec.partition(":")
        label, _, path = rest.partition("=")
        if s not in PARTS or not label or not path:
            raise CeemsnetError(f"--extra {spec!r}: expected net:LABEL=PATH or vfs:LABEL=PATH")
        if s == sub:
            out[label] = whole_spec(sub, types.SimpleNamespace(path=os.path.abspath(path),
                                                               file=os.path.basename(path), family="tracepoint"))
    return out, plan.obj.file


def run_sub(sub, a):
    """Measure every part of sub in one run. -> ({label: [ns per round]}, {label: [increment per round]},
    {label: (got, want)}, the catalogued object's file)"""
    parts = PARTS[sub]
    with bench_run() as run:
        mnt = None
        if sub == "vfs":
            mnt = os.path.join(run.tmp, "tmpfs")
            os.mkdir(mnt)
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "ceemsnet-bench", mnt], check=True)
        try:
            for label, defines, _, _ in parts:
                run.colls[label] = load(ObjectSpec(build(sub, label, defines), PROGRAMS[sub]))
            specs, obj_file = whole_objects(sub, a.extra)
            for label, spec in specs.items():
                try:
                    run.colls[label] = load(spec)
                except Exception as e:  # a kernel that refuses one: say so, measure the rest
                    print(f"# {sub}: {label} ({spec.obj.file}) not loaded: {e}", file=sys.stderr)
            if sub == "net":
                events = 2 * a.events
                work = lambda: run_child(run.cgroup, NET_CHILD, a.events, a.size)  # noqa: E731
            else:
                events = a.writes
                work = lambda: run_child(run.cgroup, VFS_CHILD, a.writes, a.size,  # noqa: E731
                                         os.path.join(mnt, "child"))
            labels = list(run.colls)
            per = {k: [] for k in labels}
            done = {k: 0 for k in labels}  # rounds each part was attached for
            for r in range(a.rounds):
                for k in (labels if r % 2 == 0 else labels[::-1]):
                    coll = run.colls[k]
                    links = [coll.attach(p) for p in PROGRAMS[sub]]
                    try:
                        before = [program_stats(coll, p) for p in PROGRAMS[sub]]
                        work()
                        after = [program_stats(coll, p) for p in PROGRAMS[sub]]
                    finally:
                        coll.detach(links)
                    dt = sum(x[0] - y[0] for x, y in zip(after, before))
                    dn = sum(x[1] - y[1] for x, y in zip(after, before))
                    if dn < events:
                        raise CeemsnetError(f"{sub} {k}: {dn} program runs for {events} events "
                                            "(run time statistics off?)")
                    per[k].append(dt / dn)
                    done[k] += 1
            cid = os.stat(run.cgroup).st_ino
            checks = {}
            for k in labels:
                got = (net_counted if sub == "net" else vfs_counted)(k, run.colls[k], cid)
                if got is not None:
                    n = done[k] * (2 * a.events if sub == "net" else a.writes)
                    checks[k] = (tuple(got), (n * a.size, n))
        finally:
            if mnt:
                subprocess.run(["umount", mnt], check=False)
    inc = {}
    for label, _, prev, _ in parts:
        if prev:
            inc[label] = [x - y for x, y in zip(per[label], per[prev])]
    for k in per:
        if k not in inc and k != "empty":
            inc[k] = [x - y for x, y in zip(per[k], per["empty"])]
    return per, inc, checks, obj_file


def describe(sub, label):
    for lb, _, prev, what in PARTS[sub]:
        if lb == label:
            return what, prev
    if label.startswith("objs"):
        return "bpf/objs' object as in the checkout, whole program (increment: above the empty program)", "empty"
    return "--extra object, whole program (increment: above the empty program)", "empty"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=("net", "vfs"), help="one subsystem (default: both)")
    ap.add_argument("--events", type=int, default=30_000, help="net: sendto()+recv() pairs per round and part")
    ap.add_argument("--writes", type=int, default=100_000, help="vfs: write() calls per round and part")
    ap.add_argument("--size", type=int, default=64, help="bytes per sendto() / write()")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--extra", metavar="SUB:LABEL=PATH", action="append", default=[],
                    help="also measure this whole object of sub (net or vfs), e.g. a build being tried")
    add_rows_flag(ap)
    a = ap.parse_args()
    if a.events < 1 or a.writes < 1 or a.size < 1 or a.rounds < 1:
        sys.exit(f"{SCRIPT}: --events, --writes, --size and --rounds must be >= 1")
    preflight(SCRIPT, "net", "tracepoint")
    bad = 0
    with RunTimeStats():
        results = {sub: run_sub(sub, a) for sub in (("net", "vfs") if not a.only else (a.only,))}
    for sub, (per, inc, checks, obj_file) in results.items():
        med = {k: statistics.median(v) for k, v in per.items()}
        dmed = {k: statistics.median(v) for k, v in inc.items()}
        floor = med["empty"]
        if a.rows:
            for k in per:
                what, prev = describe(sub, k)
                if prev is None:
                    continue
                whole = k.startswith("map-") or k not in {p[0] for p in PARTS[sub]}
                target = f"<= {TARGET[sub]:.0f} ns above the empty program" if whole else "-"
                name = obj_file if k == "objs" else k
                if whole:  # the target is above the empty program: that is the baseline
                    base, base_what = floor, f"empty program on the same hook, same run (over {prev}: {dmed[k]:+.1f} ns)"
                else:
                    base, base_what = med[prev], f"{prev} part, same run (increment {dmed[k]:+.1f} ns)"
                emit(row(f"{sub} part {name} ({what}), {HOOKS[sub]}: kernel run time per event", med[k], "ns",
                         base, base_what, target, (med[k] - floor <= TARGET[sub]) if whole else True))
        else:
            unit = "sendto()+recv() pairs" if sub == "net" else "write() calls"
            n = a.events if sub == "net" else a.writes
            print(f"{sub}: kernel {os.uname().release}, {HOOKS[sub]}, {n} {unit} of {a.size} B per round and part "
                  f"from a fresh cgroup, median of {a.rounds} rounds (BPF_ENABLE_STATS)")
            print(f"  {'part':15} {'ns/event':>9} {'increment':>10} {'above empty':>12}  over      what")
            for k in per:
                what, prev = describe(sub, k)
                d = f"{dmed[k]:+10.1f}" if k in dmed else f"{'':10}"
                print(f"  {k:15} {med[k]:9.1f} {d} {med[k] - floor:+12.1f}  {prev or '':9} {what}")
                print(f"  {'':15} rounds: {' '.join(f'{x:.0f}' for x in per[k])}")
            print(f"  target: whole program <= {TARGET[sub]:.0f} ns above the empty program; objs = bpf/objs/{obj_file}")
        for k, (got, want) in checks.items():
            if got != want:
                bad += 1
                print(f"# {sub} {k}: counted {got[0]} bytes in {got[1]} calls for the bench cgroup, expected "
                      f"{want[0]} in {want[1]}", file=sys.stderr)
            elif not a.rows:
                print(f"  counts exact: {k} {got[0]} bytes in {got[1]} calls")
    return 1 if bad else 0


if __name__ == "__main__":
    run_main(SCRIPT, main)
