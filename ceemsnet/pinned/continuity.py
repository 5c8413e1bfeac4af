"""Counting across exporter restarts and upgrades: adopt, swap or migrate.

A starting `serve` with pins on finds what the previous run left in the pin
directory (ceemsnet/pinned/pins.py) and, per subsystem, does one of:

  fresh    nothing pinned: load, attach, pin.
  adopt    the pinned object is the one this run would load (same file
           bytes and settings, same programs for this kernel, same map
           sizes): open the pinned maps and links. The programs never
           stopped counting; nothing is loaded.
  swap     another object (new ceemsnet version, hook family or era) whose
           maps fit the pinned ones: load it on the pinned maps, detach the
           old programs, attach the new. The counts stay in the same maps.
  migrate  another object whose maps do not fit (e.g. a new
           --net.map-entries): load it with new maps, detach the old
           programs, copy the old counts into the new maps, attach.
For swap and migrate the programs are replaced between two attaches: the
events of those milliseconds are not counted (fexit, kprobe and tracepoint
links cannot swap their program in place; cgroup links can, and skb's root
links do: "swap in place"). The counters' generation, which
the accounting store uses to know that counts continue, is kept by adopt,
swap and migrate, and new only for fresh. The sequence that does this for
every subsystem is ceemsnet/pinned/sequence.py.
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from typing import Callable

from packaging.version import Version

from ceemsnet.pinned.pins import identity, parse_object_dir
from ceemsnet.planning.structs import LAYOUTS
from ceemsnet.runtime.bpffs import entries, open_pinned
from ceemsnet.runtime.collection import Collection, ObjectFile
from ceemsnet.runtime.links import Link
from ceemsnet.runtime.maps import BpfMap, map_info

log = logging.getLogger("ceemsnet.pinned.continuity")


@dataclass(frozen=True)
class Pinned:
    """What a previous run left for one subsystem."""
    path: str
    stem: str             # object file name without .bpf.o
    ident: str            # identity of the object bytes and settings (pins.identity)
    generation: int       # lifetime of the counters
    links: frozenset[str]
    maps: frozenset[str]

    @classmethod
    def read(cls, path: str) -> "Pinned":
        stem, ident, gen = parse_object_dir(path)
        return cls(path, stem, ident, gen, frozenset(entries(path, "link")), frozenset(entries(path, "map")))

    def capacity(self, map_name: str) -> int | None:
        """max_entries of a pinned map, None if this object has no such map."""
        if map_name not in self.maps:
            return None
        fd = open_pinned(entries(self.path, "map")[map_name])
        try:
            return map_info(fd).max_entries
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Wanted:
    """What this run would load if it loaded the pinned object's catalogue entry."""
    stem: str
    ident: str
    links: frozenset[str]
    sizes_fit: bool       # the pinned maps have the capacities asked for now

    @classmethod
    def of(cls, pinned: Pinned, obj: ObjectFile, settings: dict[str, int], links,
           map_entries: dict[str, int]) -> "Wanted":
        """This run would load `obj` with these settings, attach `links` (their pin names)
        and size its maps as map_entries says (a map `pinned` lacks fits any size)."""
        fits = all(pinned.capacity(name) in (None, n) for name, n in map_entries.items())
        return cls(obj.file.removesuffix(".bpf.o"), identity(obj.path, settings), frozenset(links), fits)


def decide(pinned: list[Pinned], wanted: Wanted | None) -> str:
    """fresh, adopt or upgrade (swap or migrate is known once the new object is loaded)."""
    if not pinned:
        return "fresh"
    if len(pinned) == 1 and wanted is not None:
        p = pinned[0]
        if (p.stem, p.ident, p.links) == (wanted.stem, wanted.ident, wanted.links) and wanted.sizes_fit:
            return "adopt"
    return "upgrade"


def generation_of(pinned: list[Pinned], fresh: int) -> int:
    """The counters' generation after an upgrade: the pinned one (several only after an
    interrupted upgrade: the oldest), else `fresh`."""
    return min((p.generation for p in pinned), default=fresh)


COUNTER_SUFFIXES = ("_stats", "_drops")
LEDGER_SUFFIXES = ("_retired", "_paths", "_retiring")  # ceemsnet/pinned/ledger.py


def add_values(a: bytes, b: bytes) -> bytes:
    """Word-wise sum of two map values (counters are u64 words, per CPU or not)."""
    n = len(a) // 8
    fmt = f"={n}Q"
    return struct.pack(fmt, *((x + y) & 0xFFFFFFFFFFFFFFFF for x, y in zip(struct.unpack(fmt, a), struct.unpack(fmt, b))))


