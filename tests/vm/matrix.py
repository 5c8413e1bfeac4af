#!/usr/bin/env python3
"""The VM matrix: which kernel runs which kernel tests with which hook family,
and which committed BPF object each run loads.

`make test-vm` runs it (`python tests/vm/matrix.py run`); `list` prints it.
Three checks keep it honest:
- tests/unit/test_vm_matrix.py: every object in bpf/objs/ is loaded by at
  least one run of `make test` (host or VM), and every object named here is
  in the catalogue (ceemsnet/planning/catalogue.py);
- tests/kernel/test_matrix.py, inside each run: `ceemsnet probe` on that
  kernel chooses exactly the objects listed here for it, BTF-verified, so the
  list cannot drift from what really runs;
- the tests in the run's suite then count exactly with those objects.

A run boots its kernel once and runs the suite once per hook family.
VM_KERNELS="5.10 7" and VM_HOOKS=fexit narrow it by hand.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# The whole kernel suite, and the exact-count subset run on the kernels
# that only need to show their objects count exactly (each VM minute is
# emulated): net and vfs counts, the BTF era checks (wrong-era objects
# refused), and this matrix's own check.
FULL = ("tests/kernel",)
# a pass in the hash layout (--net.slots=0) only needs the net counts and the check
HASH = ("tests/kernel/test_matrix.py", "tests/kernel/test_net.py::test_exact_bytes_calls_errors_per_cgroup")
# file IO besides read() and write(): sendfile/splice/copy_file_range (each family's objects carry them)
FILEIO = ("tests/kernel/test_vfs_splice.py",)
# a pass of a family that serves only vfs on this kernel
VFS = ("tests/kernel/test_matrix.py", "tests/kernel/test_vfs.py") + FILEIO
EXACT = ("tests/kernel/test_matrix.py", "tests/kernel/test_net.py::test_exact_bytes_calls_errors_per_cgroup",
         "tests/kernel/test_net.py::test_senders_sharing_one_cpu_are_all_counted",
         "tests/kernel/test_probe.py::test_fexit_goes_last_where_the_kernel_preempts",
         "tests/kernel/test_vfs.py::test_exact_file_io_per_fstype",
         "tests/kernel/test_vfs.py::test_failed_lookups_are_not_operation_errors") + FILEIO \
    + ("tests/kernel/test_btf_eras.py",)
# 6.12's kretprobe pass: the exact subset, and what depends on kprobes (maxactive, perf links pinned
# across restarts); its fexit pass runs the whole suite
# RDMA over soft-RoCE (rdma_rxe, a module: the guests have it, this machine's kernel has no modules;
# the arm64 root file system has perftest and libibverbs' rxe provider, tests/vm/arm64.sh)
RDMA = ("tests/kernel/test_rdma.py",)
KRETPROBE = EXACT + ("tests/kernel/test_kretprobe.py", "tests/kernel/test_continuity.py") + RDMA
# the fexit passes of the oldest and newest eras (5.10, 7): the exact subset, and what those kernels
# broke when they ran the whole suite (the capability set and RLIMIT_MEMLOCK before 5.11, the v1
# subsystem index on 7.3, SIGTERM handling), and continuity across restarts
EDGES = EXACT + ("tests/kernel/test_capabilities.py::test_the_documented_set_works", "tests/kernel/test_cgroup_v1.py",
                 "tests/kernel/test_continuity.py")
# families that lose events where the kernel preempts in kernel code and cannot boot otherwise (7.3
# on x86: fexit, tracepoint): the objects load, verify against BTF and attach, and the exporter serves
# them; counts are not exact there, but every send lost shows as a skipped program run
LOADS = ("tests/kernel/test_matrix.py", "tests/kernel/test_btf_eras.py",
         "tests/kernel/test_net.py::test_lost_sends_are_visible_as_recursion_misses")
# pytest's options for the kernel suites: no cache (the guest's overlay is thrown away), and no
# Hypothesis plugin, which the kernel tests do not use and whose compiled part (hypothesis._native,
# installed for this machine's x86_64) cannot load in the aarch64 guest
PYTEST_OPTS = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")
# each pass's log ends with its slowest tests (emulated minutes: where a run's time goes)
DURATIONS = ("--durations=20", "--durations-min=1")
# the aarch64 guest (tests/vm/arm64.sh): its emulation is the slowest
ARM = EXACT[:-1] + ("tests/kernel/test_probe.py::test_arm64_fexit_attaches_from_6_4_and_is_refused_with_524_before",)
# the real SLURM (tests/slurm/run.sh starts the cluster in the guest, then the suite runs)
SLURM = ("tests/slurm",)
# file IO through io_uring and libaio (fio), and on an NFSv4 mount (kernel nfsd in the guest): each a few
# emulated minutes, so run once per io_uring prototype era and vfs open-path era with each family, not
# everywhere (docs/testing.md): 5.10 (the submission stash; vfs era 1), 6.12 (its fexit pass runs the whole
# suite; kretprobe here), 6.18 with fexit and 7.3 with kretprobe (the cqe prototype; vfs eras 4 and 5),
# arm64 6.12 (no NFS server in its root file system; RDMA there too: "arm-io-rdma")
ENGINES = ("tests/kernel/test_vfs_uring.py", "tests/kernel/test_vfs_aio.py")
NFS = ("tests/kernel/test_vfs_nfs.py",)
SUITES = {"full": FULL, "exact": EXACT, "edges": EDGES, "hash": HASH, "vfs": VFS, "arm": ARM, "kretprobe": KRETPROBE,
          "slurm": SLURM, "loads": LOADS, "exact-io": EXACT + ENGINES + NFS, "edges-io": EDGES + ENGINES + NFS,
          "kretprobe-io": KRETPROBE + ENGINES + NFS, "arm-io-rdma": ARM + ENGINES + RDMA, "arm-rdma": ARM + RDMA, "rdma": RDMA,
          "exact-rdma": EXACT + RDMA}


def pass_key(family: str, hash_layout: bool = False) -> str:
    """A run's pass: a hook family, with ":hash" where the exporter is told --net.slots=0 and
    --vfs.slots=0 (so that the hash twins of the -slots objects run too), or ":vfs" where only the vfs
    collector runs (the family serves no net hook on that kernel). The tests of a pass
    see it as CEEMSNET_TEST_PASS."""
    return family + (":hash" if hash_layout else "")


def hash_twin(obj: str) -> str:
    return obj.replace("-slots.bpf.o", ".bpf.o")


@dataclass(frozen=True)
class Run:
    kernel: str                 # tests/vm/run.sh's kernel name; "host" for this machine
    package: str                # what boots (documentation; run.sh pins it)
    suite: str                  # key of SUITES
    # pass (pass_key) -> the objects the exporter loads for net and vfs ("" for net in a ":vfs" pass)
    objects: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # objects a hook-independent test loads in this run (cgroup_skb)
    also: dict[str, str] = field(default_factory=dict)
    minutes: int = 0            # measured wall time of the run on this 2-vCPU host
    why: str = ""               # what only this run covers
    # pass -> key of SUITES where a pass runs another suite than the run's
    pass_suites: dict[str, str] = field(default_factory=dict)
    boot: str = ""              # tests/vm/run.sh's kernel, where the run's name is not one
    wrapper: tuple[str, ...] = ()  # what runs the guest's command (tests/slurm/run.sh: a SLURM cluster)
    optional: bool = False      # run only when VM_KERNELS names it (not yet in make test's time budget)
    append: str = ""            # more kernel command line (tests/vm/run.sh's CEEMSNET_VM_APPEND)

    @property
    def passes(self) -> tuple[str, ...]:
        return tuple(self.objects)

    def suite_for(self, p: str) -> str:
        """The key of SUITES a pass runs: its own (pass_suites), else its layout's ("hash",
        "vfs"), else the run's."""
        return self.pass_suites.get(p) or p.partition(":")[2] or self.suite


