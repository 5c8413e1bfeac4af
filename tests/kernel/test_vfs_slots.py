"""The vfs slot layout (bpf/vfs/vfs_slots.h, -slots objects) counts exactly, as the hash layout.

A child in a fresh cgroup writes and reads known bytes on file systems the test
mounts (tmpfs, ramfs) or finds (the root's, proc, sysfs, cgroup2); the exporter's
counters must move by exactly what the child's own tally says, in both layouts
(--vfs.slots=0: the hash twin). More file systems than a slot's table holds
(VFS_SLOT_FS) from one CPU: the overflow counts in vfs_stats and the totals stay
exact. A removed cgroup's slot is given back and its totals kept exactly. An
upgrade to another slot count (the slots cannot be taken over) or to the hash
layout folds the slots into vfs_stats: counts exact across it.
"""

import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile

import pytest

from ceemsnet.planning.fstypes import fstype
from ceemsnet.planning.structs import VFS_SLOT_FS, VFS_SLOT_TAG, VFS_WORDS

from .helpers import Exporter, require_program
from .test_lifecycle import map_ids_held_by
from .test_matrix import PASS, matrix

_libc = ctypes.CDLL(None, use_errno=True)
FSTYPES_ALL = "--vfs.fstypes=all"  # proc, sysfs and cgroup2 are pseudo file systems: not reported by default

# The child: pinned to one CPU (one per-CPU table of its slot), then per line of JSON
# {"dirs": [...], "reads": [...], "writes": n} writes n chunks to a new file in each dir and
# reads it back, reads each file of "reads" to its end; answers its own tally as JSON,
# {path: {"read": [bytes, calls], "write": [bytes, calls]}}. "go" (Child.go) ends it.
CHILD = r"""
import json, os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() in ("", "go"):
        break
    spec, tally = json.loads(line), {}
    def drain(fd, t):
        while True:
            b = os.read(fd, 4096)
            t["read"][0] += len(b)
            t["read"][1] += 1
            if not b:
                return
    for d in spec["dirs"]:
        t = tally[d] = {"read": [0, 0], "write": [0, 0]}
        path = os.path.join(d, "vfs-slots-child")
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        for i in range(spec["writes"]):
            t["write"][0] += os.write(fd, b"w" * (1000 + i))
            t["write"][1] += 1
        os.lseek(fd, 0, os.SEEK_SET)
        drain(fd, t)
        os.close(fd)
        os.unlink(path)
    for p in spec["reads"]:
        t = tally[p] = {"read": [0, 0], "write": [0, 0]}
        fd = os.open(p, os.O_RDONLY)
        drain(fd, t)
        os.close(fd)
    print(json.dumps(tally), flush=True)
"""


class Worker:
    """The child, in a cgroup: step() has it do one plan and returns its tally."""

    def __init__(self, spawn, cg):
        self.child = spawn([sys.executable, "-c", CHILD], cg)
        assert self.child.proc.stdout.readline().strip() == "ready"

    def step(self, dirs=(), reads=(), writes=5):
        p = self.child.proc
        p.stdin.write(json.dumps({"dirs": list(dirs), "reads": list(reads), "writes": writes}) + "\n")
        p.stdin.flush()
        return json.loads(p.stdout.readline())

    def end(self):
        self.child.go()


