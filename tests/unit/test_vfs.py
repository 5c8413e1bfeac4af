"""VFS: object choice, fstype mapping and metric families (pure)."""

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.planning.choice import plan_family, plan_object
from ceemsnet.collectors.vfs import vfs_families
from ceemsnet.planning.fstypes import ALL_NAMES, PSEUDO, fstype, parse_fstypes
from ceemsnet.planning.kernel import parse_kernel_version
from ceemsnet.common.metrics import Family, merge_families
from ceemsnet.planning.catalogue import (AIO_COMPLETE, AIO_RW, CATALOGUE, FINISH_OPEN, SYS_TP, URING_CQE,
                                         URING_FUNCTIONS, VFS_FUNCTIONS, _vfs_sigs)

from .helpers import render_text

CASES = [  # kernel, arch -> (family, object)
    ("4.18.0-553.el8_10.x86_64", "x86_64", "kretprobe", "vfs-kretprobe-4.18-x86.bpf.o"),
    ("5.10.0-30-amd64", "x86_64", "fexit", "vfs-fexit-5.5-x86.bpf.o"),
    ("5.14.0-427.el9.x86_64", "x86_64", "fexit", "vfs-fexit-5.12-x86.bpf.o"),
    ("5.15.0-91-generic", "aarch64", "kretprobe", "vfs-kretprobe-5.12-arm64.bpf.o"),
    ("6.1.0-28-amd64", "x86_64", "fexit", "vfs-fexit-5.12-x86.bpf.o"),
    ("6.1.0-28-amd64", "aarch64", "kretprobe", "vfs-kretprobe-5.12-arm64.bpf.o"),  # arm64 fexit: 6.4
    ("6.8.0-45-generic", "x86_64", "fexit", "vfs-fexit-6.3-x86.bpf.o"),
    ("6.12.117+deb12-amd64", "x86_64", "fexit", "vfs-fexit-6.3-x86.bpf.o"),
    ("6.12.117+deb12-amd64", "aarch64", "fexit", "vfs-fexit-6.4-arm64.bpf.o"),
    ("6.18.44-fc-v769", "x86_64", "fexit", "vfs-fexit-6.15-x86.bpf.o"),
    ("6.18.44-fc-v769", "aarch64", "fexit", "vfs-fexit-6.15-arm64.bpf.o"),
    ("7.0.0-31-generic", "aarch64", "fexit", "vfs-fexit-6.19-arm64.bpf.o"),
    ("7.3.4+deb13-amd64", "x86_64", "fexit", "vfs-fexit-6.19-x86.bpf.o"),
]


@pytest.mark.parametrize("kernel,arch,family,obj", CASES)
def test_vfs_object_by_version(kernel, arch, family, obj):
    kver = parse_kernel_version(kernel)
    for fam in ("fexit", "kretprobe", "tracepoint"):
        plan = plan_family("vfs", fam, kver, arch, None)
        if plan.usable:
            break
    assert (plan.family, plan.obj.file) == (family, obj)
    # io_uring depends on its trace event's prototype, not on the object (tests/unit/test_vfs_uring.py):
    # 4.18 and mainline 5.10 have no event naming the request
    ok = {h.function for h in plan.hooks if h.status == "ok"}
    assert ok - set(URING_FUNCTIONS) == set(VFS_FUNCTIONS) - set(URING_FUNCTIONS)


class FakeBTF:
    def __init__(self, era, mkdir_override=None):
        self.funcs = dict(_vfs_sigs(era))
        # the AIO hooks' functions, the same in every era (the 5.10 complete's extra res2 is not read)
        self.funcs.update({"aio_read": AIO_RW, "aio_write": AIO_RW, "aio_complete_rw": AIO_COMPLETE,
                           "finish_open": FINISH_OPEN})
        if mkdir_override:
            self.funcs["vfs_mkdir"] = mkdir_override

    def function(self, name):
        return self.funcs.get(name)

    def tracepoint(self, name):
        return {"sys_exit": SYS_TP, "sys_enter": SYS_TP, "io_uring_complete": URING_CQE}.get(name)


