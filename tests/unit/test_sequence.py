"""The one pinning sequence (ceemsnet/pinned/sequence.py): its decisions, with fakes of a
subsystem's steps and of the collections (no kernel). The kernel tests
(tests/kernel/test_continuity.py) run it for real on net, vfs and skb."""

import errno
import logging
import os
import shutil
import struct

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.pinned import sequence
from ceemsnet.pinned.continuity import Upgrade, Wanted
from ceemsnet.pinned.pins import PinDir, identity
from ceemsnet.runtime.links import PinUnsupported

KEY = struct.pack("=Q", 1)


class FakeMap:
    """A counters map: key -> 3 u64 words, one CPU."""

    def __init__(self, map_id, data=None):
        self.id = map_id
        self.data = dict(data or {})
        self.key_size, self.value_size, self.percpu, self.value_stride, self.ncpus = 8, 24, False, 24, 1

    def read_all(self):
        return b"".join(self.data), b"".join(self.data.values()), len(self.data)

    def update(self, k, v):
        self.data[k] = v


class FakeLink:
    def __init__(self, program, name=""):
        self.program, self.name = program, name or program
        self.pinned, self.closed, self.prog_fd = True, False, None
        self.pin_path = None

    def update_program(self, fd, program):
        self.prog_fd, self.program = fd, program

    def unpin(self):
        self.pinned = False


class FakeObj:
    def __init__(self, path, family="tracepoint"):
        self.path, self.family = path, family
        self.file = os.path.basename(path)


class FakeSpec:
    def __init__(self, obj):
        self.obj = obj


class FakeColl:
    """What the sequence and Upgrade use of a runtime Collection."""

    def __init__(self, obj, maps, links=(), reused=(), pin_error=None, pin_dir=None):
        self.spec, self.file = FakeSpec(obj), obj.file
        self.maps, self.links, self.reused = dict(maps), list(links), set(reused)
        self.pin_error, self.pin_dir = pin_error, pin_dir
        self.unpinned = self.closed = False

    def pin(self, d):
        if self.pin_error is not None:
            raise self.pin_error
        os.mkdir(d)
        self.pin_dir = d

    def unpin(self):
        self.unpinned = True
        if self.pin_dir and os.path.isdir(self.pin_dir):
            shutil.rmtree(self.pin_dir)

    def close(self):
        self.closed = True

    def detach(self, links):
        for ln in links:
            ln.closed = True
        self.links = [ln for ln in self.links if ln not in links]

    def program_fd(self, name):
        return 100 + len(name)


class Loaded:
    def __init__(self, coll):
        self.collection = coll


class FakeSteps:
    """A subsystem's steps: `wanted` is what wanted() answers; load() makes `new` (a FakeColl),
    takes the old programs' place and counts, or raises `fail`."""
    subsystem = "net"
    counters = "net_stats"

    def __init__(self, obj, wanted=None, new=None, fail=None, carry=None, relink=False):
        self.obj, self._wanted, self.new, self.fail, self.carry, self.relink = obj, wanted, new, fail, carry, relink
        self.settings = {"cgrp_v1_subsys": -1}
        self.calls = []

    def wanted(self, pinned):
        self.calls.append(("wanted", pinned.stem))
        return self._wanted

    def adopt(self, pinned):
        self.calls.append(("adopt", pinned.path))
        return Loaded(FakeColl(self.obj, {"net_stats": FakeMap(99)}, pin_dir=pinned.path))

    def load(self, up):
        self.calls.append(("load", sorted(up.reuse or ())))
        if self.relink:
            up.relink(self.new, [ln for c in up.old for ln in c.links])
        up.take_over(self.new)
        if self.fail is not None:
            raise self.fail
        return Loaded(self.new)


@pytest.fixture
def obj(tmp_path):
    path = tmp_path / "net-tracepoint-5.8-x86.bpf.o"
    path.write_bytes(b"\x7fELF object")
    return FakeObj(str(path))


@pytest.fixture
def pins(tmp_path):
    d = PinDir.__new__(PinDir)  # PinDir() wants bpffs; its layout works on any directory
    d.path = str(tmp_path / "pins")
    os.mkdir(d.path, 0o700)
    return d


