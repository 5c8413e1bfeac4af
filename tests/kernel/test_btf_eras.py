"""Objects of the wrong signature era are refused by the BTF check.

Ground truth comes from outside ceemsnet: the argument count of
tcp_recvmsg and the prototypes of vfs_mkdir and vfs_create as `bpftool btf
dump` prints them, and /proc/kallsyms for which functions exist.
"""

import os
import platform
import re
import subprocess

import pytest

from ceemsnet.planning.choice import plan_family, plan_object
from ceemsnet.runtime.btf import KernelBTF
from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version, running_release
from ceemsnet.runtime.collection import LoadRefused
from ceemsnet.planning.select import load_object
from ceemsnet.planning.catalogue import CATALOGUE, RECV_FUNCS

from .helpers import HOOK, attached_programs, once_per_boot, require_program

ERA_BY_NARGS = {6: 1, 5: 2, 4: 3}

# what these tests check depends on the kernel (its BTF) alone, whatever the pass's hook family or
# layout: a VM run with several passes runs them in its first, and the one that loads the pass's own
# family once per family
per_kernel = once_per_boot(__file__, "the BTF checks depend on the kernel, not on the pass")
per_family = once_per_boot(__file__, "the BTF checks depend on the kernel and the family loaded", per_hook=True)


def btf_raw() -> str:
    return subprocess.run([require_program("bpftool"), "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format",
                           "raw"], capture_output=True, text=True, check=True).stdout


def recvmsg_nargs() -> int:
    raw = btf_raw()
    m = re.search(r"\] FUNC 'tcp_recvmsg' type_id=(\d+)", raw)
    assert m, "tcp_recvmsg not in BTF"
    proto = re.search(rf"^\[{m.group(1)}\] FUNC_PROTO .* vlen=(\d+)", raw, re.M)
    return int(proto.group(1))


def bpftool_prototypes(raw: str, names: tuple[str, ...]) -> dict[str, tuple[str, list[str]]]:
    """{function: (return type, [parameter types])} read from bpftool's raw dump: each
    `[id] KIND 'name' type_id=N` line, FUNC_PROTO lines followed by their parameters."""
    types, params, last = {}, {}, None
    for line in raw.splitlines():
        m = re.match(r"\[(\d+)\] (\w+) '([^']*)'(?: type_id=(\d+))?(?: ret_type_id=(\d+))?", line)
        if m:
            last = int(m.group(1))
            types[last] = (m.group(2), m.group(3), int(m.group(4) or m.group(5) or 0))
            params[last] = []
        elif last is not None and (m := re.match(r"\s+'[^']*' type_id=(\d+)", line)):
            params[last].append(int(m.group(1)))

    def render(tid: int) -> str:
        if tid == 0:
            return "void"
        kind, name, ref = types[tid]
        if kind == "PTR":
            return render(ref) + " *"
        if kind in ("CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"):
            return render(ref)
        return f"{kind.lower()} {name}" if kind in ("STRUCT", "UNION", "ENUM", "FWD") else name

    funcs = {name: ref for kind, name, ref in types.values() if kind == "FUNC" and name in names}
    return {f: (render(types[p][2]), [render(t) for t in params[p]]) for f, p in funcs.items()}


def vfs_era() -> int:
    """The VFS signature era, from the prototypes alone: the namespace argument (none before
    5.12, user_namespace, then mnt_idmap from 6.3), vfs_mkdir's dentry return (6.15) and
    vfs_create without its directory (6.19)."""
    protos = bpftool_prototypes(btf_raw(), ("vfs_mkdir", "vfs_create"))
    mkdir_ret, mkdir_params = protos["vfs_mkdir"]
    first = mkdir_params[0]
    if first == "struct inode *":
        return 1
    if first == "struct user_namespace *":
        return 2
    assert first == "struct mnt_idmap *", protos
    if mkdir_ret == "int":
        return 3
    return 4 if "struct inode *" in protos["vfs_create"][1] else 5


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


@per_kernel
def test_only_the_matching_era_hooks_recvmsg(kernel):
    kver, arch, btf = kernel
    era = ERA_BY_NARGS[recvmsg_nargs()]
    fexit = [o for o in CATALOGUE if o.family == "fexit" and o.subsystem == "net" and o.layout == "hash" and arch in o.arches]
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


