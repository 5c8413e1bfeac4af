"""Command-line behaviour that needs no kernel: flags, errors, probe --kernel."""

import argparse
import json
import os
import subprocess
import sys

import pytest

from ceemsnet.cli import build_parser
from ceemsnet.planning import catalogue

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout, p.stderr


def assert_one_line_error(rc, err, needle):
    assert rc != 0
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("ceemsnet: error:")]
    assert len(lines) == 1 and needle in lines[0], err


def test_probe_other_kernel_json():
    rc, out, err = run("probe", "--json", "--kernel", "6.1.0-28-amd64", "--arch", "x86_64")
    assert rc == 0, err
    rep = json.loads(out)
    assert rep["kernel"] == "6.1.0-28-amd64" and rep["arch"] == "x86_64" and rep["btf_checked"] is False
    net = {h["function"]: h for h in rep["hooks"] if h["subsystem"] == "net"}
    assert set(net) == {"tcp_sendmsg", "tcp_recvmsg", "udp_sendmsg", "udp_recvmsg", "udpv6_sendmsg",
                        "udpv6_recvmsg", "tcp_sendpage", "udp_sendpage"}
    vfs = {h["function"]: h for h in rep["hooks"] if h["subsystem"] == "vfs"}
    assert set(vfs) == {"vfs_read", "vfs_write", "vfs_readv", "vfs_writev", "vfs_open", "vfs_create",
                        "vfs_unlink", "vfs_mkdir", "vfs_rmdir"} | set(catalogue.VFS_FUNCTIONS[9:])
    assert {"sendfile", "splice", "copy_file_range"} <= set(vfs)
    for h in rep["hooks"]:
        assert set(h) == {"subsystem", "function", "hook", "object", "status", "reason"}
        assert h["status"] == "ok" and h["hook"] == "fexit"
    assert {h["object"] for h in net.values()} == {"net-fexit-5.19-x86.bpf.o"}
    assert {h["object"] for h in vfs.values()} == {"vfs-fexit-5.12-x86.bpf.o"}  # 6.1: user_namespace era


def test_probe_other_kernel_table_explains_absent_sendpage():
    rc, out, err = run("probe", "--kernel", "6.12.117+deb12-amd64", "--arch", "aarch64")
    assert rc == 0, err
    assert "net: fexit family, object net-fexit-6.4-arm64.bpf.o" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("tcp_sendpage"))
    assert "skipped" in line and "6.5" in line


def test_probe_says_why_arm64_before_6_4_has_no_fexit():
    rc, out, err = run("probe", "--kernel", "6.1.0-28-arm64", "--arch", "aarch64")
    assert rc == 0, err
    assert "net: kretprobe family, object net-kretprobe-5.19-arm64.bpf.o" in out
    assert "vfs: kretprobe family, object vfs-kretprobe-5.12-arm64.bpf.o" in out
    line = next(ln for ln in out.splitlines() if "fexit not used" in ln)
    assert "6.4" in line and "direct call" in line and "524" in line, line


@pytest.mark.parametrize("args,needle", [
    (("probe", "--kernel", "4.4.0-210-generic"), "not supported"),
    (("probe", "--kernel", "not-a-kernel"), "cannot parse kernel version"),
    (("probe", "--kernel", "6.1.0", "--arch", "ppc64le"), "unsupported architecture"),
    (("probe", "--arch", "x86_64"), "--arch goes with --kernel"),
    (("serve", "--collectors", "bogus"), "unknown collector"),
    (("serve", "--collectors", "skb", "--skb.mode", "per-cgroup"), "needs --skb.cgroups"),
    (("compare", "--url", "http://127.0.0.1:1/metrics"), "cannot read"),
    (("serve", "--vfs.fstypes", "ext4,zzzfs"), "unknown file system type"),
    (("serve", "--collectors", ""), "empty"),
    (("serve", "--web.listen-address", "nope"), "invalid --web.listen-address"),
    (("serve", "--web.listen-address=:\u00b2"), "invalid --web.listen-address"),  # was int()'s ValueError
    (("probe", "--log.level=--"), "expected a value, not '--'"),  # was [] as the value: AttributeError
])
def test_bad_input_is_one_line(args, needle):
    rc, out, err = run(*args)
    assert_one_line_error(rc, err, needle)


@pytest.mark.parametrize("args,needle", [
    (("compare", "a\nb"), "unrecognized arguments: a\\nb"),
    (("report", "--no-such=a\r\nb"), "unrecognized arguments: --no-such=a\\r\\nb"),
])
def test_an_error_quoting_a_newline_stays_one_line(args, needle):
    """A value holding a newline is written escaped: the error is the one and the last line."""
    rc, out, err = run(*args)
    assert_one_line_error(rc, err, needle)
    assert err.splitlines()[-1].startswith("ceemsnet: error:"), err


def test_bad_flag_is_usage_error():
    rc, out, err = run("serve", "--hook", "uprobe")
    assert rc == 2 and "Traceback" not in err and "invalid choice" in err
    rc, out, err = run("serve", "--net.map-entries", "-3")
    assert rc == 2 and "must be positive" in err


def test_help_explains():
    rc, out, _ = run("serve", "--help")
    assert rc == 0 and "--web.listen-address" in out and "fexit -> kretprobe -> tracepoint" in out
    rc, out, _ = run("probe", "--help")
    assert rc == 0 and "--kernel" in out


def test_shared_flags_mean_the_same_everywhere():
    """--hook, --cgroup.hierarchy, --kretprobe.maxactive and --log.level are declared once
    (ceemsnet/commands/shared.py): every subcommand taking one parses it alike."""
    subs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert list(subs) == ["serve", "report", "job", "record", "detach", "compare", "probe"]  # the order --help lists them

    def flag(command, name):
        a = next(a for a in subs[command]._actions if name in a.option_strings)
        return a.dest, a.type, a.choices

    for name, commands in (("--hook", ("serve", "probe")), ("--cgroup.hierarchy", ("serve", "probe")),
                           ("--kretprobe.maxactive", ("serve", "probe")), ("--bpf.pin-path", ("serve", "detach")),
                           ("--log.level", tuple(subs))):
        seen = {flag(c, name) for c in commands}
        assert len(seen) == 1, (name, seen)
    for command in ("serve", "probe"):
        rc, out, err = run(command, "--kretprobe.maxactive", "4097")
        assert rc == 2 and "must be 0 to 4096" in err and "Traceback" not in err


def test_no_command_prints_help():
    rc, out, err = run()
    assert rc == 2 and "COMMAND" in out and "serve" in out and "Traceback" not in err


def test_probe_says_what_no_hook_counts():
    # issue 24: what is still not counted is said by probe, per subsystem, whatever the family
    rc, out, err = run("probe", "--kernel", "6.12.0", "--arch", "x86_64")
    assert rc == 0, err
    gaps = [ln for ln in out.splitlines() if ln.startswith("  not counted by any hook: ")]
    assert len(gaps) == 3 and "mmap" in gaps[1] and "RDMA" in gaps[0] and "mlx5" in gaps[2], gaps
    rc, out, err = run("probe", "--json", "--kernel", "6.12.0", "--arch", "x86_64")
    assert json.loads(out)["subsystems"]["vfs"]["not_counted"] == gaps[1].split(": ", 1)[1]