def magic_of(path: str) -> int:
    """The file system magic of path: statfs(2)'s f_type (a long at offset 0 on 64-bit Linux)."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(path.encode(), buf) != 0:
        raise OSError(ctypes.get_errno(), f"statfs {path}")
    return struct.unpack_from("=q", buf, 0)[0] & 0xFFFFFFFF


def want_by_fstype(tallies, paths_magic):
    """{(fstype, op): [bytes, calls]} summed over the tallies (one per step)."""
    out = {}
    for tally in tallies:
        for path, t in tally.items():
            for op in ("read", "write"):
                acc = out.setdefault((fstype(paths_magic[path]), op), [0, 0])
                acc[0] += t[op][0]
                acc[1] += t[op][1]
    return out


def got_by_fstype(before, after, cgroup, keys):
    def v(s, name, fs):
        return s.get((name, (("cgroup", cgroup), ("fstype", fs))), 0)
    return {(fs, op): [v(after, f"ceemsnet_vfs_{op}_{k}_total", fs) - v(before, f"ceemsnet_vfs_{op}_{k}_total", fs)
                       for k in ("bytes", "calls")] for fs, op in keys}


def vfs_object(samples) -> str:
    objs = {dict(k[1])["object"] for k in samples if k[0] == "ceemsnet_hook_info" and dict(k[1])["subsystem"] == "vfs"}
    assert len(objs) == 1, objs
    return objs.pop()


def vm_pass_vfs_object() -> str:
    """The vfs object tests/vm/matrix.py lists for this VM pass ("" outside the VM suite), which
    test_matrix.py checks is the one loaded: where it has no slot layout, the slot tests skip
    before starting an exporter (each start costs emulated seconds) rather than after."""
    run = matrix.BY_KERNEL.get(os.environ.get("CEEMSNET_VM_RUN") or "")
    return run.objects.get(PASS or "", ("", ""))[1] if run and run.kernel != "host" else ""


VM_VFS_OBJECT = vm_pass_vfs_object()
needs_slots = pytest.mark.skipif(bool(VM_VFS_OBJECT) and not VM_VFS_OBJECT.endswith("-slots.bpf.o"),
                                 reason=f"the vfs object loaded here ({VM_VFS_OBJECT}) has no slot layout")


def slots_or_skip(e: Exporter, samples) -> None:
    obj = vfs_object(samples)
    if not obj.endswith("-slots.bpf.o"):
        e.stop()
        pytest.skip(f"the vfs object loaded here ({obj}) has no slot layout")


def _dump(map_id):
    return json.loads(subprocess.run([require_program("bpftool"), "-j", "map", "dump", "id", str(map_id)],
                                     capture_output=True, text=True, check=True).stdout)


def _words(hexbytes):
    b = bytes(int(x, 16) for x in hexbytes)
    return [int.from_bytes(b[i:i + 8], "little") for i in range(0, len(b), 8)]


def in_maps(pid, cid):
    """What the exporter's maps hold for cgroup id cid: (its slots {slot: [per-CPU tags]},
    {magic: VFS_WORDS counters} in vfs_stats, summed over the CPUs)."""
    slots = {}
    (owner,) = map_ids_held_by(pid, "vfs_slot_owner")
    (vals,) = map_ids_held_by(pid, "vfs_slot_vals")
    mine = {int.from_bytes(bytes(int(x, 16) for x in e["key"]), "little") for e in _dump(owner)
            if _words(e["value"])[0] == cid}
    for e in _dump(vals):
        s = int.from_bytes(bytes(int(x, 16) for x in e["key"]), "little")
        if s in mine:
            slots[s] = [_words(c["value"])[:VFS_SLOT_FS] for c in e["values"]]
    (stats,) = map_ids_held_by(pid, "vfs_stats")
    hashed = {}
    for e in _dump(stats):
        k = _words(e["key"])
        if k[0] != cid:
            continue
        acc = hashed.setdefault(k[1] & 0xFFFFFFFF, [0] * VFS_WORDS)
        for c in e["values"]:
            for w, x in enumerate(_words(c["value"])[:VFS_WORDS]):
                acc[w] += x
    return slots, hashed


def _mount(kind):
    d = tempfile.mkdtemp(prefix=f"ceemsnet-{kind}-")
    subprocess.run([require_program("mount"), "-t", kind, "-o", "size=16m" if kind == "tmpfs" else "mode=0755",
                    f"ceemsnet-{kind}", d], check=True)
    return d


def _umount(d):
    subprocess.run([require_program("umount"), d], check=False)
    os.rmdir(d)


@pytest.fixture
def tmpfs_dir():
    d = _mount("tmpfs")
    yield d
    _umount(d)


@pytest.fixture
def ramfs_dir():
    d = _mount("ramfs")
    yield d
    _umount(d)


@pytest.fixture
def disk_dir():
    """A directory on the root's file system (not tmpfs: /var/tmp)."""
    d = tempfile.mkdtemp(prefix="ceemsnet-vfs-slots-", dir="/var/tmp")
    yield d
    os.rmdir(d)


@pytest.mark.parametrize("layout", [pytest.param("slots", marks=needs_slots), "hash"])
def test_exact_writes_and_reads_in_both_layouts(layout, make_cgroup, spawn, tmpfs_dir):
    e = Exporter(collectors="vfs", extra=[FSTYPES_ALL] + (["--vfs.slots=0"] if layout == "hash" else []))
    try:
        cg = make_cgroup()
        work = Worker(spawn, cg)
        before = e.samples()
        if layout == "slots":
            slots_or_skip(e, before)
        else:
            assert not vfs_object(before).endswith("-slots.bpf.o")
        tally = work.step(dirs=[tmpfs_dir], writes=7)
        after = e.samples()
        want = want_by_fstype([tally], {tmpfs_dir: magic_of(tmpfs_dir)})
        assert want[("tmpfs", "write")] == [sum(1000 + i for i in range(7)), 7]
        assert got_by_fstype(before, after, cg.rel, want) == want
        if layout == "slots":
            # the writes and reads went to the cgroup's slot: none of them in vfs_stats (the open,
            # before the cgroup read or wrote anything, did: opens take no slot)
            slots, hashed = in_maps(e.proc.pid, cg.id)
            tag = magic_of(tmpfs_dir) | VFS_SLOT_TAG
            assert len(slots) == 1 and any(tag in cpu for cpu in next(iter(slots.values()))), slots
            assert hashed.get(magic_of(tmpfs_dir), [0] * VFS_WORDS)[0:6] == [0] * 6, hashed
        work.end()
    finally:
        rc, err = e.stop()
    assert rc == 0, err


