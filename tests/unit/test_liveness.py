"""Removed cgroups known from the cgroup watcher (ceemsnet/attribution/cgwatch.py), not from reading
every cgroup's directory each scrape (ceemsnet/attribution/lifecycle.py, _gone_watched).

Directories on a tmpfs stand in for cgroups (a cgroup's id is its directory's inode number, as on
cgroup2; tmpfs does not reuse an inode number at once, so a directory made again under the same
name has a new id, as a cgroup has), watched by the real inotify watcher."""

import os
import tempfile
import time

import pytest

from ceemsnet.attribution import cgwatch
from ceemsnet.attribution.lifecycle import Lifecycle


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


@pytest.fixture
def root():
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="ceemsnet-liveness-", dir=base)
    yield d
    for dirpath, dirs, _ in os.walk(d, topdown=False):
        for name in dirs:
            os.rmdir(os.path.join(dirpath, name))
    os.rmdir(d)


def make(root, rel):
    p = os.path.join(root, rel.lstrip("/"))
    os.mkdir(p)
    return os.stat(p).st_ino


class Counting:
    """Counts os.scandir and os.stat calls (every directory read the lifecycle can make)."""

    def __init__(self, monkeypatch):
        self.calls = []
        scandir, stat = os.scandir, os.stat
        monkeypatch.setattr(os, "scandir", lambda *a, **k: self.calls.append(("scandir", a)) or scandir(*a, **k))
        monkeypatch.setattr(os, "stat", lambda *a, **k: self.calls.append(("stat", a)) or stat(*a, **k))


def stats_of(ids):
    return {(cid, 0): (100 + i, 1) for i, cid in enumerate(ids)}


def scrape(life, stats, paths, deleted):
    return life.process(dict(stats), {c: p for c, p in paths.items() if any(k[0] == c for k in stats)},
                        lambda k: deleted.append(k) or True)


def watched(root, n=40):
    """n sibling directories (more than 16: the full check reads their parent once) and the watcher."""
    paths = {make(root, f"/job_{i}"): f"/job_{i}" for i in range(n)}
    w = cgwatch.CgroupWatcher(root, lambda cid, path: None)
    return paths, w


def test_a_removed_cgroup_is_retired_at_the_next_scrape(root):
    paths, w = watched(root)
    life = Lifecycle(root, retention=600, watcher=w)
    stats = stats_of(paths)
    deleted = []
    out, _ = scrape(life, stats, paths, deleted)
    assert out == stats and not deleted and life.full_checks == 1
    victim = next(c for c, p in paths.items() if p == "/job_7")
    os.rmdir(os.path.join(root, "job_7"))
    out, p = scrape(life, stats, paths, deleted)  # no wait: the scrape reads what the kernel queued
    assert life.gone_ids == {victim} and deleted == [(victim, 0)]
    assert {p[k[0]]: v for k, v in out.items() if k[0] < 0} == {"/job_7": stats[(victim, 0)]}
    assert life.full_checks == 1  # found from the watcher's removal, not a full check
    live = {k: v for k, v in stats.items() if k[0] != victim}
    out, _ = scrape(life, live, paths, deleted)
    assert life.gone_ids == set() and deleted == [(victim, 0)]


def test_a_cgroup_removed_and_made_again_under_its_name_is_retired(root):
    paths, w = watched(root)
    life = Lifecycle(root, retention=600, watcher=w)
    stats = stats_of(paths)
    deleted = []
    scrape(life, stats, paths, deleted)
    old = next(c for c, p in paths.items() if p == "/job_3")
    os.rmdir(os.path.join(root, "job_3"))
    new = make(root, "/job_3")
    assert new != old  # the precondition: a new id under the old name
    both = dict(paths)
    both[new] = "/job_3"
    stats2 = dict(stats)
    stats2[(new, 0)] = (5, 1)
    out, p = scrape(life, stats2, both, deleted)
    assert life.gone_ids == {old} and deleted == [(old, 0)]
    got = {}
    for k, v in out.items():
        got[p[k[0]]] = got.get(p[k[0]], 0) + v[0]
    assert got["/job_3"] == stats[(old, 0)][0] + 5  # the retired and the new one's counts, one series
    assert life.full_checks == 1