@pytest.fixture
def old(monkeypatch):
    """Pinned object directories made on disk, and the collections the sequence opens for them."""
    opened = {}

    def make(pins, stem="net-tracepoint-5.8-x86", ident="a" * 16, gen=7, data=None):
        d = pins.object_dir("net", stem, ident, gen)
        os.mkdir(d)
        for e in ("map__net_stats", "link__tp_btf_sys_exit"):
            open(os.path.join(d, e), "w").close()
        opened[d] = FakeColl(FakeObj(f"/objs/{stem}.bpf.o"), {"net_stats": FakeMap(gen, data)},
                             [FakeLink("tp_btf_sys_exit")], pin_dir=d)
        return d

    monkeypatch.setattr(sequence, "adopt_old", lambda pinned: [opened[p.path] for p in pinned])
    make.opened = opened
    return make


def object_dirs(pins):
    d = os.path.join(pins.path, "net")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def test_fresh_without_pins_loads_and_pins_nothing(obj):
    steps = FakeSteps(obj, new=FakeColl(obj, {"net_stats": FakeMap(42)}))
    opened = sequence.open_subsystem(None, steps)
    assert (opened.how, opened.generation) == ("fresh", 42)
    assert opened.obj.collection is steps.new
    assert steps.calls == [("load", [])]          # nothing to adopt, nothing to reuse
    assert steps.new.pin_dir is None


def test_fresh_pins_under_a_new_generation(obj, pins, caplog):
    steps = FakeSteps(obj, new=FakeColl(obj, {"net_stats": FakeMap(42)}))
    with caplog.at_level(logging.INFO, "ceemsnet.pinned.sequence"):
        opened = sequence.open_subsystem(pins, steps)
    assert (opened.how, opened.generation) == ("fresh", 42)
    name = f"net-tracepoint-5_8-x86__{identity(obj.path, steps.settings)}__g42"
    assert object_dirs(pins) == [name]
    assert steps.new.pin_dir == os.path.join(pins.path, "net", name)
    assert "net: maps and links pinned in" in caplog.text and "replaced" not in caplog.text


def test_adopt_opens_the_pinned_object_and_keeps_its_generation(obj, pins, old, caplog):
    d = old(pins, gen=7)
    want = Wanted("net-tracepoint-5.8-x86", "a" * 16, frozenset({"tp_btf_sys_exit"}), True)
    steps = FakeSteps(obj, wanted=want)
    with caplog.at_level(logging.INFO, "ceemsnet.pinned.sequence"):
        opened = sequence.open_subsystem(pins, steps)
    assert (opened.how, opened.generation) == ("adopt", 7)
    assert steps.calls == [("wanted", "net-tracepoint-5.8-x86"), ("adopt", d)]  # nothing loaded
    assert object_dirs(pins) == [os.path.basename(d)]
    assert "adopted the pinned net-tracepoint-5.8-x86.bpf.o" in caplog.text


def test_an_empty_counters_map_made_anew_is_a_migrate_not_a_swap(obj, pins, old, caplog):
    """Nothing to copy, but the new object made its own map (the old one did not fit): the log
    must not say the counts stayed in the same maps."""
    old(pins, ident="b" * 16, gen=7, data={})
    steps = FakeSteps(obj, wanted=None, new=FakeColl(obj, {"net_stats": FakeMap(42)}, reused=set()))
    with caplog.at_level(logging.INFO, "ceemsnet.pinned.sequence"):
        assert sequence.open_subsystem(pins, steps).how == "migrate"
    assert "(migrate: the counts were copied over)" in caplog.text


@pytest.mark.parametrize("reused, how", [({"net_stats"}, "swap"), (set(), "migrate")])
def test_upgrade_replaces_the_pins_and_keeps_the_generation(obj, pins, old, caplog, reused, how):
    d = old(pins, ident="b" * 16, gen=7, data={KEY: struct.pack("=3Q", 100, 1, 0)})
    new = FakeColl(obj, {"net_stats": FakeMap(42)}, reused=reused)
    steps = FakeSteps(obj, wanted=None, new=new)   # this run would not load the pinned object
    prev = old.opened[d]
    link = prev.links[0]
    with caplog.at_level(logging.INFO, "ceemsnet.pinned.sequence"):
        opened = sequence.open_subsystem(pins, steps)
    assert (opened.how, opened.generation) == (how, 7)   # the counts continue: the generation stays
    assert steps.calls[-1] == ("load", ["net_stats"])     # on the old maps
    assert link.closed and prev.links == []               # the old program detached
    assert prev.unpinned and prev.closed                  # and its pins dropped
    assert object_dirs(pins) == [f"net-tracepoint-5_8-x86__{identity(obj.path, steps.settings)}__g7"]
    if how == "migrate":
        assert new.maps["net_stats"].data == {KEY: struct.pack("=3Q", 100, 1, 0)}  # copied over
    assert f"replaced the pinned net-tracepoint-5.8-x86.bpf.o by {obj.file} ({how}:" in caplog.text