RUNS = (
    Run("host", "this machine's kernel (6.18 here)", "full",
        {"tracepoint": ("net-tracepoint-6.3-slots.bpf.o", "vfs-tracepoint-6.2-x86-slots.bpf.o"),
         "tracepoint:hash": ("net-tracepoint-6.3.bpf.o", "vfs-tracepoint-6.2-x86.bpf.o")},
        also={"skb-root.bpf.o": "tests/kernel/test_skb.py", "skb-cgroup.bpf.o": "tests/kernel/test_skb.py"},
        minutes=4,
        why="every unit test; every kernel test with the tracepoint and cgroup_skb programs; what does not "
            "depend on the hook family (churn, dashboard and rules, web config, package, capabilities one by one, "
            "skb and ledger continuity, the ledger's crash at every step, the store across a crash, "
            "report --prometheus, promtool)"),
    Run("5.10", "linux-image-5.10.0-32-amd64 5.10.223-1 (bullseye)", "exact",
        {"fexit": ("net-fexit-5.5-x86.bpf.o", "vfs-fexit-5.5-x86.bpf.o"),
         "kretprobe": ("net-kretprobe-4.18-x86.bpf.o", "vfs-kretprobe-4.18-x86.bpf.o")},
        # the oldest era: continuity and the capability set too; file IO engines and NFS with kretprobe
        pass_suites={"fexit": "edges", "kretprobe": "exact-io"},
        minutes=11,
        why="the era-1 objects (RHEL 9's 5.14 and Ubuntu 22.04's 5.15 load these): recvmsg with nonblock, "
            "vfs_* without a namespace argument, *_sendpage; with fexit continuity and the capability set "
            "(BPF memory charged to RLIMIT_MEMLOCK)"),
    Run("6.1", "linux-image-amd64: bookworm's current 6.1 (6.1.0-57 on 2026-12-05)", "exact",
        {"fexit:hash": ("net-fexit-5.19-x86.bpf.o", "vfs-fexit-5.12-x86.bpf.o"),
         "tracepoint:vfs": ("", "vfs-tracepoint-5.15-x86.bpf.o"),
         "kretprobe": ("net-kretprobe-5.19-x86.bpf.o", "vfs-kretprobe-5.12-x86.bpf.o")},
        # its only fexit pass: vfs-fexit-5.12-x86 counts here; RDMA where rxe runs in tasklets, in both
        # families (fexit is the one auto takes here)
        pass_suites={"fexit:hash": "exact-rdma", "kretprobe": "rdma"},
        also={"rdma-fexit-5.11-x86.bpf.o": "tests/kernel/test_rdma.py",
              "rdma-kretprobe-5.11-x86.bpf.o": "tests/kernel/test_rdma.py"},
        minutes=6,
        why="vfs_* with user_namespace; *_sendpage on a 5.19-era kernel; the hash layout of the 5.19 fexit "
            "era (--net.slots=0); the vfs tracepoint object of 5.15 - 6.1 (the net tracepoints are 6.3+)"),
    Run("6.12", "linux-image-6.12-amd64: bookworm's current 6.12 (6.12.118 on 2026-12-05)", "full",
        {"fexit": ("net-fexit-5.19-x86-slots.bpf.o", "vfs-fexit-6.3-x86.bpf.o"),
         "kretprobe": ("net-kretprobe-5.19-x86.bpf.o", "vfs-kretprobe-5.12-x86.bpf.o")},
        pass_suites={"kretprobe": "kretprobe-io"},
        # rdma over soft-RoCE: the fexit pass (whole suite) and the kretprobe pass (RDMA in its suite)
        also={"rdma-fexit-5.11-x86.bpf.o": "tests/kernel/test_rdma.py",
              "rdma-kretprobe-5.11-x86.bpf.o": "tests/kernel/test_rdma.py"},
        minutes=18,
        why="the whole kernel suite with fexit and kretprobe: continuity across SIGTERM, SIGKILL and a family "
            "swap, kretprobe maxactive, the capability set of net and vfs, SLURM trees"),
    Run("slurm", "the 6.12 run's kernel with Debian's slurm-wlm 22.05 (tests/slurm/run.sh)", "slurm",
        {"fexit": ("net-fexit-5.19-x86-slots.bpf.o", "vfs-fexit-6.3-x86.bpf.o")},
        boot="6.12", wrapper=("tests/slurm/run.sh",), minutes=7,
        why="a real single-node SLURM (slurmctld, slurmd with cgroup/v2, slurmdbd and MariaDB): sbatch, array, "
            "interactive, scancel and slurmd-restart jobs counted exactly, --cgroup.aggregate levels, the "
            "report with sacct's facts"),
    # 6.18 and 7 are built with lazy preemption, where a task preempted inside a fexit program (and
    # from 7.0 a raw tracepoint's) holds its per-CPU recursion guard and other tasks' events at that
    # hook are lost (ceemsnet/planning/preemption.py); auto chooses kretprobe there. 6.18 can boot
    # with preempt=voluntary, where fexit is exact and chosen first: its fexit pass boots it so. 7.3
    # on x86 offers only full and lazy: its fexit and tracepoint objects are checked to load, verify
    # against BTF and attach (the "loads" suite), not counted exactly.
    Run("6.18", "linux-image-6.18.15+deb13-amd64 6.18.15-1~bpo13+1 (trixie-backports), lazy preemption", "exact",
        {"kretprobe": ("net-kretprobe-5.19-x86.bpf.o", "vfs-kretprobe-6.15-x86.bpf.o")},
        minutes=5,
        why="vfs_mkdir returning a dentry (6.15 - 6.18), before 6.19's delegated_inode arguments; lazy "
            "preemption"),
    Run("6.18-voluntary", "the 6.18 run's kernel booted with preempt=voluntary", "exact-io",
        {"fexit": ("net-fexit-5.19-x86-slots.bpf.o", "vfs-fexit-6.15-x86.bpf.o")},
        boot="6.18", append="preempt=voluntary", minutes=7,
        why="the 6.15 vfs fexit era, on a kernel that does not preempt inside our programs"),
    Run("7", "linux-image-7.3.4+deb13-amd64 7.3.4-1~bpo13+1 (trixie-backports), lazy preemption", "exact",
        {"kretprobe": ("net-kretprobe-5.19-x86.bpf.o", "vfs-kretprobe-6.19-x86.bpf.o"),
         "tracepoint": ("net-tracepoint-6.3-slots.bpf.o", "vfs-tracepoint-6.2-x86-slots.bpf.o"),
         "fexit": ("net-fexit-7.1-x86-slots.bpf.o", "vfs-fexit-6.19-x86.bpf.o"),
         "fexit:hash": ("net-fexit-7.1-x86.bpf.o", "vfs-fexit-6.19-x86.bpf.o")},
        # the newest era: continuity and the capability set with auto's family
        pass_suites={"kretprobe": "edges-io", "tracepoint": "loads", "fexit": "loads", "fexit:hash": "loads"},
        minutes=14,
        why="the newest eras (4-argument recvmsg, 7.1; vfs_create without its directory and the "
            "delegated_inode arguments, 6.19) under lazy preemption: kretprobe (auto's choice) with "
            "continuity, the capability set and cgroup v1 (/proc/cgroups lists fewer controllers than the "
            "kernel has); the 7.1 fexit and the tracepoint objects load, verify and attach"),
    Run("arm64-6.1", "linux-image-6.1.0-56-arm64 6.1.192-2 (bookworm), aarch64 guest (tests/vm/arm64.sh)", "arm",
        {"kretprobe": ("net-kretprobe-5.19-arm64.bpf.o", "vfs-kretprobe-5.12-arm64.bpf.o")},
        # RDMA over soft-RoCE where rxe runs in tasklets (it retries there), on arm64
        pass_suites={"kretprobe": "arm-rdma"},
        also={"rdma-kretprobe-5.11-arm64.bpf.o": "tests/kernel/test_rdma.py"},
        minutes=2,
        why="the arm64 objects: kretprobe (this arm64 kernel has no fexit: no ftrace direct calls before 6.4, "
            "the attach fails with error 524); RDMA over soft-RoCE on arm64 where rxe runs in tasklets"),
    # arm64 fexit (6.4+, ftrace direct calls). Debian's arm64 6.18 and 7.3 are built with lazy preemption
    # and without PREEMPT_DYNAMIC, so preempt=voluntary cannot be booted there: bookworm's arm64 6.12,
    # built with voluntary preemption, is the arm64 kernel where fexit is exact and auto's first choice
    Run("arm64-6.12", "linux-image-6.12.117+deb12-arm64 6.12.117-1~deb12u1 (bookworm), voluntary preemption, "
        "aarch64 guest", "arm",
        {"fexit": ("net-fexit-6.4-arm64-slots.bpf.o", "vfs-fexit-6.4-arm64.bpf.o"),
         "fexit:hash": ("net-fexit-6.4-arm64.bpf.o", "vfs-fexit-6.4-arm64.bpf.o")},
        # RDMA over soft-RoCE with the arm64 fexit object (work items); arm64-6.1 runs the arm64 kretprobe
        # one (tasklets), x86 6.12 kretprobe with work items
        pass_suites={"fexit": "arm-io-rdma"},
        also={"rdma-fexit-6.4-arm64.bpf.o": "tests/kernel/test_rdma.py"},
        minutes=4,
        why="the arm64 fexit objects counting exactly (auto's choice on an arm64 kernel with ftrace direct "
            "calls that does not preempt in kernel code), in both net layouts; vfs_* with mnt_idmap on arm64; "
            "RDMA over soft-RoCE (work items) with the arm64 fexit object"),
    Run("arm64-5.10", "linux-image-5.10.0-32-arm64 5.10.223-1 (bullseye), aarch64 guest", "arm",
        {"kretprobe": ("net-kretprobe-4.18-arm64.bpf.o", "vfs-kretprobe-4.18-arm64.bpf.o")},
        minutes=2,
        why="the era-1 arm64 objects; a kernel that inlined vfs_readv/vfs_writev (not in its BTF): readv "
            "and writev counted at the __arm64_sys_* system calls instead"),
    Run("arm64-6.18", "linux-image-6.18.15+deb13-arm64 6.18.15-1~bpo13+1 (trixie-backports), lazy preemption, "
        "aarch64 guest", "arm",
        {"kretprobe": ("net-kretprobe-5.19-arm64.bpf.o", "vfs-kretprobe-6.15-arm64.bpf.o"),
         "fexit": ("net-fexit-6.4-arm64-slots.bpf.o", "vfs-fexit-6.15-arm64.bpf.o")},
        pass_suites={"fexit": "loads"},
        minutes=4,
        why="vfs_mkdir returning a dentry (6.15 - 6.18) on arm64: kretprobe (auto's choice under lazy "
            "preemption) counting exactly; the 6.15 vfs fexit object loads, verifies and attaches"),
    Run("arm64-7", "linux-binary-7.3.4+deb13-arm64 7.3.4-1~bpo13+1 (trixie-backports), lazy preemption, "
        "aarch64 guest", "arm",
        {"kretprobe": ("net-kretprobe-5.19-arm64.bpf.o", "vfs-kretprobe-6.19-arm64.bpf.o"),
         "fexit": ("net-fexit-7.1-arm64-slots.bpf.o", "vfs-fexit-6.19-arm64.bpf.o"),
         "fexit:hash": ("net-fexit-7.1-arm64.bpf.o", "vfs-fexit-6.19-arm64.bpf.o")},
        pass_suites={"fexit": "loads", "fexit:hash": "loads"},
        minutes=4,
        why="the 6.19 vfs era (vfs_create without its directory, delegated_inode arguments) on arm64: "
            "kretprobe counting exactly; the 7.1 net and 6.19 vfs fexit objects load, verify and attach"),
)

