"""Object choice across kernels and arches: pure, no kernel needed."""

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.planning.choice import check_supported, family_order, plan_family
from ceemsnet.runtime.btf import Signature
from ceemsnet.planning.kernel import parse_kernel_version
from ceemsnet.planning.catalogue import RECV, SEND, SENDPAGE, SOCK_TP


def first_usable(kernel, arch, forced=None, sigs=None):
    kver = parse_kernel_version(kernel)
    check_supported(kver)
    for fam in family_order(arch, forced):
        plan = plan_family("net", fam, kver, arch, sigs)
        if plan.usable:
            return plan
    return None


# (kernel, arch) -> (family, object, sendpage hooked?)
CASES = [
    ("4.18.0-553.el8_10.x86_64", "x86_64", "kretprobe", "net-kretprobe-4.18-x86.bpf.o", True),
    ("4.18.0-553.el8_10.x86_64", "aarch64", "kretprobe", "net-kretprobe-4.18-arm64.bpf.o", True),
    ("5.14.0-427.el9.x86_64", "x86_64", "fexit", "net-fexit-5.5-x86.bpf.o", True),
    ("5.14.0-427.el9.x86_64", "aarch64", "kretprobe", "net-kretprobe-4.18-arm64.bpf.o", True),
    ("5.15.0-91-generic", "x86_64", "fexit", "net-fexit-5.5-x86.bpf.o", True),
    ("5.15.0-91-generic", "aarch64", "kretprobe", "net-kretprobe-4.18-arm64.bpf.o", True),
    ("6.1.0-28-amd64", "x86_64", "fexit", "net-fexit-5.19-x86.bpf.o", True),
    ("6.1.0-28-amd64", "aarch64", "kretprobe", "net-kretprobe-5.19-arm64.bpf.o", True),
    # arm64 fexit from 6.4 (ftrace direct calls); 6.3 is arm64's last kernel without
    ("6.3.13", "aarch64", "kretprobe", "net-kretprobe-5.19-arm64.bpf.o", True),
    ("6.4.0", "aarch64", "fexit", "net-fexit-6.4-arm64.bpf.o", True),
    ("6.8.0-45-generic", "x86_64", "fexit", "net-fexit-5.19-x86.bpf.o", False),
    ("6.8.0-45-generic", "aarch64", "fexit", "net-fexit-6.4-arm64.bpf.o", False),
    ("6.12.117+deb12-amd64", "x86_64", "fexit", "net-fexit-5.19-x86.bpf.o", False),
    ("6.12.117+deb12-amd64", "aarch64", "fexit", "net-fexit-6.4-arm64.bpf.o", False),
    ("6.18.44-fc-v769", "x86_64", "fexit", "net-fexit-5.19-x86.bpf.o", False),
    ("6.18.44-fc-v769", "aarch64", "fexit", "net-fexit-6.4-arm64.bpf.o", False),
    # 7.0 still has addr_len; 7.1 dropped it (commit 8341c989ac77, net-next after v7.0-rc3)
    ("7.0.0-31-generic", "x86_64", "fexit", "net-fexit-5.19-x86.bpf.o", False),
    ("7.0.0-31-generic", "aarch64", "fexit", "net-fexit-6.4-arm64.bpf.o", False),
    ("7.1.2", "x86_64", "fexit", "net-fexit-7.1-x86.bpf.o", False),
    ("7.1.2", "aarch64", "fexit", "net-fexit-7.1-arm64.bpf.o", False),
]


@pytest.mark.parametrize("kernel,arch,family,obj,sendpage", CASES)
def test_choice_by_version(kernel, arch, family, obj, sendpage):
    plan = first_usable(kernel, arch)
    assert (plan.family, plan.obj.file) == (family, obj)
    status = {h.function: h.status for h in plan.hooks}
    for f in ("tcp_sendmsg", "tcp_recvmsg", "udp_sendmsg", "udp_recvmsg", "udpv6_sendmsg", "udpv6_recvmsg"):
        assert status[f] == "ok"
    assert (status["tcp_sendpage"] == "ok") is sendpage
    assert (status["udp_sendpage"] == "ok") is sendpage
    if not sendpage:
        reason = next(h.reason for h in plan.hooks if h.function == "tcp_sendpage")
        assert "6.5" in reason


