"""The incremental counters-map rendering gives the text the full renderer gives.

Two CounterMaps see the same map contents, cgroup paths, removals and clock:
one through the old contract (read() -> decoded dict, everything rendered
each scrape), one through the raw contract (records compared, only changed
cgroup paths rendered again). Every scrape their exposition must be the same
bytes, rendered by the text renderer as it was before the incremental path
(old_render below), across value changes, new and removed keys, renames,
retired and expired cgroups, and label values that need escaping.
"""

import random
import struct

import pytest

from ceemsnet.collectors import counters
from ceemsnet.collectors.counters import CounterMap, Records
from ceemsnet.collectors.net import net_families
from ceemsnet.collectors.skb import skb_families
from ceemsnet.collectors.vfs import vfs_families
from ceemsnet.planning.fstypes import parse_fstypes
from ceemsnet.attribution.lifecycle import Lifecycle
from ceemsnet.common.metrics import merge_families
from ceemsnet.planning.structs import decode_net, decode_skb, decode_vfs, pack_net_key, pack_skb_key, pack_vfs_key

from .helpers import render_text

NCPUS = 2


def old_render(families) -> str:
    """The text renderer as it was before prerendered families (verbatim, without its cache)."""
    def esc(v):
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')

    def fmt(v):
        if isinstance(v, int):
            return str(v)
        return repr(float(v))
    out = []
    for f in families:
        sample = f.name + "_total" if f.kind == "counter" else f.name
        out.append(f"# HELP {sample} {f.help.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}\n"
                   f"# TYPE {sample} {f.kind}\n")
        for values, v in f.rows:
            if f.labels:
                inner = ",".join(f'{n}="{esc(x)}"' for n, x in zip(f.labels, values))
                out.append(f"{sample}{{{inner}}} {fmt(v)}\n")
            else:
                out.append(f"{sample} {fmt(v)}\n")
    return "".join(out)


class FakeMap:
    """A per-CPU hash map's contents; iteration order shuffled when keys come or go."""

    def __init__(self, name, pack, decode, key_size, words, rng):
        self.name, self._pack, self._decode = name, pack, decode
        self.key_size, self.words, self.rng = key_size, words, rng
        self.data: dict[tuple, list[tuple[int, ...]]] = {}  # key -> per-CPU values
        self.order: list[tuple] = []
        self.reads = 0

    def put(self, key, percpu):
        if key not in self.data:
            self.order.insert(self.rng.randrange(len(self.order) + 1), key)
        self.data[key] = percpu

    def packed(self):
        keys = b"".join(self._pack(*k) for k in self.order)
        vals = b"".join(struct.pack(f"={self.words}Q", *cpu) for k in self.order for cpu in self.data[k])
        return keys, vals, len(self.order)

    def remove(self, key):
        if key in self.data:
            del self.data[key]
            self.order.remove(key)
            return True
        return False


def rec(counters: dict[int, tuple[int, int, int]], n: int = 8) -> tuple[int, ...]:
    """One CPU's value of a record: {counter index: (bytes, calls, errors)}, the rest zero."""
    out = [0] * (3 * n)
    for i, v in counters.items():
        out[3 * i:3 * i + 3] = v
    return tuple(out)


class OldSource:
    def __init__(self, m):
        self.m, self.name = m, m.name

    def read(self):
        keys, vals, n = self.m.packed()
        return self.m._decode(keys, vals, n, NCPUS), n

    def delete(self, key):
        return self.m.remove(key)


class RawSource(OldSource):
    key_size = property(lambda self: self.m.key_size)
    value_size = property(lambda self: self.m.words * 8 * NCPUS)

    def read_raw(self):
        return self.m.packed()

    def decode(self, keys, values, n):
        return self.m._decode(keys, values, n, NCPUS)


class Resolver:
    def __init__(self, paths):
        self.paths = paths

    def resolve(self, ids):
        return {i: self.paths.get(i, f"unknown:{i}") for i in ids}


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


NAMES = ["/job_1", "/job_2/step_0", '/a "quoted"\\path', "/new\nline", "/ünïcode", "/job_10", "/job_1/x",
         "/system.slice/sshd.service", "/z", "/job_3", "/job_30/step_1/task_0"]