BY_KERNEL = {r.kernel: r for r in RUNS}

# Committed objects no run loads yet, each with the reason. tests/unit/test_vm_matrix.py
# fails on an object neither run nor listed here; this list is the open part of issue 13.
NOT_RUN: dict[str, str] = {}
# the kernel series of this machine, whose choice the "host" run records
HOST_SERIES = "6.18"


def exercised() -> dict[str, list[str]]:
    """object file -> the runs (kernel/hook) that load it."""
    out: dict[str, list[str]] = {}
    for r in RUNS:
        for key, objs in r.objects.items():
            for o in filter(None, objs):
                out.setdefault(o, []).append(f"{r.kernel}/{key}")
        for o, test in r.also.items():
            out.setdefault(o, []).append(f"{r.kernel}/{os.path.basename(test)}")
    return out


def cmd_guest(args) -> int:
    """Inside the VM (or on the host, for its passes beyond the whole suite): the run's suite
    once per pass; exit 1 if any failed. (The command that
    boots with the kernel stays short: virtme-ng passes it on the kernel command line, which
    x86 cuts at 2048 bytes; a longer one hung the 7.3 guest.)"""
    run = BY_KERNEL[args.kernel]
    rc = 0
    ran: list[str] = []  # ENTRY@HOOK: what this boot's earlier passes ran (tests/kernel/helpers.py, once_per_boot)
    for p in args.passes:
        hook, _, layout = p.partition(":")
        suite = run.suite_for(p)
        env = pass_env(run, p)  # the Makefile runs the host's extra passes this way too
        env["CEEMSNET_TEST_BOOT_RAN"] = " ".join(ran)
        ran += [f"{t}@{hook}" for t in SUITES[suite]]
        print(f"== {run.kernel} --hook={hook}{' --net.slots=0' if layout == 'hash' else ''}: {suite} suite",
              flush=True)
        rc |= subprocess.call([sys.executable, "-m", "pytest", *PYTEST_OPTS, *DURATIONS, "-ra", *SUITES[suite]],
                              cwd=ROOT, env=env) != 0
    return int(rc)


