"""Pins of ceemsnet 0.1's per-counter layout (one map key per protocol, family and
direction; per operation for vfs) become one record per cgroup without losing or
doubling a count.

- Real maps on this kernel: a legacy net_stats (the per-counter object, kept in
  bench/objs) carried into the new object's records, a crashed retire's keys left
  out; a legacy ledger (retired totals and intents) converted in place, its
  intents replayed, then adopted by the lifecycle.
- End to end: the per-counter object counts a child's UDP bytes alone, pinned
  beside a legacy ledger (a removed job's retired total and a crashed retire's
  intent); serve upgrades it and exports every byte once.
"""

import os
import struct

import pytest
from packaging.version import Version

from ceemsnet.attribution.lifecycle import Lifecycle
from ceemsnet.pinned.continuity import carry_over
from ceemsnet.pinned.ledger import PATH_BYTES, Ledger, path_id
from ceemsnet.pinned.pins import PinDir, identity
from ceemsnet.planning.catalogue import CATALOGUE, BpfObject
from ceemsnet.planning.structs import NET, decode_net, net_index, pack_net_key
from ceemsnet.runtime.collection import ObjectSpec, load
from ceemsnet.runtime.maps import BpfMap

from .helpers import HOOK, ROOT, Exporter, host_only, traffic_argv
from .peer import Peer

OLD_NET = os.path.join(ROOT, "bench", "objs", "net-tracepoint-6.3-percounter.bpf.o")
NEW_NET = next(o for o in CATALOGUE if o.file == "net-tracepoint-6.3.bpf.o")
UDP, TCP, V4, V6, EGRESS, INGRESS = 1, 0, 0, 1, 0, 1
SIZES = [1000, 3000]


def old_object():
    return BpfObject(OLD_NET, "net", "tracepoint", ("x86_64", "aarch64"), Version("6.3"), None)


def words(*v):
    return struct.pack(f"={len(v)}Q", *v)


def percpu(m, *v):
    """A per-CPU value holding v on every CPU: (the value, the number of CPUs its sums count)."""
    return words(*v).ljust(m.value_stride, b"\0") * m.ncpus, m.ncpus


def on_cpu0(m, *v):
    """A per-CPU value holding v on CPU 0 only."""
    return words(*v).ljust(m.value_stride * m.ncpus, b"\0")


def record(counters):
    out = [0] * NET.words
    for i, v in counters.items():
        out[3 * i:3 * i + 3] = v
    return tuple(out)


def legacy_ledger(coll, gone_path, gone_total, crashed_cid, crashed_path, crashed_total):
    """What ceemsnet 0.1's serve left beside its counters: a removed job's retired total, and a
    retire that crashed after writing its intent for one key (crashed_cid's UDP ipv4 egress)."""
    # sized as serve sizes them: the counters map's capacity (--net.map-entries' default)
    paths = BpfMap.create("net_paths", 8, PATH_BYTES, 65536)
    retired = BpfMap.create("net_retired", 16, 24, 65536)
    retiring = BpfMap.create("net_retiring", 16, 32, 65536)
    for m in (paths, retired, retiring):
        coll.add_map(m)
    for p in (gone_path, crashed_path):
        paths.update(struct.pack("=Q", path_id(p)), p.encode().ljust(PATH_BYTES, b"\0"))
    paths.update(struct.pack("=Q", crashed_cid), crashed_path.encode().ljust(PATH_BYTES, b"\0"))
    retired.update(NET.legacy_key.pack(path_id(gone_path), UDP, V4, EGRESS), words(*gone_total))
    retiring.update(NET.legacy_key.pack(crashed_cid, UDP, V4, EGRESS), words(path_id(crashed_path), *crashed_total))


