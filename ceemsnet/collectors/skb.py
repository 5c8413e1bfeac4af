"""cgroup_skb backend: IP-layer bytes and packets per cgroup, for comparison.

Two modes (--skb.mode):
  root        one pair of programs attached to the cgroup2 root (or the
              --skb.root subtree); every skb is counted in a hash map keyed
              by bpf_skb_cgroup_id(), the cgroup its socket was created in.
  per-cgroup  the programs attached to every cgroup whose path matches
              --skb.cgroups (a glob such as /slurm/*/job_*), counting into
              per-CPU cgroup storage; cgroups are followed as they appear
              and disappear (a cgroup's last counts are kept after it goes,
              in skb_final, a map of ours pinned with the object: see
              docs/continuity.md for when the kernel frees them first).
Programs are attached with BPF links, which are multi-attach (the kernel
treats them as BPF_F_ALLOW_MULTI): other programs on the same cgroups, such
as systemd's IP accounting, keep running, and only our links are removed.
A link also goes away with the exporter process, so a crash leaves nothing
attached. The object is loaded through the loader like every other; root
mode's hash is read by the shared counters-map collector (removed cgroups'
keys deleted, their counts retired), per-cgroup mode's storage by a source
of its own below.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import logging
import os
import struct
import threading
import time

from ceemsnet import CeemsnetError
from ceemsnet.attribution.cgroups import CgroupResolver, scan_cgroup_ids
from ceemsnet.attribution.lifecycle import Lifecycle
from ceemsnet.collectors.base import Context, add_map_entries_flag
from ceemsnet.collectors.counters import CounterMap, HashSource
from ceemsnet.common.metrics import Family
from ceemsnet.common.timeparse import duration_arg
from ceemsnet.pinned.continuity import Pinned, Upgrade, Wanted, add_values
from ceemsnet.pinned.ledger import Ledger
from ceemsnet.pinned.pins import PinDir, boot_id
from ceemsnet.pinned.sequence import open_subsystem
from ceemsnet.planning.catalogue import SKB_OBJECTS
from ceemsnet.planning.choice import HookChoice
from ceemsnet.planning.structs import (NET_DIR, NET_FAMILY, SkbKey, SkbValue, decode_skb, decode_skb_storage,
                                       pack_skb_key)
from ceemsnet.runtime.collection import Collection, LoadRefused, ObjectSpec, load
from ceemsnet.runtime.links import Link
from ceemsnet.runtime.maps import BpfMap

log = logging.getLogger("ceemsnet.collectors.skb")
NAME = "skb"
HELP = "cgroup_skb: IP-layer bytes, packets and segments per socket cgroup, to compare (ceemsnet_skb_*)"
MODES = ("root", "per-cgroup")
PROGRAMS = ("cgroup_skb_egress", "cgroup_skb_ingress")
# per-cgroup mode: the last counts of detached cgroups (their storage dies with the links), keyed
# and valued as root mode's skb_stats but not per CPU; made here and pinned with the object
FINAL = "skb_final"
_FINAL_VALUE = struct.Struct("=3Q")


def add_flags(group) -> None:
    group.add_argument("--skb.mode", dest="skb_mode", default="root", choices=MODES,
                       help="skb collector: root (default) attaches once to the cgroup2 root (or --skb.root) "
                            "and counts per skb cgroup in a hash map; per-cgroup attaches to every cgroup "
                            "matching --skb.cgroups and counts in per-CPU cgroup storage")
    group.add_argument("--skb.root", dest="skb_root", default="/", metavar="PATH",
                       help="root mode: the cgroup (relative to the cgroup2 root) to attach to (default /)")
    group.add_argument("--skb.cgroups", dest="skb_cgroups", metavar="GLOB",
                       help="per-cgroup mode: cgroup paths to attach to, e.g. '/slurm/*/job_*' or "
                            "'/system.slice/slurmstepd.scope/job_*' (descendants count into the match)")
    group.add_argument("--skb.sync-interval", dest="skb_sync", type=duration_arg, default=1.0, metavar="DURATION",
                       help="per-cgroup mode: how often to look for new and removed cgroups (default 1s)")
    add_map_entries_flag(group, NAME, "root mode, 4 per cgroup; per-cgroup mode: its kept final counts and ledger")


def check(args) -> None:
    check_mode(args.skb_mode, args.skb_cgroups)


def check_mode(mode: str, pattern: str | None) -> None:
    if mode == "per-cgroup" and not pattern:
        raise CeemsnetError("--skb.mode=per-cgroup needs --skb.cgroups=GLOB (e.g. '/slurm/*/job_*')")


def _cid_of(link_name: str) -> int:
    """The cgroup id in a cgroup link's name (Collection.attach_cgroup: <program>__<id>)."""
    return int(link_name.rpartition("__")[2])