@per_kernel
def test_wrong_era_object_loads_without_its_recvmsg_programs(kernel):
    kver, arch, btf = kernel
    era = ERA_BY_NARGS[recvmsg_nargs()]
    # The dangerous mismatch is an object expecting fewer arguments (a later
    # era): its return-value slot would be a real argument, which the
    # verifier accepts. Prefer that one where there is one.
    wrong = sorted((o for o in CATALOGUE if o.family == "fexit" and o.subsystem == "net" and o.layout == "hash"
                    and arch in o.arches and era_of(o) != era), key=era_of, reverse=True)
    if not wrong:
        pytest.skip(f"no fexit objects for {arch}")
    wrong = wrong[0]
    plan = plan_object(wrong, kver, btf)
    try:
        loaded = load_object(plan)
    except LoadRefused as e:
        pytest.skip(f"fexit programs do not load on {os.uname().release} ({e}); the VM suite runs this")
    try:
        assert not [p for p in attached_programs(loaded) if "recvmsg" in p]
        assert "fexit_tcp_sendmsg" in attached_programs(loaded)
    finally:
        loaded.close()


@per_kernel
def test_sendpage_hooks_follow_the_kernel(kernel):
    kver, arch, btf = kernel
    for obj in (o for o in CATALOGUE if arch in o.arches and o.subsystem == "net" and o.layout == "hash" and o.family in ("fexit", "kretprobe")):
        rows = {h.function: h for h in plan_object(obj, kver, btf).hooks}
        for fn in ("tcp_sendpage", "udp_sendpage"):
            if kallsyms_has(fn):
                # present before 6.5: hooked unless the object's era does not fit this kernel
                assert rows[fn].status == "ok", (obj.file, rows[fn].reason)
            else:
                assert rows[fn].status == "skipped" and "removed in 6.5" in rows[fn].reason


DIROPS = ("vfs_create", "vfs_unlink", "vfs_mkdir", "vfs_rmdir")


def vfs_era_of(obj) -> int:
    return next(int(d.split("=")[1]) for d in obj.defines if d.startswith("VFS_ERA="))


# the object each family needs per era: kretprobe objects read the directory's position only,
# so era 2's serves era 3 too
RIGHT_ERA = {"fexit": {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}, "kretprobe": {1: 1, 2: 2, 3: 2, 4: 4, 5: 5}}


@per_kernel
@pytest.mark.parametrize("family", ["fexit", "kretprobe"])
def test_only_the_matching_vfs_era_serves_every_directory_operation(kernel, family):
    kver, arch, btf = kernel
    era = vfs_era()
    objs = [o for o in CATALOGUE if o.family == family and o.subsystem == "vfs" and arch in o.arches]
    if not objs:
        pytest.skip(f"no {family} vfs objects for {arch}")
    right = [o for o in objs if vfs_era_of(o) == RIGHT_ERA[family][era]]
    assert len(right) == 1, (era, [o.file for o in right])
    # the choice picks it, BTF-verified
    chosen = plan_family("vfs", family, kver, arch, btf)
    if chosen.usable:
        assert chosen.obj == right[0] and all(h.status == "ok" for h in chosen.hooks), chosen.hooks
    for obj in objs:
        rows = {h.function: h for h in plan_object(obj, kver, btf).hooks}
        if obj in right:
            assert all(rows[f].status == "ok" for f in DIROPS), (obj.file, rows)
        else:
            # a wrong era is refused function by function, saying why; the rest still serves
            refused = [f for f in DIROPS if rows[f].status == "skipped"]
            assert refused, (obj.file, era)
            assert all("mismatch" in rows[f].reason for f in refused), [rows[f].reason for f in refused]
            assert rows["vfs_read"].status == "ok"


@per_family
def test_wrong_vfs_era_object_loads_without_its_mismatched_programs(kernel):
    kver, arch, btf = kernel
    family = HOOK if HOOK in ("fexit", "kretprobe") else "fexit"
    era = vfs_era()
    # a later era where there is one: its fexit return slot would be a real argument
    wrong = sorted((o for o in CATALOGUE if o.family == family and o.subsystem == "vfs" and arch in o.arches
                    and vfs_era_of(o) != RIGHT_ERA[family][era]), key=vfs_era_of, reverse=True)[0]
    plan = plan_object(wrong, kver, btf)
    skipped = {h.function for h in plan.hooks if h.status == "skipped"}
    assert skipped & set(DIROPS), (wrong.file, era)
    try:
        loaded = load_object(plan)
    except LoadRefused as e:
        pytest.skip(f"{family} programs do not load on {os.uname().release} ({e}); the VM suite runs this")
    try:
        progs = set(attached_programs(loaded))
        assert not {p for p in progs if p.split("_", 1)[1] in skipped}, (wrong.file, progs)
        assert f"{'fexit' if family == 'fexit' else 'kretprobe'}_vfs_read" in progs
    finally:
        loaded.close()
