"""The ctypes mirrors have the C layout, read from each object's own BTF."""

import ctypes

import pytest

from ceemsnet.planning.catalogue import CATALOGUE
from ceemsnet.planning.structs import NET, VFS, NetCounts, NetKey, NetValue, SkbKey, SkbStorage, SkbValue, VfsCounts, VfsKey
from ceemsnet.runtime import libbpf
from ceemsnet.runtime.btf import BTF_KIND_STRUCT


class btf_member(ctypes.Structure):  # after a STRUCT in BTF (include/uapi/linux/btf.h)
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


def struct_layout(path, name):
    """(size, [(member, byte offset)]) of `struct name` in an object file's BTF, or None."""
    lb = libbpf.lib()
    btf = lb.btf__parse(path.encode(), None)
    assert btf, f"cannot read BTF from {path}"
    try:
        tid = lb.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_STRUCT)
        if tid <= 0:
            return None
        t = lb.btf__type_by_id(btf, tid).contents
        members = ctypes.cast(ctypes.addressof(t) + ctypes.sizeof(t), ctypes.POINTER(btf_member))
        kflag = t.info >> 31  # with kflag the offset's low 24 bits are the bit offset
        return t.size_or_type, [(lb.btf__name_by_offset(btf, members[i].name_off).decode(),
                                 (members[i].offset & 0xFFFFFF if kflag else members[i].offset) // 8)
                                for i in range(t.info & 0xFFFF)]
    finally:
        lb.btf__free(btf)


def layout(cls):
    return ctypes.sizeof(cls), [(name, getattr(cls, name).offset) for name, _ in cls._fields_]


@pytest.mark.parametrize("obj", [o for o in CATALOGUE if o.subsystem == "net"], ids=lambda o: o.file)
def test_net_structs_match_c(obj):
    assert struct_layout(obj.path, "net_key") == layout(NetKey)
    assert struct_layout(obj.path, "net_value") == layout(NetValue)
    assert struct_layout(obj.path, "net_counts") == layout(NetCounts)


def test_keys_have_no_implicit_padding():
    # explicit pad: hashing in the kernel sees no stray bytes; one record per cgroup (and fs)
    assert ctypes.sizeof(NetKey) == NET.key.size == 8 and ctypes.sizeof(NetValue) == 24
    assert ctypes.sizeof(VfsKey) == VFS.key.size == 16 and VFS.key.pack(1, 2)[12:] == b"\0" * 4
    assert ctypes.sizeof(NetCounts) == NET.value_size == 8 * 24
    assert ctypes.sizeof(VfsCounts) == VFS.value_size == 8 * 24


@pytest.mark.parametrize("obj", [o for o in CATALOGUE if o.subsystem == "vfs"], ids=lambda o: o.file)
def test_vfs_structs_match_c(obj):
    assert struct_layout(obj.path, "vfs_key") == layout(VfsKey)
    assert struct_layout(obj.path, "vfs_value") == layout(NetValue)  # the same three counters (decode_vfs)
    assert struct_layout(obj.path, "vfs_counts") == layout(VfsCounts)


@pytest.mark.parametrize("obj", [o for o in CATALOGUE if o.subsystem == "skb"], ids=lambda o: o.file)
def test_skb_structs_match_c(obj):
    if obj.file == "skb-root.bpf.o":
        assert struct_layout(obj.path, "skb_key") == layout(SkbKey)
        assert struct_layout(obj.path, "skb_value") == layout(SkbValue)
    else:
        assert struct_layout(obj.path, "skb_storage")[0] == ctypes.sizeof(SkbStorage)