@needs_slots
def test_more_file_systems_than_a_slot_holds(make_cgroup, spawn, tmpfs_dir, ramfs_dir, disk_dir):
    e = Exporter(collectors="vfs", extra=[FSTYPES_ALL])
    try:
        cg = make_cgroup()
        work = Worker(spawn, cg)
        before = e.samples()
        slots_or_skip(e, before)
        dirs = [tmpfs_dir, ramfs_dir, disk_dir]
        reads = ["/proc/self/stat", "/sys/devices/system/cpu/online", os.path.join(cg.path, "cgroup.procs")]
        magics = {p: magic_of(p) for p in dirs + reads}
        if len(set(magics.values())) <= VFS_SLOT_FS:
            pytest.skip(f"fewer than {VFS_SLOT_FS + 1} file systems here: {magics}")
        tally = work.step(dirs=dirs, reads=reads, writes=3)
        after = e.samples()
        want = want_by_fstype([tally], magics)
        assert got_by_fstype(before, after, cg.rel, want) == want
        # one CPU met them all: its table is full, and the file systems beyond it counted in vfs_stats
        slots, hashed = in_maps(e.proc.pid, cg.id)
        assert any(all(cpu) for tags in slots.values() for cpu in tags), slots
        in_slots = {t & 0xFFFFFFFF for tags in slots.values() for cpu in tags for t in cpu if t}
        overflow = {m for m in set(magics.values()) - in_slots if any(hashed.get(m, [0] * VFS_WORDS)[0:6])}
        assert len(overflow) >= len(set(magics.values())) - VFS_SLOT_FS, (in_slots, hashed)
        work.end()
    finally:
        rc, err = e.stop()
    assert rc == 0, err


@needs_slots
def test_a_removed_cgroup_gives_its_slot_back_and_keeps_its_totals(make_cgroup, spawn, tmpfs_dir, ramfs_dir):
    e = Exporter(collectors="vfs", extra=[FSTYPES_ALL, "--cgroup.retention=600"])
    try:
        cg = make_cgroup()
        work = Worker(spawn, cg)
        before = e.samples()
        slots_or_skip(e, before)
        dirs = [tmpfs_dir, ramfs_dir]
        tally = work.step(dirs=dirs, writes=4)
        want = want_by_fstype([tally], {d: magic_of(d) for d in dirs})
        live = e.samples()
        assert got_by_fstype(before, live, cg.rel, want) == want
        slots, _ = in_maps(e.proc.pid, cg.id)
        assert slots
        work.end()
        cg.remove()
        gone = e.samples()
        assert got_by_fstype(before, gone, cg.rel, want) == want  # retired, exactly
        slots, hashed = in_maps(e.proc.pid, cg.id)
        assert not slots and not hashed, (slots, hashed)  # the slot given back, the keys deleted
        assert got_by_fstype(before, e.samples(), cg.rel, want) == want  # and not counted twice after
    finally:
        rc, err = e.stop()
    assert rc == 0, err


@needs_slots
@pytest.mark.parametrize("then, resize", [("--vfs.slots=2048", True), ("--vfs.slots=0", True),
                                          ("--vfs.slots=2048", False)])
def test_upgrade_folds_the_slots_exactly(then, resize, make_cgroup, spawn, pin_path, tmpfs_dir, ramfs_dir):
    """Pinned slot layout -> another slot count (the slot maps cannot be taken over) or the hash
    layout: the slots' records are added into vfs_stats before the new programs attach. With
    vfs_stats of another size too (resize) the upgrade says migrate; with the same vfs_stats the
    fold goes into the same map (taken over by every family tried), and the counts stay exact."""
    args = [FSTYPES_ALL, f"--bpf.pin-path={pin_path}", "--log.level=info"]
    cg = make_cgroup()
    work = Worker(spawn, cg)
    dirs = [tmpfs_dir, ramfs_dir]
    magics = {d: magic_of(d) for d in dirs}
    e = Exporter(collectors="vfs", extra=args + ["--vfs.slots=1024"])
    try:
        first = e.samples()
        slots_or_skip(e, first)
        tallies = [work.step(dirs=dirs, writes=3)]
        mid = e.samples()
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    if "no continuity" in err:
        pytest.skip("this kernel cannot pin the vfs links")
    tallies.append(work.step(dirs=dirs, writes=5))  # nobody serves: the pinned programs count
    e = Exporter(collectors="vfs", extra=args + [then] + (["--vfs.map-entries=70000"] if resize else []))
    try:
        upgraded = e.samples()
        tallies.append(work.step(dirs=dirs, writes=2))
        final = e.samples()
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    assert any(f"({how}:" in err for how in (("migrate",) if resize else ("migrate", "swap"))), err
    assert vfs_object(final).endswith("-slots.bpf.o") == (then != "--vfs.slots=0")
    want = want_by_fstype(tallies, magics)
    assert got_by_fstype(first, mid, cg.rel, want) == want_by_fstype(tallies[:1], magics)
    assert got_by_fstype(first, upgraded, cg.rel, want) == want_by_fstype(tallies[:2], magics)
    assert got_by_fstype(first, final, cg.rel, want) == want
    work.end()