def test_no_directory_is_read_when_no_cgroup_changed(root, monkeypatch):
    paths, w = watched(root)
    life = Lifecycle(root, retention=600, watcher=w)
    stats = stats_of(paths)
    deleted = []
    scrape(life, stats, paths, deleted)
    calls = Counting(monkeypatch).calls
    for _ in range(5):
        out, _ = scrape(life, stats, paths, deleted)
        assert out == stats
    assert calls == [] and not deleted
    # one removal: one stat of the removed path, no readdir
    os.rmdir(os.path.join(root, "job_11"))
    scrape(life, stats, paths, deleted)
    assert calls == [("stat", (os.path.join(root, "job_11"),))]


def test_the_full_check_without_a_watcher_reads_the_siblings_once(root, monkeypatch):
    """The fallback (no watcher, e.g. inotify unavailable): one readdir of the parent per scrape."""
    paths = {make(root, f"/job_{i}"): f"/job_{i}" for i in range(40)}
    life = Lifecycle(root, retention=600, watcher=False)
    stats = stats_of(paths)
    calls = Counting(monkeypatch).calls
    scrape(life, stats, paths, [])
    scrape(life, stats, paths, [])
    assert [c[0] for c in calls] == ["scandir", "scandir"]


class Deaf:
    """A watcher that sees no removal (as for an rmdir through another mount), or loses events."""

    def __init__(self):
        self.lost = False

    def removed(self, cursor, reader=None):
        return (None if self.lost or cursor is None else []), 0


def test_removals_the_watcher_missed_are_found_by_the_periodic_full_check(root):
    paths = {make(root, f"/job_{i}"): f"/job_{i}" for i in range(20)}
    clock = Clock()
    deaf = Deaf()
    life = Lifecycle(root, retention=600, clock=clock, watcher=deaf, recheck=60)
    stats = stats_of(paths)
    deleted = []
    scrape(life, stats, paths, deleted)
    victim = next(c for c, p in paths.items() if p == "/job_2")
    os.rmdir(os.path.join(root, "job_2"))
    clock.t = 30
    scrape(life, stats, paths, deleted)
    assert not deleted  # nothing told the lifecycle yet
    clock.t = 61
    scrape(life, stats, paths, deleted)
    assert deleted == [(victim, 0)] and life.full_checks == 2
    # an event lost (queue overflow): a full check at once
    other = next(c for c, p in paths.items() if p == "/job_5")
    os.rmdir(os.path.join(root, "job_5"))
    deaf.lost = True
    clock.t = 62
    live = {k: v for k, v in stats.items() if k[0] != victim}
    scrape(life, live, paths, deleted)
    assert deleted == [(victim, 0), (other, 0)] and life.full_checks == 3


def test_an_id_first_seen_after_its_removal_is_checked(root):
    """Counts can reach the map after the cgroup's rmdir (a socket outliving its cgroup): the
    removal was read before its id was in any scrape, and the id is still found gone."""
    paths, w = watched(root)
    life = Lifecycle(root, retention=600, watcher=w)
    stats = stats_of(paths)
    deleted = []
    scrape(life, stats, paths, deleted)
    late = make(root, "/late")
    os.rmdir(os.path.join(root, "late"))
    scrape(life, stats, paths, deleted)  # the removal is read here, its id not yet counted
    more = dict(stats)
    more[(late, 0)] = (9, 1)
    scrape(life, more, {**paths, late: "/late"}, deleted)
    assert deleted == [(late, 0)] and life.full_checks == 1


def test_the_watcher_logs_removals_for_each_reader(root):
    w = cgwatch.CgroupWatcher(root, lambda cid, path: None)
    make(root, "/a")
    make(root, "/a/b")
    time.sleep(0.05)  # the watch on /a is added once its creation is handled (either thread)
    w.sync()
    first, c1 = w.removed(None)
    assert first is None  # a first call cannot know what went before it
    _, c2 = w.removed(None)
    os.rmdir(os.path.join(root, "a", "b"))
    os.rmdir(os.path.join(root, "a"))
    got1, c1 = w.removed(c1)
    got2, c2 = w.removed(c2)
    assert got1 == got2 == ["/a/b", "/a"]
    assert w.removed(c1) == ([], c1)
    w._note_gone(None)  # a lost event (what a queue overflow logs)
    assert w.removed(c1)[0] is None


