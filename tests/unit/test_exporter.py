"""The exporter's own behaviour, with stand-in collectors (unit tests only)."""

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.planning.choice import HookChoice
from ceemsnet.serving.exporter import CeemsnetCollector, build_registry, parse_listen_address
from ceemsnet.common.metrics import Family


class Flaky:
    name = "net"

    def __init__(self):
        self.calls = 0

    def collect(self):
        self.calls += 1
        if self.calls == 2:
            raise OSError(5, "map read failed")
        m = Family("ceemsnet_net_egress_bytes", "x", "counter", ("cgroup", "proto", "family"))
        m.add(("/j", "tcp", "ipv4"), 100 * self.calls)
        return [m]


def scrape(reg):
    """One scrape: {(name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for fam in reg.collect() for s in fam.samples}


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))))


def test_failed_scrape_serves_last_values_and_reports_failure():
    hooks = [HookChoice("net", "tcp_sendmsg", "fexit", "net-fexit-7.1-x86.bpf.o", "ok", "")]
    reg = build_registry(CeemsnetCollector([Flaky()], hooks, {"version": "t", "libbpf": "1.1", "kernel": "k"}))
    lab = {"cgroup": "/j", "proto": "tcp", "family": "ipv4"}
    first = scrape(reg)
    assert value(first, "ceemsnet_net_egress_bytes_total", **lab) == 100
    assert value(first, "ceemsnet_scrape_collector_success", collector="net") == 1
    assert value(first, "ceemsnet_hook_info", subsystem="net", function="tcp_sendmsg", hook="fexit",
                 object="net-fexit-7.1-x86.bpf.o") == 1
    assert value(first, "ceemsnet_build_info", version="t", libbpf="1.1", kernel="k") == 1
    second = scrape(reg)  # the map read fails: counts already seen are not lost
    assert value(second, "ceemsnet_scrape_collector_success", collector="net") == 0
    assert value(second, "ceemsnet_net_egress_bytes_total", **lab) == 100
    third = scrape(reg)
    assert value(third, "ceemsnet_scrape_collector_success", collector="net") == 1
    assert value(third, "ceemsnet_net_egress_bytes_total", **lab) == 300


def test_hook_skipped_names_each_function_of_the_plan_not_hooked_and_why():
    ok = HookChoice("net", "tcp_sendmsg", "tracepoint", "net-tracepoint-6.3.bpf.o", "ok", "counted at ...")
    skipped = [HookChoice("net", "tcp_sendpage", "none", "net-tracepoint-6.3.bpf.o", "skipped",
                          "tcp_sendpage is not in this kernel's BTF (removed in 6.5): nothing to hook", cause="absent"),
               HookChoice("net", "udp_recvmsg", "none", "net-fexit-5.19-x86.bpf.o", "skipped",
                          "BTF signature mismatch: udp_recvmsg returns long", cause="mismatch")]
    reg = build_registry(CeemsnetCollector([], [ok], {"version": "t"}, skipped=skipped))
    first, second = scrape(reg), scrape(reg)
    got = {k: v for k, v in first.items() if k[0] == "ceemsnet_hook_skipped"}
    assert got == {
        ("ceemsnet_hook_skipped", (("detail", skipped[0].reason), ("function", "tcp_sendpage"),
                                   ("object", "net-tracepoint-6.3.bpf.o"), ("reason", "absent"),
                                   ("subsystem", "net"))): 1,
        ("ceemsnet_hook_skipped", (("detail", skipped[1].reason), ("function", "udp_recvmsg"),
                                   ("object", "net-fexit-5.19-x86.bpf.o"), ("reason", "mismatch"),
                                   ("subsystem", "net"))): 1}
    assert {k: v for k, v in second.items() if k[0] == "ceemsnet_hook_skipped"} == got  # the same every scrape
    assert value(first, "ceemsnet_hook_info", subsystem="net", function="tcp_sendmsg", hook="tracepoint",
                 object="net-tracepoint-6.3.bpf.o") == 1


@pytest.mark.parametrize("addr,want", [
    (":9977", ("0.0.0.0", 9977)), ("127.0.0.1:1", ("127.0.0.1", 1)), ("[::1]:9977", ("::1", 9977)),
    ("localhost:80", ("localhost", 80)),
])
def test_listen_address(addr, want):
    assert parse_listen_address(addr) == want


# ':²' passed str.isdigit() and int() raised ValueError; ':٩٩' (Arabic-Indic digits) was port 99
@pytest.mark.parametrize("bad", ["", "9977", "host:", "host:0", "host:70000", "::1:9977", "h:p", ":\u00b2",
                                 ":\u0669\u0669", ":" + "1" * 5000])
def test_listen_address_rejects(bad):
    with pytest.raises(CeemsnetError):
        parse_listen_address(bad)


def test_counters_info_names_each_subsystems_generation_and_fold():
    from ceemsnet.serving.exporter import run_generation

    class Sub:
        name, generation = "net", "boot:42"
    c = CeemsnetCollector([], [], {"version": "t"}, counters=[("net", run_generation(Sub(), True), "slurm:step"),
                                                               ("vfs", run_generation(Sub(), False), "slurm:step")])
    (info,) = [f for f in c.gather() if f.name == "ceemsnet_counters_info"]
    (net, vfs) = sorted(info.rows)
    assert net == (("net", "boot:42", "slurm:step"), 1)
    # without pins the counters end with the process: a generation of the run's own, never another run's
    assert vfs[0][1].startswith("run:") and vfs[0][1] != run_generation(Sub(), False)
    assert not [f for f in CeemsnetCollector([], [], {"version": "t"}).gather() if f.name == "ceemsnet_counters_info"]
