"""Cgroup identity: the cgroup2 mount, and cgroup id -> path.

On cgroup v2 the id BPF reports (bpf_get_current_cgroup_id) is the inode
number of the cgroup's directory, which readdir gives for free
(os.DirEntry.inode), so a scan costs one getdents per directory and no stat.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable

from . import CeemsnetError

log = logging.getLogger("ceemsnet.cgroups")


def _unescape_mount(s: str) -> str:
    # /proc/*/mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and i + 3 < len(s) and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def parse_cgroup2_mounts(mountinfo: str) -> list[str]:
    """Mount points of cgroup2 file systems in a /proc/self/mountinfo text."""
    mounts = []
    for line in mountinfo.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields = left.split()
        if len(fields) >= 5 and right.split()[:1] == ["cgroup2"]:
            mounts.append(_unescape_mount(fields[4]))
    return mounts


def find_cgroup2_root(mountinfo_path: str = "/proc/self/mountinfo") -> str:
    try:
        with open(mountinfo_path) as f:
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

    def __init__(self, root: str, max_age: float = 60.0, clock=time.monotonic):
        self.root = root
        self.max_age = max_age
        self._clock = clock
        self._paths: dict[int, str] = {}
        self._unresolvable: set[int] = set()
        self._scanned_at: float | None = None
        self.scans = 0

    def _rescan(self, keep: Iterable[int]) -> None:
        fresh = scan_cgroup_ids(self.root)
        for cid in keep:
            if cid not in fresh and cid in self._paths:
                fresh[cid] = self._paths[cid]
        self._paths = fresh
        keep = set(keep)
        self._unresolvable = {i for i in keep if i not in fresh}
        self._scanned_at = self._clock()
        self.scans += 1

    def resolve(self, ids: Iterable[int]) -> dict[int, str]:
        ids = set(ids)
        now = self._clock()
        stale = self._scanned_at is None or now - self._scanned_at >= self.max_age
        new = any(i not in self._paths and i not in self._unresolvable for i in ids)
        if stale or new:
            self._rescan(ids)
        return {i: self._paths.get(i) or unresolved_label(i) for i in ids}