def test_the_removal_log_keeps_only_what_a_named_reader_has_not_been_given(root):
    """The log's memory follows one scrape's removals, not the exporter's life: what every named
    reader was given is dropped (an exporter churning 5,000 cgroups a round kept every path before)."""
    import gc

    class Reader:
        cursor = None

    w = cgwatch.CgroupWatcher(root, lambda cid, path: None)
    a, b = Reader(), Reader()
    _, a.cursor = w.removed(None, reader=a)
    _, b.cursor = w.removed(None, reader=b)
    for i in range(5):
        make(root, f"/c{i}")
    time.sleep(0.05)
    for i in range(5):
        os.rmdir(os.path.join(root, f"c{i}"))
    _, anon = w.removed(None)            # an unnamed caller holds nothing back
    got, a.cursor = w.removed(a.cursor, reader=a)
    assert got == [f"/c{i}" for i in range(5)]
    assert len(w._gone) == 5             # b has not been given them yet
    got, b.cursor = w.removed(b.cursor, reader=b)
    assert got == [f"/c{i}" for i in range(5)]
    assert w._gone == []                 # every named reader has them: dropped
    assert w.removed(a.cursor, reader=a) == ([], a.cursor)
    make(root, "/d")
    time.sleep(0.05)
    os.rmdir(os.path.join(root, "d"))
    del b                                # a reader its owner dropped holds nothing back
    gc.collect()
    got, a.cursor = w.removed(a.cursor, reader=a)
    assert got == ["/d"] and w._gone == []
    # the unnamed caller's cursor (taken before the five went) is behind what the log kept now:
    # it is told the log is incomplete, and checks every cgroup itself
    assert anon < a.cursor and w.removed(anon)[0] is None


def test_a_renamed_cgroup_is_born_under_its_new_path_and_gone_from_its_old(root):
    born = []
    w = cgwatch.CgroupWatcher(root, lambda cid, path: born.append(path))
    _, cur = w.removed(None)
    make(root, "/a")
    time.sleep(0.05)
    w.sync()
    make(root, "/a/sub")
    time.sleep(0.05)
    w.sync()
    os.rename(os.path.join(root, "a"), os.path.join(root, "b"))
    time.sleep(0.05)
    got, cur = w.removed(cur)
    assert got == ["/a"]
    assert born[-1] in ("/b", "/b/sub") and "/b" in born
    assert sorted(w._path_wd) == sorted(["", "/b", "/b/sub"])  # the old paths' entries are gone
    assert sorted(w._wd.values()) == sorted(["", "/b", "/b/sub"])
    os.rmdir(os.path.join(root, "b", "sub"))
    time.sleep(0.05)
    got, cur = w.removed(cur)
    assert got == ["/b/sub"] and "/b/sub" not in w._path_wd


def test_start_registers_the_watcher_for_its_root(root):
    w = cgwatch.start(root + "/", lambda cid, path: None)
    try:
        assert cgwatch.running(root) is w
        life = Lifecycle(root, retention=600)
        paths = {make(root, f"/j{i}"): f"/j{i}" for i in range(3)}
        stats = stats_of(paths)
        deleted = []
        scrape(life, stats, paths, deleted)
        os.rmdir(os.path.join(root, "j1"))
        scrape(life, stats, paths, deleted)
        assert [k[0] for k in deleted] == [c for c, p in paths.items() if p == "/j1"]
        assert life.full_checks == 1
    finally:
        cgwatch._running.pop(w.root, None)


def test_a_directory_that_cannot_be_read_retires_none_of_its_live_cgroups(root, monkeypatch):
    """The full check lists siblings with one scandir of their parent; a listing that fails (or
    misses entries) must not retire the live cgroups it left out: each is checked on its own."""
    paths = {make(root, f"/job_{i}"): f"/job_{i}" for i in range(20)}  # >= 16 siblings: one listing
    victim = make(root, "/job_gone")
    paths[victim] = "/job_gone"
    os.rmdir(os.path.join(root, "job_gone"))
    life = Lifecycle(root, retention=600, watcher=False)
    scandir = os.scandir

    def failing(path="."):
        if os.path.normpath(os.fspath(path)) == root:
            raise OSError(12, "Cannot allocate memory")
        return scandir(path)
    monkeypatch.setattr(os, "scandir", failing)
    stats, deleted = stats_of(paths), []
    scrape(life, stats, paths, deleted)
    assert life.gone_ids == {victim} and deleted == [(victim, 0)]