def test_vfs_tracepoint_family_rules():
    k = parse_kernel_version("5.15.0")
    assert plan_family("vfs", "tracepoint", k, "x86_64", None).usable  # 5.15+, unlike net's 6.3
    assert "x86_64" in plan_family("vfs", "tracepoint", k, "aarch64", None).refused
    # bpf_task_pt_regs() is 5.15: a 5.14 kernel (RHEL 9) cannot load the syscall exit programs
    old = plan_family("vfs", "tracepoint", parse_kernel_version("5.14.0-427.el9.x86_64"), "x86_64", None)
    assert not old.usable and "5.15" in old.refused
    plan = plan_family("vfs", "tracepoint", parse_kernel_version("5.15.0"), "x86_64", None)
    assert plan.obj.file == "vfs-tracepoint-5.15-x86.bpf.o"
    # bpf_rdonly_cast() (6.2) reads the file's fields without probe reads
    plan = plan_family("vfs", "tracepoint", parse_kernel_version("6.18.0"), "x86_64", None)
    assert plan.obj.file == "vfs-tracepoint-6.2-x86.bpf.o"


def test_vfs_tracepoint_programs_are_only_the_counted_syscalls():
    # one program per counted system call; none for the rest (issue 16)
    plan = plan_family("vfs", "tracepoint", parse_kernel_version("6.18.0"), "x86_64", FakeBTF(4))
    progs = set(plan.programs())
    assert "tp_sys_exit_write" in progs and "tp_sys_exit_unlinkat" in progs
    assert not {"tp_btf_sys_exit", "tp_sys_exit_getpid", "tp_sys_exit_close"} & progs
    # the vfs_* functions' own: one per system call of VFS_SYSCALLS (unlinkat serves two)
    own = {p for h in plan.hooks if h.function in VFS_FUNCTIONS[:9] for p in h.programs}
    assert len(own) == 21
    # sendfile, splice, copy_file_range: their own enter and exit events only (bpf/vfs/vfs_splice.h)
    assert {p for h in plan.hooks if h.function in ("sendfile", "splice", "copy_file_range") for p in h.programs} == {
        f"tp_sys_{e}_{c}" for e in ("enter", "exit") for c in ("sendfile64", "splice", "copy_file_range")}


@pytest.mark.parametrize("family", ["fexit", "kretprobe", "tracepoint"])
def test_probe_says_what_open_and_create_count(family):
    plan = plan_family("vfs", family, parse_kernel_version("6.12.0"), "x86_64", FakeBTF(3))
    rows = {h.function: h for h in plan.hooks}
    assert rows["vfs_open"].status == "ok" and "FMODE_CREATED" in rows["vfs_open"].reason
    assert "mknod" in rows["vfs_create"].reason
    if family != "tracepoint":
        assert "atomic_open" in rows["vfs_open"].reason  # blind spot stated where it exists
    else:
        assert "creat" in rows["vfs_open"].reason


def test_kretprobe_open_reads_the_file_too():
    # f_mode (FMODE_CREATED) is read at entry from the second argument
    for o in CATALOGUE:
        if o.subsystem == "vfs" and o.family == "kretprobe":
            assert next(h for h in o.hooks if h.function == "vfs_open").reads == (0, 1), o.file


def test_btf_picks_mkdir_era_on_backports():
    # a 6.12-numbered kernel with 6.15's dentry-returning vfs_mkdir
    plan = plan_family("vfs", "fexit", parse_kernel_version("6.12.0"), "x86_64", FakeBTF(4))
    assert plan.obj.file == "vfs-fexit-6.15-x86.bpf.o" and plan.notes
    # kretprobe objects read only the parent directory and the return value
    plan = plan_family("vfs", "kretprobe", parse_kernel_version("6.5.0"), "x86_64", FakeBTF(3))
    assert plan.obj.file == "vfs-kretprobe-5.12-x86.bpf.o"
    assert all(h.status == "ok" for h in plan.hooks)


DIROPS = {"vfs_create", "vfs_unlink", "vfs_mkdir", "vfs_rmdir"}