def test_unsupported_kernel_is_refused():
    with pytest.raises(CeemsnetError, match="not supported"):
        check_supported(parse_kernel_version("4.9.0-19-amd64"))


def test_forced_family_rules():
    assert first_usable("5.15.0-91-generic", "x86_64", forced="tracepoint") is None
    plan = plan_family("net", "tracepoint", parse_kernel_version("5.15.0"), "x86_64", None)
    assert "6.3" in plan.refused
    plan = plan_family("net", "fexit", parse_kernel_version("6.1.0"), "aarch64", None)
    # arm64 reaches kernel functions from a trampoline through ftrace direct calls, 6.4
    assert "6.4" in plan.refused and "524" in plan.refused and "direct call" in plan.refused
    assert plan_family("vfs", "fexit", parse_kernel_version("6.1.0"), "aarch64", None).refused == plan.refused
    assert not plan_family("net", "fexit", parse_kernel_version("6.1.0"), "x86_64", None).refused
    with pytest.raises(CeemsnetError):
        family_order("x86_64", "uprobe")


def test_tracepoint_family_serves_sendmsg_not_sendpage_before_6_5():
    plan = plan_family("net", "tracepoint", parse_kernel_version("6.4.0"), "x86_64", None)
    rows = {h.function: h for h in plan.hooks}
    assert rows["tcp_sendmsg"].programs == ("tp_btf_sock_send_length",)
    assert rows["tcp_recvmsg"].programs == ("tp_btf_sock_recv_length",)
    assert rows["tcp_sendpage"].status == "skipped" and "sendpage" in rows["tcp_sendpage"].reason
    assert plan.programs() == ["tp_btf_sock_send_length", "tp_btf_sock_recv_length"]


class FakeBTF:
    """Prototypes as a kernel's BTF would give them (unit tests only)."""

    def __init__(self, recv_era, sendpage=False, overrides=None, tracepoints=True):
        self.funcs = dict(SEND)
        self.funcs.update({f: RECV[recv_era] for f in ("tcp_recvmsg", "udp_recvmsg", "udpv6_recvmsg")})
        if recv_era == 1:  # udp names it noblock, tcp nonblock
            p = list(RECV[1].params)
            self.funcs["tcp_recvmsg"] = Signature("int", tuple(p[:3] + [("nonblock", "int")] + p[4:]))
            self.funcs["udp_recvmsg"] = Signature("int", tuple(p[:3] + [("noblock", "int")] + p[4:]))
            self.funcs["udpv6_recvmsg"] = self.funcs["udp_recvmsg"]
        if sendpage:
            self.funcs["tcp_sendpage"] = self.funcs["udp_sendpage"] = SENDPAGE
        self.funcs.update(overrides or {})
        self.tps = {"sock_send_length": SOCK_TP, "sock_recv_length": SOCK_TP} if tracepoints else {}

    def function(self, name):
        return self.funcs.get(name)

    def tracepoint(self, name):
        return self.tps.get(name)


def test_btf_overrides_version_era_on_backport_kernels():
    # This development host: 6.18 by version, but recvmsg lost addr_len as in 7.1.
    plan = plan_family("net", "fexit", parse_kernel_version("6.18.44-fc-v769"), "x86_64", FakeBTF(3))
    assert plan.obj.file == "net-fexit-7.1-x86.bpf.o"
    assert any("backported" in n for n in plan.notes)
    assert all(h.status == "ok" for h in plan.hooks if "sendpage" not in h.function)


def test_btf_era_match_keeps_version_era():
    plan = plan_family("net", "fexit", parse_kernel_version("6.1.0"), "x86_64", FakeBTF(2, sendpage=True))
    assert plan.obj.file == "net-fexit-5.19-x86.bpf.o" and not plan.notes
    assert all(h.status == "ok" for h in plan.hooks)