@host_only("layout conversion does not depend on the hook family")
def test_legacy_counters_and_ledger_become_records():
    if not os.path.exists(NEW_NET.path):
        pytest.skip("no net tracepoint object")
    old = load(ObjectSpec(old_object()))
    new = load(ObjectSpec(NEW_NET))
    try:
        stats = old.maps["net_stats"]
        assert (stats.key_size, stats.value_size) == (16, 24), "bench/objs holds the per-counter object"
        k = NET.legacy_key.pack
        n = 0
        for key, v in ((k(41, TCP, V4, EGRESS), (100, 2, 0)), (k(41, TCP, V4, INGRESS), (50, 1, 0)),
                       (k(41, UDP, V6, EGRESS), (7, 1, 1)), (k(42, UDP, V4, EGRESS), (9, 1, 0)),
                       (k(43, UDP, V4, EGRESS), (77, 1, 0))):
            val, n = percpu(stats, *v)
            stats.update(key, val)
        legacy_ledger(old, "/gone", (1234, 2, 0), 43, "/crashed", (77, 1, 0))
        copied, lost = carry_over(old.maps, new.maps, set())
        # records of 41 and 42 (43's counts are in the crashed retire's intent), and the drops array
        assert lost == [] and copied == 2 + old.maps["net_drops"].max_entries
        keys, values, cnt = new.maps["net_stats"].read_all()
        got = decode_net(keys, values, cnt, new.maps["net_stats"].ncpus)
        assert got == {(41,): record({net_index(TCP, V4, EGRESS): (100 * n, 2 * n, 0),
                                      net_index(TCP, V4, INGRESS): (50 * n, n, 0),
                                      net_index(UDP, V6, EGRESS): (7 * n, n, n)}),
                       (42,): record({net_index(UDP, V4, EGRESS): (9 * n, n, 0)})}
        # the ledger moves to the new collection (as Upgrade.take_ledgers does) and is converted
        for name in ("net_paths", "net_retired", "net_retiring"):
            new.maps[name] = old.maps.pop(name)
        led = Ledger(new, "net", 8, NET.words, 64, decode_net, pack_net_key)
        for name, size in (("net_retired", (8, 192)), ("net_retiring", (8, 200))):
            assert (new.maps[name].key_size, new.maps[name].value_size) == size
        totals = led.load()
        assert totals == {("/gone",): list(record({net_index(UDP, V4, EGRESS): (1234, 2, 0)})),
                          ("/crashed",): list(record({net_index(UDP, V4, EGRESS): (77, 1, 0)}))}
        assert not led.pending  # the crashed key was left out of the carry: nothing to settle
        life = Lifecycle("/unused", retention=600, alive=lambda c, p: True, ledger=led)
        out, p = life.process(got, {41: "/a", 42: "/b"}, lambda key: True)
        assert {p[k[0]]: v[3 * net_index(UDP, V4, EGRESS)] for k, v in out.items()} == {
            "/a": 0, "/b": 9 * n, "/gone": 1234, "/crashed": 77}
    finally:
        old.close()
        new.close()


def udp(samples, cgroup, what):
    return samples.get((f"ceemsnet_net_{what}_total", (("cgroup", cgroup), ("family", "ipv4"), ("proto", "udp"))))


@host_only("the per-counter object is the tracepoint family's (this host's)")
def test_serve_upgrades_pins_of_the_per_counter_layout_exactly(pin_path, make_cgroup, spawn):
    """The per-counter object, pinned and counting alone while a child sends UDP, with a
    legacy ledger beside it; serve replaces it by the record object: the child's bytes, the
    removed job's retired total and the crashed retire's total are each exported once."""
    if HOOK not in ("auto", "tracepoint"):
        pytest.skip(f"--hook={HOOK}: the tracepoint family's upgrade runs with --hook=auto on the host")
    peer = Peer()
    try:
        coll = load(ObjectSpec(old_object()))
        try:
            for prog in ("tp_btf_sock_send_length", "tp_btf_sock_recv_length"):
                coll.attach(prog)
            legacy_ledger(coll, "/ceemsnet-legacy-gone", (1234, 2, 0), 2**40 + 3, "/ceemsnet-legacy-crashed",
                          (77, 1, 0))
            # the crashed retire's key: still in the counters map, its counts in the intent
            stats = coll.maps["net_stats"]
            stats.update(NET.legacy_key.pack(2**40 + 3, UDP, V4, EGRESS), on_cpu0(stats, 77, 1, 0))
            coll.pin(PinDir(pin_path).object_dir("net", "net-tracepoint-6.3-percounter", identity(OLD_NET, {}), 7))
        finally:
            coll.close()  # the pins keep the programs counting
        cg = make_cgroup()
        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": SIZES}]), cg).go()
        e = Exporter(extra=(f"--bpf.pin-path={pin_path}", "--log.level=info", "--cgroup.retention=600"))
        try:
            first = e.samples()
            spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [500]}]), cg).go()
            second = e.samples()
        finally:
            rc, err = e.stop()
        assert rc == 0, err
        assert "(migrate:" in err and "carried over as" in err, err
        assert udp(first, cg.rel, "egress_bytes") == sum(SIZES), err
        assert udp(first, cg.rel, "ingress_bytes") == sum(SIZES), err
        assert udp(first, cg.rel, "egress_calls") == len(SIZES), err
        assert udp(second, cg.rel, "egress_bytes") == sum(SIZES) + 500
        assert udp(second, cg.rel, "ingress_bytes") == sum(SIZES) + 500
        for s in (first, second):
            assert udp(s, "/ceemsnet-legacy-gone", "egress_bytes") == 1234
            assert udp(s, "/ceemsnet-legacy-crashed", "egress_bytes") == 77  # once: not carried, replayed
        left = os.listdir(os.path.join(pin_path, "net"))
        assert len(left) == 1 and "percounter" not in left[0], left
    finally:
        peer.close()
