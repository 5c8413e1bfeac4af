"""Every committed object, read with pyelftools, has what the catalogue says."""

import os

import pytest
from elftools.elf.elffile import ELFFile

from ceemsnet.objects import CATALOGUE, MAPS, OBJ_DIR

SEC_PREFIX = {"fexit": "fexit/", "kprobe": "kprobe/", "kretprobe": "kretprobe/", "tp_btf": "tp_btf/"}


def read_elf(path):
    with open(path, "rb") as f:
        elf = ELFFile(f)
        sections = {s.name for s in elf.iter_sections()}
        lic = elf.get_section_by_name("license").data().rstrip(b"\0").decode()
        symtab = elf.get_section_by_name(".symtab")
        progs, maps = {}, set()
        for sym in symtab.iter_symbols():
            shndx = sym["st_shndx"]
            if not isinstance(shndx, int):
                continue
            sec = elf.get_section(shndx).name
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_info"]["bind"] == "STB_GLOBAL":
                progs[sym.name] = sec
            if sec == ".maps":
                maps.add(sym.name)
        return {"sections": sections, "license": lic, "progs": progs, "maps": maps,
                "machine": elf["e_machine"]}


def test_every_file_is_catalogued():
    on_disk = {f for f in os.listdir(OBJ_DIR) if f.endswith(".bpf.o")}
    assert on_disk == {o.file for o in CATALOGUE}


@pytest.mark.parametrize("obj", CATALOGUE, ids=lambda o: o.file)
def test_object_contents(obj):
    info = read_elf(obj.path)
    assert info["machine"] == "EM_BPF"
    assert info["license"] == "GPL"  # GPL-only helpers (probe_read, cgroup id) need it
    assert ".BTF" in info["sections"] and ".BTF.ext" in info["sections"]
    assert ".debug_info" not in info["sections"]  # stripped with llvm-strip -g
    if obj.file == "skb-cgroup.bpf.o":
        assert info["maps"] == {"skb_cgroup_storage"}
    else:
        assert set(MAPS[obj.subsystem]) <= info["maps"]
    expected = {p for h in obj.hooks for p in h.programs}
    assert expected, "an object must serve something"
    # the object holds exactly the programs the catalogue knows, no stray ones
    assert set(info["progs"]) == expected
    if obj.family == "cgroup_skb":
        for hook in obj.hooks:
            assert [info["progs"][p] for p in hook.programs] == [hook.function]
        return
    for hook in obj.hooks:
        for prog in hook.programs:
            kind, _, target = prog.partition("_")
            sec = info["progs"][prog]
            assert sec.startswith(SEC_PREFIX[kind if kind != "tp" else "tp_btf"]), (prog, sec)
            if hook.tracepoint:
                assert sec == f"tp_btf/{prog[len('tp_btf_'):]}"
            else:
                # <hook>_<kernel function>: the name says what it attaches to
                assert sec == f"{kind}/{hook.function}" and target == hook.function
    stash = f"{obj.subsystem}_stash"  # entry -> return hand-over
    assert (stash in info["maps"]) is (obj.family == "kretprobe")