def pass_env(run: Run, p: str) -> dict:
    """The environment a pass's tests run in (CEEMSNET_TEST_HOOK, _PASS, _VM, _NET_SLOTS)."""
    hook, _, layout = p.partition(":")
    env = dict(os.environ, CEEMSNET_TEST_HOOK=hook, CEEMSNET_TEST_PASS=p, PYTHONDONTWRITEBYTECODE="1")
    if run.kernel != "host":
        env["CEEMSNET_VM"] = run.boot or run.kernel   # the kernel: what tests skip or run by
        env["CEEMSNET_VM_RUN"] = run.kernel           # the run: what tests/kernel/test_matrix.py checks
    if layout == "hash":
        env["CEEMSNET_TEST_NET_SLOTS"] = "0"
    return env


def warning_lines(out: str) -> list[str]:
    """The lines of pytest's "warnings summary" section in a run's output (none: no warning)."""
    lines = out.splitlines()
    for k, ln in enumerate(lines):
        if ln.startswith("=") and "warnings summary" in ln:
            body = []
            for w in lines[k + 1:]:
                if w.startswith(("=", "-- Docs:")):
                    break
                if w.strip():
                    body.append(w.rstrip())
            return body
    return []


def cmd_guest_repeat(args) -> int:
    """Inside the VM (or on the host): the tests N times in one pass, each in a fresh pytest,
    a line per run; a failed run's output printed whole; a summary line at the end."""
    run = BY_KERNEL[args.kernel]
    env = pass_env(run, args.pass_)
    env["CEEMSNET_TEST_EVERYWHERE"] = "1"  # host_only tests run too: a repeat runs what it is told to
    failed, warned, streak, best = [], [], 0, 0
    for i in range(1, args.n + 1):
        start = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "pytest", *PYTEST_OPTS, "-q", "-x", *args.tests],
                           cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        took = time.monotonic() - start
        if r.returncode == 0:
            streak += 1
            best = max(best, streak)
            notes = warning_lines(r.stdout.decode(errors="replace"))
            if notes:  # a test that passed on a second try says what the first saw: shown, and counted
                warned.append(i)
                print(f"repeat {i}/{args.n}: passed with warnings ({took:.0f} s):", flush=True)
                print("".join(f"    {ln}\n" for ln in notes), end="", flush=True)
            else:
                print(f"repeat {i}/{args.n}: passed ({took:.0f} s)", flush=True)
            continue
        streak = 0
        failed.append(i)
        print(f"repeat {i}/{args.n}: FAILED (exit {r.returncode}, {took:.0f} s); its output:", flush=True)
        sys.stdout.buffer.write(r.stdout)
        sys.stdout.flush()
        if args.stop:
            break
    done = failed[-1] if args.stop and failed else args.n
    print(f"REPEAT {run.kernel} --hook={args.pass_} {' '.join(args.tests)}: {done - len(failed)} of {done} passed, "
          f"{len(failed)} failed{' (runs ' + ', '.join(map(str, failed)) + ')' if failed else ''}; "
          f"longest run of passes {best}; {len(warned)} passed with warnings"
          f"{' (runs ' + ', '.join(map(str, warned)) + ')' if warned else ''}", flush=True)
    return 1 if failed else 0


