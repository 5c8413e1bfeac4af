"""Reading the kernel's preemption model, and fexit going last where it preempts."""

import gzip

import pytest

from ceemsnet.planning import preemption as pm
from ceemsnet.planning.choice import family_order


@pytest.mark.parametrize("text, mode", [
    ("none voluntary full (lazy)\n", "lazy"),
    ("none (voluntary) full lazy\n", "voluntary"),
    ("(none) voluntary full\n", "none"),
    ("none voluntary (full)\n", "full"),
    ("none voluntary full lazy\n", None),       # nothing chosen: no answer
    ("(bogus) none\n", None),
    ("", None),
])
def test_sched_preempt(text, mode):
    assert pm.parse_sched_preempt(text) == mode


@pytest.mark.parametrize("cmdline, mode", [
    ("BOOT_IMAGE=/vmlinuz root=/dev/sda1 preempt=full quiet", "full"),
    ("preempt=none preempt=lazy", "lazy"),         # the last one wins
    ("preempt=lazy preempt=bogus", "lazy"),
    ("preempt_count=1 nopreempt", None),
    ("", None),
])
def test_cmdline(cmdline, mode):
    assert pm.parse_cmdline(cmdline) == mode


LAZY_7 = ("CONFIG_PREEMPT_BUILD=y\n# CONFIG_PREEMPT is not set\nCONFIG_PREEMPT_LAZY=y\nCONFIG_PREEMPT_COUNT=y\n"
          "CONFIG_PREEMPTION=y\nCONFIG_PREEMPT_DYNAMIC=y\nCONFIG_PREEMPT_RCU=y\n")
VOLUNTARY_612 = ("CONFIG_PREEMPT_BUILD=y\n# CONFIG_PREEMPT_NONE is not set\nCONFIG_PREEMPT_VOLUNTARY=y\n"
                 "# CONFIG_PREEMPT is not set\nCONFIG_PREEMPTION=y\nCONFIG_PREEMPT_DYNAMIC=y\n")


@pytest.mark.parametrize("config, mode", [
    (LAZY_7, "lazy"), (VOLUNTARY_612, "voluntary"),
    ("CONFIG_PREEMPT=y\nCONFIG_PREEMPTION=y\n", "full"),
    ("CONFIG_PREEMPT_RT=y\nCONFIG_PREEMPT=y\n", "rt"),
    ("CONFIG_PREEMPT_NONE=y\n", "none"),
    ("# CONFIG_PREEMPT_NONE is not set\n", None),
    ("", None),
])
def test_config(config, mode):
    assert pm.parse_config(config) == mode


@pytest.mark.parametrize("version, mode", [
    ("#1 SMP PREEMPT_DYNAMIC Debian 7.3.4-1~bpo13+1 (2026-11-02)", None),
    ("#1 SMP PREEMPT_RT Thu Jan 1", "rt"),
    ("#1 SMP PREEMPT Thu Jan 1", "full"),
    ("#1 SMP Thu Jan 1", None),
])
def test_version_string(version, mode):
    assert pm.parse_version_string(version) == mode


def _root(tmp_path, files):
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".gz"):
            with gzip.open(p, "wt") as f:
                f.write(text)
        else:
            p.write_text(text)
    return str(tmp_path)


def test_detect_takes_the_best_source(tmp_path):
    base = {"proc/sys/kernel/osrelease": "7.3.4+deb13-amd64\n",
            "proc/sys/kernel/version": "#1 SMP PREEMPT_DYNAMIC Debian\n",
            "usr/lib/modules/7.3.4+deb13-amd64/config": LAZY_7, "proc/cmdline": "quiet\n"}
    got = pm.detect(_root(tmp_path / "a", base))
    assert (got.mode, got.in_kernel) == ("lazy", True) and "usr/lib/modules" in got.source
    # preempt= on the command line overrides the built model
    got = pm.detect(_root(tmp_path / "b", {**base, "proc/cmdline": "quiet preempt=voluntary\n"}))
    assert (got.mode, got.in_kernel) == ("voluntary", False) and "command line" in got.source
    # debugfs, when readable, is the current mode
    got = pm.detect(_root(tmp_path / "c", {**base, "proc/cmdline": "preempt=voluntary",
                                           "sys/kernel/debug/sched/preempt": "none voluntary (full) lazy\n"}))
    assert got.mode == "full" and "debug" in got.source
    # /proc/config.gz when there is no config file
    got = pm.detect(_root(tmp_path / "d", {"proc/sys/kernel/osrelease": "6.1.0\n",
                                           "proc/sys/kernel/version": "#1 SMP PREEMPT_DYNAMIC\n",
                                           "proc/config.gz": VOLUNTARY_612}))
    assert got.mode == "voluntary" and "config.gz" in got.source
    # a dynamic kernel with nothing to read: unknown (fexit keeps its place)
    got = pm.detect(_root(tmp_path / "e", {"proc/sys/kernel/osrelease": "6.1.0\n",
                                           "proc/sys/kernel/version": "#1 SMP PREEMPT_DYNAMIC\n"}))
    assert got.mode == "unknown" and not got.in_kernel
    # a kernel built without preemption says nothing of PREEMPT in its version
    got = pm.detect(_root(tmp_path / "f", {"proc/sys/kernel/osrelease": "5.10.0\n",
                                           "proc/sys/kernel/version": "#1 SMP Debian 5.10.223-1\n"}))
    assert got.mode == "voluntary" and not got.in_kernel
    # preempt= on a kernel built without PREEMPT_DYNAMIC: the kernel ignores it, and so does detect
    # (Debian's arm64 6.18, lazy, booted with preempt=voluntary: still lazy)
    got = pm.detect(_root(tmp_path / "g", {**base, "proc/sys/kernel/version": "#1 SMP PREEMPT_LAZY Debian\n",
                                           "proc/cmdline": "quiet preempt=voluntary\n"}))
    assert (got.mode, got.in_kernel) == ("lazy", True) and "command line" not in got.source


def test_lossy_families_go_last_only_where_the_kernel_preempts():
    from packaging.version import Version
    lazy, voluntary = pm.Preemption("lazy", "t"), pm.Preemption("voluntary", "t")
    assert pm.lossy_families(Version("7.3"), voluntary) == ()
    assert pm.lossy_families(Version("7.3"), None) == ()
    assert pm.lossy_families(Version("6.18"), lazy) == ("fexit",)
    assert pm.lossy_families(Version("7.0"), lazy) == ("fexit", "tracepoint")
    assert family_order("any") == ["fexit", "kretprobe", "tracepoint"]
    assert family_order("any", lossy=("fexit",)) == ["kretprobe", "tracepoint", "fexit"]
    assert family_order("any", lossy=("fexit", "tracepoint")) == ["kretprobe", "fexit", "tracepoint"]
    assert family_order("x86_64", lossy=("fexit",))[-1] == "fexit"
    # a forced family is what the admin asked for, preemption or not
    assert family_order("any", "fexit", lossy=("fexit",)) == ["fexit"]
