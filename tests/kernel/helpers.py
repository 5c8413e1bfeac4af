"""Helpers of the kernel tests: cgroups, child processes, the exporter under test.

Tests import them from here (`from .helpers import Exporter`); conftest.py
holds only fixtures and hooks. Everything these objects start or create is
removed or stopped by PID by its owner, also when a test fails.
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

from ..programs import require_program
from ..promserver import free_port, stop_by_pid

__all__ = ["ROOT", "TRAFFIC", "HOOK", "VM", "Cgroup", "Child", "Exporter", "host_only", "traffic_argv", "require_program",
           "raise_memlock", "RESTART_VM_RUNS", "once_per_boot", "attached_programs", "remove_cgroup_dir", "delta", "file_counters",
           "exec_in_cgroup"]

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAFFIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "traffic.py")
HOOK = os.environ.get("CEEMSNET_TEST_HOOK", "auto")
# CEEMSNET_TEST_NET_SLOTS=0: exporters under test count net and vfs in the hash layout (the VM
# matrix's "hash" passes load the hash twins of the -slots objects: --net.slots=0 --vfs.slots=0)
NET_SLOTS = os.environ.get("CEEMSNET_TEST_NET_SLOTS")
# set by the VM suite (tests/vm/matrix.py): the kernel it boots (arm64-*: tests/vm/arm64.sh)
VM = os.environ.get("CEEMSNET_VM")
# How long serve may take to answer: an emulated guest on a loaded 2-vCPU host needs more than a
# minute at times (seen: importing bcc alone takes 11 s in the aarch64 guest, and a kretprobe
# exporter not up after 60 s in the x86 6.1 guest while other VMs ran).
READY_S = 300 if VM else 60


# the VM passes (kernel, hook) that run the capability set and continuity across restarts
# (tests/vm/matrix.py): 6.12's kretprobe pass and the edges suite of the oldest and newest eras
# (not 6.12's fexit pass: 5.10's covers fexit links, 6.12's kretprobe pass that kernel, and the
# host the slot layout's continuity, all in user space; it was the longest run of the matrix)
RESTART_VM_RUNS = (("5.10", "fexit"), ("6.12", "kretprobe"), ("7", "kretprobe"))


def host_only(why: str, unless: tuple[tuple[str, str], ...] = ()):
    """Skip in the VM suite (each run costs minutes under emulation) what does not depend on
    the kernel's hook family, or what some runs cover for all: `unless` lists the
    (kernel series, hook family) runs that still run it."""
    also = f"; the {', '.join(f'{k} {h}' for k, h in unless)} VM runs run it" if unless else ""
    # `tests/vm/matrix.py repeat` (make repeat) runs what it is told to, wherever
    everywhere = os.environ.get("CEEMSNET_TEST_EVERYWHERE") == "1"
    return pytest.mark.skipif(bool(VM) and (VM, HOOK) not in unless and not everywhere,
                              reason=f"the host run covers it: {why}{also}")


# set by tests/vm/matrix.py's guest: "ENTRY@HOOK" for each suite entry (a directory such as tests/kernel,
# a file, or a test's node id) an earlier pass of this VM boot ran, with that pass's hook family
BOOT_RAN = tuple(os.environ.get("CEEMSNET_TEST_BOOT_RAN", "").split())


def once_per_boot(test_file: str, why: str, per_hook: bool = False, test: str = ""):
    """Skip in a VM pass what an earlier pass of the same boot (the same kernel) already ran:
    checks that depend on the kernel alone, not on the pass's hook family or layout. With per_hook,
    only where the earlier pass had the same hook family; with test (its name), where an earlier
    pass ran that test by its node id too."""
    rel = os.path.relpath(os.path.abspath(test_file), ROOT)

    def covers(entry: str) -> bool:
        where, _, hook = entry.rpartition("@")
        path, _, node = where.partition("::")
        ran = (rel == path or rel.startswith(path.rstrip("/") + "/")) and (not node or node == test)
        return ran and (not per_hook or hook == HOOK)

    ran = any(covers(e) for e in BOOT_RAN)
    everywhere = os.environ.get("CEEMSNET_TEST_EVERYWHERE") == "1"
    return pytest.mark.skipif(bool(VM) and ran and not everywhere,
                              reason=f"an earlier pass of this boot ran it{' with this hook family' if per_hook else ''}: "
                                     f"{why}")


class Cgroup:
    """A cgroup directory: made here (or already existing, with exist_ok)."""

    def __init__(self, root, name, exist_ok=False):
        self.root = root
        self.path = os.path.join(root, name)
        self.rel = "/" + name
        self.created = not os.path.isdir(self.path)
        if self.created or not exist_ok:
            os.mkdir(self.path)
        self.id = os.stat(self.path).st_ino

    def add(self, pid):
        with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def pids(self):
        with open(os.path.join(self.path, "cgroup.procs")) as f:
            return [int(x) for x in f.read().split()]

    def remove(self):
        if not remove_cgroup_dir(self.path):
            raise RuntimeError(f"cannot remove test cgroup {self.path}: pids {self.pids()}")


def remove_cgroup_dir(path: str, tries: int = 50) -> bool:
    """rmdir a cgroup directory, retrying every 0.1 s while it is busy (exited children may take
    a moment to leave it); True once it is gone (or was), False if it is still busy after `tries`."""
    for _ in range(tries):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.1)
    return False


class Child:
    """A process started by a test, moved into a cgroup before it does anything."""

    def __init__(self, argv, cgroup):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        cgroup.add(self.proc.pid)
        assert self.proc.pid in cgroup.pids()

    def go(self, timeout=60):
        out, err = self.proc.communicate("go\n", timeout=timeout)
        assert self.proc.returncode == 0, err
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()  # our own child, by its PID
            self.proc.wait()


class Exporter:
    def __init__(self, extra=(), collectors="net", port=None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ceemsnet.cli", "serve", f"--web.listen-address=127.0.0.1:{self.port}",
             f"--collectors={collectors}", f"--hook={HOOK}",
             # tests choose their unit resolver: auto would follow whatever cgroup tree the host has;
             # no pins unless a test asks (its own directory, removed after): a test's programs must not
             # outlive it, nor a later test adopt them
             "--unit=none", "--storage.path=none", "--bpf.pin-path=none",
             *([f"--net.slots={NET_SLOTS}"] if NET_SLOTS is not None and "net" in collectors.split(",") else []),
             *([f"--vfs.slots={NET_SLOTS}"] if NET_SLOTS is not None and "vfs" in collectors.split(",") else []),
             *extra],
            # stderr into a file, not a pipe: a long-running exporter's log never fills a pipe
            # nobody reads (serve would block writing it), and log() can read it at any time
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=self._log, text=True)
        deadline = time.time() + READY_S
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.proc.wait()
                pytest.fail(f"ceemsnet serve exited with {self.proc.returncode}: {self.log().strip()}")
            with contextlib.suppress(OSError):
                self.scrape_text()
                return
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"ceemsnet serve did not answer on /metrics within {READY_S} s")

    def scrape_text(self):
        with urllib.request.urlopen(self.url, timeout=30) as r:  # a loaded machine, thousands of cgroups
            return r.read().decode()

    def samples(self):
        from prometheus_client.parser import text_string_to_metric_families
        out = {}
        for fam in text_string_to_metric_families(self.scrape_text()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def log(self) -> str:
        """What serve wrote to stderr so far."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def stop(self):
        """SIGTERM by PID; returns (exit code, stderr)."""
        stop_by_pid(self.proc)
        return self.proc.returncode, self.log()

    def kill(self):
        """SIGKILL by PID, as a crash or the OOM killer would; returns stderr."""
        self.proc.kill()
        self.proc.wait()
        return self.log()