def test_delegation_era_is_its_own():
    # 6.19's prototypes (as 7.3.4's BTF gives them): only the era-5 objects serve every hook
    for family, era5, era4, skipped in (("fexit", "vfs-fexit-6.19-x86.bpf.o", "vfs-fexit-6.15-x86.bpf.o", DIROPS),
                                        ("kretprobe", "vfs-kretprobe-6.19-x86.bpf.o", "vfs-kretprobe-6.15-x86.bpf.o",
                                         {"vfs_create"})):
        plan = plan_family("vfs", family, parse_kernel_version("7.3.4+deb13-amd64"), "x86_64", FakeBTF(5))
        assert plan.obj.file == era5 and all(h.status == "ok" for h in plan.hooks), family
        old = plan_object(next(o for o in CATALOGUE if o.file == era4), parse_kernel_version("7.3.4"), FakeBTF(5))
        rows = {h.function: h for h in old.hooks}
        assert {f for f, h in rows.items() if h.status != "ok"} == skipped, family
        assert all("mismatch" in rows[f].reason for f in skipped)
    # and a 6.19 object on 6.18's prototypes refuses the same functions
    plan = plan_object(next(o for o in CATALOGUE if o.file == "vfs-fexit-6.19-x86.bpf.o"),
                       parse_kernel_version("6.18.0"), FakeBTF(4))
    assert {h.function for h in plan.hooks if h.status != "ok"} == DIROPS


def test_mkdir_return_type_mismatch_is_skipped():
    sigs = _vfs_sigs(3)
    plan = plan_family("vfs", "fexit", parse_kernel_version("6.15.0"), "x86_64", FakeBTF(4))
    assert plan.obj.file == "vfs-fexit-6.15-x86.bpf.o"
    odd = FakeBTF(4, mkdir_override=sigs["vfs_mkdir"].__class__("long", _vfs_sigs(4)["vfs_mkdir"].params))
    plan = plan_family("vfs", "fexit", parse_kernel_version("6.15.0"), "x86_64", odd)
    row = next(h for h in plan.hooks if h.function == "vfs_mkdir")
    assert row.status == "skipped" and "returns long" in row.reason


def test_fstype_names_are_bounded():
    assert fstype(0xEF53) == "ext4" and fstype(0x0BD00BD0) == "lustre" and fstype(0x01021994) == "tmpfs"
    assert fstype(0x12345678) == "other" and fstype(0) == "unknown"
    assert len(ALL_NAMES) < 64


def test_parse_fstypes():
    storage = parse_fstypes("storage")
    assert "ext4" in storage and "other" in storage and not storage & PSEUDO
    assert parse_fstypes("all") == ALL_NAMES
    assert parse_fstypes("ext4, nfs") == {"ext4", "nfs"}
    assert "tmpfs" not in parse_fstypes("storage,-tmpfs")
    for bad in ("", "ext5", "storage,-zz"):
        with pytest.raises(CeemsnetError):
            parse_fstypes(bad)


def test_vfs_families():
    EXT4, PROC = 0xEF53, 0x9FA0
    def record(ops):  # {op: (bytes, calls, errors)} -> the 24 counters of a vfs record
        out = [0] * 24
        for op, v in ops.items():
            out[3 * op:3 * op + 3] = v
        return tuple(out)
    stats = {
        (7, EXT4): record({0: (2100, 3, 0), 1: (500, 1, 1), 2: (0, 5, 1)}),
        (7, PROC): record({0: (999, 9, 0), 2: (0, 40, 0)}),
        (7, 0): record({4: (0, 1, 2)}), (8, EXT4): record({5: (0, 2, 0)}),
    }
    paths = {7: "/job_1", 8: "/job_2"}
    fams = {f.name: f for f in vfs_families(stats, paths, parse_fstypes("storage"))}
    assert fams["ceemsnet_vfs_read_bytes"].rows == [(("/job_1", "ext4"), 2100)]  # proc left out
    assert fams["ceemsnet_vfs_write_errors"].rows == [(("/job_1", "ext4"), 1)]
    assert dict(fams["ceemsnet_vfs_ops"].rows) == {("/job_1", "open"): 5, ("/job_1", "unlink"): 1,
                                                   ("/job_2", "mkdir"): 2}
    assert dict(fams["ceemsnet_vfs_op_errors"].rows)[("/job_1", "unlink")] == 2
    assert ("/job_2", "ext4") not in dict(fams["ceemsnet_vfs_read_calls"].rows)  # nothing read: no series
    fams = {f.name: f for f in vfs_families(stats, paths, parse_fstypes("all"))}
    assert (("/job_1", "proc"), 999) in fams["ceemsnet_vfs_read_bytes"].rows
    assert dict(fams["ceemsnet_vfs_ops"].rows)[("/job_1", "open")] == 45


