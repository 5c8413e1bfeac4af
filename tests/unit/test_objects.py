"""Every committed object, read with pyelftools, has what the catalogue says."""

import os
import re

import pytest
from elftools.elf.elffile import ELFFile

from ceemsnet.planning.catalogue import _RMDIR_SPLIT, CATALOGUE, OBJ_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SEC_PREFIX = {"fexit": "fexit/", "fentry": "fentry/", "kprobe": "kprobe/", "kretprobe": "kretprobe/",
              "tp_btf": "tp_btf/"}
# the maps every object of a subsystem has (skb-cgroup.bpf.o excepted: cgroup storage)
MAPS = {"net": ("net_stats", "net_drops"), "vfs": ("vfs_stats", "vfs_drops"),
        "skb": ("skb_stats", "skb_drops"), "rdma": ("rdma_objs", "rdma_objects", "rdma_bytes", "rdma_drops")}


def all_programs(hook):
    """Every program of the object that serves this hook, whichever way it is planned."""
    return hook.programs + hook.inlined_programs + hook.alternative_programs


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
    expected = {p for h in obj.hooks for p in all_programs(h)}
    assert expected, "an object must serve something"
    # the object holds exactly the programs the catalogue knows, no stray ones
    assert set(info["progs"]) == expected
    if obj.family == "cgroup_skb":
        for hook in obj.hooks:
            assert [info["progs"][p] for p in hook.programs] == [hook.function]
        return
    for hook in obj.hooks:
        for prog in all_programs(hook):
            kind, _, target = prog.partition("_")
            sec = info["progs"][prog]
            if hook.alternatives:
                # one program per prototype of the hook's trace events (catalogue.Alternative)
                events = {ev for a in hook.alternatives if prog in a.programs for ev, _, _ in a.events}
                assert prog.startswith("tp_btf_") and sec in {f"tp_btf/{ev}" for ev in events}, (prog, sec)
                continue
            if kind == "tp" and not prog.startswith("tp_btf_"):
                # a classic trace event: tp_<event> on syscalls:<event> (the vfs tracepoint family)
                assert hook.tracepoint and sec == f"tp/syscalls/{target}", (prog, sec)
                continue
            assert sec.startswith(SEC_PREFIX[kind if kind != "tp" else "tp_btf"]), (prog, sec)
            if hook.tracepoint:
                assert sec == f"tp_btf/{prog[len('tp_btf_'):]}"
            else:
                # <hook>_<kernel function>: the name says what it attaches to; only the era-1
                # rmdir hook has programs on other functions (do_rmdir, see bpf/vfs/vfs.h), and
                # hooks with inlined_at (the system calls where vfs_readv/vfs_writev are inlined)
                assert sec == f"{kind}/{target}", (prog, sec)
                assert target == hook.function or prog in _RMDIR_SPLIT[obj.family] or target in hook.inlined_at, \
                    (prog, hook.function)
    stash = f"{obj.subsystem}_stash"  # entry -> return hand-over
    assert (stash in info["maps"]) is (obj.family == "kretprobe")


# First kernel of every BPF helper an object calls (bcc docs/kernel-versions.md,
# each helper's commit), and where a program type got it later, that kernel.
HELPER_SINCE = {
    1: "3.19", 2: "3.19", 3: "3.19",   # map lookup, update, delete
    4: "4.1",                          # probe_read
    14: "4.2",                         # get_current_pid_tgid
    35: "4.8",                         # get_current_task
    79: "4.18",                        # skb_cgroup_id (tc)
    80: "4.18",                        # get_current_cgroup_id
    81: "4.19",                        # get_local_storage
    112: "5.5",                        # probe_read_user, commit 6ae08ae3dea2
    113: "5.5",                        # probe_read_kernel, the same commit
    115: "5.5",                        # probe_read_kernel_str, the same commit
    158: "5.11",                       # get_current_task_btf, commit 3ca1032ab7ab
    175: "5.15",                       # task_pt_regs, commit dd6e10fbd9fb
}
# cgroup_skb programs may call skb_cgroup_id only from 5.3 (commit 4ecabd55c904)
PROG_HELPER_SINCE = {("cgroup_skb", 79): "5.3"}
SEC_SINCE = {"fexit": "5.5", "fentry": "5.5", "tp_btf": "5.5", "kprobe": "4.1", "kretprobe": "4.1", "cgroup_skb": "4.10",
             "tp": "4.7"}  # BPF on classic trace events, commit 98b5c2c65c29