def raise_memlock():
    """preexec_fn: RLIMIT_MEMLOCK unlimited where this process may raise it, as the unit's
    LimitMEMLOCK=infinity does before serve's capabilities go (kernels before 5.11 charge BPF
    memory to it); left as it is where not (this host's root cannot, and needs no more)."""
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass


def traffic_argv(plan):
    return [sys.executable, TRAFFIC, json.dumps(plan)]


def attached_programs(loaded) -> list[str]:
    """Names of the programs a LoadedObject (ceemsnet/planning/select.py) has attached now."""
    return [ln.program for ln in loaded.links]


def delta(before, after, name, **labels):
    """How much series `name{labels}` moved between two Exporter.samples()."""
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


def file_counters(before, after, cg, fs):
    """{op: (bytes, calls, errors)}: what cgroup cg's vfs read and write counters on file system fs moved."""
    return {op: tuple(delta(before, after, f"ceemsnet_vfs_{op}_{k}_total", cgroup=cg.rel, fstype=fs)
                      for k in ("bytes", "calls", "errors")) for op in ("read", "write")}


def exec_in_cgroup(exporter, make_cgroup, spawn, argv, timeout=300):
    """argv exec'd as the only process of a fresh cgroup, moved there before the exec (so a
    program's own start-up reads count there too), between two scrapes: (before, after, cgroup, stdout)."""
    cg = make_cgroup()
    child = spawn(["sh", "-c", 'echo ready; read x; exec "$0" "$@"', *argv], cg)
    assert child.proc.stdout.readline().strip() == "ready"
    before = exporter.samples()
    out = child.go(timeout=timeout)
    after = exporter.samples()
    return before, after, cg, out