def test_shared_families_are_merged_once():
    a = Family("ceemsnet_map_update_failures", "h", "counter", ("map",), [(("net_stats",), 1)])
    b = Family("ceemsnet_map_update_failures", "h", "counter", ("map",), [(("vfs_stats",), 2)])
    merged = merge_families([a, b])
    assert len(merged) == 1 and len(merged[0].rows) == 2
    assert render_text(merged).count("# TYPE ceemsnet_map_update_failures_total") == 1
    with pytest.raises(ValueError):
        merge_families([a, Family("ceemsnet_map_update_failures", "h", "gauge", ("map",), [])])


def test_inlined_readv_writev_counted_at_the_system_calls_only_where_absent():
    """Debian 11's arm64 5.10 has no vfs_readv/vfs_writev in BTF (inlined): the era-1 arm64
    kretprobe object hooks the system calls instead, and only there; other objects skip
    them and probe says that IO is not counted."""
    from ceemsnet.planning.catalogue import INLINED_AT
    k = parse_kernel_version("5.10.0-32-arm64")
    inlined = FakeBTF(1)
    for f in ("vfs_readv", "vfs_writev"):
        del inlined.funcs[f]
    calls = ("readv", "preadv", "preadv2", "writev", "pwritev", "pwritev2")
    inlined.funcs.update({f"__arm64_sys_{c}": INLINED_AT for c in calls})
    plan = plan_family("vfs", "kretprobe", k, "aarch64", inlined)
    assert plan.obj.file == "vfs-kretprobe-4.18-arm64.bpf.o"
    rows = {h.function: h for h in plan.hooks}
    assert rows["vfs_readv"].status == "ok" and "__arm64_sys_preadv2" in rows["vfs_readv"].reason
    assert rows["vfs_readv"].programs == ("kprobe___arm64_sys_readv", "kretprobe___arm64_sys_readv",
                                          "kprobe___arm64_sys_preadv", "kretprobe___arm64_sys_preadv",
                                          "kprobe___arm64_sys_preadv2", "kretprobe___arm64_sys_preadv2")
    assert "kprobe_vfs_readv" not in plan.programs()
    # where vfs_readv is there, it is hooked itself: nothing counts twice
    plan = plan_family("vfs", "kretprobe", k, "aarch64", FakeBTF(1))
    progs = plan.programs()
    assert "kprobe_vfs_readv" in progs and not any("__arm64_sys_" in p for p in progs)
    # a system call missing too: skipped, and probe says what is not counted
    del inlined.funcs["__arm64_sys_preadv2"]
    row = next(h for h in plan_family("vfs", "kretprobe", k, "aarch64", inlined).hooks if h.function == "vfs_readv")
    assert row.status == "skipped" and "readv, preadv, preadv2 are not counted" in row.reason
    # x86 objects have no such fallback: skipped with the same statement
    x86 = FakeBTF(1)
    del x86.funcs["vfs_writev"]
    row = next(h for h in plan_family("vfs", "kretprobe", k, "x86_64", x86).hooks if h.function == "vfs_writev")
    assert row.status == "skipped" and "not in this kernel's BTF" in row.reason and "not counted" in row.reason


