"""AIO (io_submit) hooks in the catalogue and the planning: every vfs object serves aio_read,
aio_write and aio_complete_rw, with the programs bpf/vfs/vfs_aio.h defines, planned against the
prototypes the x86 VM kernels' BTF gives (5.10 to 7.3, checked with bpftool on each image)."""

import pytest
from elftools.elf.elffile import ELFFile

from ceemsnet.planning.catalogue import AIO_COMPLETE, AIO_FUNCTIONS, AIO_RW, CATALOGUE, SYS_TP, VFS_FUNCTIONS
from ceemsnet.planning.choice import plan_object
from ceemsnet.planning.kernel import parse_kernel_version
from ceemsnet.runtime.btf import Signature

VFS_OBJECTS = [o for o in CATALOGUE if o.subsystem == "vfs"]
# aio_complete_rw before 5.16 (commit 6b19b766e8f0): Debian 11's 5.10 BTF
COMPLETE_RES2 = Signature("void", (("kiocb", "struct kiocb *"), ("res", "long int"), ("res2", "long int")))
PROGRAMS = {
    "fexit": {"aio_read": ("fentry_aio_read", "fexit_aio_read"), "aio_write": ("fentry_aio_write", "fexit_aio_write"),
              "aio_complete_rw": ("fentry_aio_complete_rw",)},
    "kretprobe": {"aio_read": ("kprobe_aio_read", "kretprobe_aio_read"),
                  "aio_write": ("kprobe_aio_write", "kretprobe_aio_write"),
                  "aio_complete_rw": ("kprobe_aio_complete_rw",)},
    "tracepoint": {"aio_read": ("tp_sys_enter_io_submit",), "aio_write": ("tp_sys_enter_io_submit",),
                   "aio_complete_rw": ("tp_sys_exit_io_getevents", "tp_sys_exit_io_pgetevents")},
}
SECTIONS = {"fentry": "fentry/", "fexit": "fexit/", "kprobe": "kprobe/", "kretprobe": "kretprobe/",
            "tp": "tp/syscalls/"}


class BTF:
    """A kernel's BTF as far as these hooks look: the AIO functions (None: inlined, not there)."""

    def __init__(self, read=AIO_RW, write=AIO_RW, complete=AIO_COMPLETE):
        self.funcs = {"aio_read": read, "aio_write": write, "aio_complete_rw": complete}

    def function(self, name):
        return self.funcs.get(name)

    def tracepoint(self, name):
        return SYS_TP if name in ("sys_enter", "sys_exit") else None


def aio_rows(obj, kver, sigs):
    return {h.function: h for h in plan_object(obj, parse_kernel_version(kver), sigs).hooks
            if h.function in AIO_FUNCTIONS}


def test_aio_functions_are_vfs_functions():
    assert set(AIO_FUNCTIONS) == {"aio_read", "aio_write", "aio_complete_rw"}
    assert set(AIO_FUNCTIONS) <= set(VFS_FUNCTIONS)


@pytest.mark.parametrize("obj", VFS_OBJECTS, ids=lambda o: o.file)
def test_every_vfs_object_serves_aio(obj):
    hooks = {h.function: h for h in obj.hooks if h.function in AIO_FUNCTIONS}
    assert set(hooks) == set(AIO_FUNCTIONS)
    for f, h in hooks.items():
        assert h.programs == PROGRAMS[obj.family][f], (obj.file, f)
        assert h.note, f
        if obj.family == "tracepoint":
            assert h.tracepoint == ("sys_exit" if f == "aio_complete_rw" else "sys_enter")
        else:
            assert h.tracepoint is None and h.absent, f
            # the completion reads (kiocb, res) only: 5.10's res2 must not matter
            assert h.reads == (0, 1) if f == "aio_complete_rw" else h.reads == (None if obj.family == "fexit" else (0,))


