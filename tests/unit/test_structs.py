"""The ctypes mirrors have the C layout, read from each object's own BTF."""

import ctypes

import pytest

from ceemsnet.runtime.btf import KernelBTF
from ceemsnet.planning.catalogue import CATALOGUE
from ceemsnet.planning.structs import NetKey, NetValue, SkbKey, SkbStorage, SkbValue, VfsKey, VfsValue


def layout(cls):
    return ctypes.sizeof(cls), [(name, getattr(cls, name).offset) for name, _ in cls._fields_]


@pytest.mark.parametrize("obj", [o for o in CATALOGUE if o.subsystem == "net"], ids=lambda o: o.file)
def test_net_structs_match_c(obj):
    btf = KernelBTF(obj.path)
    try:
        assert btf.struct_layout("net_key") == layout(NetKey)
        assert btf.struct_layout("net_value") == layout(NetValue)
    finally:
        btf.close()


def test_key_has_no_implicit_padding():
    # 8 + 1 + 1 + 1 + 5 explicit: hashing in the kernel sees no stray bytes
    assert ctypes.sizeof(NetKey) == 16 and ctypes.sizeof(NetValue) == 24


@pytest.mark.parametrize("obj", [o for o in CATALOGUE if o.subsystem == "vfs"], ids=lambda o: o.file)
def test_vfs_structs_match_c(obj):
    btf = KernelBTF(obj.path)
    try:
        assert btf.struct_layout("vfs_key") == layout(VfsKey)
        assert btf.struct_layout("vfs_value") == layout(VfsValue)
    finally:
        btf.close()


@pytest.mark.parametrize("obj", [o for o in CATALOGUE if o.subsystem == "skb"], ids=lambda o: o.file)
def test_skb_structs_match_c(obj):
    btf = KernelBTF(obj.path)
    try:
        if obj.file == "skb-root.bpf.o":
            assert btf.struct_layout("skb_key") == layout(SkbKey)
            assert btf.struct_layout("skb_value") == layout(SkbValue)
        else:
            assert btf.struct_layout("skb_storage")[0] == ctypes.sizeof(SkbStorage)
    finally:
        btf.close()