def test_kretprobe_era_by_flags_position():
    k = parse_kernel_version("5.14.0-427.el9.x86_64")
    # RHEL 9 backported the 5.19 recvmsg: BTF moves the kretprobe object forward
    plan = plan_family("net", "kretprobe", k, "x86_64", FakeBTF(2))
    assert plan.obj.file == "net-kretprobe-5.19-x86.bpf.o"
    plan = plan_family("net", "kretprobe", k, "x86_64", FakeBTF(1, sendpage=True))
    assert plan.obj.file == "net-kretprobe-4.18-x86.bpf.o"
    # 7.1's 4-argument recvmsg keeps flags 4th: the 5.19 kretprobe object serves it
    plan = plan_family("net", "kretprobe", parse_kernel_version("7.1.0"), "x86_64", FakeBTF(3))
    assert plan.obj.file == "net-kretprobe-5.19-x86.bpf.o"
    assert all(h.status == "ok" for h in plan.hooks if "sendpage" not in h.function)


def test_one_mismatching_function_is_skipped_not_fatal():
    bad = Signature("long", RECV[2].params)  # return type changed
    plan = plan_family("net", "fexit", parse_kernel_version("6.1.0"), "x86_64",
                       FakeBTF(2, sendpage=True, overrides={"udp_recvmsg": bad}))
    rows = {h.function: h for h in plan.hooks}
    assert rows["udp_recvmsg"].status == "skipped"
    assert "mismatch" in rows["udp_recvmsg"].reason and "returns long" in rows["udp_recvmsg"].reason
    assert rows["udp_recvmsg"].hook == "none"
    assert "fexit_udp_recvmsg" not in plan.programs()
    assert rows["tcp_recvmsg"].status == "ok" and plan.usable


def test_missing_tracepoint_refuses_family():
    plan = plan_family("net", "tracepoint", parse_kernel_version("6.6.0"), "x86_64",
                       FakeBTF(2, tracepoints=False))
    assert not plan.usable
    assert all(h.status == "skipped" for h in plan.hooks)


def test_skipped_hooks_carry_a_stable_cause():
    """ceemsnet_hook_skipped's reason label: absent, not_served, mismatch, attach_failed, unused, refused."""
    bad = Signature("long", RECV[2].params)
    plan = plan_family("net", "fexit", parse_kernel_version("6.18.0"), "x86_64",
                       FakeBTF(2, overrides={"udp_recvmsg": bad}))
    rows = {h.function: h for h in plan.hooks}
    assert (rows["udp_recvmsg"].status, rows["udp_recvmsg"].cause) == ("skipped", "mismatch")
    assert (rows["tcp_sendpage"].status, rows["tcp_sendpage"].cause) == ("skipped", "absent")  # gone in 6.5
    assert rows["tcp_sendmsg"].status == "ok" and rows["tcp_sendmsg"].cause == ""
    plan.skip({"fexit_tcp_sendmsg"}, "attach of fexit_tcp_sendmsg failed: EPERM")
    assert (rows["tcp_sendmsg"].status, rows["tcp_sendmsg"].cause) == ("skipped", "attach_failed")
    # the tracepoint object does not serve sendpage (before 6.5, where it exists)
    tp = {h.function: h for h in plan_family("net", "tracepoint", parse_kernel_version("6.4.0"), "x86_64",
                                             None).hooks}
    assert tp["tcp_sendpage"].cause == "not_served"
    # a tracepoint missing from BTF: absent, not a mismatch
    gone = plan_family("net", "tracepoint", parse_kernel_version("6.6.0"), "x86_64", FakeBTF(2, tracepoints=False))
    assert {h.cause for h in gone.hooks} == {"absent"}
    refused = plan_family("vfs", "fexit", parse_kernel_version("6.1.0"), "aarch64", None)
    assert refused.refused and {h.cause for h in refused.hooks} == {"refused"}


def test_a_family_left_with_riding_hooks_only_gives_them_up_as_unused():
    from ceemsnet.planning.choice import FamilyPlan, HookChoice
    plan = FamilyPlan("vfs", "kretprobe", None,
                      [HookChoice("vfs", "io_uring", "kretprobe", "x.bpf.o", "ok", "", ("tp_uring",), True),
                       HookChoice("vfs", "vfs_read", "kretprobe", "x.bpf.o", "ok", "", ("kprobe_vfs_read",))])
    plan.skip({"kprobe_vfs_read"}, "attach of kprobe_vfs_read failed")
    assert [(h.status, h.cause) for h in plan.hooks] == [("skipped", "unused"), ("skipped", "attach_failed")]