KINDS = {
    "net": (pack_net_key, decode_net, 8, 24, net_families, lambda r, cid: (cid,)),
    "vfs": (pack_vfs_key, decode_vfs, 16, 24,
            lambda s, p: vfs_families(s, p, parse_fstypes("storage")),
            lambda r, cid: (cid, r.choice([0xEF53, 0x01021994, 0x9FA0, 0x1234, 0]))),
    "skb": (pack_skb_key, decode_skb, 16, 3, skb_families,
            lambda r, cid: (cid, r.randrange(3), r.randrange(2))),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("share", [0, 4, 10**9], ids=["in-place", "default", "rebuild"])
def test_incremental_text_equals_the_full_renderer(kind, seed, share, monkeypatch):
    """share: when the columns are built anew rather than changed in place (counters.REBUILD_SHARE);
    RENDER_BATCH 3: a scrape's paths are rendered in several batches."""
    monkeypatch.setattr(counters, "REBUILD_SHARE", share)
    monkeypatch.setattr(counters, "RENDER_BATCH", 3)
    pack, decode, ksize, words, families, make_key = KINDS[kind]
    rng = random.Random(seed)
    maps = [FakeMap(f"{kind}_stats", pack, decode, ksize, words, random.Random(seed)) for _ in range(2)]
    paths: dict[int, str] = {}
    alive: dict[int, bool] = {}
    clock = Clock()
    maps_ = []
    for m, src in zip(maps, (OldSource, RawSource)):
        life = Lifecycle("/unused", retention=5, clock=clock, alive=lambda c, p: alive.get(c, False))
        maps_.append(CounterMap(src(m), families, Resolver(paths), life))
    old, new = maps_
    assert old._records is None and new._records is not None
    next_id = 100
    for rnd in range(40):
        clock.t += 1
        for _ in range(rng.randrange(4)):  # a new cgroup
            next_id += 1
            paths[next_id] = rng.choice(NAMES) if rng.random() < 0.8 else f"/extra_{next_id}"
            alive[next_id] = True
        live = [c for c, a in alive.items() if a]
        for _ in range(rng.randrange(12)):  # counts move (or stay: same values written again)
            if live:
                key = make_key(rng, rng.choice(live))
                cur = maps[0].data.get(key, [(0,) * words] * NCPUS)
                # a few counters of the record move (a record holds all of a cgroup's)
                moved = {rng.randrange(words) for _ in range(rng.randrange(1, 4))}
                step = [tuple(v + (rng.choice((0, 0, 1, 1500, 2**40)) if w in moved else 0)
                              for w, v in enumerate(cpu)) for cpu in cur]
                for m in maps:
                    m.put(key, step)
        if live and rng.random() < 0.3:  # a cgroup removed
            alive[rng.choice(live)] = False
        if live and rng.random() < 0.1:  # a cgroup renamed
            paths[rng.choice(live)] = rng.choice(NAMES)
        if rng.random() < 0.05:
            clock.t += 10  # past the retention: retired paths expire
        want = old_render(merge_families(old.collect()))
        got = render_text(merge_families(new.collect()))
        assert got == want, f"round {rnd}"
        assert maps[0].order == maps[1].order  # both deleted the same keys


def test_rows_of_a_prerendered_family_are_the_renderers_rows():
    m = FakeMap("net_stats", pack_net_key, decode_net, 8, 24, random.Random(1))
    m.put((7,), [rec({0: (10, 1, 0)}), rec({0: (5, 1, 0)})])
    m.put((8,), [rec({7: (3, 1, 1)}), rec({})])
    cm = CounterMap(RawSource(m), net_families, Resolver({7: "/b", 8: "/a"}))
    fams = cm.collect()
    full = net_families(decode_net(*m.packed(), NCPUS), {7: "/b", 8: "/a"})
    assert [f.rows for f in fams[:len(full)]] == [f.rows for f in full]
    # rows changed after the fact (merge_families): the text is rendered from them again
    f = fams[0]
    f.rows = f.rows + [(("/c", "tcp", "ipv4"), 1)]
    assert f.data is None and '/c"' in render_text([f])


def test_caches_stay_bounded_across_cgroup_churn():
    m = FakeMap("net_stats", pack_net_key, decode_net, 8, 24, random.Random(2))
    paths, alive, clock = {}, {}, Clock()
    cm = CounterMap(RawSource(m), net_families, Resolver(paths),
                    Lifecycle("/unused", retention=2, clock=clock, alive=lambda c, p: alive.get(c, False)))
    survivor = 1
    paths[survivor], alive[survivor] = "/survivor", True
    m.put((survivor,), [rec({4: (4321, 1, 0)}), rec({})])
    sizes = []
    for rnd in range(30):
        clock.t += 1
        for i in range(200):  # 200 cgroups come, count, and go each round
            cid = 1000 + rnd * 200 + i
            paths[cid], alive[cid] = f"/churn/c{cid}", True
            m.put((cid,), [rec({0: (1, 1, 0)}), rec({})])
        cm.collect()
        for cid in list(alive):
            if cid != survivor:
                del alive[cid]  # removed (the resolver keeps its last path)
        cm.collect()
        cols = cm._cols
        sizes.append((len(cm._order), max(len(c.cnt) for c in cols), min(len(c.cnt) for c in cols),
                      len(cm._prev_paths), len(cm._prev_retired), len(cm._records.stats), len(cm._records.by_id),
                      max(len(c.pre) for c in cols)))
        assert all(len(c.pre) == len(c.vals) == sum(c.cnt) for c in cols)
    # retention 2 s, one round a second: only the last rounds' cgroups are still exported (retired)
    assert max(s[0] for s in sizes[5:]) <= 3 * 200 + 1 and sizes[-1] == sizes[-2]
    assert all(s[1] == s[0] == s[2] and s[7] <= 4 * s[0] for s in sizes)
    assert sizes[-1][5] <= 1 + 200 and sizes[-1][6] <= 1 + 200  # only live records are kept decoded
    assert '{cgroup="/survivor",proto="udp",family="ipv4"} 4321\n' in render_text(cm.collect())


def test_records_decode_only_what_changed():
    m = FakeMap("net_stats", pack_net_key, decode_net, 8, 24, random.Random(3))
    for cid in range(50):
        m.put((cid,), [rec({0: (cid, 1, 0)}), rec({})])
    src = RawSource(m)
    decoded = []
    real = src.decode
    src.decode = lambda k, v, n: decoded.append(n) or real(k, v, n)
    records = Records(src)
    assert records.update() == set(range(50)) and decoded == [50]
    m.put((7,), [rec({0: (8, 2, 0)}), rec({})])  # same keys, same order: one value moved
    assert records.update() == {7} and decoded[-1] == 1
    assert records.update() == set() and len(decoded) == 2
    m.remove((3,))
    m.put((60,), [rec({7: (1, 1, 1)}), rec({})])
    assert records.update() == {3, 60}
    assert records.stats == decode_net(*m.packed(), NCPUS)
    assert set(records.by_id) == {k[0] for k in records.stats}


def test_values_that_are_not_u64_are_rendered_as_the_renderer_does():
    """A family's values are kept packed as u64 while every value is one; a float or a negative
    value turns that family's column into plain values, rendered as the text renderer renders them."""
    late = []  # from round 3, /c's family-2 values (until then u64, and /c only moves) become floats

    def families(stats, paths):
        fams = net_families(stats, paths)
        fams[0].rows = [(lab, v / 4 if lab[0] == "/b" else v) for lab, v in fams[0].rows]
        fams[1].rows = [(lab, -v if lab[0] == "/a" else v) for lab, v in fams[1].rows]
        fams[2].rows = [(lab, v + 0.5 if late and lab[0] == "/c" else v) for lab, v in fams[2].rows]
        return fams
    maps = [FakeMap("net_stats", pack_net_key, decode_net, 8, 24, random.Random(4)) for _ in range(2)]
    old, new = (CounterMap(src(m), families, Resolver({7: "/b", 8: "/a", 9: "/c"}))
                for m, src in zip(maps, (OldSource, RawSource)))
    texts = []
    for rnd in range(5):
        if rnd == 4:
            late.append(1)
        for m in maps:
            m.put((9,), [rec({0: (10 + rnd, 1, 0)}), rec({})])
            if rnd >= 1:
                m.put((7,), [rec({0: (rnd, 1, 0)}), rec({})])  # /b: its values become floats
            if rnd >= 2:
                m.put((8,), [rec({0: (5, 1, 0)}), rec({})])  # /a: negative values
        want = old_render(merge_families(old.collect()))
        got = render_text(merge_families(new.collect()))
        assert got == want, f"round {rnd}"
        texts.append(got)
    assert "0.75" in texts[3] and "-1" in texts[3] and '"/c",proto="tcp",family="ipv4"} 0.5' in texts[4]
    assert [type(c.vals).__name__ for c in new._cols[:4]] == ["list", "list", "list", "array"]


def test_rows_out_of_path_order_still_give_each_series_once():
    """The renderers give rows in path order (the text equals theirs only so); one that does not
    still gets every series once, in path order."""
    def backwards(stats, paths):
        fams = net_families(stats, paths)
        for f in fams:
            f.rows = f.rows[::-1]
        return fams
    m = FakeMap("net_stats", pack_net_key, decode_net, 8, 24, random.Random(5))
    names = {c: f"/p{c % 7}/c{c}" for c in range(40)}
    for c in names:
        m.put((c,), [rec({0: (c + 1, 1, 0), 5: (7, 1, 1)}), rec({})])
    full = net_families(decode_net(*m.packed(), NCPUS), names)
    got = render_text(CounterMap(RawSource(m), backwards, Resolver(names)).collect()[:len(full)])
    assert got == render_text(full) and got.count("\n") > 40 * 4  # net_families' own order: by path
