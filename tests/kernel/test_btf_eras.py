"""Objects of the wrong signature era are refused by the BTF check.

Ground truth comes from outside ceemsnet: the argument count of
tcp_recvmsg as `bpftool btf dump` prints it, and /proc/kallsyms for which
functions exist.
"""

import os
import platform
import re
import subprocess

import pytest

from ceemsnet.choice import plan_object
from ceemsnet.kernel import KernelBTF, normalize_arch, parse_kernel_version, running_release
from ceemsnet.loader import LoadRefused, load_object
from ceemsnet.objects import CATALOGUE, RECV_FUNCS

from .helpers import require_program

ERA_BY_NARGS = {6: 1, 5: 2, 4: 3}


def recvmsg_nargs() -> int:
    raw = subprocess.run([require_program("bpftool"), "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "raw"],
                         capture_output=True, text=True, check=True).stdout
    m = re.search(r"\] FUNC 'tcp_recvmsg' type_id=(\d+)", raw)
    assert m, "tcp_recvmsg not in BTF"
    proto = re.search(rf"^\[{m.group(1)}\] FUNC_PROTO .* vlen=(\d+)", raw, re.M)
    return int(proto.group(1))


def kallsyms_has(fn: str) -> bool:
    with open("/proc/kallsyms") as f:
        return any(line.split()[2] == fn for line in f if len(line.split()) >= 3)


@pytest.fixture(scope="module")
def kernel():
    return parse_kernel_version(running_release()), normalize_arch(platform.machine()), KernelBTF()


def era_of(obj):
    # an object's recvmsg expectation -> era (1: 6 args, 2: 5, 3: 4)
    hook = next(h for h in obj.hooks if h.function == "tcp_recvmsg")
    return ERA_BY_NARGS[len(hook.expects.params)]


def test_only_the_matching_era_hooks_recvmsg(kernel):
    kver, arch, btf = kernel
    era = ERA_BY_NARGS[recvmsg_nargs()]
    fexit = [o for o in CATALOGUE if o.family == "fexit" and o.subsystem == "net" and arch in o.arches]
    if not fexit:
        pytest.skip(f"no fexit objects for {arch}")
    matching = [o for o in fexit if era_of(o) == era]
    assert len(matching) == 1
    for obj in fexit:
        plan = plan_object(obj, kver, btf)
        rows = {h.function: h for h in plan.hooks}
        for fn in RECV_FUNCS:
            if obj in matching:
                assert rows[fn].status == "ok", rows[fn].reason
            else:
                assert rows[fn].status == "skipped" and "mismatch" in rows[fn].reason, (obj.file, rows[fn])
                assert f"fexit_{fn}" not in plan.programs()
        assert rows["tcp_sendmsg"].status == "ok"  # the rest of a wrong-era object still serves


def test_wrong_era_object_loads_without_its_recvmsg_programs(kernel):
    kver, arch, btf = kernel
    era = ERA_BY_NARGS[recvmsg_nargs()]
    # The dangerous mismatch is an object expecting fewer arguments (a later
    # era): its return-value slot would be a real argument, which the
    # verifier accepts. Prefer that one where there is one.
    wrong = sorted((o for o in CATALOGUE if o.family == "fexit" and o.subsystem == "net" and arch in o.arches and era_of(o) != era),
                   key=era_of, reverse=True)[0]
    plan = plan_object(wrong, kver, btf)
    try:
        loaded = load_object(plan)
    except LoadRefused as e:
        pytest.skip(f"fexit programs do not load on {os.uname().release} ({e}); the VM suite runs this")
    try:
        assert not [p for p in loaded.programs() if "recvmsg" in p]
        assert "fexit_tcp_sendmsg" in loaded.programs()
    finally:
        loaded.close()


def test_sendpage_hooks_follow_the_kernel(kernel):
    kver, arch, btf = kernel
    for obj in (o for o in CATALOGUE if arch in o.arches and o.subsystem == "net" and o.family in ("fexit", "kretprobe")):
        rows = {h.function: h for h in plan_object(obj, kver, btf).hooks}
        for fn in ("tcp_sendpage", "udp_sendpage"):
            if kallsyms_has(fn):
                # present before 6.5: hooked unless the object's era does not fit this kernel
                assert rows[fn].status == "ok", (obj.file, rows[fn].reason)
            else:
                assert rows[fn].status == "skipped" and "removed in 6.5" in rows[fn].reason