def cmd_repeat(args) -> int:
    """Boot the run's kernel once (or stay on the host) and run the tests N times in it."""
    if args.kernel not in BY_KERNEL:
        raise SystemExit(f"matrix: unknown run {args.kernel!r}: choose from {' '.join(BY_KERNEL)}")
    run = BY_KERNEL[args.kernel]
    p = args.pass_ or run.passes[0]
    family, _, layout = p.partition(":")
    if family not in ("fexit", "kretprobe", "tracepoint") or layout not in ("", "hash", "vfs"):
        raise SystemExit(f"matrix: --hook wants a family (fexit, kretprobe, tracepoint), optionally with "
                         f":hash or :vfs, not {p!r} (the {run.kernel} run's passes: {' '.join(run.passes)})")
    inner = ["tests/vm/matrix.py", "guest-repeat", run.kernel, p, str(args.n), *(["--stop"] if args.stop else []),
             *args.tests]
    if run.kernel == "host":
        return subprocess.call([sys.executable, *inner], cwd=ROOT)
    argv, env = boot_command(run, inner, os.environ.get("CEEMSNET_VM_CPUS", "2"))
    return subprocess.call(argv, cwd=ROOT, env=env)


def boot_command(run: Run, inner: list[str], cpus: str) -> tuple[list[str], dict]:
    """The command (and its environment) that boots a run's kernel, with its wrapper and kernel
    command line, and runs `.venv/bin/python INNER...` in the guest."""
    env = dict(os.environ, CEEMSNET_VM_CPUS=cpus, CEEMSNET_VM_APPEND=run.append)
    return [os.path.join(HERE, "run.sh"), run.boot or run.kernel, *run.wrapper, ".venv/bin/python", *inner], env


