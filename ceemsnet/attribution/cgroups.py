"""Cgroup identity: the cgroup2 mount, and cgroup id -> path.

On cgroup v2 the id BPF reports (bpf_get_current_cgroup_id) is the inode
number of the cgroup's directory, which readdir gives for free
(os.DirEntry.inode), so a scan costs one getdents per directory and no stat.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

from ceemsnet import CeemsnetError
from ceemsnet.attribution import cgwatch

log = logging.getLogger("ceemsnet.attribution.cgroups")


_OCTAL = frozenset("01234567")


def _unescape_mount(s: str) -> str:
    # /proc/*/mountinfo escapes space, tab, newline and backslash as \ooo (three octal digits: not
    # isdigit(), which "\999" and superscripts pass and int(..., 8) refuses)
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and _OCTAL.issuperset(s[i + 1:i + 4]):
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def _fields(text: str) -> list[str]:
    # the kernel separates with one space and escapes the rest: a mount point may hold any other
    # character str.split() takes for a space (\x0b, \x1c-\x1f, \x85, \u2028, ...)
    return [f for f in text.split(" ") if f]


def parse_cgroup2_mounts(mountinfo: str) -> list[str]:
    """Mount points of cgroup2 file systems in a /proc/self/mountinfo text."""
    mounts = []
    for line in mountinfo.split("\n"):  # not splitlines(): it also splits at \x0b, \x1c, \x85, ...
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = _fields(left)
        if len(fields) >= 5 and _fields(right)[:1] == ["cgroup2"]:
            mounts.append(_unescape_mount(fields[4]))
    return mounts


def find_cgroup2_root(mountinfo_path: str = "/proc/self/mountinfo") -> str:
    try:  # a mount point's bytes as they are (not UTF-8 everywhere): os functions take them back
        with open(mountinfo_path, errors="surrogateescape") as f:
            mounts = parse_cgroup2_mounts(f.read())
    except OSError as e:
        raise CeemsnetError(f"cannot read {mountinfo_path}: {e.strerror}") from None
    if not mounts:
        raise CeemsnetError("no cgroup2 file system is mounted: ceemsnet needs cgroup v2 "
                            "(unified or hybrid hierarchy)")
    # prefer the canonical places, else the first
    for pref in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if pref in mounts:
            return pref
    return mounts[0]


def unresolved_label(cgroup_id: int) -> str:
    return f"unknown:{cgroup_id}"


def scan_cgroup_ids(root: str) -> dict[int, str]:
    """{cgroup id: path relative to root, "/" for the root} for every cgroup below root."""
    ids: dict[int, str] = {}
    try:
        ids[os.stat(root).st_ino] = "/"
    except OSError as e:
        raise CeemsnetError(f"cannot read cgroup root {root}: {e.strerror}") from None
    stack = [(root, "")]
    while stack:
        path, rel = stack.pop()
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            child = f"{rel}/{entry.name}"
                            ids[entry.inode()] = child
                            stack.append((entry.path, child))
                    except OSError:
                        continue  # removed while we looked
        except OSError:
            continue
    return ids


class CgroupResolver:
    """Keeps cgroup id -> path fresh as cgroups come and go.

    A lookup of an id never seen triggers a rescan, so a new cgroup gets its
    path on the first scrape that sees its counts (its series never starts
    under a placeholder label). An id a rescan could not find (a cgroup
    removed before we ever saw it) is remembered and does not trigger more
    rescans. A full rescan also runs every `max_age` seconds so renamed
    cgroups get their new path. Ids of removed cgroups keep their last path
    while callers still ask for them (their counts still exist).
    """

    # how long a watched cgroup's path is kept for ids no scrape has asked for yet: far
    # longer than any scrape interval (a cgroup's counts show at the first scrape after them)
    BORN_KEEP = 3600.0
    # paths taken from the watcher since the last scan after which the next lookup rescans: a
    # rescan keeps only what exists and what callers still ask for, so removed cgroups' paths
    # do not pile up between the max_age scans on a node that makes thousands a minute
    BORN_TAKEN_RESCAN = 1024

    def __init__(self, root: str, max_age: float = 60.0, clock=time.monotonic, low32: bool = False):
        self.root = root
        # before 5.5 bpf_get_current_cgroup_id() returns generation << 32 | inode
        self.mask = 0xFFFFFFFF if low32 else None
        self.max_age = max_age
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._unresolvable: set[int] = set()
        self._scanned_at: float | None = None
        self.scans = 0
        # watch(): cgroups as they are made (ceemsnet/attribution/cgwatch.py), id -> (path, when)
        self._born: dict[int, tuple[str, float]] = {}
        self._born_lock = threading.Lock()
        self._taken = 0  # paths taken from _born since the last scan
        self.watcher = None

    def watch(self) -> bool:
        """Learn every new cgroup's path the moment it is made (an inotify thread), so that
        one made and removed between two scrapes still gets its path. True if watching."""
        if self.watcher is None:
            self.watcher = cgwatch.start(self.root, self._note_born)
        return self.watcher is not None

    def _note_born(self, cid: int, path: str) -> None:
        with self._born_lock:
            self._born[cid] = (path, self._clock())

    def _take_born(self, ids: set[int]) -> None:
        """Move the watched paths of these ids into the table; forget old unasked ones."""
        now = self._clock()
        with self._born_lock:
            for i in ids:
                b = self._born.pop(i, None)
                if b is not None:
                    self._paths[i] = b[0]
                    self._unresolvable.discard(i)
                    self._taken += 1
            if len(self._born) > 1024:
                self._born = {i: b for i, b in self._born.items() if now - b[1] < self.BORN_KEEP}

    def _rescan(self, keep: Iterable[int]) -> None:
        fresh = scan_cgroup_ids(self.root)
        for cid in keep:
            if cid not in fresh and cid in self._paths:
                fresh[cid] = self._paths[cid]
        self._paths = fresh
        keep = set(keep)
        self._unresolvable = {i for i in keep if i not in fresh}
        self._scanned_at = self._clock()
        self._taken = 0
        self.scans += 1

    def resolve(self, ids: Iterable[int]) -> dict[int, str]:
        ids = set(ids)
        if self.mask is not None:
            lows = self._resolve({i & self.mask for i in ids} - {0})
            return {i: lows.get(i & self.mask) or unresolved_label(i) for i in ids}
        return self._resolve(ids)

    def _resolve(self, ids: set[int]) -> dict[int, str]:
        now = self._clock()
        stale = self._scanned_at is None or now - self._scanned_at >= self.max_age
        missing = ids - self._paths.keys()
        if missing and self._born:
            self._take_born(missing)
            missing = ids - self._paths.keys()
        if stale or missing - self._unresolvable or self._taken > self.BORN_TAKEN_RESCAN:
            self._rescan(ids)
            missing = ids - self._paths.keys()
        if missing:
            return {i: self._paths.get(i) or unresolved_label(i) for i in ids}
        return dict(zip(ids, map(self._paths.__getitem__, ids)))  # in C: this runs every scrape for every id


# ---- which hierarchy attributes the work: --cgroup.hierarchy ---------------


SLURM_V1_CONTROLLERS = ("freezer", "cpuset", "memory", "cpu", "cpuacct", "devices", "pids")


@dataclass(frozen=True)
class Hierarchy:
    version: str        # "v2" or "v1"
    controller: str     # v1 only
    subsys_index: int   # the controller's enum cgroup_subsys_id value (v1), -1 for v2
    root: str           # mount point: metric paths are relative to it
    reason: str

    def describe(self) -> str:
        what = "cgroup v2" if self.version == "v2" else f"cgroup v1 {self.controller} hierarchy"
        return f"{what} at {self.root} ({self.reason})"


# cgroup v1 super block options that are not controllers (kernel/cgroup/cgroup-v1.c)
_V1_MOUNT_OPTIONS = {"rw", "ro", "xattr", "noprefix", "clone_children", "cpuset_v2_mode", "none", "all",
                     "favordynmods", "nofavordynmods"}


def parse_proc_cgroups(text: str) -> list[str]:
    """Controller names in /proc/cgroups order, which is the kernel's subsystem index."""
    return [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]


