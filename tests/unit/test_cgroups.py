import os

from ceemsnet.attribution.cgroups import CgroupResolver, parse_cgroup2_mounts, scan_cgroup_ids, unresolved_label

MOUNTINFO = """\
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
40 1 0:40 / /mnt/odd\\040name rw,relatime - cgroup2 none rw
"""


def test_parse_cgroup2_mounts_hybrid_and_escapes():
    assert parse_cgroup2_mounts(MOUNTINFO) == ["/sys/fs/cgroup/unified", "/mnt/odd name"]
    assert parse_cgroup2_mounts("garbage line\n") == []


def make_tree(tmp_path, rels):
    for r in rels:
        (tmp_path / r.lstrip("/")).mkdir(parents=True, exist_ok=True)


def ino(tmp_path, rel):
    return os.stat(tmp_path / rel.lstrip("/")).st_ino


def test_scan_maps_inode_to_relative_path(tmp_path):
    deep = "/" + "/".join(f"d{i}" for i in range(40))
    rels = ["/slurm/uid_1000/job_42/step_0", "/with space/ünïcode", deep]
    make_tree(tmp_path, rels)
    (tmp_path / "slurm" / "cgroup.procs").write_text("")  # files are not cgroups
    ids = scan_cgroup_ids(str(tmp_path))
    assert ids[os.stat(tmp_path).st_ino] == "/"
    for r in rels:
        assert ids[ino(tmp_path, r)] == r
    assert all(not p.endswith("cgroup.procs") for p in ids.values())


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_resolver_rescans_on_new_ids_only(tmp_path):
    make_tree(tmp_path, ["/a"])
    clock = Clock()
    r = CgroupResolver(str(tmp_path), max_age=60, clock=clock)
    a = ino(tmp_path, "/a")
    assert r.resolve([a]) == {a: "/a"} and r.scans == 1
    assert r.resolve([a]) == {a: "/a"} and r.scans == 1  # cached
    make_tree(tmp_path, ["/b"])
    b = ino(tmp_path, "/b")
    assert r.resolve([a, b]) == {a: "/a", b: "/b"} and r.scans == 2  # new id: rescan at once
    ghost = 987654321987
    assert r.resolve([ghost])[ghost] == unresolved_label(ghost) and r.scans == 3
    r.resolve([ghost, a])
    assert r.scans == 3  # a known-unresolvable id does not rescan every scrape
    clock.t = 61
    r.resolve([a])
    assert r.scans == 4  # periodic full rescan


def test_resolver_keeps_path_of_removed_cgroup_while_asked(tmp_path):
    make_tree(tmp_path, ["/job_1/step_0"])
    step = ino(tmp_path, "/job_1/step_0")
    clock = Clock()
    r = CgroupResolver(str(tmp_path), clock=clock)
    assert r.resolve([step])[step] == "/job_1/step_0"
    os.rmdir(tmp_path / "job_1" / "step_0")
    clock.t = 100  # forces a rescan that no longer sees it
    assert r.resolve([step])[step] == "/job_1/step_0"


def _wait(fn, timeout=10.0):
    import time
    deadline = time.time() + timeout
    while not fn():
        assert time.time() < deadline, "timed out"
        time.sleep(0.01)


def test_watched_resolver_knows_directories_made_and_removed_between_lookups(tmp_path):
    # inotify works on any file system: directories stand in for cgroups (ids are inode numbers)
    (tmp_path / "old").mkdir()
    r = CgroupResolver(str(tmp_path))
    assert r.resolve([]) == {}
    assert r.watch()
    made = []
    for rel in ("job_1", "job_1/step_0", "job_1/step_0/user", "job_1/step_0/user/task_0", "old/x"):
        p = tmp_path / rel
        p.mkdir()
        made.append((os.stat(p).st_ino, "/" + rel))
    _wait(lambda: len(r._born) >= len(made))
    for rel in ("job_1/step_0/user/task_0", "job_1/step_0/user", "job_1/step_0", "job_1", "old/x"):
        (tmp_path / rel).rmdir()
    assert r.resolve([i for i, _ in made]) == dict(made)
    assert r.watcher.overflows == 0


def test_watcher_reports_nothing_for_what_was_there_and_survives_odd_names(tmp_path):
    (tmp_path / "a").mkdir()
    seen = []
    from ceemsnet.attribution.cgwatch import CgroupWatcher
    w = CgroupWatcher(str(tmp_path), lambda i, p: seen.append(p))
    (tmp_path / "a" / "sp ace\u00e9").mkdir()
    _wait(lambda: seen)
    assert seen == ["/a/sp ace\u00e9"]
    assert sorted(w._wd.values()) == ["", "/a", "/a/sp ace\u00e9"]


def test_watched_paths_of_removed_cgroups_do_not_pile_up_between_scans(tmp_path):
    # a node making thousands of short cgroups a minute: each scrape takes the paths of the
    # removed ones from the watcher; once callers stop asking, they must go at the next
    # rescan, not wait for the max_age one (nor stay forever)
    make_tree(tmp_path, ["/live"])
    live = ino(tmp_path, "/live")
    clock = Clock()
    r = CgroupResolver(str(tmp_path), max_age=60, clock=clock)
    r.resolve([live])
    scans = r.scans
    next_id = 10**12
    for _ in range(5):  # five scrapes, each meeting 600 cgroups made and removed since the last
        batch = list(range(next_id, next_id + 600))
        next_id += 600
        for i in batch:
            r._note_born(i, f"/job_{i}")
        clock.t += 1
        got = r.resolve([live, *batch])
        assert got == {live: "/live", **{i: f"/job_{i}" for i in batch}}  # all labelled, from the watcher
    assert r.scans == scans + 2  # after 1024 taken paths: one rescan, then another after 1024 more
    assert len(r._paths) <= 1 + 3 * 600  # not 3001: the rescans dropped the paths no longer asked for
    assert not r._born