def suites_of(r: Run, hooks: tuple[str, ...]) -> str:
    """The suites a run's passes run: "exact", or "full (fexit), exact (kretprobe)"."""
    per = {p: r.suite_for(p) for p in hooks}
    if len(set(per.values())) == 1:
        return next(iter(per.values()))
    return ", ".join(f"{suite} ({p})" for p, suite in per.items())


def selected(kernels: list[str] | None, hooks: list[str] | None) -> list[tuple[Run, tuple[str, ...]]]:
    vm = [r for r in RUNS if r.kernel != "host" and (not r.optional or r.kernel in (kernels or ()))]
    if kernels:
        unknown = [k for k in kernels if k not in BY_KERNEL or k == "host"]
        if unknown:
            raise SystemExit(f"matrix: unknown VM kernel(s) {' '.join(unknown)}: choose from "
                             f"{' '.join(r.kernel for r in vm)}")
        vm = [r for r in vm if r.kernel in kernels]
    out = []
    for r in vm:
        hs = tuple(p for p in r.passes if not hooks or p.partition(":")[0] in hooks)
        if hs:
            out.append((r, hs))
    return out


def vm_cpus(jobs: int) -> str:
    """vCPUs per guest: the machine's CPUs shared among the VMs that run at once (software
    emulation runs one host thread per vCPU; a guest's tests are mostly one process at a
    time, so two 1-vCPU guests side by side finish sooner than two 2-vCPU guests in turn)."""
    return os.environ.get("CEEMSNET_VM_CPUS") or str(max(1, (os.cpu_count() or 1) // jobs))


def run_one(r: Run, hooks: tuple[str, ...], label: str, timeout_min: float, jobs: int, log_dir: str):
    """Boot one run's kernel and run its passes; returns (exit code, seconds). With jobs > 1
    the run's output goes to LOG_DIR/<kernel>.log and is printed, whole, when it ends."""
    argv, env = boot_command(r, ["tests/vm/matrix.py", "guest", r.kernel, *hooks], vm_cpus(jobs))
    log = None
    if jobs > 1:
        os.makedirs(log_dir, exist_ok=True)
        log = open(os.path.join(log_dir, f"{r.kernel}.log"), "w+b")
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT if log else None)
    try:
        rc = proc.wait(timeout=timeout_min * 60)
    except subprocess.TimeoutExpired:
        # the VM (qemu, our child through run.sh) hangs: end its process group, go on
        print(f"== {label} {r.kernel}: no exit after {timeout_min:g} min, stopping it", flush=True)
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        rc = 124
    took = time.monotonic() - start
    if rc == 255 and not os.environ.get("CEEMSNET_VM_VERBOSE"):
        print(f"== {label} {r.kernel}: no exit code from the guest; CEEMSNET_VM_VERBOSE=1 shows its "
              "kernel console (a panic, an oops) on the next run", flush=True)
    if log:
        log.seek(0)
        with PRINT_LOCK:
            print(f"== {label} {r.kernel}: its output ({log.name})", flush=True)
            sys.stdout.buffer.write(log.read())
            sys.stdout.flush()
        log.close()
    print(f"== {label} {r.kernel} {'passed' if rc == 0 else f'FAILED (exit {rc})'} in {took / 60:.1f} min",
          flush=True)
    return rc, took


PRINT_LOCK = threading.Lock()


def cmd_run(args) -> int:
    runs = selected(args.kernels, args.hooks)
    if not runs:
        print("matrix: nothing selected (VM_KERNELS / VM_HOOKS)", file=sys.stderr)
        return 2
    jobs = max(1, min(args.jobs, len(runs)))
    # longest first, so that the short runs fill in beside it
    order = sorted(runs, key=lambda rh: -rh[0].minutes) if jobs > 1 else runs
    results: dict[str, tuple[int, float]] = {}
    wall = time.monotonic()

    def one(i: int, r: Run, hooks: tuple[str, ...]):
        label = f"[vm {i}/{len(order)}]"
        about = f", about {r.minutes} min" if r.minutes else ""
        print(f"== {label} {r.kernel}: {r.package}; --hook={','.join(hooks)}; {suites_of(r, hooks)} suite "
              f"(software emulation, {vm_cpus(jobs)} vCPU{about})", flush=True)
        results[r.kernel] = run_one(r, hooks, label, args.timeout, jobs, args.log_dir)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(one, i, r, h) for i, (r, h) in enumerate(order, 1)]:
            f.result()
    print(f"== VM matrix ({jobs} VM{'s' if jobs > 1 else ''} at a time, "
          f"{(time.monotonic() - wall) / 60:.1f} min in all):")
    for r, hooks in runs:
        rc, took = results[r.kernel]
        print(f"   {r.kernel:9} {','.join(hooks):26} {r.suite:6} {'ok' if rc == 0 else 'FAILED':7} {took / 60:5.1f} min")
    return 0 if all(rc == 0 for rc, _ in results.values()) else 1