def _is_cgroup(path: str, cid: int) -> bool:
    """Is the cgroup at path the one with this id (its directory's inode)?"""
    try:
        return os.stat(path).st_ino == cid
    except OSError:
        return False


class SkbBackend:
    """The loaded skb object and its links: one pair at the root, or one pair per matching cgroup.

    start(pins) opens it through the pinning sequence (ceemsnet/pinned/sequence.py), whose
    steps it provides: wanted(), adopt() and load(), which in root mode takes the old links
    at our root over with bpf_link_update (swap in place: no event missed)."""

    subsystem = NAME
    carry = None  # the counters maps are all carried over by continuity.carry_over

    def __init__(self, cgroup_root: str, mode: str = "root", subtree: str = "/", pattern: str | None = None,
                 map_entries: int = 65536):
        check_mode(mode, pattern)
        self.root = cgroup_root
        self.mode = mode
        self.subtree = "/" + subtree.strip("/") if subtree.strip("/") else "/"
        self.pattern = pattern
        self.map_entries = map_entries
        self.spec = SKB_OBJECTS[mode]
        self.settings: dict[str, int] = {}  # the skb objects have no load-time settings
        self.counters = "skb_stats" if mode == "root" else "skb_cgroup_storage"
        self.lock = threading.RLock()
        self.attached: dict[str, tuple[int, list[Link]]] = {}  # path -> (cgroup id, links)
        self.final: BpfMap | None = None                       # per-cgroup: FINAL
        self.ledger: Ledger | None = None                      # per-cgroup with pins: paths of detached ids
        self.coll: Collection | None = None
        self.generation = 0

    def start(self, pins: PinDir | None) -> "SkbBackend":
        """Load and attach, or adopt what a previous run pinned; pin (pins None: no pins)."""
        self.generation = open_subsystem(pins, self).generation
        return self

    @property
    def collection(self) -> Collection:
        return self.coll

    def _spec(self, reuse: dict | None = None) -> ObjectSpec:
        return ObjectSpec(self.spec, None, {"skb_stats": self.map_entries}, reuse=reuse or {})

    def wanted(self, pinned: Pinned) -> Wanted:
        """This run would load the pinned object as it is: same object, settings and map size,
        and (root mode) attached at the same cgroup."""
        links = pinned.links
        if self.mode == "root":
            links = frozenset(f"{prog}__{self._root_cid()}" for prog in PROGRAMS)
        return Wanted.of(pinned, self.spec, self.settings, links, {"skb_stats": self.map_entries})

    def adopt(self, pinned: Pinned) -> "SkbBackend":
        ids = scan_cgroup_ids(self.root)
        self.coll = Collection.adopt(self._spec(), pinned.path, targets=lambda name: ids.get(_cid_of(name), "unknown"))
        try:
            self._bind_maps()
            for ln in self.coll.links:
                cid = _cid_of(ln.name)
                self.attached.setdefault(ids.get(cid, f"unknown:{cid}"), (cid, []))[1].append(ln)
            self.sync()  # per-cgroup mode: cgroups that came or went meanwhile
        except BaseException:
            self.close()  # the pins stay: their programs go on counting
            raise
        return self

    def load(self, up: Upgrade) -> "SkbBackend":
        """Load the object on the pinned maps where they fit; take the old programs' place
        (in place where it can) and their counts; attach."""
        if self.mode == "root" and self._root_cid() is None:
            raise CeemsnetError(f"--skb.root {self.subtree} is not a cgroup under {self.root}")
        try:
            self.coll = load(self._spec(up.reuse))
        except LoadRefused as e:
            raise CeemsnetError(f"{e}" + (" (needs root)" if os.geteuid() else "")) from None
        try:
            self._bind_maps()
            took = self._swap_in_place(up)
            up.take_over(self.coll)  # the old programs go, their counts come into these maps
            self._carry_final(up)
            if took:
                self.attached[self.subtree] = (_cid_of(took[0].name), took)
            elif self.mode == "root":
                self._attach(self.subtree, os.path.join(self.root, self.subtree.lstrip("/")))
            else:
                self.sync()
        except BaseException:
            self.close()
            raise
        return self

    def _swap_in_place(self, up: Upgrade) -> list[Link]:
        """Root mode: cgroup links can change their program atomically. Take the old links at
        our root over with the new programs, when the new object kept the old counter maps
        (else the old counts must be copied before anything counts into the new maps)."""
        if self.mode != "root" or not up.old or not {"skb_stats", "skb_drops"} <= self.coll.reused:
            return []
        cid = self._root_cid()
        mine = {ln.program: ln for ln in up.old[-1].links if _cid_of(ln.name) == cid}
        if set(mine) != set(PROGRAMS):
            return []
        up.relink(self.coll, list(mine.values()))
        return list(mine.values())

    def _root_cid(self) -> int | None:
        """Root mode: the id of the cgroup the programs attach to (None if it is missing)."""
        path = os.path.join(self.root, self.subtree.lstrip("/"))
        return os.stat(path).st_ino if os.path.isdir(path) else None

    def _bind_maps(self) -> None:
        self.map = self.coll.maps[self.counters]
        self.drops = self.coll.maps.get("skb_drops")
        if self.mode == "per-cgroup":
            self.final = self.coll.maps.get(FINAL)
            if self.final is None:  # fresh, an upgrade, or pins of a ceemsnet before FINAL
                self.final = BpfMap.create(FINAL, ctypes.sizeof(SkbKey), ctypes.sizeof(SkbValue), self.map_entries)
                self.coll.add_map(self.final)

    def _carry_final(self, up: Upgrade) -> None:
        """An upgrade: the old objects' detached cgroups' last counts, into this one's FINAL
        (the old maps stay pinned until the new object works)."""
        for old in up.old:
            m = old.maps.get(FINAL)
            if m is None or self.final is None or m is self.final:
                continue
            keys, values, n = m.read_all()
            ksz, vsz = m.key_size, m.value_size
            nkeys, nvalues, nn = self.final.read_all()
            have = {nkeys[i * ksz:(i + 1) * ksz]: nvalues[i * vsz:(i + 1) * vsz] for i in range(nn)}
            for i in range(n):
                k, v = keys[i * ksz:(i + 1) * ksz], values[i * vsz:(i + 1) * vsz]
                self.final.update(k, add_values(v, have[k]) if k in have else v)

    def _attach(self, rel: str, path: str) -> None:
        links = []
        try:
            cid = os.stat(path).st_ino
            for name in PROGRAMS:
                links.append(self.coll.attach_cgroup(name, path, rel))
        except BaseException:
            self.coll.detach(links)
            raise
        self.attached[rel] = (cid, links)

    def sync(self) -> None:
        """per-cgroup: attach to new matching cgroups, let go of removed ones."""
        if self.mode != "per-cgroup":
            return
        with self.lock:
            t0 = time.monotonic()
            ids = scan_cgroup_ids(self.root)
            want = {p: i for i, p in ids.items() if fnmatch.fnmatchcase(p, self.pattern)}
            took = time.monotonic() - t0
            if took > 0.5:
                log.debug("skb: following cgroups: a scan of %d cgroups took %.1f s", len(ids), took)
            # a cgroup the scan did not list is gone once a stat says so: a scan can miss a live one
            # (a directory it could not read is left out), and a cgroup wrongly let go loses the
            # counts of its storage from then on
            gone = [p for p, (cid, _) in self.attached.items()
                    if want.get(p) != cid and not _is_cgroup(os.path.join(self.root, p.lstrip("/")), cid)]
            if gone:
                # keep the final counts in FINAL (pinned), before the links go: the storage dies
                # with them. Absolute writes: a crash before the detach only means they are
                # written again. A removed cgroup's storage the kernel freed already (no socket
                # of it left open) is not there to read: docs/continuity.md
                live = self._read_storage()
                for p in gone:
                    cid, links = self.attached[p]
                    if self.ledger is not None:
                        self.ledger.record({cid: p})  # its path, for a restart that finds its counts
                    kept = 0
                    for k, v in live.items():
                        if k[0] == cid:
                            self.final.update(pack_skb_key(*k), _FINAL_VALUE.pack(*v))
                            kept += 1
                    log.debug("skb: %s (id %d) is gone: %d final counts kept of %d storage keys", p, cid, kept,
                              len(live))
                    del self.attached[p]
                    self.coll.detach(links)
            for p, cid in want.items():
                if p not in self.attached:
                    try:
                        log.debug("skb: attaching to %s (id %d)", p, cid)
                        self._attach(p, os.path.join(self.root, p.lstrip("/")))
                    except OSError as e:
                        if e.errno != errno.ENOENT:  # removed while we looked: not an error
                            log.warning("skb: %s", e)

    def _read_storage(self) -> dict:
        keys, values, n = self.map.read_all()
        return decode_skb_storage(keys, values, n, self.map.ncpus)

    # the counters-map source of per-cgroup mode (root mode reads self.map through a HashSource)
    name = "skb_cgroup_storage"

    def read(self) -> tuple[dict[tuple[int, int, int], tuple], int]:
        """({(cgroup id, family, dir): (bytes, packets, segments)}, storages): the attached
        cgroups' storage (0 before their first packet) and detached ones' last counts."""
        with self.lock:
            keys, values, n = self.final.read_all()
            out = decode_skb(keys, values, n, 1)
            for cid, _ in self.attached.values():
                for fam in (0, 1):
                    for d in (0, 1):
                        out.setdefault((cid, fam, d), (0, 0, 0))
            live = self._read_storage()
            out.update(live)
            return out, len({k[0] for k in live})

    def delete(self, key: tuple) -> bool:
        """The lifecycle retired this cgroup's counts (it found the cgroup gone): drop them
        from FINAL, and detach the cgroup if sync() has not yet (its storage goes with the
        links, so no count of it is kept twice, across a restart too)."""
        with self.lock:
            done = self.final.delete(pack_skb_key(*key))
            for p, (cid, links) in list(self.attached.items()):
                if cid == key[0]:
                    del self.attached[p]
                    self.coll.detach(links)
                    done = True
            return done

    def close(self) -> None:
        """Close the object; with pins its programs keep counting."""
        with self.lock:
            self.attached.clear()
            if self.coll is not None:
                self.coll.close()

    def hooks(self) -> list[HookChoice]:
        where = self.subtree if self.mode == "root" else self.pattern
        return [HookChoice("skb", h.function, "cgroup_skb", self.spec.file, "ok",
                           f"{self.mode} mode on {where}", h.programs) for h in self.spec.hooks]


