"""The adopt / swap / migrate decision and the pin layout, without a kernel."""

import os
import struct

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.pinned.continuity import Pinned, Wanted, add_values, carry_over, decide, generation_of
from ceemsnet.pinned.pins import PinDir, parse_object_dir


def pinned(stem="net-fexit-5.19-x86", ident="a" * 16, gen=7, links=("fexit_tcp_sendmsg",)):
    return Pinned(f"/x/{stem}", stem, ident, gen, frozenset(links), frozenset({"net_stats"}))


def wanted(stem="net-fexit-5.19-x86", ident="a" * 16, links=("fexit_tcp_sendmsg",), fits=True):
    return Wanted(stem, ident, frozenset(links), fits)


@pytest.mark.parametrize("pins, want, how", [
    ([], wanted(), "fresh"),
    ([], None, "fresh"),
    ([pinned()], wanted(), "adopt"),
    ([pinned()], None, "upgrade"),                                  # this run would not load that object
    ([pinned()], wanted(ident="b" * 16), "upgrade"),                # new ceemsnet: other bytes or settings
    ([pinned()], wanted(stem="net-fexit-7.1-x86"), "upgrade"),      # another era
    ([pinned()], wanted(links=("fexit_tcp_sendmsg", "fexit_tcp_recvmsg")), "upgrade"),  # BTF now allows more
    ([pinned()], wanted(fits=False), "upgrade"),                    # --net.map-entries changed
    ([pinned(), pinned(gen=9)], wanted(), "upgrade"),               # an upgrade was interrupted
])
def test_decide(pins, want, how):
    assert decide(pins, want) == how


def test_generation_is_kept_by_upgrades_and_new_only_when_fresh():
    assert generation_of([], fresh=42) == 42
    assert generation_of([pinned(gen=7)], fresh=42) == 7
    assert generation_of([pinned(gen=9), pinned(gen=7)], fresh=42) == 7


def test_object_dir_names_round_trip(tmp_path):
    d = PinDir.__new__(PinDir)
    d.path = str(tmp_path)
    path = d.object_dir("net", "net-fexit-5.19-x86", "0123456789abcdef", 1234)
    name = os.path.basename(path)
    assert "." not in name  # bpffs refuses dots in names
    assert parse_object_dir(path) == ("net-fexit-5.19-x86", "0123456789abcdef", 1234)
    with pytest.raises(CeemsnetError):
        parse_object_dir("/x/net-fexit-5.19-x86")


def test_foreign_pin_directory_is_refused_and_left_alone(tmp_path):
    root = tmp_path / "pins"
    root.mkdir(mode=0o700)
    (root / "net").mkdir()
    (root / "net" / "somebody-elses-map").mkdir()
    with pytest.raises(CeemsnetError, match="did not make"):
        PinDir(str(root), create=False)
    assert (root / "net" / "somebody-elses-map").exists()
    os.rmdir(root / "net" / "somebody-elses-map")
    os.chmod(root, 0o755)
    with pytest.raises(CeemsnetError, match="root's alone"):
        PinDir(str(root), create=False)


def test_add_values_is_word_wise():
    a = struct.pack("=4Q", 1, 2, 3, 2**64 - 1)
    b = struct.pack("=4Q", 10, 20, 30, 2)
    assert struct.unpack("=4Q", add_values(a, b)) == (11, 22, 33, 1)


class FakeMap:
    def __init__(self, data, key_size=8, words=3, ncpus=2):
        self.data = dict(data)
        self.key_size, self.value_size, self.percpu = key_size, words * 8, True
        self.value_stride, self.ncpus = words * 8, ncpus

    def read_all(self):
        return b"".join(self.data), b"".join(self.data.values()), len(self.data)

    def update(self, k, v):
        self.data[k] = v


def test_carry_over_adds_into_new_maps_and_skips_reused_and_stash():
    k1, k2 = struct.pack("=Q", 1), struct.pack("=Q", 2)
    v = struct.pack("=6Q", 1, 2, 3, 4, 5, 6)  # 3 counters x 2 CPUs
    old = {"net_stats": FakeMap({k1: v, k2: v}), "net_stash": FakeMap({k1: v}), "net_drops": FakeMap({k1: v})}
    new = {"net_stats": FakeMap({k1: v}), "net_stash": FakeMap({}), "net_drops": FakeMap({})}
    copied, lost = carry_over(old, new, reused={"net_drops"})
    assert (copied, lost) == (2, [])
    assert struct.unpack("=6Q", new["net_stats"].data[k1]) == (2, 4, 6, 8, 10, 12)
    assert new["net_stats"].data[k2] == v
    assert new["net_stash"].data == {} and new["net_drops"].data == {}
    new = {"net_stats": FakeMap({}, words=4)}
    assert carry_over({"net_stats": FakeMap({k1: v})}, new, set()) == (0, ["net_stats"])


@pytest.mark.parametrize("family, kver, maxactive, pinned", [
    ("fexit", "5.6", 0, False), ("fexit", "5.7", 0, True), ("tracepoint", "6.3", 0, True),
    ("cgroup_skb", "5.4", 0, False), ("cgroup_skb", "6.1", 0, True),
    ("kretprobe", "6.12", 1024, False),   # tracefs events with a maxactive: never
    ("kretprobe", "5.14", 0, False), ("kretprobe", "5.15", 0, True),
])
def test_which_families_keep_counting_across_restarts(family, kver, maxactive, pinned):
    from packaging.version import Version
    from ceemsnet.pinned.continuity import continuity
    ok, why = continuity(family, Version(kver), maxactive)
    assert ok is pinned and why