def parse_v1_mounts(mountinfo: str) -> dict[str, str]:
    """{controller: mount point} of cgroup v1 hierarchies (named ones such as name=systemd left out)."""
    out: dict[str, str] = {}
    for line in mountinfo.split("\n"):
        left, sep, right = line.partition(" - ")
        fields, rest = _fields(left), _fields(right)
        if not sep or len(fields) < 5 or len(rest) < 3 or rest[0] != "cgroup":
            continue
        for opt in rest[2].split(","):
            if opt not in _V1_MOUNT_OPTIONS and "=" not in opt:
                out.setdefault(opt, _unescape_mount(fields[4]))
    return out


def subsys_index(ctrl: str, proc_cgroups_names: list[str], subsys_ids: dict[str, int] | None) -> int:
    """A v1 controller's index in task->cgroups->subsys[]: its enum cgroup_subsys_id value from
    the kernel's BTF (<name>_cgrp_id; blkio is io_cgrp_id). /proc/cgroups lists the controllers
    in that order only while it lists them all: since 6.x it leaves out those that can no longer
    be mounted on v1 (7.3: cpuset and memory), and its order is then off by as many."""
    if subsys_ids:
        v = subsys_ids.get(f"{'io' if ctrl == 'blkio' else ctrl}_cgrp_id")
        if v is not None:
            return v
    return proc_cgroups_names.index(ctrl)


