"""BPF maps from user space: a loaded or pinned map's fd and geometry, and
batched reads of every entry (bpf_map_lookup_batch, key by key where the
kernel has no batch ops)."""

from __future__ import annotations

import ctypes
import errno
import logging
import os

from ceemsnet.runtime import libbpf

log = logging.getLogger("ceemsnet.runtime.maps")


def map_info(fd: int):
    info = libbpf.bpf_map_info()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    libbpf.check_rc(libbpf.lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(size)),
                    "bpf_obj_get_info_by_fd")
    return info


class BpfMap:
    """A loaded map: fd plus the geometry needed to read it."""

    def __init__(self, name: str, fd: int, key_size: int, value_size: int, max_entries: int,
                 map_type: int, map_flags: int = 0, owned: bool = False):
        self.name = name
        self.fd = fd
        self.owned = owned  # our own fd (opened from a pin): close() closes it
        self.map_type = map_type
        self.map_flags = map_flags
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self.percpu = map_type in libbpf.PERCPU_MAP_TYPES
        self.ncpus = libbpf.num_possible_cpus() if self.percpu else 1
        # per-CPU values come as one 8-byte aligned slot per possible CPU
        self.value_stride = ((value_size + 7) // 8) * 8 if self.percpu else value_size
        self.batch_ok: bool | None = None  # None: not tried yet

    @classmethod
    def from_libbpf(cls, name: str, map_ptr) -> "BpfMap":
        """A loaded libbpf `struct bpf_map *`, geometry read from libbpf (cgroup
        storage maps report max_entries 0: read them key by key)."""
        lb = libbpf.lib()
        return cls(name, lb.bpf_map__fd(map_ptr), lb.bpf_map__key_size(map_ptr), lb.bpf_map__value_size(map_ptr),
                   max(1, lb.bpf_map__max_entries(map_ptr)), lb.bpf_map__type(map_ptr), lb.bpf_map__map_flags(map_ptr))

    @classmethod
    def from_fd(cls, name: str, fd: int) -> "BpfMap":
        """A map we hold an fd of (opened from a pin); geometry from the kernel. Takes the fd over."""
        info = map_info(fd)
        return cls(name, fd, info.key_size, info.value_size, max(1, info.max_entries), info.type, info.map_flags,
                   owned=True)

    @classmethod
    def create(cls, name: str, key_size: int, value_size: int, max_entries: int) -> "BpfMap":
        """A new hash map made from user space, allocated on use (for state kept beside the counters)."""
        opts = libbpf.bpf_map_create_opts(ctypes.sizeof(libbpf.bpf_map_create_opts))
        opts.map_flags = libbpf.BPF_F_NO_PREALLOC
        fd = libbpf.lib().bpf_map_create(libbpf.BPF_MAP_TYPE_HASH, name[:15].encode(), key_size, value_size,
                                         max_entries, ctypes.byref(opts))
        libbpf.check_rc(fd, f"bpf_map_create({name})")
        return cls.from_fd(name, fd)

    @property
    def id(self) -> int:
        """The kernel's id of this map: unique until reboot, so it names this map's lifetime."""
        return map_info(self.fd).id

    def close(self) -> None:
        if self.owned and self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def read_all(self, chunk: int = 4096) -> tuple[bytes, bytes, int]:
        """Every (key, value) as two packed buffers and a count.

        bpf_map_lookup_batch (5.6+) reads a chunk per syscall; older kernels
        (or a map type without batch ops) fall back to get_next_key + lookup.
        """
        if self.batch_ok is not False:
            try:
                out = self._read_batch(chunk)
                self.batch_ok = True
                return out
            except OSError as e:
                # ENOTSUPP (524, kernel-internal) or EINVAL: no batch ops here
                if self.batch_ok or e.errno not in (errno.EINVAL, 524, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                log.info("map %s: no batch lookup on this kernel (%s), iterating keys", self.name, e)
                self.batch_ok = False
        return self._read_iter()

    def _read_batch(self, chunk: int) -> tuple[bytes, bytes, int]:
        lb = libbpf.lib()
        vsize = self.value_stride * self.ncpus
        chunk = max(1, min(chunk, self.max_entries))
        keys = ctypes.create_string_buffer(self.key_size * chunk)
        vals = ctypes.create_string_buffer(vsize * chunk)
        in_tok = ctypes.c_uint64(0)
        out_tok = ctypes.c_uint64(0)
        opts = libbpf.bpf_map_batch_opts(ctypes.sizeof(libbpf.bpf_map_batch_opts), 0, 0)
        kparts, vparts, total = [], [], 0
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = lb.bpf_map_lookup_batch(self.fd, None if first else ctypes.byref(in_tok),
                                         ctypes.byref(out_tok), keys, vals, ctypes.byref(count),
                                         ctypes.byref(opts))
            err = -rc if rc < 0 else 0
            if err and err != errno.ENOENT:
                if err == errno.ENOSPC and chunk < self.max_entries:
                    # one hash bucket holds more than a chunk: retry with room for all
                    return self._read_batch(self.max_entries)
                raise OSError(err, f"bpf_map_lookup_batch({self.name}): {os.strerror(err)}")
            n = count.value
            if n:
                kparts.append(keys.raw[: n * self.key_size])
                vparts.append(vals.raw[: n * vsize])
                total += n
            if err == errno.ENOENT:
                break
            in_tok.value = out_tok.value
            first = False
        return b"".join(kparts), b"".join(vparts), total

    def _read_iter(self) -> tuple[bytes, bytes, int]:
        lb = libbpf.lib()
        key = ctypes.create_string_buffer(self.key_size)
        nxt = ctypes.create_string_buffer(self.key_size)
        val = ctypes.create_string_buffer(self.value_stride * self.ncpus)
        kparts, vparts = [], []
        prev = None
        while lb.bpf_map_get_next_key(self.fd, prev, nxt) == 0:
            ctypes.memmove(key, nxt, self.key_size)
            prev = key
            if lb.bpf_map_lookup_elem(self.fd, key, val) == 0:  # may vanish between calls
                kparts.append(key.raw)
                vparts.append(val.raw)
        return b"".join(kparts), b"".join(vparts), len(kparts)

    def lookup(self, key: bytes) -> bytes | None:
        """The value under key (every CPU's, for a per-CPU map), None if there is none."""
        val = ctypes.create_string_buffer(self.value_stride * self.ncpus)
        if libbpf.lib().bpf_map_lookup_elem(self.fd, key, val) != 0:
            return None
        return val.raw

    def delete(self, key: bytes) -> bool:
        return libbpf.lib().bpf_map_delete_elem(self.fd, key) == 0

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        rc = libbpf.lib().bpf_map_update_elem(self.fd, key, value, flags)
        libbpf.check_rc(rc, f"bpf_map_update_elem({self.name})")


def map_fits(old: BpfMap, map_type: int, key_size: int, value_size: int, max_entries: int, flags: int) -> bool:
    """Can an existing map stand in for one an object defines? (What the kernel
    would check at load: same type, key and value sizes, capacity and flags.)"""
    return (old.map_type, old.key_size, old.value_size, old.max_entries, old.map_flags) == \
        (map_type, key_size, value_size, max(1, max_entries), flags)
