"""Cgroups as they are made: id -> path before they can go again.

The resolver (ceemsnet.attribution.cgroups.CgroupResolver) finds a cgroup's path by
scanning the hierarchy when a scrape meets an id it does not know. A cgroup
made and removed between two scrapes -- a SLURM array task or any job
shorter than the scrape interval, with every one of its steps -- is gone by
then, and its counts could only be labelled unknown:<id>. So a thread
watches every cgroup directory with inotify (IN_CREATE: mkdir(2) on cgroupfs
notifies like on any file system) and notes each new cgroup's id (its
directory's inode number) and path the moment it is made, before any
process is moved into it, let alone moves a byte.

The same watches see cgroups go (IN_DELETE: rmdir(2) notifies the parent),
so the lifecycle (ceemsnet/attribution/lifecycle.py) learns which cgroups were
removed without reading every cgroup's directory each scrape: removed()
gives each reader the paths removed since its last call, after handling
whatever the kernel has queued by then (sync()), so a cgroup removed before
a scrape starts is known to that scrape. The log keeps a path only until
every reader that names itself (removed(..., reader=)) has been given it,
and at most GONE_LOG paths in any case: its memory follows the removals of
one scrape interval, not of the exporter's life.

inotify is in every kernel ceemsnet supports and needs no privilege beyond
reading the directories; it costs one watch per cgroup (about 1 KiB of
kernel memory each, counted against fs.inotify.max_user_watches). A removed
cgroup's watch is taken off by hand (inotify_rm_watch) when its parent
reports the removal: cgroupfs (kernfs) keeps a removed directory's inode
cached, so the kernel's own IN_IGNORED comes only once memory pressure
evicts it, and until then every cgroup ever made held a watch and an entry
here (5,000 removed cgroups: 5,000 watches kept, measured on 6.18). If the
watches run out, or the event queue overflows, what is not watched falls
back to the scans, and the log says so once; removed() then says the log
is incomplete and its readers check every cgroup themselves. A cgroup
removed through another mount of the hierarchy (a container's own cgroup2
mount is another super block: its rmdir notifies that one's watchers) is
not seen here: the readers' periodic full checks find it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import threading
import weakref
from collections.abc import Callable

log = logging.getLogger("ceemsnet.attribution.cgwatch")

# <sys/inotify.h>
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_CLOEXEC = 0o2000000
IN_NONBLOCK = 0o4000
_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len; then len bytes of name


# the removal log keeps at most this many paths (a reader that stopped reading holds the rest back
# no further); a reader further behind is told its log is incomplete
GONE_LOG = 65536


class CgroupWatcher:
    """Calls `born(inode, path)` for every cgroup made below `root` (path relative to it,
    "/a/b"), from its own daemon thread, until the process ends; and logs every cgroup
    removed below it for removed()."""

    def __init__(self, root: str, born: Callable[[int, str], None]):
        self.root = root.rstrip("/") or "/"
        self.born = born
        self._wd: dict[int, str] = {}  # watch descriptor -> relative path ("" for the root)
        self._path_wd: dict[str, int] = {}  # and back: what a removal takes off
        self._warned = False
        self.overflows = 0
        # removed paths, in order; None marks a lost event (queue overflow): anything may have gone.
        # _gone_base is the sequence number of _gone[0]; a reader's cursor is a sequence number
        self._gone: list[str | None] = []
        self._gone_base = 0
        # each named reader's cursor: the log drops what all of them have been given (a reader
        # dropped by its owner is forgotten with it)
        self._readers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        # reading the fd and handling what was read happen under this lock (the thread's and sync()'s),
        # so once sync() returns every event the kernel had queued before it is handled
        self._lock = threading.RLock()
        self.stopped = False
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._add.restype = ctypes.c_int
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        self._rm.restype = ctypes.c_int
        fd = libc.inotify_init1(IN_CLOEXEC | IN_NONBLOCK)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self.fd = fd
        self._watch_tree("", report=False)
        self._thread = threading.Thread(target=self._run, name="cgroup-watch", daemon=True)
        self._thread.start()

    def _abs(self, rel: str) -> str:
        return self.root + rel if self.root != "/" else (rel or "/")

    def _watch(self, rel: str) -> bool:
        wd = self._add(self.fd, os.fsencode(self._abs(rel) or "/"),
                       IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR)
        if wd < 0:
            e = ctypes.get_errno()
            if e in (errno.ENOENT, errno.ENOTDIR):
                return False  # removed meanwhile
            if not self._warned:
                self._warned = True
                hint = (" (raise fs.inotify.max_user_watches)" if e == errno.ENOSPC else "")
                log.warning("cannot watch cgroup %s for new cgroups: %s%s; cgroups made and removed between two "
                            "scrapes below it may be counted as unknown:<id>", self._abs(rel), os.strerror(e), hint)
            return False
        old = self._wd.get(wd)  # the same directory under another path (renamed)
        if old is not None and old != rel and self._path_wd.get(old) == wd:
            del self._path_wd[old]
        self._wd[wd] = rel
        self._path_wd[rel] = wd
        return True

    def _unwatch(self, rel: str) -> None:
        """Take the watch of a removed (or moved away) directory off, and forget its path."""
        wd = self._path_wd.pop(rel, None)
        if wd is None:
            return
        if self._wd.get(wd) == rel:
            del self._wd[wd]
        self._rm(self.fd, wd)  # EINVAL if the kernel dropped it already: nothing left to do

    def _watch_tree(self, rel: str, report: bool = True, seen: set[str] | None = None) -> None:
        """Watch rel and every directory below it (those made before the watch included),
        reporting each below rel as born (if `report`: the cgroups there at the start are
        the resolver's first scan's); the paths watched go into `seen`."""
        stack = [rel]
        while stack:
            r = stack.pop()
            if not self._watch(r):
                continue
            if seen is not None:
                seen.add(r)
            try:
                with os.scandir(self._abs(r)) as it:
                    for entry in it:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                child = f"{r}/{entry.name}"
                                if report:
                                    self.born(entry.inode(), child)
                                stack.append(child)
                        except OSError:
                            continue
            except OSError:
                continue

    @property
    def complete(self) -> bool:
        """True while every cgroup directory is watched and events are read (nothing missed but
        what overflows, which removed() reports)."""
        return not self._warned and not self.stopped

    def _run(self) -> None:
        poll = select.poll()
        poll.register(self.fd, select.POLLIN)
        while True:
            try:
                poll.poll()
                self.sync()
            except OSError as e:
                log.warning("watching for new cgroups stopped: %s", e.strerror)
                self.stopped = True
                return

    def sync(self) -> None:
        """Read and handle every event queued now (the fd does not block)."""
        with self._lock:
            while True:
                try:
                    buf = os.read(self.fd, 64 * 1024)
                except (BlockingIOError, InterruptedError):
                    return
                if not buf:
                    return
                self.handle(buf)

    def removed(self, cursor: int | None, reader: object = None) -> tuple[list[str] | None, int]:
        """(paths of the cgroups removed since `cursor`, the cursor to pass next time). The paths are
        None when some removals may be missing from them: the first call (cursor None), a lost
        event, a reader fallen behind what the log kept, or an incomplete watch. A `reader` (any
        object that can be weakly referenced: the lifecycle) lets the log drop what every reader
        has been given; an unnamed caller behind them gets None and checks everything itself."""
        self.sync()
        with self._lock:
            end = self._gone_base + len(self._gone)
            if cursor is None or cursor < self._gone_base or not self.complete:
                out = None
            else:
                out = self._gone[cursor - self._gone_base:]
                out = None if None in out else out
            if reader is not None:
                self._readers[reader] = end
                self._trim(min(self._readers.values()))
            return out, end

    def _trim(self, upto: int) -> None:
        """Drop the removals before sequence number `upto`: every reader has been given them."""
        drop = upto - self._gone_base
        if drop > 0:
            del self._gone[:drop]
            self._gone_base += drop

    def _note_gone(self, rel: str | None) -> None:
        self._gone.append(rel)
        if len(self._gone) > GONE_LOG:
            drop = len(self._gone) // 2
            del self._gone[:drop]
            self._gone_base += drop

    def handle(self, buf: bytes) -> None:
        off = 0
        while off + _EVENT.size <= len(buf):
            wd, mask, _, n = _EVENT.unpack_from(buf, off)
            name = buf[off + _EVENT.size:off + _EVENT.size + n].split(b"\0", 1)[0]
            off += _EVENT.size + n
            if mask & IN_Q_OVERFLOW:
                # events were lost: walk everything again (new watches, new cgroups)
                self.overflows += 1
                log.debug("inotify queue overflowed: scanning the cgroup tree again")
                self._note_gone(None)
                seen: set[str] = set()
                self._watch_tree("", seen=seen)
                for rel in [r for r in self._path_wd if r not in seen]:  # removed meanwhile
                    self._unwatch(rel)
                continue
            if mask & IN_IGNORED:
                rel = self._wd.pop(wd, None)  # the directory went, or we took its watch off
                if rel is not None and self._path_wd.get(rel) == wd:
                    del self._path_wd[rel]
                continue
            if mask & (IN_DELETE | IN_MOVED_FROM) and mask & IN_ISDIR and wd in self._wd:
                gone = f"{self._wd[wd]}/{os.fsdecode(name)}"
                self._note_gone(gone)
                self._unwatch(gone)
                if mask & IN_MOVED_FROM:  # a moved directory takes its subdirectories along
                    for rel in [r for r in self._path_wd if r.startswith(gone + "/")]:
                        self._unwatch(rel)
                continue
            if mask & (IN_CREATE | IN_MOVED_TO) and mask & IN_ISDIR and wd in self._wd:
                child = f"{self._wd[wd]}/{os.fsdecode(name)}"
                try:
                    ino = os.stat(self._abs(child), follow_symlinks=False).st_ino
                except OSError:
                    continue  # removed already: too short to have counted anything
                self.born(ino, child)
                self._watch_tree(child)


# the watcher started for each root (start()): the lifecycles of that hierarchy read its removals
_running: dict[str, CgroupWatcher] = {}


def running(root: str) -> CgroupWatcher | None:
    """The watcher start() made for this cgroup root, if any."""
    return _running.get(root.rstrip("/") or "/")


def start(root: str, born: Callable[[int, str], None]) -> CgroupWatcher | None:
    """A watcher, or None (logged) where inotify cannot be had."""
    try:
        w = CgroupWatcher(root, born)
    except (OSError, AttributeError) as e:
        log.warning("cannot watch %s for new cgroups (%s): cgroups made and removed between two scrapes may be "
                    "counted as unknown:<id>", root, e)
        return None
    _running.setdefault(w.root, w)
    return w
