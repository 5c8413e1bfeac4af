"""One collector for every BPF counters map keyed by cgroup id.

net_stats, vfs_stats and skb_stats (and skb's per-cgroup storage) are read
the same way each scrape: read every key at once, decode the per-CPU values,
resolve cgroup ids to paths, let the lifecycle fold removed cgroups into
retired totals and delete their keys, build the metric families, and report
how full the map is and how many events it could not take.
"""

from __future__ import annotations

import struct
from array import array
from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate, chain, compress, count, groupby, islice
from operator import itemgetter, le, ne

from ceemsnet.common.metrics import Family, PrerenderedFamily, _escape_label, _fmt, sample_name
from ceemsnet.planning.structs import decode_drops

_first = itemgetter(0)
_second = itemgetter(1)
_NO_SERIES = ((), ())  # a path's series in a family where it has none


def _path_of(row) -> str:
    return row[0][0]


class HashSource:
    """A hash map keyed by (cgroup id, ...): read with batch lookups, keys deleted one by one."""

    def __init__(self, bpf_map, decode: Callable, pack: Callable[..., bytes]):
        self.map = bpf_map
        self.name = bpf_map.name
        self._decode = decode
        self._pack = pack

    def read(self) -> tuple[dict[tuple, tuple], int]:
        """({(cgroup id, ...): counters}, keys in the map now)."""
        keys, values, n = self.map.read_all()
        return self._decode(keys, values, n, self.map.ncpus), n

    def delete(self, key: tuple) -> bool:
        return self.map.delete(self._pack(*key))

    @property
    def capacity(self) -> int:
        """The most keys the map holds (its max_entries)."""
        return self.map.max_entries

    # the optional raw contract (Records below): packed records, decoded only where they changed
    def read_raw(self) -> tuple[bytes, bytes, int]:
        """(keys, values, count): every record packed, key_size and value_size bytes each."""
        return self.map.read_all()

    @property
    def key_size(self) -> int:
        return self.map.key_size

    @property
    def value_size(self) -> int:
        return self.map.value_stride * self.map.ncpus

    def decode(self, keys: bytes, values: bytes, n: int) -> dict[tuple, tuple]:
        """One entry per record, in record order."""
        return self._decode(keys, values, n, self.map.ncpus)


class BesideHash:
    """A source whose records are a hash map's (self.hash, a HashSource) and others' (the slot
    layouts: ceemsnet/collectors/slots.py, vfs_slots.py): the raw contract's sizes, capacity and
    decoding are the hash map's; a subclass gives read_raw() and delete()."""

    hash: HashSource
    # the hash map's own keys at the last read_raw(): ceemsnet_map_entries beside its capacity
    # (the records read also hold the slots', which are not in the hash map)
    hash_entries: int | None = None

    @property
    def capacity(self) -> int:
        """The hash map's max_entries: the records beyond the slots that still fit."""
        return self.hash.capacity

    @property
    def key_size(self) -> int:
        return self.hash.key_size

    @property
    def value_size(self) -> int:
        return self.hash.value_size

    def decode(self, keys: bytes, values: bytes, n: int) -> dict[tuple, tuple]:
        return self.hash.decode(keys, values, n)

    def read_raw(self) -> tuple[bytes, bytes, int]:
        raise NotImplementedError

    def read(self) -> tuple[dict[tuple, tuple], int]:
        keys, values, n = self.read_raw()
        return self.decode(keys, values, n), n


def map_entries_family(name: str, n: int) -> Family:
    f = Family("ceemsnet_map_entries", "Keys in a BPF counters map (capacity: ceemsnet_map_capacity)",
               "gauge", ("map",))
    f.add((name,), n)
    return f


def map_capacity_family(name: str, n: int) -> Family:
    f = Family("ceemsnet_map_capacity", "The most keys a BPF counters map holds (the --*.map-entries flags); "
               "beyond it new cgroups' events go to ceemsnet_map_update_failures_total", "gauge", ("map",))
    f.add((name,), n)
    return f