def test_default_fstypes_count_the_network_and_parallel_file_systems():
    """Issue 24: the default (--vfs.fstypes=storage) counts what a site expects without configuration;
    a mount type stands for the label its magic gets (nfs and nfs4 share NFS_SUPER_MAGIC, every FUSE
    subtype FUSE_SUPER_MAGIC: the BPF side sees only the magic)."""
    from ceemsnet.planning.fstypes import ALIASES
    storage = parse_fstypes("storage")
    assert {"nfs", "lustre", "gpfs", "beegfs", "cifs", "smb2", "cephfs", "fuse", "gfs2", "ocfs2",
            "orangefs"} <= storage
    magics = {"nfs": 0x6969, "lustre": 0x0BD00BD0, "gpfs": 0x47504653, "beegfs": 0x19830326, "cephfs": 0x00C36400,
              "cifs": 0xFF534D42, "smb2": 0xFE534D42, "fuse": 0x65735546, "gfs2": 0x01161970}
    assert {name: fstype(m) for name, m in magics.items()} == {name: name for name in magics}
    assert parse_fstypes("nfs4") == {"nfs"} and parse_fstypes("ceph") == {"cephfs"}
    assert parse_fstypes("smb3") == {"cifs", "smb2"}
    assert parse_fstypes("fuse.sshfs,fuseblk") == {"fuse"}
    assert parse_fstypes("storage,-nfs4") == storage - {"nfs"}
    assert set(ALIASES).isdisjoint(ALL_NAMES)  # an alias never shadows a label
    for bad in ("fuse.", "nfs5", "-fuse."):
        with pytest.raises(CeemsnetError, match="fuse.<subtype>"):
            parse_fstypes(bad)


class FakeBTFWithOpen(FakeBTF):
    """FakeBTF plus finish_open, as every kernel from 5.10 to 7.3 has it."""

    def __init__(self, era):
        from ceemsnet.planning.catalogue import FINISH_OPEN
        super().__init__(era)
        self.funcs["finish_open"] = FINISH_OPEN


def test_opens_inside_file_systems_hooked_at_finish_open():
    """Issue 24: ->atomic_open file systems (NFS, CIFS, FUSE, Lustre, Ceph, 9p, GFS2) and O_TMPFILE open
    through finish_open(), never vfs_open(): every fexit and kretprobe object hooks it beside vfs_open
    (the kretprobe entry reads the file's f_mode and the dentry); the tracepoint family counts at the
    open system calls and needs nothing."""
    from ceemsnet.planning.catalogue import FINISH_OPEN, OPEN_FUNCTIONS
    assert OPEN_FUNCTIONS == ("finish_open",) and "finish_open" in VFS_FUNCTIONS
    assert FINISH_OPEN.params[:2] == (("file", "struct file *"), ("dentry", "struct dentry *"))
    for o in CATALOGUE:
        if o.subsystem != "vfs":
            continue
        hooks = [h for h in o.hooks if h.function == "finish_open"]
        if o.family == "tracepoint":
            assert not hooks, o.file
            continue
        assert len(hooks) == 1, o.file
        want = ("fexit_finish_open",) if o.family == "fexit" else ("kprobe_finish_open", "kretprobe_finish_open")
        assert hooks[0].programs == want and hooks[0].expects == FINISH_OPEN, o.file
        assert hooks[0].reads == (None if o.family == "fexit" else (0, 1)), o.file
    for family, era in (("fexit", 3), ("kretprobe", 3)):
        plan = plan_family("vfs", family, parse_kernel_version("6.12.0"), "x86_64", FakeBTFWithOpen(era))
        rows = {h.function: h for h in plan.hooks}
        assert rows["finish_open"].status == "ok", family
        assert set(rows["finish_open"].programs) <= set(plan.programs())
        # probe says what an open and a create are now, where each is counted
        for f in ("vfs_open", "finish_open"):
            assert "FMODE_NOACCOUNT" in rows[f].reason and "FMODE_CREATED" in rows[f].reason, (family, f)
        assert "atomic_open" in rows["finish_open"].reason and "finish_open" in rows["vfs_open"].reason
        assert "overridden credentials" in rows["vfs_create"].reason
        # a kernel without finish_open in BTF: skipped, and probe says what goes uncounted
        no_open = FakeBTF(era)
        del no_open.funcs["finish_open"]
        plan = plan_family("vfs", family, parse_kernel_version("6.12.0"), "x86_64", no_open)
        row = next(h for h in plan.hooks if h.function == "finish_open")
        assert row.status == "skipped" and "are not counted on this kernel" in row.reason, family
