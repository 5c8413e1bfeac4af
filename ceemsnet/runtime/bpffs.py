"""bpffs primitives: object directories of pinned maps and links
(`map__<name>`, `link__<name>`), opened and removed. Which directories a
subsystem keeps, and what their names mean, is ceemsnet/pinned/pins.py's."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import re

from ceemsnet import CeemsnetError
from ceemsnet.runtime import libbpf

log = logging.getLogger("ceemsnet.runtime.bpffs")

BPF_FS_MAGIC = 0xCAFE4A11  # include/uapi/linux/magic.h
ENTRY = re.compile(r"^(map|link|prog|tmp)__[A-Za-z0-9_-]+$")  # one pin in an object directory (tmp: a map being replaced)


def statfs_magic(path: str) -> int:
    """The magic number of the file system `path` is on (statfs(2) f_type)."""
    class statfs(ctypes.Structure):
        _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_long * 15)]
    buf = statfs()
    if libbpf.libc().statfs(path.encode(), ctypes.byref(buf)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return buf.f_type & 0xFFFFFFFF


def mount_bpffs(where: str) -> None:
    """Mount a bpf file system on `where` (an existing directory)."""
    if libbpf.libc().mount(b"bpf", where.encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise CeemsnetError(f"cannot mount bpffs on {where}: {os.strerror(err)}")
    log.info("mounted bpffs on %s", where)


def entries(obj_dir: str, kind: str) -> dict[str, str]:
    """{name: pin path} of the maps ("map") or links ("link") pinned in an object directory."""
    out = {}
    for e in sorted(os.listdir(obj_dir)):
        k, _, name = e.partition("__")
        if k == kind:
            out[name] = os.path.join(obj_dir, e)
    return out


def open_pinned(path: str) -> int:
    """An fd of a pinned object."""
    fd = libbpf.lib().bpf_obj_get(path.encode())
    if fd < 0:
        err = -fd if fd < -1 else (ctypes.get_errno() or errno.ENOENT)
        raise OSError(err, f"bpf_obj_get({path}): {os.strerror(err)}")
    return fd


def remove_object_dir(obj_dir: str) -> None:
    """Unpin everything in it: links whose last reference was the pin detach now; maps go with
    their last user."""
    for e in os.listdir(obj_dir):
        os.unlink(os.path.join(obj_dir, e))
    os.rmdir(obj_dir)