def drops_family(drops_map, stats_map: str, stash_map: str | None = None) -> Family:
    """Events the programs could not count: the stats map was full, or (kretprobes) the entry stash."""
    _, values, n = drops_map.read_all()
    drops = decode_drops(values, n, drops_map.ncpus)
    f = Family("ceemsnet_map_update_failures",
               "Events a BPF program could not count because a map was full", "counter", ("map",))
    f.add((stats_map,), drops.get("stats_full", 0))
    if stash_map:
        f.add((stash_map,), drops.get("stash_full", 0))
    return f


class Records:
    """A source's records as of its last read, each decoded once: a record whose
    bytes did not change since the last read is not decoded again.

    When the keys come back in the same order (no key came or went: a hash
    map's batch read walks its buckets in a fixed order), the values are
    compared record by record in C; otherwise the records are
    matched by key (dict item views, in C). Python work per read is then
    proportional to the records that changed. `stats` is the decoded map, as
    source.read() would return it; `by_id` its keys per cgroup id.
    """

    def __init__(self, source):
        self.source = source
        self._key = struct.Struct(f"{source.key_size}s")
        self._value = struct.Struct(f"{source.value_size}s")
        self._keys = self._values = b""          # the last read, packed
        self.stats: dict[tuple, tuple] = {}      # decoded key -> counters
        self.by_id: dict[int, list] = {}         # cgroup id -> its decoded keys
        self.entries = 0

    def _records(self, keys: bytes, values: bytes) -> dict[bytes, bytes]:
        return dict(zip(map(_first, self._key.iter_unpack(keys)), map(_first, self._value.iter_unpack(values))))

    def _changed_in_place(self, keys: bytes, values: bytes) -> list[tuple[bytes, bytes]]:
        """Records whose value changed, the keys being the same, in the same order (compared in C)."""
        ks, vs = self._key.size, self._value.size
        moved = compress(count(), map(ne, self._value.iter_unpack(values), self._value.iter_unpack(self._values)))
        return [(keys[r * ks:(r + 1) * ks], values[r * vs:(r + 1) * vs]) for r in moved]

    def update(self) -> set[int]:
        """Read the source; returns the cgroup ids whose records changed, came or went."""
        keys, values, n = self.source.read_raw()
        self.entries = n
        keys, values = keys[:n * self._key.size], values[:n * self._value.size]
        if keys == self._keys:
            if values == self._values:
                return set()
            changed, gone = self._changed_in_place(keys, values), ()
        elif not self._keys:  # every record is new (the first read): decoded as read, no record copied out
            changed, gone = None, ()
        else:
            old, new = self._records(self._keys, self._values), self._records(keys, values)
            changed, gone = new.items() - old.items(), old.keys() - new.keys()
        self._keys, self._values = keys, values
        dirty: set[int] = set()
        # a new dict (a copy in C): the last one may still be read (PrerenderedFamily rows)
        stats = self.stats = dict(self.stats)
        by_id = self.by_id
        if gone:
            # only the keys matter: decode them beside zero values
            for key in self.source.decode(b"".join(gone), bytes(len(gone) * self._value.size), len(gone)):
                del stats[key]
                cid = key[0]
                dirty.add(cid)
                ids = by_id[cid]
                ids.remove(key)
                if not ids:
                    del by_id[cid]
        if changed is None:
            decoded = self.source.decode(keys, values, n)
        elif changed:
            decoded = self.source.decode(b"".join(kb for kb, _ in changed), b"".join(vb for _, vb in changed),
                                         len(changed))
        else:
            decoded = {}
        want = n if changed is None else len(changed)
        if len(decoded) != want:
            raise ValueError(f"{self.source.name}: decode gave {len(decoded)} entries for {want} records")
        for key, vals in decoded.items():
            stats[key] = vals
            cid = key[0]
            dirty.add(cid)
            ids = by_id.get(cid)
            if ids is None:
                by_id[cid] = [key]
            elif key not in ids:  # a few keys per id: a list is a quarter of a set's size
                ids.append(key)
        return dirty