def skb_families(stats: dict, paths: dict[int, str]) -> list[Family]:
    """ceemsnet_skb_* families from decoded counts (pure); ids with one path are summed."""
    totals: dict[tuple[str, str, int], list[int]] = {}
    for (cid, fam, d), vals in stats.items():
        acc = totals.setdefault((paths[cid], NET_FAMILY.get(fam, str(fam)), d), [0, 0, 0])
        for i in range(3):
            acc[i] += vals[i]
    ordered = sorted(totals.items())
    out = []
    for d, direction in sorted(NET_DIR.items()):
        for i, (field, doc) in enumerate((("bytes", "IP-layer bytes (headers included, skb->len)"),
                                          ("packets", "skbs (a GSO super-packet counts once)"),
                                          ("segments", "GSO segments: the packets on the wire"))):
            f = Family(f"ceemsnet_skb_{direction}_{field}",
                       f"cgroup_skb {direction}: {doc}, per cgroup the socket was created in",
                       "counter", ("cgroup", "family"))
            f.rows = [((cg, fam), v[i]) for (cg, fam, dd), v in ordered if dd == d]
            out.append(f)
    return out


class SkbSubsystem:
    name = NAME

    def __init__(self, backend: SkbBackend, resolver: CgroupResolver, lifecycle: Lifecycle | None = None,
                 sync_interval: float = 1.0):
        self.backend = backend
        self.generation = f"{boot_id()}:{backend.generation}"  # the store uses it
        b = backend
        source = HashSource(b.map, decode_skb, pack_skb_key) if b.mode == "root" else b
        self.counters = CounterMap(source, skb_families, resolver, lifecycle, b.drops)
        self._stop = threading.Event()
        self._thread = None
        if b.mode == "per-cgroup" and sync_interval > 0:
            self._thread = threading.Thread(target=self._follow, args=(sync_interval,), name="skb-sync",
                                            daemon=True)
            self._thread.start()

    def _follow(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.backend.sync()
            except Exception as e:  # keep following; the next round may succeed
                log.warning("skb: following cgroups failed: %s", e)

    def hooks(self) -> list[HookChoice]:
        return self.backend.hooks()

    def skipped(self) -> list[HookChoice]:
        return []  # both cgroup_skb hooks, always (a cgroup that cannot be attached is logged)

    def collect(self) -> list[Family]:
        self.backend.sync()
        fams = self.counters.collect()
        att = Family("ceemsnet_skb_attached_cgroups", "Cgroups the cgroup_skb programs are attached to",
                     "gauge", ("mode",))
        att.add((self.backend.mode,), len(self.backend.attached))
        fams.append(att)
        return fams

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.backend.close()


def open(ctx: Context) -> SkbSubsystem:
    a = ctx.args
    root, resolver = ctx.cgroup2("--collectors=skb: cgroup_skb programs attach to cgroup2 cgroups")
    backend = SkbBackend(root, a.skb_mode, a.skb_root, a.skb_cgroups, a.skb_map_entries).start(ctx.pins)
    log.info("skb: %s mode, %d cgroup(s) attached", backend.mode, len(backend.attached))
    try:
        # per-cgroup mode: the retired totals are keyed as FINAL is (root mode's skb_stats, not per CPU)
        ledger = ctx.ledger(backend.coll, NAME, backend.map if backend.mode == "root" else backend.final,
                            a.skb_map_entries, decode_skb, pack_skb_key)
        with backend.lock:
            backend.ledger = ledger
        return SkbSubsystem(backend, resolver, ctx.lifecycle(root, ledger), a.skb_sync)
    except BaseException:
        backend.close()
        raise