def elf_programs(path):
    """{program: section} and the map names of an object file."""
    with open(path, "rb") as f:
        elf = ELFFile(f)
        progs, maps = {}, set()
        for sym in elf.get_section_by_name(".symtab").iter_symbols():
            shndx = sym["st_shndx"]
            if not isinstance(shndx, int):
                continue
            sec = elf.get_section(shndx).name
            if sym["st_info"]["type"] == "STT_FUNC" and sym["st_info"]["bind"] == "STB_GLOBAL":
                progs[sym.name] = sec
            if sec == ".maps":
                maps.add(sym.name)
        return progs, maps


@pytest.mark.parametrize("obj", VFS_OBJECTS, ids=lambda o: o.file)
def test_objects_hold_the_aio_programs(obj):
    progs, maps = elf_programs(obj.path)
    for f, names in PROGRAMS[obj.family].items():
        for p in names:
            kind, _, target = p.partition("_")
            assert progs.get(p) == SECTIONS[kind] + target, (obj.file, p, progs.get(p))
    # the request map: by kernel kiocb (fexit, kretprobe), by (process, user iocb) (tracepoint)
    assert ("aio_ureqs" if obj.family == "tracepoint" else "aio_reqs") in maps
    assert ("aio_stash" in maps) is (obj.family == "kretprobe")


KERNELS = [("5.10.0-32-amd64", COMPLETE_RES2), ("6.1.0-57-amd64", AIO_COMPLETE), ("6.12.118+deb12-amd64", AIO_COMPLETE),
           ("6.18.15+deb13-amd64", AIO_COMPLETE), ("7.3.4+deb13-amd64", AIO_COMPLETE)]


@pytest.mark.parametrize("kver,complete", KERNELS, ids=[k for k, _ in KERNELS])
@pytest.mark.parametrize("obj", [o for o in VFS_OBJECTS if o.family != "tracepoint"], ids=lambda o: o.file)
def test_planned_on_every_vm_kernel(obj, kver, complete):
    rows = aio_rows(obj, kver, BTF(complete=complete))
    assert all(r.status == "ok" for r in rows.values()), {f: r.reason for f, r in rows.items()}
    assert set(rows["aio_read"].programs) == set(PROGRAMS[obj.family]["aio_read"])


def test_tracepoint_family_needs_no_aio_function():
    # the system calls' events serve it even where fs/aio.c's functions are not in BTF
    for obj in (o for o in VFS_OBJECTS if o.family == "tracepoint"):
        rows = aio_rows(obj, "6.18.0", BTF(read=None, write=None, complete=None))
        assert all(r.status == "ok" for r in rows.values()), obj.file
        assert "io_getevents" in rows["aio_complete_rw"].reason


@pytest.mark.parametrize("family", ["fexit", "kretprobe"])
def test_inlined_aio_read_is_said(family):
    obj = next(o for o in VFS_OBJECTS if o.family == family)
    rows = aio_rows(obj, "6.12.0", BTF(read=None))
    assert rows["aio_read"].status == "skipped"
    assert "AIO (io_submit) reads are not counted" in rows["aio_read"].reason
    assert rows["aio_write"].status == "ok" and rows["aio_complete_rw"].status == "ok"


def test_fexit_needs_the_whole_prototype_kretprobe_only_the_request():
    # a fifth argument moves fexit's return value: fexit refuses it, a kprobe pair does not care
    five = Signature("int", AIO_RW.params + (("", "int"),))
    fexit = next(o for o in VFS_OBJECTS if o.family == "fexit")
    kret = next(o for o in VFS_OBJECTS if o.family == "kretprobe")
    assert aio_rows(fexit, "6.12.0", BTF(read=five))["aio_read"].status == "skipped"
    assert aio_rows(kret, "6.12.0", BTF(read=five))["aio_read"].status == "ok"
    # the request in another position is refused by both
    moved = Signature("int", (("iocb", "struct iocb *"),) + AIO_RW.params[:1] + AIO_RW.params[2:])
    assert aio_rows(kret, "6.12.0", BTF(read=moved))["aio_read"].status == "skipped"