class CounterMap:
    """Counters of one map -> metric families, with the cgroup lifecycle applied.

    source: read() -> (stats, entries) and delete(key) -> bool (HashSource, or
    skb's per-cgroup storage); families(stats, paths) -> [Family] is the
    subsystem's pure renderer, which must return the same families (names,
    order) whatever its input, give every row the cgroup path as its first
    label value, and give each family's rows in path order.

    A source with the raw contract (read_raw, decode, key_size, value_size:
    HashSource) is rendered incrementally: each family's series are kept as
    a column (_Column: rendered labels, values packed, series per path, in
    path order), and a scrape renders again only the paths whose input
    changed (records, id -> path, retired totals), running the pure renderer
    on just their counters, and puts them in place. No text is kept: a
    family's is made from its column when the scrape is sent. The output is
    the same text as the renderer's over everything
    (tests/unit/test_counters.py); the columns hold the paths exported now
    and nothing else.
    """

    def __init__(self, source, families: Callable[[dict, dict], list[Family]], resolver, lifecycle=None,
                 drops=None, stash_map: str | None = None, fold: Callable[[str], str] | None = None):
        self.source = source
        # --cgroup.aggregate: every path's counts (live and retired) go to the series of fold(path);
        # the renderers sum ids that share a path, so a folded series is the exact sum
        # (units.folder() gives a fold that keeps its answers per path, bounded)
        self.fold = fold if fold is not None else getattr(lifecycle, "fold", None)
        self.families = families
        self.resolver = resolver
        self.lifecycle = lifecycle
        self.drops = drops
        self.stash_map = stash_map
        self._records = Records(source) if hasattr(source, "read_raw") else None
        self._skel: list[Family] | None = None
        self._reset()

    def _reset(self) -> None:
        """Forget every cached rendering: the next scrape renders all paths."""
        self._order: list[str] = []                  # the paths with series, sorted
        self._cols: list[_Column] = []               # per family: every path's series, in that order
        self._prev_paths: dict[int, str] = {}        # cgroup id -> the path its counts went to last scrape
        self._prev_retired: dict[tuple, tuple] = {}  # the lifecycle's retired totals last scrape

    def collect(self) -> list[Family]:
        if self._records is None:
            fams = self._collect_full()
            entries = self._entries
        else:
            try:
                fams = self._collect_incremental()
            except BaseException:
                self._reset()
                raise
            entries = self._records.entries
            own = getattr(self.source, "hash_entries", None)
            if own is not None:  # a slot layout: the hash map's keys, the ones its capacity bounds
                entries = own
        fams.append(map_entries_family(self.source.name, entries))
        capacity = getattr(self.source, "capacity", None)
        if capacity:
            fams.append(map_capacity_family(self.source.name, capacity))
        if self.drops is not None:
            fams.append(drops_family(self.drops, self.source.name, self.stash_map))
        return fams

    def _fold_paths(self, paths: dict[int, str]) -> dict[int, str]:
        fold = self.fold
        return {cid: fold(p) for cid, p in paths.items()}

    def _fold_retired(self, retired: dict) -> dict:
        out: dict[tuple, list] = {}
        for rk, v in retired.items():
            k = (self.fold(rk[0]),) + rk[1:]
            acc = out.get(k)
            out[k] = list(v) if acc is None else [a + b for a, b in zip(acc, v)]
        return out

    def _collect_full(self) -> list[Family]:
        stats, self._entries = self.source.read()
        paths = self.resolver.resolve({k[0] for k in stats})
        if self.lifecycle is not None:
            stats, paths = self.lifecycle.process(stats, paths, self.source.delete)
        if self.fold is not None:
            paths = self._fold_paths(paths)
        return self.families(stats, paths)

    def _collect_incremental(self) -> list[Family]:
        rec = self._records
        dirty_ids = rec.update()
        stats = rec.stats
        paths = self.resolver.resolve(rec.by_id.keys())
        retired: dict = {}
        if self.lifecycle is not None:
            live, out_paths = self.lifecycle.process(stats, paths, self.source.delete, rec.by_id)
            retired = self.lifecycle.retired
            # their counts left the live ones (for the retired totals, which may also have expired at once)
            dirty_ids = dirty_ids | self.lifecycle.gone_ids
            # retired totals sit under synthetic negative ids, numbered anew each scrape
            pos = {c: p for c, p in out_paths.items() if c >= 0} if retired else out_paths
        else:
            live, pos = stats, paths
        if self.fold is not None:
            pos = self._fold_paths(pos)
            if retired:
                retired = self._fold_retired(retired)
        prev = self._prev_paths
        if pos == prev:  # the common case, compared in C without building sets of items
            dirty = set()
        else:
            dirty = {p for _, p in pos.items() - prev.items()}
            dirty.update(p for _, p in prev.items() - pos.items())
        dirty.update(pos[c] for c in dirty_ids if c in pos)
        dirty.update(prev[c] for c in dirty_ids if c in prev)
        ret = {rk: tuple(v) for rk, v in retired.items()}
        dirty.update(rk[0] for rk, _ in ret.items() - self._prev_retired.items())
        dirty.update(rk[0] for rk, _ in self._prev_retired.items() - ret.items())
        self._prev_paths, self._prev_retired = dict(pos), ret
        if dirty:
            self._render(dirty, live, pos, ret, rec.by_id)
        out_paths = out_paths if self.lifecycle is not None else paths
        if self.fold is not None:
            out_paths = self._fold_paths(out_paths)
        return self._assemble(lambda: self.families(live, out_paths))

    def _skeleton(self) -> list[Family]:
        """The renderer's families for no input: names, help, types and labels."""
        if self._skel is None:
            self._skel = self.families({}, {})
        return self._skel

    def _render(self, dirty: set[str], live: dict, pos: dict[int, str], retired: dict, by_id: dict) -> None:
        """Render again the series of the paths in `dirty`, from their counters only, a batch of
        paths at a time (the first scrape after 10,000 cgroups appear holds one batch's rows, not
        every cgroup's: transient objects are what keeps the heap at its peak)."""
        skel = self._skeleton()
        todo = sorted(dirty)
        for b in range(0, len(todo), RENDER_BATCH):
            self._apply(self._segments(set(todo[b:b + RENDER_BATCH]), live, pos, retired, by_id, skel), len(skel))

    def _segments(self, part: set[str], live: dict, pos: dict[int, str], retired: dict, by_id: dict,
                  skel: list[Family]) -> dict[str, tuple | None]:
        """path -> per family (its series' rendered labels, their values), None: no series now."""
        sub: dict[tuple, tuple] = {}
        sub_paths: dict[int, str] = {}
        for cid, p in pos.items():
            if p in part:
                sub_paths[cid] = p
                for k in by_id.get(cid, ()):
                    v = live.get(k)
                    if v is not None:
                        sub[k] = v
        sid: dict[str, int] = {}
        for rk, v in retired.items():
            p = rk[0]
            if p in part:
                i = sid.get(p)
                if i is None:
                    i = sid[p] = -1 - len(sid)
                    sub_paths[i] = p
                sub[(i,) + rk[1:]] = v
        fams = self.families(sub, sub_paths)
        if [f.name for f in fams] != [f.name for f in skel]:
            raise ValueError(f"{self.source.name}: the renderer's families changed with its input")
        nf = len(fams)
        out: dict[str, list | None] = dict.fromkeys(part)
        # per family '{name="%s",...}'; families with the same label names share their series' prefixes
        tmpls = [("{" + ",".join(f'{n}="%s"' for n in f.labels) + "}") if f.labels else "" for f in skel]
        seen: dict[str, dict[tuple, bytes]] = {t: {} for t in tmpls}  # template -> label values -> prefix
        esc: dict[str, str] = {}  # escaped label values of this batch (a path's, a protocol's)
        for i, (f, tmpl) in enumerate(zip(fams, tmpls)):
            rows = f.rows
            paths = [values[0] for values, _ in rows]
            if not all(map(le, paths, islice(paths, 1, None))):  # the renderers give them in path order
                rows = sorted(rows, key=_path_of)
                paths = [values[0] for values, _ in rows]
            known = seen[tmpl]
            for values, _ in rows:
                if values not in known:
                    parts = []
                    for x in values:
                        e = esc.get(x)
                        if e is None:
                            e = esc[x] = _escape_label(x)
                        parts.append(e)
                    known[values] = (tmpl % tuple(parts)).encode()
            pres = [known[values] for values, _ in rows]
            vals = [v for _, v in rows]
            at = 0
            for p, run in groupby(paths):
                n = len(list(run))
                seg = out[p]
                if seg is None:
                    seg = out[p] = [_NO_SERIES] * nf
                seg[i] = (pres[at:at + n], vals[at:at + n])
                at += n
        return out

    def _apply(self, segs: dict[str, tuple | None], nf: int) -> None:
        """Put the paths' new series in place: in the columns' copies (the families of the last
        scrape may still be rendering the lists they were given), in path order."""
        order = self._order
        if not self._cols:
            self._cols = [_Column() for _ in range(nf)]
        cols = self._cols
        changes = []
        moves = 0  # paths that come or go before the last one: each moves what follows it in every column
        n = len(order)
        for p, seg in segs.items():
            k = bisect_left(order, p)
            exists = k < n and order[k] == p
            if seg is None and not exists:
                continue
            moves += k < n and (seg is None or not exists)
            changes.append((k, exists, p, seg))
        if not changes:
            return
        if moves * REBUILD_SHARE > n:
            self._rebuild(segs, nf)
            return
        starts = [list(accumulate(c.cnt, initial=0)) for c in cols]
        new = [c.copy() for c in cols]
        # from the last place to the first: a change leaves the places before it where they were
        changes.sort(key=lambda c: (c[0], c[1], c[2]), reverse=True)
        # only values moved (the common scrape): every changed path is there and keeps its series
        moved_only = all(exists and seg is not None for _, exists, _, seg in changes)
        for i, c in enumerate(new):  # a family at a time: its lists at hand
            st, pre, cnt = starts[i], c.pre, c.cnt
            if moved_only and self._values_only(c, st, changes, i):
                continue
            for k, exists, _, seg in changes:
                s = st[k]
                old = cnt[k] if exists else 0
                if seg is None:
                    del pre[s:s + old]
                    del c.vals[s:s + old]
                    del cnt[k]
                    continue
                pres, vals = seg[i]
                pre[s:s + old] = pres
                c.put(s, old, vals)
                if exists:
                    cnt[k] = len(pres)
                else:
                    cnt.insert(k, len(pres))
        for k, exists, p, seg in changes:
            if seg is None:
                del order[k]
            elif not exists:
                order.insert(k, p)
        self._cols = new

    @staticmethod
    def _values_only(c: _Column, st: list[int], changes: list, i: int) -> bool:
        """Write the changed paths' values into family i's column if their series are the ones it
        has (same count, same labels, compared in C); False, nothing written, if not."""
        ks = [k for k, _, _, _ in changes]
        segs = [seg[i] for _, _, _, seg in changes]
        if list(map(c.cnt.__getitem__, ks)) != list(map(len, map(_first, segs))):
            return False
        begin = list(map(st.__getitem__, ks))
        idx = list(chain.from_iterable(map(range, begin, map(st.__getitem__, map((1).__add__, ks)))))
        if list(map(c.pre.__getitem__, idx)) != list(chain.from_iterable(map(_first, segs))):
            return False
        c.write(idx, list(chain.from_iterable(map(_second, segs))))
        return True

    def _rebuild(self, segs: dict[str, tuple | None], nf: int) -> None:
        """Every column anew, path by path (many paths came or went)."""
        old_order, old = self._order, self._cols
        starts = [list(accumulate(c.cnt, initial=0)) for c in old]
        at = {p: k for k, p in enumerate(old_order)}
        keep = set(old_order)
        keep.update(p for p, s in segs.items() if s is not None)
        keep.difference_update(p for p, s in segs.items() if s is None)
        order = sorted(keep)
        new = [_Column() for _ in range(nf)]
        for p in order:
            seg = segs.get(p)
            if seg is None:
                k = at[p]
                for i, c in enumerate(new):
                    a, b = starts[i][k], starts[i][k + 1]
                    o = old[i]
                    c.pre += o.pre[a:b]
                    c.add(o.vals[a:b])
                    c.cnt.append(b - a)
            else:
                for i, c in enumerate(new):
                    pres, vals = seg[i]
                    c.pre += pres
                    c.add(vals)
                    c.cnt.append(len(pres))
        self._order, self._cols = order, new

    def _assemble(self, rows_of) -> list[Family]:
        """The families of this scrape; rows_of() gives all their rows (the renderer over everything),
        for whatever reads rows rather than the text."""
        skel = self._skeleton()
        out = []
        built: list = []

        def rows(i):
            if not built:
                built.append(rows_of())
            return built[0][i].rows
        for i, f in enumerate(skel):
            # the text is made when the scrape is sent, from this scrape's columns (the next scrape
            # changes copies of them): no family's text is kept between scrapes
            text = self._cols[i].text(sample_name(f)) if self._cols else list
            out.append(PrerenderedFamily(f.name, f.help, f.kind, f.labels, text, lambda i=i: rows(i)))
        return out