def cmd_list(args) -> int:
    for r in RUNS:
        print(f"{r.kernel:6} {r.suite:6} {r.package}")
        for hook, objs in r.objects.items():
            other = r.suite_for(hook)
            print(f"       --hook={hook}{f' ({other} suite)' if other != r.suite else ''}: "
                  f"{', '.join(objs)}")
        for o, test in r.also.items():
            print(f"       {o} ({test})")
    for o, why in NOT_RUN.items():
        print(f"not run: {o}: {why}")
    return 0


def positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise SystemExit(f"matrix: VM_JOBS / --jobs / -n want a whole number, 1 or more, not {text!r}")
    return n


def main(argv=None) -> int:
    env_list = lambda name: os.environ.get(name, "").split() or None  # noqa: E731
    p = argparse.ArgumentParser(prog="tests/vm/matrix.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="boot each selected kernel and run its suite once per hook family")
    run.add_argument("--kernels", nargs="*", default=env_list("VM_KERNELS"),
                     help="VM kernels to run (default: all; env VM_KERNELS)")
    run.add_argument("--hooks", nargs="*", default=env_list("VM_HOOKS"),
                     help="hook families to run (default: each run's own; env VM_HOOKS)")
    run.add_argument("--timeout", type=float, default=float(os.environ.get("VM_TIMEOUT", 30)),
                     help="minutes a run may take before its VM is stopped (default 30; env VM_TIMEOUT)")
    run.add_argument("--jobs", type=positive, default=os.environ.get("VM_JOBS", "2"),
                     help="VMs booted at once, sharing the machine's CPUs (default 2; env VM_JOBS); "
                          "with more than one, each run's output is printed whole when it ends")
    run.add_argument("--log-dir", default=os.path.join(ROOT, ".build", "vm-logs"),
                     help="where each run's output is kept while VMs run side by side (default .build/vm-logs)")
    run.set_defaults(func=cmd_run)
    guest = sub.add_parser("guest", help="(inside a VM) run the passes of a run")
    guest.add_argument("kernel", choices=sorted(BY_KERNEL))
    guest.add_argument("passes", nargs="+")
    guest.set_defaults(func=cmd_guest)
    rep = sub.add_parser("repeat", help="boot one run's kernel once and run some tests N times in one pass "
                                        "(to reproduce a one-off failure)")
    rep.add_argument("kernel", help="a run of the matrix (see list), or host")
    rep.add_argument("tests", nargs="+", help="pytest node ids, e.g. tests/kernel/test_net.py::test_x")
    rep.add_argument("-n", type=positive, default=30, help="how many times (default 30)")
    rep.add_argument("--hook", dest="pass_", default="", metavar="PASS",
                     help="the pass, e.g. fexit, kretprobe, fexit:hash (default: the run's first)")
    rep.add_argument("--stop", action="store_true", help="stop at the first failure")
    rep.set_defaults(func=cmd_repeat)
    grep = sub.add_parser("guest-repeat", help="(inside a VM) run tests N times")
    grep.add_argument("kernel", choices=sorted(BY_KERNEL))
    grep.add_argument("pass_")
    grep.add_argument("n", type=positive)
    grep.add_argument("--stop", action="store_true")
    grep.add_argument("tests", nargs="+")
    grep.set_defaults(func=cmd_guest_repeat)
    sub.add_parser("list", help="print the matrix: runs, suites, the objects each run loads").set_defaults(func=cmd_list)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