# carry(old maps, new maps, names of the new maps that are the old ones) -> keys added:
# a layout's own carry-over in an upgrade (the net slot fold, ceemsnet/collectors/slots.py)
Carry = Callable[[dict, dict, set], int]


def add_record(stats: BpfMap, key: bytes, record) -> None:
    """Add counters (one u64 per word of the map's value) into a per-CPU map's value under
    key: read, add, write back with the whole sum on CPU 0 and zeros on the other CPUs.
    Exact only while no program writes the map (an upgrade, before the new programs attach)."""
    ncpus, vsz = stats.ncpus, stats.value_stride
    words = vsz // 8
    have = stats.lookup(key)
    if have is not None:
        mv = memoryview(have).cast("Q")
        record = [r + sum(mv[w::words]) for w, r in enumerate(record)]
    new = bytearray(vsz * ncpus)
    struct.pack_into(f"={words}Q", new, 0, *(r & 0xFFFFFFFFFFFFFFFF for r in record))
    stats.update(key, bytes(new))


def carry_legacy(name: str, old: BpfMap, new: BpfMap, old_maps: dict) -> int | None:
    """A counters map of ceemsnet 0.1's layout (one key per counter) into the new object's
    map of records (one per cgroup, and file system for vfs): each old key's counts are added
    at its place in its record. Keys a crashed retire had already folded into a retired total
    (its intents in <subsystem>_retiring, see ceemsnet/pinned/ledger.py) are left out: the
    ledger's conversion replays them. Returns records written; None if `old` is not such a map."""
    layout = LAYOUTS.get(name.removesuffix("_stats")) if name.endswith("_stats") else None
    if (layout is None or not old.percpu or not new.percpu
            or not layout.is_legacy(old.key_size, old.value_size)
            or (new.key_size, new.value_size) != (layout.key.size, layout.value_size)):
        return None
    pending: frozenset = frozenset()
    intents = old_maps.get(f"{layout.name}_retiring")
    if intents is not None and intents.key_size == old.key_size:
        ikeys, _, ni = intents.read_all()
        pending = frozenset(ikeys[i * old.key_size:(i + 1) * old.key_size] for i in range(ni))
    keys, values, n = old.read_all()
    records = layout.regroup(keys, values, n, old.ncpus, pending)
    for rk, rec in records.items():
        add_record(new, layout.pack(*rk), rec)
    if records:
        log.info("%s: %d keys of the per-counter layout carried over as %d records", name, n, len(records))
    return len(records)


def carry_over(old_maps: dict, new_maps: dict, reused: set[str]) -> tuple[int, list[str]]:
    """Add the counts of old maps into the new object's maps that did not take them over.
    Called with no program attached to the new maps, so read-add-write is exact.
    Returns (keys copied, maps whose layout changed and could not be copied)."""
    copied, lost = 0, []
    for name, old in old_maps.items():
        new = new_maps.get(name)
        if new is None or name in reused or not name.endswith(COUNTER_SUFFIXES):
            continue  # gone, the same map, or transient (the kretprobe stash)
        if (old.key_size, old.value_size, old.percpu) != (new.key_size, new.value_size, new.percpu):
            n = carry_legacy(name, old, new, old_maps)
            if n is None:
                lost.append(name)
            else:
                copied += n
            continue
        keys, values, n = old.read_all()
        nkeys, nvalues, nn = new.read_all()
        ksz, vsz = old.key_size, old.value_stride * old.ncpus
        have = {nkeys[i * ksz:(i + 1) * ksz]: nvalues[i * vsz:(i + 1) * vsz] for i in range(nn)}
        for i in range(n):
            k, v = keys[i * ksz:(i + 1) * ksz], values[i * vsz:(i + 1) * vsz]
            new.update(k, add_values(v, have[k]) if k in have else v)
        copied += n
    return copied, lost


