"""Filesystem IO collector: ceemsnet_vfs_* counters per cgroup."""

from __future__ import annotations

from ceemsnet import CeemsnetError
from ceemsnet.collectors import vfs_slots
from ceemsnet.collectors.base import Context, KernelHooks, add_map_entries_flag, open_kernel_subsystem
from ceemsnet.collectors.counters import HashSource
from ceemsnet.common.flags import nonnegative_int
from ceemsnet.common.metrics import Family
from ceemsnet.planning.fstypes import fstype, parse_fstypes
from ceemsnet.planning.structs import VFS_OPS, decode_vfs, pack_vfs_key
from ceemsnet.runtime import libbpf

_RW_DOCS = (("bytes", "bytes moved (the calls' return values)"), ("calls", "calls that returned success"),
            ("errors", "calls that returned an error"))
_OPS = tuple((op, name) for op, name in sorted(VFS_OPS.items()) if op > 1)  # open ... rmdir


def vfs_families(stats: dict, paths: dict[int, str], counted: frozenset[str]) -> list[Family]:
    """Metric families from decoded vfs_stats records (pure).

    stats: {(cgroup id, magic): 24 counters}, (bytes, calls, errors) per op (VFS_OPS).
    Reads and writes per (cgroup, fstype); other operations per (cgroup, op),
    summed over the counted file systems. Records of file systems not counted
    are dropped here; an op with nothing counted gives no series.
    """
    rw: dict[tuple[str, str, int], list[int]] = {}   # (cgroup, fstype, op) -> [bytes, calls, errors]
    ops: dict[tuple[str, str], list[int]] = {}       # (cgroup, op name) -> [calls, errors]
    for (cid, magic, *_), vals in stats.items():
        fs = fstype(magic)
        if fs not in counted:
            continue
        path = paths[cid]
        for op in (0, 1):
            b, c, e = vals[3 * op:3 * op + 3]
            if b or c or e:
                acc = rw.setdefault((path, fs, op), [0, 0, 0])
                acc[0] += b
                acc[1] += c
                acc[2] += e
        for op, name in _OPS:
            c, e = vals[3 * op + 1], vals[3 * op + 2]
            if c or e:
                acc = ops.setdefault((path, name), [0, 0])
                acc[0] += c
                acc[1] += e
    out = []
    ordered = sorted(rw.items())
    for op, name in ((0, "read"), (1, "write")):
        for i, (field, doc) in enumerate(_RW_DOCS):
            f = Family(f"ceemsnet_vfs_{name}_{field}", f"Regular-file {name}s: {doc}, per cgroup of the "
                       f"calling task and file system type", "counter", ("cgroup", "fstype"))
            f.rows = [((cg, fs), v[i]) for (cg, fs, o), v in ordered if o == op]
            out.append(f)
    calls = Family("ceemsnet_vfs_ops", "open, create, unlink, mkdir and rmdir calls that succeeded, per cgroup",
                   "counter", ("cgroup", "op"))
    errs = Family("ceemsnet_vfs_op_errors", "open, create, unlink, mkdir and rmdir calls that failed, per cgroup",
                  "counter", ("cgroup", "op"))
    for key, (c, e) in sorted(ops.items()):
        calls.add(key, c)
        errs.add(key, e)
    return out + [calls, errs]


NAME = "vfs"
HELP = "regular-file read/write bytes, calls and errors, and open/create/unlink/mkdir/rmdir (ceemsnet_vfs_*)"


def add_flags(group) -> None:
    add_map_entries_flag(group, NAME, "one per cgroup and file system it touches")
    group.add_argument("--vfs.fstypes", dest="vfs_fstypes", default="storage", metavar="LIST",
                       help="file system types the vfs collector reports: storage (default: all but pseudo "
                            "file systems such as proc, sysfs, cgroup), all, or a comma list (ext4,xfs,nfs,"
                            "lustre,...); 'storage,-tmpfs' removes one")
    group.add_argument("--vfs.slots", dest="vfs_slots", type=nonnegative_int, default=None, metavar="N",
                       help="cgroups whose reads and writes the -slots objects count without hashing, up to "
                            "4 file systems each (a power of two; others count in the hash map; 0: the hash "
                            "layout only, no -slots object); default: what fits 16 MiB of per-CPU memory, "
                            "64 to 4096")


def check(args) -> None:
    parse_fstypes(args.vfs_fstypes)
    n = args.vfs_slots
    if n and n & (n - 1):
        raise CeemsnetError(f"--vfs.slots={n}: must be a power of two")


def open(ctx: Context) -> KernelHooks:
    counted = parse_fstypes(ctx.args.vfs_fstypes)
    n = ctx.args.vfs_slots
    if n is None:
        n = vfs_slots.default_slots(libbpf.num_possible_cpus())

    def source(loaded, stats):
        if vfs_slots.has_slots(loaded.maps):
            return vfs_slots.VfsSlotSource(stats, loaded.maps, decode_vfs, pack_vfs_key)
        return HashSource(stats, decode_vfs, pack_vfs_key)

    return open_kernel_subsystem(ctx, NAME, ctx.args.vfs_map_entries, decode_vfs, pack_vfs_key,
                                 lambda stats, paths: vfs_families(stats, paths, counted),
                                 {vfs_slots.OWNER: n, vfs_slots.VALS: n}, source,
                                 carry=lambda old, new, reused: vfs_slots.fold_slots(old, new, reused, pack_vfs_key))
