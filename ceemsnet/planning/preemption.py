"""Whether the running kernel preempts tasks inside kernel code, and so inside
our BPF programs: it decides whether the fexit family counts exactly.

Why it matters. A BPF trampoline (fentry/fexit) runs its program with only
migration disabled, and guards against recursion with a per-CPU counter per
program (`prog->active`, kernel/bpf/trampoline.c, `__bpf_prog_enter_recur`).
On a kernel that preempts in kernel mode (full, lazy or RT preemption), a task
preempted while it runs our program holds that counter, and any other task
that reaches the same hook on that CPU before it resumes is skipped: the
event is lost, counted only in the program's `recursion_misses`. Measured on
Debian's 7.3 (lazy preemption), three processes sending 20,000 UDP
datagrams each from one CPU: 825 sends were not counted (1.4%). Under
voluntary or no preemption a task never leaves our program half-way (it has
no scheduling point) and fexit is exact.

Raw tracepoints had the same guard but ran with preemption disabled (the
tracepoint's preempt-disabled section) until 7.0, whose tracepoints run
under SRCU-fast with preemption on ("tracing: Guard __DECLARE_TRACE() use
of __DO_TRACE_CALL() with SRCU-fast", "bpf: Have __bpf_trace_run() use
rcu_read_lock_dont_migrate()"): from 7.0 the tracepoint family loses events
the same way (measured on 7.3). Return probes run their programs with
preemption disabled on every kernel (kprobe handlers): their guards only see
true nesting (an interrupt), which our hooks never meet. So on a kernel that
preempts, select_and_load tries the families that lose events last
(lossy_families).

The mode, best source first:
  /sys/kernel/debug/sched/preempt  the current mode of a PREEMPT_DYNAMIC
                                   kernel, in parentheses ("none voluntary
                                   full (lazy)"); root with debugfs mounted
  preempt= on the kernel command line  (PREEMPT_DYNAMIC kernels; any other
                                   ignores it, so it is read only where
                                   uname -v says PREEMPT_DYNAMIC)
  the kernel's build configuration     /boot/config-<release>,
                                   /lib/modules/<release>/config,
                                   /proc/config.gz: the model it was built
                                   with, which a dynamic kernel boots in
  the version string (uname -v)    "PREEMPT_RT", or "PREEMPT" alone (a
                                   kernel built fully preemptible)
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass

from packaging.version import Version

MODES = ("none", "voluntary", "full", "lazy", "rt")
PREEMPTS = ("full", "lazy", "rt")


@dataclass(frozen=True)
class Preemption:
    mode: str     # one of MODES, or "unknown"
    source: str   # where the mode was read

    @property
    def in_kernel(self) -> bool:
        """True when tasks can be preempted inside kernel code (and our programs)."""
        return self.mode in PREEMPTS

    def describe(self) -> str:
        return f"{self.mode} preemption ({self.source})" if self.mode != "unknown" else \
            f"preemption model unknown ({self.source})"


UNKNOWN = Preemption("unknown", "not read: not the running kernel")

# tracepoints run their BPF programs with preemption on from this version (see above)
TRACEPOINTS_PREEMPTIBLE = Version("7.0")


def lossy_families(kver: Version, preemption: Preemption | None) -> tuple[str, ...]:
    """The hook families whose programs can be preempted, and so lose events, on this kernel."""
    if preemption is None or not preemption.in_kernel:
        return ()
    return ("fexit", "tracepoint") if kver >= TRACEPOINTS_PREEMPTIBLE else ("fexit",)


def parse_sched_preempt(text: str) -> str | None:
    """debugfs sched/preempt, "none voluntary full (lazy)" -> "lazy"."""
    m = re.search(r"\((\w+)\)", text or "")
    if m and m.group(1) in MODES:
        return m.group(1)
    return None


def parse_cmdline(text: str) -> str | None:
    """The last preempt= of a kernel command line (the kernel honours the last one)."""
    found = None
    for word in (text or "").split():
        if word.startswith("preempt="):
            v = word[len("preempt="):]
            found = v if v in MODES else found
    return found


def parse_config(text: str) -> str | None:
    """The preemption model a kernel was built with, from its .config."""
    opts = set()
    for line in (text or "").splitlines():
        line = line.strip()
        if line.endswith("=y") and line.startswith("CONFIG_PREEMPT"):
            opts.add(line[len("CONFIG_"):-2])
    for opt, mode in (("PREEMPT_RT", "rt"), ("PREEMPT_LAZY", "lazy"), ("PREEMPT", "full"),
                      ("PREEMPT_VOLUNTARY", "voluntary"), ("PREEMPT_NONE", "none")):
        if opt in opts:
            return mode
    return None


def parse_version_string(text: str) -> str | None:
    """uname -v ("#1 SMP PREEMPT_DYNAMIC Debian ..."): only what it settles by itself."""
    words = set((text or "").split())
    if "PREEMPT_RT" in words:
        return "rt"
    if "PREEMPT_DYNAMIC" in words:
        return None  # the mode is chosen at boot: other sources tell
    if "PREEMPT" in words or "PREEMPT_LAZY" in words:
        return "lazy" if "PREEMPT_LAZY" in words else "full"
    return None


def dynamic_or_unknown(version: str) -> bool:
    """Whether a kernel of this version string (uname -v) may honour preempt=: a PREEMPT_DYNAMIC
    build, or one whose version string was not read."""
    return not version.strip() or "PREEMPT_DYNAMIC" in version.split()


def _read(path: str) -> str | None:
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt", errors="replace") as f:
                return f.read()
        with open(path, errors="replace") as f:
            return f.read()
    except (OSError, EOFError, ValueError):
        return None


def detect(root: str = "/") -> Preemption:
    """The running kernel's preemption mode, from the best source that answers."""
    p = lambda *parts: os.path.join(root, *parts)  # noqa: E731
    text = _read(p("sys/kernel/debug/sched/preempt"))
    mode = parse_sched_preempt(text) if text else None
    if mode:
        return Preemption(mode, "/sys/kernel/debug/sched/preempt")
    version = _read(p("proc/sys/kernel/version")) or ""
    # preempt= only means something to a PREEMPT_DYNAMIC kernel: any other ignores it (Debian's
    # arm64 6.18 and 7.3, built with lazy preemption, boot lazy with preempt=voluntary)
    mode = parse_cmdline(_read(p("proc/cmdline")) or "") if dynamic_or_unknown(version) else None
    if mode:
        return Preemption(mode, "preempt= on the kernel command line")
    mode = parse_version_string(version)
    if mode:
        return Preemption(mode, "the kernel's version string")
    release = (_read(p("proc/sys/kernel/osrelease")) or "").strip()
    if release:
        for cfg in (p("boot", f"config-{release}"), p("lib/modules", release, "config"),
                    p("usr/lib/modules", release, "config"), p("proc/config.gz")):
            mode = parse_config(_read(cfg) or "")
            if mode:
                where = "/" + os.path.relpath(cfg, root)
                return Preemption(mode, f"the kernel's build configuration {where}")
    if "PREEMPT_DYNAMIC" not in version.split() and version:
        # neither PREEMPT nor PREEMPT_RT in the version string: built without kernel preemption
        return Preemption("voluntary", "the kernel's version string has no PREEMPT: none or voluntary")
    return Preemption("unknown", "no debugfs sched/preempt, preempt= or build configuration to read")
