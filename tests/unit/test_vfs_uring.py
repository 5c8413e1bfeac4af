"""io_uring's hook (bpf/vfs/vfs_uring.h): which prototype each kernel gets, by BTF and by version,
what probe says, and the committed objects hold every alternative's programs (pure, no kernel)."""

import pytest
from packaging.version import Version

from ceemsnet.planning.catalogue import (CATALOGUE, SYS_TP, URING_ALTERNATIVES, URING_FUNCTIONS, VFS_FUNCTIONS,
                                         _uring_hooks, _vfs_sigs)
from ceemsnet.planning.choice import FamilyPlan, HookChoice, plan_family, plan_object
from ceemsnet.planning.kernel import parse_kernel_version
from ceemsnet.runtime.btf import Signature

from .test_objects import read_elf

V, U64, INT, UINT = ("", "void *"), ("", "u64"), ("", "int"), ("", "unsigned int")
# the io_uring events' prototypes as each kernel's BTF gives them (btf_trace_<event>, leading void * dropped;
# dumped with `bpftool btf dump` from the VM kernels' images and this host's /sys/kernel/btf/vmlinux)
KERNEL_EVENTS = {
    # Debian 11's 5.10.0-32: the 5.10 stable series' import of 5.15's io_uring
    "5.10.0-32-amd64": {
        "io_uring_complete": Signature("void", (V, U64, INT, UINT)),
        "io_uring_submit_sqe": Signature("void", (V, V, ("", "u8"), U64, ("", "u32"), ("", "bool"), ("", "bool")))},
    # mainline 5.10 (5.10.62's include/trace/events/io_uring.h): no request in either event
    "5.10.62": {
        "io_uring_complete": Signature("void", (V, U64, ("", "long int"))),
        "io_uring_submit_sqe": Signature("void", (V, ("", "u8"), U64, ("", "bool"), ("", "bool")))},
    "6.1.0-57-amd64": {
        "io_uring_complete": Signature("void", (V, V, U64, INT, UINT, U64, U64)),
        "io_uring_submit_sqe": Signature("void", (("", "struct io_kiocb *"), ("", "bool")))},
    "6.12.118+deb12-amd64": {
        "io_uring_complete": Signature("void", (V, V, U64, INT, UINT, U64, U64)),
        "io_uring_submit_req": Signature("void", (("", "struct io_kiocb *"),))},
    "6.18.15+deb13-amd64": {
        "io_uring_complete": Signature("void", (("", "struct io_ring_ctx *"), V, ("", "struct io_uring_cqe *"))),
        "io_uring_submit_req": Signature("void", (("", "struct io_kiocb *"),))},
    "7.3.4+deb13-amd64": {
        "io_uring_complete": Signature("void", (("", "struct io_ring_ctx *"), V, ("", "struct io_uring_cqe *"))),
        "io_uring_submit_req": Signature("void", (("", "struct io_kiocb *"),))},
    # a kernel built without CONFIG_IO_URING: no such events
    "6.12.0-nouring": {},
}
WANT = {"5.10.0-32-amd64": ("tp_btf_uring_sqe", "tp_btf_uring_done"), "5.10.62": None,
        "6.1.0-57-amd64": ("tp_btf_uring_req",), "6.12.118+deb12-amd64": ("tp_btf_uring_req",),
        "6.18.15+deb13-amd64": ("tp_btf_uring_cqe",), "7.3.4+deb13-amd64": ("tp_btf_uring_cqe",),
        "6.12.0-nouring": None}


class FakeBTF:
    """A kernel's BTF as the planner reads it: the vfs_* functions of an era, sys_exit and these io_uring events."""

    def __init__(self, release):
        kver = parse_kernel_version(release)
        era = 1 if kver < Version("5.12") else 2 if kver < Version("6.3") else 3 if kver < Version("6.15") else \
            4 if kver < Version("6.19") else 5
        self.funcs, self.events = _vfs_sigs(era), KERNEL_EVENTS[release]

    def function(self, name):
        return self.funcs.get(name)

    def tracepoint(self, name):
        return SYS_TP if name == "sys_exit" else self.events.get(name)  # sys_exit: the tracepoint family's


def uring(plan):
    (h,) = [h for h in plan.hooks if h.function == "io_uring"]
    return h


@pytest.mark.parametrize("release", sorted(KERNEL_EVENTS))
@pytest.mark.parametrize("family", ("fexit", "kretprobe", "tracepoint"))
def test_btf_picks_the_prototype(release, family):
    kver = parse_kernel_version(release)
    plan = plan_family("vfs", family, kver, "x86_64", FakeBTF(release))
    if plan.refused:  # fexit before 5.5, the tracepoint family before 5.15
        assert family == "tracepoint" and kver < Version("5.15")
        return
    h = uring(plan)
    if WANT[release] is None:
        assert (h.status, h.programs) == ("skipped", ())
        assert "not counted on this kernel" in h.reason
        return
    assert (h.status, h.programs, h.anywhere) == ("ok", WANT[release], True)
    assert set(h.programs) <= set(plan.programs())
    # probe says which prototype and what is not counted
    label = {"tp_btf_uring_cqe": "cqe", "tp_btf_uring_req": "req", "tp_btf_uring_sqe": "submission stash"}
    assert h.reason.startswith(f"{label[WANT[release][0]]} prototype matches this kernel's BTF")
    assert "IOSQE_CQE_SKIP_SUCCESS" in h.reason and "overflow" in h.reason


