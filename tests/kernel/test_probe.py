"""`ceemsnet probe` on the running kernel, and forced hook families."""

import json
import os
import subprocess
import sys

import pytest

from ceemsnet.planning.catalogue import CATALOGUE
from ceemsnet.planning.choice import plan_object
from ceemsnet.planning.kernel import parse_kernel_version
from ceemsnet.planning.select import load_object
from ceemsnet.runtime.btf import KernelBTF
from ceemsnet.runtime.collection import LoadRefused

from .helpers import HOOK, ROOT, Exporter, once_per_boot

FAMILIES = ("fexit", "kretprobe", "tracepoint")


def cli(*args, timeout=120):
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


def probe(hook):
    rc, out, err = cli("probe", "--json", f"--hook={hook}")
    assert rc == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def report():
    """What probe plans with the hook family the exporter under test uses."""
    return probe(HOOK)


@pytest.fixture(scope="module")
def auto_report():
    return probe("auto")


def test_probe_checks_btf_and_picks_one_family(report):
    if HOOK != "auto":
        assert report["subsystems"]["net"]["family"] == HOOK
    assert report["btf_checked"] is True and report["kernel"] == os.uname().release
    assert set(report["subsystems"]) == {"net", "vfs", "rdma"}
    for sub, info in report["subsystems"].items():
        if sub == "rdma" and not os.path.exists("/sys/kernel/btf/ib_core"):
            # no RDMA stack loaded (this host's kernel has no modules): nothing to hook, each row says why
            rows = [h for h in report["hooks"] if h["subsystem"] == "rdma"]
            assert info["family"] == "none" and rows and all(h["status"] == "skipped" and h["reason"] for h in rows)
            continue
        assert info["family"] in FAMILIES
        ok = [h for h in report["hooks"] if h["status"] == "ok" and h["subsystem"] == sub]
        assert ok and all(h["hook"] == info["family"] and h["object"] == info["object"] for h in ok)
        # in auto mode every family better than the chosen one says why it was not used
        if HOOK == "auto":
            for fam in FAMILIES[:FAMILIES.index(info["family"])]:
                assert info["refused"].get(fam), (sub, fam)
    for h in report["hooks"]:
        assert h["reason"], h


def test_serve_attaches_what_probe_planned(report):
    e = Exporter()
    try:
        samples = e.samples()
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    attached = {dict(k[1])["function"]: dict(k[1]) for k in samples if k[0] == "ceemsnet_hook_info"}
    planned = {h["function"]: h for h in report["hooks"] if h["status"] == "ok" and h["subsystem"] == "net"}
    assert set(attached) == set(planned)
    for fn, h in planned.items():
        assert (attached[fn]["hook"], attached[fn]["object"]) == (h["hook"], h["object"])


def test_forced_family_the_kernel_refuses_is_an_error(auto_report):
    refused = [f for f in auto_report["subsystems"]["net"]["refused"] if f in FAMILIES]
    if not refused:
        pytest.skip("the kernel accepted the first hook family tried: no refusal to test")
    fam = refused[0]
    rc, out, err = cli("serve", "--web.listen-address=127.0.0.1:1", f"--hook={fam}", "--bpf.pin-path=none",
                       timeout=60)
    assert rc == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"ceemsnet: error: --hook={fam} cannot be used")


@once_per_boot(__file__, "auto's order depends on the kernel, not on the pass",
               test="test_fexit_goes_last_where_the_kernel_preempts")
def test_fexit_goes_last_where_the_kernel_preempts(auto_report):
    """A BPF trampoline (and from 7.0 a raw tracepoint) drops events when a task is preempted
    inside our program and another reaches the hook on that CPU
    (ceemsnet/planning/preemption.py); return probes do not. So auto tries those families
    last on a kernel that preempts in kernel code, and says why."""
    from packaging.version import Version
    pre = auto_report["preemption"]
    assert pre["mode"] in ("none", "voluntary", "full", "lazy", "rt", "unknown"), pre
    if pre["mode"] not in ("full", "lazy", "rt"):
        pytest.skip(f"this kernel does not preempt in kernel code ({pre['mode']}: {pre['source']})")
    lossy = {"fexit"} | ({"tracepoint"} if Version(auto_report["version"]) >= Version("7.0") else set())
    for sub, info in auto_report["subsystems"].items():
        refused = info["refused"]
        if info["family"] in lossy:
            # only where every family that keeps preemption off was refused
            assert set(FAMILIES) - lossy <= set(refused), (sub, info)
        elif info["family"] != "none":
            assert not lossy & set(refused), (sub, info)  # never tried: another came first
            assert any("tried last" in n for n in info["notes"]), (sub, info)


def test_arm64_fexit_attaches_from_6_4_and_is_refused_with_524_before():
    """arm64 reaches a kernel function from a BPF trampoline through an ftrace direct call (6.4,
    commit 2aa6ac03516d): the arm64 fexit object is planned from 6.4 only. Both sides on the running
    kernel, bypassing the version rule: before 6.4 the kernel itself refuses the attach with error 524
    (ENOTSUPP), which the refusal names; from 6.4 every planned program attaches."""
    if os.uname().machine != "aarch64":
        pytest.skip("arm64's rule; x86_64 has had fexit on kernel functions since 5.5")
    kver = parse_kernel_version(os.uname().release)
    obj = next(o for o in CATALOGUE if o.file == "net-fexit-6.4-arm64.bpf.o")
    plan = plan_object(obj, kver, KernelBTF())
    assert plan.programs(), plan.hooks  # the 5.19 recvmsg era's prototypes match from 5.19 on
    if kver >= parse_kernel_version("6.4"):
        loaded = load_object(plan)
        try:
            assert {ln.program for ln in loaded.links} == set(plan.programs())
        finally:
            loaded.close()
        return
    with pytest.raises(LoadRefused) as e:
        load_object(plan).close()
    if kver < parse_kernel_version("5.11"):
        # refused before the attach: the object reads the cgroup id through bpf_get_current_task_btf()
        # (5.11, bpf/include/cgroup.h), which this verifier does not know
        assert "loading net-fexit-6.4-arm64.bpf.o failed" in str(e.value), e.value
        return
    assert "error 524 (ENOTSUPP)" in str(e.value) and "direct calls" in str(e.value), e.value