def helper_calls(path):
    """{section: {helper ids}} from the instructions of every program section."""
    out = {}
    with open(path, "rb") as f:
        elf = ELFFile(f)
        for sec in elf.iter_sections():
            if not sec["sh_flags"] & 0x4 or not sec.data_size:  # SHF_EXECINSTR
                continue
            data, ids = sec.data(), set()
            for i in range(0, len(data), 8):
                code, regs = data[i], data[i + 1]
                if code == 0x85 and regs >> 4 == 0:  # BPF_JMP|BPF_CALL, src_reg 0: a helper
                    ids.add(int.from_bytes(data[i + 4:i + 8], "little", signed=True))
            out[sec.name] = ids
    return out


@pytest.mark.parametrize("obj", CATALOGUE, ids=lambda o: o.file)
def test_object_needs_nothing_newer_than_its_first_kernel(obj):
    from packaging.version import Version
    calls = helper_calls(obj.path)
    assert any(calls.values()), "no helper calls found: the decoder is broken"
    # a hook with alternatives loads its programs only on the kernels its alternatives claim
    # (choice.py): those sections need nothing newer than the oldest of them
    alt_since = {f"tp_btf/{ev}": min(lo for lo, _ in a.kernels) for h in obj.hooks for a in h.alternatives
                 for ev, _, _ in a.events}
    for sec, ids in calls.items():
        kind = sec.split("/")[0]
        since = max(obj.since, alt_since.get(sec, obj.since))
        assert Version(SEC_SINCE[kind]) <= since, (sec, SEC_SINCE[kind])
        for h in ids:
            assert h in HELPER_SINCE, f"{sec} calls helper {h}: add its first kernel to HELPER_SINCE"
            need = Version(PROG_HELPER_SINCE.get((kind, h), HELPER_SINCE[h]))
            assert need <= since, f"{sec} calls helper {h} ({need}), but the object claims {since}"


def test_make_specs_round_trip():
    from ceemsnet.planning.catalogue import make_specs
    specs = make_specs()
    assert len(specs) == len(CATALOGUE)
    for tok, obj in zip(specs, CATALOGUE):
        file, source, target, defines = tok.split(":")
        assert (file, source, target, tuple(defines.split(","))) == (obj.file, obj.source, obj.target, obj.defines)
        assert os.path.exists(os.path.join(ROOT, source))
        assert target in ("x86", "arm64") and obj.defines


def test_makefile_builds_what_the_catalogue_says(tmp_path):
    """`make -n` shows one compile per catalogued object, with its defines and target."""
    import subprocess
    rel = os.path.relpath(tmp_path, ROOT)
    p = subprocess.run(["make", "--no-print-directory", "-n", "-B", f"OBJDIR={rel}", "objs"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    compiles = [line for line in p.stdout.splitlines() if " -target bpf " in line]
    assert len(compiles) == len(CATALOGUE)
    for obj in CATALOGUE:
        (line,) = [c for c in compiles if c.endswith(f"/{obj.file}")]
        words = line.split()
        assert f"-D__TARGET_ARCH_{obj.target}" in words and obj.source in words, obj.file
        assert sorted(w[2:] for w in words if w.startswith("-D") and not w.startswith("-D__TARGET")) \
            == sorted(obj.defines), obj.file
    with open(os.path.join(ROOT, "Makefile")) as f:
        text = f.read()
    assert ".bpf.o" not in text.split("# --- set-up")[0], "object names belong in ceemsnet/planning/catalogue.py"
    assert not re.search(r"^\s*(vfs_)?era_", text, re.M), "era tables belong in the catalogue"
