"""The lifecycle's state, kept in BPF maps beside the counters (and pinned with them).

Two hash maps per subsystem, made from user space:
  <name>_paths    u64 id -> cgroup path (NUL-padded): the path of every cgroup
                  id in the counters map, and of every retired path's id
  <name>_retired  the counters map's key with a path id in place of the
                  cgroup id -> the summed counters of that path's removed cgroups
So a new exporter that adopts the pinned maps finds the retired totals, and
names the ids of cgroups removed while no exporter ran, instead of
starting from nothing. A path id is a hash of the path with the top bit
set: real cgroup ids (inode numbers) never have it.

Retiring a cgroup writes its counts here before deleting its keys from the
counters map: a crash between the two (two syscalls) would count them
twice after the restart; losing them is the other way round, and worse.
"""

from __future__ import annotations

import hashlib
import struct

from ceemsnet.runtime.collection import Collection
from ceemsnet.runtime.maps import BpfMap

PATH_BYTES = 1024
PATH_ID_BIT = 1 << 63
_ID = struct.Struct("=Q")


def path_id(path: str) -> int:
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "little") | PATH_ID_BIT


class Ledger:
    def __init__(self, coll: Collection, name: str, key_size: int, words: int, capacity: int, decode, pack):
        self._decode, self._pack = decode, pack
        self._value = struct.Struct(f"={words}Q")
        for attr, mname, ksz, vsz in (("paths", f"{name}_paths", 8, PATH_BYTES),
                                      ("retired_map", f"{name}_retired", key_size, words * 8)):
            m = coll.maps.get(mname)
            if m is None:
                m = BpfMap.create(mname, ksz, vsz, capacity)
                coll.add_map(m)
            setattr(self, attr, m)
        self._path_of: dict[int, str] = {}  # as in the paths map: cgroup ids and path ids

    def load(self) -> dict[tuple, list[int]]:
        """Retired totals as the lifecycle keeps them: {(path, *rest of key): counters}."""
        keys, values, n = self.paths.read_all()
        for i in range(n):
            cid = _ID.unpack_from(keys, i * 8)[0]
            self._path_of[cid] = values[i * PATH_BYTES:(i + 1) * PATH_BYTES].split(b"\0", 1)[0].decode()
        keys, values, n = self.retired_map.read_all()
        out = {}
        for key, vals in self._decode(keys, values, n, 1).items():
            path = self._path_of.get(key[0])
            if path is not None:
                out[(path,) + key[1:]] = list(vals)
        return out

    def path_of(self, cid: int) -> str | None:
        return self._path_of.get(cid)

    def _name(self, cid: int, path: str) -> None:
        self.paths.update(_ID.pack(cid), path.encode()[:PATH_BYTES - 1].ljust(PATH_BYTES, b"\0"))
        self._path_of[cid] = path

    def record(self, paths: dict[int, str]) -> None:
        """Remember the path of every cgroup id seen with counts (once per id)."""
        for cid, path in paths.items():
            if cid >= 0 and cid not in self._path_of and path.startswith("/"):
                self._name(cid, path)

    def retire(self, rk: tuple, values) -> None:
        """rk = (path, *rest of key): its retired total is now `values`."""
        pid = path_id(rk[0])
        if pid not in self._path_of:
            self._name(pid, rk[0])
        self.retired_map.update(self._pack(pid, *rk[1:]), self._value.pack(*values))

    def forget(self, cid: int) -> None:
        """A cgroup id whose keys are gone from the counters map."""
        if self._path_of.pop(cid, None) is not None:
            self.paths.delete(_ID.pack(cid))

    def drop(self, path: str, rks) -> None:
        """A retired path whose series expired."""
        pid = path_id(path)
        for rk in rks:
            self.retired_map.delete(self._pack(pid, *rk[1:]))
        self.paths.delete(_ID.pack(pid))
        self._path_of.pop(pid, None)