class Upgrade:
    """Replacing pinned collections by a newly loaded object.

    The new object is loaded on `reuse` (the old maps it takes over where
    they fit). take_over() (select_and_load's before_attach) runs once per
    hook family tried: the first call detaches the old programs (their maps
    then stop changing), and every call adds the old counts into that
    candidate's maps, so a family that then fails to attach loses nothing.
    Links that can change their program (cgroup links) may instead be
    relinked to the new programs first: no event is missed. drop_old() drops
    the old pins once the new object works (take_ledgers, then drop_old once
    the new one is pinned); abandon() keeps them.
    """

    HOW = {"swap": "the counts stayed in the same maps", "migrate": "the counts were copied over",
           "swap in place": "bpf_link_update, no event missed"}

    def __init__(self, old_colls: list[Collection], carry: Carry | None = None):
        self.old = old_colls
        self.carry = carry  # a layout's own maps (net slots): see Carry
        self.how = ""       # once taken over: swap, migrate or swap in place (HOW)
        self._detached = False
        self._relinked = False
        self._moved = False

    @property
    def reuse(self) -> dict[str, BpfMap] | None:
        """The newest old collection's maps, for the new object to take over where they fit."""
        return dict(self.old[-1].maps) if self.old else None

    def relink(self, new_coll: Collection, links: list[Link]) -> None:
        """Swap in place: these old links run new_coll's programs of the same names from now
        on (bpf_link_update: no moment without a program, none with two) and are new_coll's.
        Before take_over(), which detaches the old links left."""
        for ln in links:
            owner = next(c for c in self.old if any(x is ln for x in c.links))
            ln.update_program(new_coll.program_fd(ln.program), ln.program)
            ln.unpin()
            owner.links = [x for x in owner.links if x is not ln]
            new_coll.links.append(ln)
            self._relinked = True

    def before_attach(self, loaded) -> None:
        """select_and_load's hook (ceemsnet/planning/select.py): `loaded` holds the new collection."""
        self.take_over(loaded.collection)

    def take_over(self, coll: Collection) -> None:
        """The old programs go; their counts come into coll's maps that did not take them over."""
        if not self.old:
            return
        if not self._detached:
            for old in self.old:
                old.detach(list(old.links))
            self._detached = True
        copied, lost, remade = 0, [], False
        for old in self.old:
            c, lo = carry_over(old.maps, coll.maps, coll.reused)
            if self.carry is not None:
                c += self.carry(old.maps, coll.maps, coll.reused)
            copied += c
            lost += lo
            # a counters map the new object made anew (the old one did not fit), even if empty
            remade |= any(n in coll.maps and n not in coll.reused for n in old.maps if n.endswith(COUNTER_SUFFIXES))
        if lost:
            log.warning("counts of %s could not be carried over: their layout changed",
                        ", ".join(sorted(set(lost))))
        # over every family tried: a fold into a family that then failed to attach still moved counts
        self._moved |= bool(copied or lost or remade)
        self.how = "migrate" if self._moved else "swap in place" if self._relinked else "swap"

    def take_ledgers(self, new_coll: Collection) -> None:
        """The lifecycle's ledger maps (retired totals, paths) move to the new collection,
        which pins them with its own (before drop_old unpins them from the old)."""
        for coll in self.old:
            for name in [n for n in coll.maps if n.endswith(LEDGER_SUFFIXES) and n not in new_coll.maps]:
                new_coll.maps[name] = coll.maps.pop(name)

    def drop_old(self) -> None:
        """Unpin and close the old collections: the new one works (and is pinned where it can be)."""
        for coll in self.old:
            coll.unpin()
            coll.close()

    def abandon(self) -> None:
        """The new object did not work: keep the old maps pinned (with their counts) for the next start."""
        for coll in self.old:
            coll.close()


# Which attachments can be pinned, so that counting outlives the exporter.
LINK_PINNING = Version("5.7")      # BPF links for tracing, raw tracepoints and cgroups, pinnable
                                   # (commits babf3164095b, af6eea57437a, 70ed506c3bbc)
PERF_LINK = Version("5.15")        # kprobes as BPF perf links (commit b89fbfbb854c); before, a perf event fd


def continuity(family: str, kver: Version, maxactive: int = 0) -> tuple[bool, str]:
    """(pins possible, why) for a hook family on a kernel: what probe says and README documents."""
    if family == "kretprobe":
        if maxactive:
            return False, ("return probes with --kretprobe.maxactive are tracefs events, which cannot be "
                           "pinned: counting stops with the exporter (--kretprobe.maxactive=0 gives pinnable "
                           f"libbpf kprobe links on {PERF_LINK}+, with the kernel's default maxactive)")
        if kver < PERF_LINK:
            return False, (f"kprobe BPF links arrived in {PERF_LINK}: counting stops with the exporter, and "
                           "--kretprobe.maxactive=0 only leaves the kernel's default maxactive (as few as the "
                           "number of CPUs on a kernel without CONFIG_PREEMPTION): leave it at its default")
        return True, "kprobe perf-event BPF links are pinned: counting goes on across restarts"
    if kver < LINK_PINNING:
        return False, f"pinnable BPF links arrived in {LINK_PINNING}: counting stops with the exporter"
    return True, "BPF links are pinned: counting goes on across restarts"
