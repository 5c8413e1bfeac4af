"""The lifecycle's state, kept in BPF maps beside the counters (and pinned with them).

Three hash maps per subsystem, made from user space:
  <name>_paths     u64 id -> cgroup path (NUL-padded): the path of every cgroup
                   id in the counters map, and of every retired path's id
  <name>_retired   the counters map's key with a path id in place of the
                   cgroup id -> the summed counters of that path's removed cgroups
  <name>_retiring  the counters map's key -> (path id, the retired total of that
                   path once this key's counts are in it): the intents of a
                   retire in progress, empty between scrapes
So a new exporter that adopts the pinned maps finds the retired totals, and
names the ids of cgroups removed while no exporter ran, instead of
starting from nothing. A path id is a hash of the path with the top bit
set: real cgroup ids (inode numbers) never have it.

Retiring removed cgroups' keys is a sequence of system calls (retire()):
  1. name each new path id (paths), then write each key's intent (retiring)
  2. write each path's new retired total (retired)
  3. delete the keys from the counters map
  4. delete the intents, then (forget()) the removed ids' paths
A crash (SIGKILL) at any point of it neither loses nor doubles a count: the
next load() replays the intents it finds. Each makes its path's retired total
at least the intent's (totals only grow, so the word-wise maximum is the
last intent written), and its key is `pending`: its counts are in a retired
total. The lifecycle's first scrape (settle()) deletes the pending keys still
in the counters map without adding them again, then the intents (a cgroup
id is not reused within a boot, and pins do not outlive one: a pending key
is never a new cgroup's). A key without an intent is in no retired total:
it is retired as usual. Every
step is an absolute write or a delete, so a crash during the replay only
means it is replayed again. An older ceemsnet's ledger (no <name>_retiring)
is adopted as it is: the map is added, empty. A ledger of ceemsnet 0.1's
per-counter layout (one key per counter, see planning/structs.Layout) is
converted to records once (convert_legacy()): its intents replayed, its
totals regrouped into a new <name>_retired, pinned over the old one, then
an empty <name>_retiring over the old intents; a crash in between converts
again at the next start, or (retired already converted) only replaces the
intents, whose effect the new totals hold.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import struct

from ceemsnet.common.digest import sha256
from ceemsnet.planning.structs import LAYOUTS, WORDS, Layout
from ceemsnet.runtime.collection import Collection
from ceemsnet.runtime.maps import BpfMap

log = logging.getLogger("ceemsnet.pinned.ledger")

PATH_BYTES = 1024
PATH_ID_BIT = 1 << 63
_ID = struct.Struct("=Q")
# tests only (tests/kernel/test_crash_ledger.py): SIGKILL this process right after the Nth
# system call of its retires, to show that a crash at any step loses and doubles nothing
CRASH_ENV = "CEEMSNET_TEST_CRASH_AFTER_RETIRE_STEP"


def path_id(path: str) -> int:
    return int.from_bytes(sha256(path.encode()).digest()[:8], "little") | PATH_ID_BIT


def _crash_after() -> int:
    v = os.environ.get(CRASH_ENV, "")
    return int(v) if v.isdigit() else 0


class Ledger:
    def __init__(self, coll: Collection, name: str, key_size: int, words: int, capacity: int, decode, pack):
        self._decode, self._pack = decode, pack
        self._words = words
        self._value = struct.Struct(f"={words}Q")
        self._intent = struct.Struct(f"=Q{words}Q")  # path id, retired total
        layout = LAYOUTS.get(name)
        if layout is not None and (key_size, words) == (layout.key.size, layout.words):
            convert_legacy(coll, name, layout, capacity)
        # paths: every cgroup id in the counters map and every retired path: room for both
        for attr, mname, ksz, vsz, cap in (("paths", f"{name}_paths", 8, PATH_BYTES, 2 * capacity),
                                           ("retired_map", f"{name}_retired", key_size, words * 8, capacity),
                                           ("retiring", f"{name}_retiring", key_size, self._intent.size, capacity)):
            m = coll.maps.get(mname)
            if m is None:
                m = BpfMap.create(mname, ksz, vsz, cap)
                coll.add_map(m)
            setattr(self, attr, m)
        self._path_of: dict[int, str] = {}  # as in the paths map: cgroup ids and path ids
        self.pending: set[tuple] = set()    # counters keys whose counts a retired total holds (load)
        self.settled = False                # settle() ran since load()
        self.steps = 0                      # system calls of retires so far (the crash tests count them)
        self.crash_after = _crash_after()
        self._full_warned = False

    def _step(self) -> None:
        self.steps += 1
        if self.steps == self.crash_after:
            self._crash()

    def _crash(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def load(self) -> dict[tuple, list[int]]:
        """Retired totals as the lifecycle keeps them: {(path, *rest of key): counters},
        with the intents of a retire a crash interrupted replayed (see the module doc)."""
        keys, values, n = self.paths.read_all()
        for i in range(n):
            cid = _ID.unpack_from(keys, i * 8)[0]
            self._path_of[cid] = values[i * PATH_BYTES:(i + 1) * PATH_BYTES].split(b"\0", 1)[0].decode()
        keys, values, n = self.retired_map.read_all()
        totals = {k: list(v) for k, v in self._decode(keys, values, n, 1).items()}
        keys, values, n = self.retiring.read_all()
        if n:
            pending = list(self._decode(keys, bytes(n * self._words * 8), n, 1))
            self.pending = set(pending)
            replayed = {}
            for i, key in enumerate(pending):
                pid, *total = self._intent.unpack_from(values, i * self._intent.size)
                rk = (pid,) + key[1:]
                have = replayed.get(rk, totals.get(rk))
                replayed[rk] = total if have is None else [max(a, b) for a, b in zip(have, total)]
            for rk, total in replayed.items():
                if totals.get(rk) != total:
                    self.retired_map.update(self._pack(*rk), self._value.pack(*total))
                    totals[rk] = total
        out = {}
        for key, vals in totals.items():
            path = self._path_of.get(key[0])
            if path is not None:
                out[(path,) + key[1:]] = vals
        return out

    def path_of(self, cid: int) -> str | None:
        return self._path_of.get(cid)

    def _name(self, cid: int, path: str) -> None:
        self.paths.update(_ID.pack(cid), path.encode()[:PATH_BYTES - 1].ljust(PATH_BYTES, b"\0"))
        self._path_of[cid] = path

    def record(self, paths: dict[int, str]) -> None:
        """Remember the path of every cgroup id seen with counts (once per id). A full paths
        map is not a scrape failure: the ids it cannot take are named after a restart by the
        resolver, as long as their cgroups live (warned once)."""
        for cid, path in paths.items():
            if cid >= 0 and cid not in self._path_of and path.startswith("/"):
                try:
                    self._name(cid, path)
                except OSError as e:
                    if e.errno != errno.E2BIG:
                        raise
                    if not self._full_warned:
                        log.warning("%s is full (%d entries): cgroups removed while no exporter runs may be "
                                    "exported under unknown:<id> after a restart", self.paths.name,
                                    self.paths.max_entries)
                        self._full_warned = True
                    return

    def retire(self, folded: list[tuple[tuple, tuple, tuple]], delete) -> int:
        """Fold keys into retired totals and delete them, crash-safe (the module doc's steps).
        folded: (counters key, rk = (path, *rest of key), rk's retired total with this key's
        counts in it), in the order they were added; delete(key) -> bool deletes a key from
        the counters map. Returns how many keys delete() removed. In runs the intents map
        holds (each run a whole sequence: its intents are gone before the next run's)."""
        n = self.retiring.max_entries
        return sum(self._retire(folded[i:i + n], delete) for i in range(0, len(folded), n))

    def _retire(self, folded: list[tuple[tuple, tuple, tuple]], delete) -> int:
        step, pack = self._step, self._pack
        pids: dict[str, int] = {}
        final: dict[tuple, tuple] = {}
        packed = []
        for key, rk, total in folded:
            pid = pids.get(rk[0])
            if pid is None:
                pid = pids[rk[0]] = path_id(rk[0])
                if pid not in self._path_of:
                    self._name(pid, rk[0])
                    step()
            kb = pack(*key)
            self.retiring.update(kb, self._intent.pack(pid, *total))
            step()
            packed.append(kb)
            final[rk] = total
        for rk, total in final.items():
            self.retired_map.update(pack(pids[rk[0]], *rk[1:]), self._value.pack(*total))
            step()
        deleted = 0
        for key, _, _ in folded:
            deleted += bool(delete(key))
            step()
        for kb in packed:
            self.retiring.delete(kb)
            step()
        return deleted

    def settle(self, present, ids, delete) -> int:
        """The first scrape after load(): delete the pending keys still in the counters map
        (`present`: its keys now) without adding them again, clear the intents, and forget
        the paths of cgroup ids with no keys left (`ids`: the ids with keys besides the
        pending ones; a crash before forget() leaves them). Returns the keys deleted."""
        deleted = 0
        for key in self.pending:
            if key in present:
                deleted += bool(delete(key))
                self._step()
        for key in self.pending:
            self.retiring.delete(self._pack(*key))
            self._step()
        self.pending = set()
        # list() copies in one step: skb's sync thread may record() meanwhile
        for cid in [c for c in list(self._path_of) if not c & PATH_ID_BIT and c not in ids]:
            self.forget(cid)
        self.settled = True
        return deleted

    def forget(self, cid: int) -> None:
        """A cgroup id whose keys are gone from the counters map."""
        if self._path_of.pop(cid, None) is not None:
            self.paths.delete(_ID.pack(cid))
            self._step()

    def drop(self, path: str, rks) -> None:
        """A retired path whose series expired: its totals go before its name (a crash
        between them leaves named totals, which expire again after the restart)."""
        pid = path_id(path)
        for rk in rks:
            self.retired_map.delete(self._pack(pid, *rk[1:]))
        self.paths.delete(_ID.pack(pid))
        self._path_of.pop(pid, None)


def convert_legacy(coll: Collection, name: str, layout: Layout, capacity: int) -> bool:
    """A ledger of the per-counter layout, made records of `layout` in place (the module doc):
    returns True if anything was converted."""
    retired, retiring = coll.maps.get(f"{name}_retired"), coll.maps.get(f"{name}_retiring")
    intent_size = 8 + layout.value_size
    old_retired = retired is not None and layout.is_legacy(retired.key_size, retired.value_size)
    old_intents = retiring is not None and (retiring.key_size, retiring.value_size) != (layout.key.size, intent_size)
    if not old_retired and not old_intents:
        return False
    if old_retired:
        value, intent = struct.Struct(f"={WORDS}Q"), struct.Struct(f"=Q{WORDS}Q")
        keys, values, n = retired.read_all()
        ksz = retired.key_size
        totals = {keys[i * ksz:(i + 1) * ksz]: list(value.unpack_from(values, i * value.size)) for i in range(n)}
        if retiring is not None and retiring.key_size == ksz and retiring.value_size == intent.size:
            # replay a crashed retire's intents: its path's total is at least the intent's
            ikeys, ivalues, ni = retiring.read_all()
            for i in range(ni):
                key = layout.legacy_key.unpack_from(ikeys, i * ksz)
                pid, *total = intent.unpack_from(ivalues, i * intent.size)
                rk = layout.legacy_key.pack(pid, *key[1:])
                have = totals.get(rk)
                totals[rk] = total if have is None else [max(a, b) for a, b in zip(have, total)]
        records = layout.regroup(b"".join(totals), b"".join(value.pack(*v) for v in totals.values()),
                                 len(totals), 1)
        new = BpfMap.create(f"{name}_retired", layout.key.size, layout.value_size,
                            max(retired.max_entries, capacity))
        rec = struct.Struct(f"={layout.words}Q")
        for rk, words in records.items():
            new.update(layout.pack(*rk), rec.pack(*words))
        coll.replace_map(new)
    if retiring is not None:
        coll.replace_map(BpfMap.create(f"{name}_retiring", layout.key.size, intent_size,
                                       max(retiring.max_entries, capacity)))
    return True