def choose_hierarchy(spec: str, mountinfo: str, proc_cgroups: str, isdir=os.path.isdir,
                     subsys_ids: dict[str, int] | None = None) -> Hierarchy:
    """The hierarchy --cgroup.hierarchy=auto|v2|v1:<controller> means on this host (pure);
    subsys_ids: the kernel's enum cgroup_subsys_id (BTF), if known."""
    v2 = parse_cgroup2_mounts(mountinfo)
    v2_root = next((p for p in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified") if p in v2), v2[0] if v2 else None)
    v1 = parse_v1_mounts(mountinfo)
    names = parse_proc_cgroups(proc_cgroups)
    spec = (spec or "auto").strip()

    def v1_hierarchy(ctrl: str, reason: str) -> Hierarchy:
        if ctrl not in names:
            raise CeemsnetError(f"unknown cgroup controller {ctrl!r}; this kernel has: {', '.join(names)}")
        if ctrl not in v1:
            raise CeemsnetError(f"the {ctrl} controller is not mounted as a cgroup v1 hierarchy here"
                                + (" (cgroup2 is mounted: --cgroup.hierarchy=v2 uses it)" if v2 else ""))
        return Hierarchy("v1", ctrl, subsys_index(ctrl, names, subsys_ids), v1[ctrl], reason)

    if spec == "v2":
        if not v2_root:
            raise CeemsnetError("no cgroup2 file system is mounted: use --cgroup.hierarchy=v1:<controller>")
        return Hierarchy("v2", "", -1, v2_root, "asked for")
    if spec.startswith("v1:") and len(spec) > 3:
        return v1_hierarchy(spec[3:], "asked for")
    if spec != "auto":
        raise CeemsnetError(f"invalid --cgroup.hierarchy {spec!r}: use auto, v2 or v1:<controller> "
                            "(e.g. v1:memory)")
    if v2_root and not v1:
        return Hierarchy("v2", "", -1, v2_root, "unified host")
    for ctrl in SLURM_V1_CONTROLLERS:
        if ctrl in v1 and isdir(os.path.join(v1[ctrl], "slurm")):
            return v1_hierarchy(ctrl, f"SLURM's tree found at {os.path.join(v1[ctrl], 'slurm')}")
    if v2_root:
        return Hierarchy("v2", "", -1, v2_root, "hybrid host with no SLURM tree in a v1 controller")
    for ctrl in ("memory",) + SLURM_V1_CONTROLLERS:
        if ctrl in v1:
            return v1_hierarchy(ctrl, "cgroup v1 only host")
    raise CeemsnetError("no cgroup file system is mounted")


def host_hierarchy(spec: str, btf=None) -> Hierarchy:
    try:
        with open("/proc/self/mountinfo", errors="surrogateescape") as f:
            mi = f.read()
        with open("/proc/cgroups") as f:
            pc = f.read()
    except OSError as e:
        raise CeemsnetError(f"cannot read cgroup mounts: {e.strerror}") from None
    return choose_hierarchy(spec, mi, pc, subsys_ids=btf.enum_values("cgroup_subsys_id") if btf else None)