def test_an_interrupted_upgrade_is_finished_under_the_oldest_generation(obj, pins, old):
    d1, d2 = old(pins, gen=9), old(pins, ident="c" * 16, gen=7)
    steps = FakeSteps(obj, wanted=Wanted("x", "y", frozenset(), True), new=FakeColl(obj, {"net_stats": FakeMap(42)}))
    opened = sequence.open_subsystem(pins, steps)
    assert opened.generation == 7
    assert [c[0] for c in steps.calls] == ["load"]        # two pinned: nothing to adopt, wanted() not asked
    assert old.opened[d1].unpinned and old.opened[d2].unpinned
    assert len(object_dirs(pins)) == 1


@pytest.mark.parametrize("fail, match", [
    (CeemsnetError("no hook family works for net on this kernel"), "no hook family works"),
    (OSError(errno.EPERM, "Operation not permitted"), "cannot take over the pinned .*ceemsnet detach"),
])
def test_a_failed_upgrade_keeps_the_old_pins(obj, pins, old, fail, match):
    d = old(pins, ident="b" * 16, gen=7)
    steps = FakeSteps(obj, new=FakeColl(obj, {"net_stats": FakeMap(42)}), fail=fail)
    with pytest.raises(CeemsnetError, match=match):
        sequence.open_subsystem(pins, steps)
    prev = old.opened[d]
    assert prev.closed and not prev.unpinned              # abandoned: its maps stay pinned, counts and all
    assert object_dirs(pins) == [os.path.basename(d)]
    assert steps.new.pin_dir is None


def test_the_layouts_own_carry_over_is_handed_in(obj, pins, old):
    old(pins, ident="b" * 16)
    seen = []

    def carry(old_maps, new_maps, reused):
        seen.append((sorted(old_maps), sorted(new_maps), sorted(reused)))
        return 3
    steps = FakeSteps(obj, new=FakeColl(obj, {"net_stats": FakeMap(42)}, reused={"net_stats"}), carry=carry)
    assert sequence.open_subsystem(pins, steps).how == "migrate"   # the carry added keys: not a plain swap
    assert seen == [(["net_stats"], ["net_stats"], ["net_stats"])]


def test_swap_in_place_takes_the_old_links_over(obj, pins, old, caplog):
    d = old(pins, ident="b" * 16)
    link = old.opened[d].links[0]
    new = FakeColl(obj, {"net_stats": FakeMap(42)}, reused={"net_stats"})
    steps = FakeSteps(obj, new=new, relink=True)
    with caplog.at_level(logging.INFO, "ceemsnet.pinned.sequence"):
        assert sequence.open_subsystem(pins, steps).how == "swap in place"
    assert new.links == [link] and not link.closed and not link.pinned   # never detached; pinned anew by new
    assert link.prog_fd == new.program_fd("tp_btf_sys_exit")
    assert old.opened[d].links == []
    assert "(swap in place: bpf_link_update, no event missed)" in caplog.text


def test_links_that_cannot_be_pinned_leave_it_unpinned_with_a_warning(obj, pins, caplog):
    err = PinUnsupported(errno.EINVAL, "pinning the tp_btf_sys_exit link: Invalid argument")
    steps = FakeSteps(obj, new=FakeColl(obj, {"net_stats": FakeMap(42)}, pin_error=err))
    with caplog.at_level(logging.INFO, "ceemsnet.pinned.sequence"):
        opened = sequence.open_subsystem(pins, steps)
    assert (opened.how, opened.generation) == ("fresh", 42)   # it runs, without continuity
    assert object_dirs(pins) == []
    warn = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warn) == 1 and "no continuity for the tracepoint family" in warn[0].getMessage()


def test_upgrade_reuse_is_the_newest_old_collections_maps():
    assert Upgrade([]).reuse is None
    a, b = FakeColl(FakeObj("/a.bpf.o"), {"x_stats": 1}), FakeColl(FakeObj("/b.bpf.o"), {"y_stats": 2})
    assert Upgrade([a, b]).reuse == {"y_stats": 2}