def test_mismatch_says_why_per_prototype():
    plan = plan_family("vfs", "fexit", parse_kernel_version("5.10.62"), "x86_64", FakeBTF("5.10.62"))
    reason = uring(plan).reason
    for alt in URING_ALTERNATIVES:
        assert f"not the {alt.label} prototype" in reason
    assert "io_uring_submit_sqe" in reason  # the stash's check failed on the submission event


@pytest.mark.parametrize("version,label", [
    ("4.18.0", None), ("5.4.0", None), ("5.10.0", None), ("5.10.161", None), ("5.10.162", "submission stash"),
    ("5.13.0", None), ("5.14.0", "submission stash"), ("5.17.15", "submission stash"), ("5.18.0", "req"),
    ("6.1.0", "req"), ("6.12.118", "req"), ("6.13.0", "cqe"), ("6.18.15", "cqe"), ("7.3.4", "cqe")])
def test_version_rules(version, label):
    """probe --kernel X (no BTF): the prototype each release has (catalogue.py, _uring_hooks)."""
    kver = Version(version)
    for family in ("fexit", "kretprobe"):
        plan = plan_family("vfs", family, kver, "x86_64", None)
        if plan.refused:
            continue
        h = uring(plan)
        if label is None:
            assert h.status == "skipped" and "by version rules" in h.reason
        else:
            assert h.status == "ok" and h.reason.startswith(f"{label} prototype, planned by version rules")
        break
    else:
        pytest.fail(f"no family planned for {version}")


def test_version_rules_never_before_tp_btf():
    # tp_btf programs need 5.5: no alternative may claim an older kernel
    assert all(lo >= Version("5.5") for a in URING_ALTERNATIVES for lo, _ in a.kernels)
    # and the ranges do not overlap: one prototype per release
    spans = sorted((lo, hi) for a in URING_ALTERNATIVES for lo, hi in a.kernels)
    for (_, hi), (lo, _) in zip(spans, spans[1:]):
        assert hi is not None and hi <= lo


def test_every_vfs_object_holds_every_alternative():
    assert URING_FUNCTIONS == ("io_uring",) and "io_uring" in VFS_FUNCTIONS
    progs = {p for a in URING_ALTERNATIVES for p in a.programs}
    assert progs == {"tp_btf_uring_cqe", "tp_btf_uring_req", "tp_btf_uring_sqe", "tp_btf_uring_done"}
    vfs = [o for o in CATALOGUE if o.subsystem == "vfs"]
    assert len(vfs) >= 15
    for obj in vfs:
        hooks = [h for h in obj.hooks if h.function == "io_uring"]
        assert len(hooks) == 1 and hooks[0].alternatives == URING_ALTERNATIVES, obj.file
        assert set(hooks[0].alternative_programs) == progs
        info = read_elf(obj.path)
        got = {p: info["progs"].get(p) for p in progs}
        assert got == {"tp_btf_uring_cqe": "tp_btf/io_uring_complete", "tp_btf_uring_req": "tp_btf/io_uring_complete",
                       "tp_btf_uring_done": "tp_btf/io_uring_complete",
                       "tp_btf_uring_sqe": "tp_btf/io_uring_submit_sqe"}, obj.file
        assert "uring_inflight" in info["maps"], obj.file


def test_same_hook_in_every_family():
    assert _uring_hooks("fexit", 1, "") == _uring_hooks("kretprobe", 5, "aarch64") == _uring_hooks("tracepoint", 0,
                                                                                                     "x86_64")


def test_hooks_of_any_family_do_not_make_a_family_usable():
    """On this host kprobes attach nowhere but tp_btf does: a kretprobe object whose only attached
    programs are io_uring's must not win over the tracepoint family (ceemsnet/planning/choice.py)."""
    obj = next(o for o in CATALOGUE if o.file == "vfs-kretprobe-6.15-x86.bpf.o")
    plan = plan_object(obj, parse_kernel_version("6.18.15"), FakeBTF("6.18.15+deb13-amd64"))
    assert plan.usable and uring(plan).status == "ok"
    own = {p for h in plan.hooks if h.status == "ok" and not h.anywhere for p in h.programs}
    assert own and "tp_btf_uring_cqe" not in own
    plan.skip(own, "attach failed: ENOENT")  # every kprobe refused, as on this host
    assert not plan.usable
    assert plan.programs() == []  # io_uring's programs are released too: the loader then refuses the family
    assert "nothing else of the kretprobe family attached" in uring(plan).reason
    # in the tracepoint family the syscall hooks are its own
    tp = next(o for o in CATALOGUE if o.file == "vfs-tracepoint-6.2-x86.bpf.o")
    tplan = plan_object(tp, parse_kernel_version("6.18.15"), FakeBTF("6.18.15+deb13-amd64"))
    assert [h.function for h in tplan.hooks if not h.anywhere and h.status == "ok"][:2] == ["vfs_read", "vfs_write"]


def test_only_any_family_hooks_is_not_usable():
    plan = FamilyPlan("vfs", "kretprobe", None,
                      [HookChoice("vfs", "io_uring", "kretprobe", "x.bpf.o", "ok", "", ("tp_btf_uring_cqe",), True)])
    assert not plan.usable
    plan.hooks.append(HookChoice("vfs", "vfs_read", "kretprobe", "x.bpf.o", "ok", "", ("kprobe_vfs_read",)))
    assert plan.usable