# paths rendered at once by a scrape (the first after many cgroups appear renders them all)
RENDER_BATCH = 1000
# the columns are built anew when more than 1/REBUILD_SHARE of the paths came or went before the last
# path in one batch (each such insertion or removal in place moves the rest of every column; paths that
# sort after every other, as a first scrape's batches do, are appended). Measured with 10,000 paths
# and 1,000 new ones a scrape among them: in place 65-101 ms a scrape, built anew 100-206 ms.
# 0: always in place
REBUILD_SHARE = 4


class _Column:
    """One family's series, every path's in path order: each series' rendered labels (bytes shared
    by the path's families with the same label values), its value (packed as u64 while every value
    is one), and per path how many series it has."""

    __slots__ = ("pre", "vals", "cnt")

    def __init__(self, pre=None, vals=None, cnt=None):
        self.pre: list[bytes] = [] if pre is None else pre
        self.vals = array("Q") if vals is None else vals
        self.cnt: list[int] = [] if cnt is None else cnt

    def copy(self) -> _Column:
        return _Column(self.pre[:], self.vals[:], self.cnt[:])

    def _fit(self, vals):
        """vals as the column keeps them: packed while the column is and every value is a u64; a
        value that is not turns the column into plain values for good."""
        if isinstance(self.vals, array):
            if isinstance(vals, array):  # another column's, packed already
                return vals
            try:
                return array("Q", vals)
            except (OverflowError, TypeError):
                self.vals = self.vals.tolist()
        return vals

    # each writer fits the values first: the column they go into may change from packed to plain
    def put(self, s: int, n: int, vals: list) -> None:
        """Replace the n values at s by vals."""
        fitted = self._fit(vals)
        self.vals[s:s + n] = fitted

    def add(self, vals) -> None:
        fitted = self._fit(vals)
        self.vals.extend(fitted)

    def write(self, idx: list[int], vals: list) -> None:
        """The values at the places idx, one each."""
        fitted = self._fit(vals)
        column = self.vals
        for j, v in zip(idx, fitted):
            column[j] = v

    def text(self, sample: str):
        """A function making the family's sample lines (one bytes) from the series as they are now."""
        pre, vals = self.pre, self.vals
        packed = isinstance(vals, array)
        line = sample.encode() + (b"%s %d\n" if packed else b"%s %s\n")

        def make():
            # one format of every line at once (the line repeated, the labels and values interleaved):
            # half the time of formatting each line on its own (240,000 lines: 24 against 52 ms here)
            v = vals if packed else [_fmt(x).encode() for x in vals]
            return [(line * len(pre)) % tuple(chain.from_iterable(zip(pre, v)))]
        return make
