"""`ceemsnet serve`: load, attach and serve the collectors' counters until stopped."""

from __future__ import annotations

import argparse
import contextlib
import logging

from packaging.version import Version

from ceemsnet import collectors
from ceemsnet.attribution.cgroups import CgroupResolver, host_hierarchy
from ceemsnet.attribution.workloads import PARSERS, folder, resolve_kind, resolve_level
from ceemsnet.collectors.base import Context
from ceemsnet.commands.shared import (add_hierarchy, add_hook, add_log_level, add_maxactive, add_pin_path, add_sacct,
                                      add_storage_path, running_kernel)
from ceemsnet.common.flags import nonnegative_int
from ceemsnet.common.timeparse import duration_arg, duration_or_zero_arg
from ceemsnet.pinned.pins import DEFAULT_PIN_PATH, PinDir
from ceemsnet.runtime.btf import KernelBTF
from ceemsnet.serving import caps
from ceemsnet.serving.store import DEFAULT_STORE

log = logging.getLogger("ceemsnet")

DEFAULT_LISTEN = ":9977"


def telemetry_path(text: str) -> str:
    if not text.startswith("/") or any(c in text for c in "?# ") or "//" in text:
        raise argparse.ArgumentTypeError(f"must be a URL path starting with /, e.g. /metrics: {text!r}")
    return text


def max_requests(text: str) -> int:
    return nonnegative_int(text, "0 (no limit) or more")


def add_parser(sub) -> argparse.ArgumentParser:
    s = sub.add_parser("serve", help="run the Prometheus exporter",
                       description="Load the BPF objects this kernel accepts, attach them and serve "
                                   "per-cgroup counters on /metrics until SIGTERM or SIGINT. With pins (the "
                                   "default) the programs go on counting after it stops, and the next run "
                                   "continues from them; `ceemsnet detach` stops them. With "
                                   "--bpf.pin-path=none, stopping detaches everything. Needs root.")
    s.add_argument("--web.listen-address", dest="listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to serve /metrics (default {DEFAULT_LISTEN}: every address, port 9977; "
                        "IPv6 as [::1]:9977)")
    s.add_argument("--web.config.file", dest="web_config_file", default=None, metavar="FILE",
                   help="TLS, client certificates, basic auth and response headers, in the Prometheus "
                        "exporter-toolkit format (docs/install.md: Protecting the endpoint); re-read when it or "
                        "the files it names change")
    s.add_argument("--web.telemetry-path", dest="telemetry_path", type=telemetry_path, default="/metrics",
                   metavar="PATH", help="where the metrics are served (default /metrics); / shows a page linking it")
    s.add_argument("--web.max-requests", dest="max_requests", type=max_requests, default=40, metavar="N",
                   help="most scrapes served at once; more get 503 (default 40, 0 = no limit)")
    s.add_argument("--collectors", default=collectors.DEFAULT, metavar="LIST",
                   help=f"comma-separated collectors to run (default {collectors.DEFAULT}; available: "
                        + ", ".join(collectors.REGISTRY) + "; each has its flags below)")
    add_hook(s, "hook family: auto (default) picks the best one the kernel accepts, "
                "fexit -> kretprobe -> tracepoint; naming one makes its refusal an error")
    add_hierarchy(s, "which cgroup the net and vfs collectors charge: v2 (the task's cgroup2 cgroup), "
                     "v1:<controller> (its cgroup in that cgroup v1 hierarchy, e.g. v1:memory), or auto "
                     "(default: v2 on unified hosts; on v1/hybrid hosts the controller holding a slurm "
                     "tree, else v2 if mounted)")
    s.add_argument("--unit", dest="unit", default="auto", choices=("auto", "none", "slurm", "systemd", "k8s"),
                   help="add the workload unit to every series and export per-unit sums: slurm (label job, "
                        "ceemsnet_job_*), systemd (unit, ceemsnet_unit_*), k8s (pod, ceemsnet_pod_*); auto "
                        "(default) is slurm where a SLURM cgroup tree exists, else none")
    s.add_argument("--cgroup.aggregate", dest="aggregate", default="auto", metavar="LEVEL",
                   help="fold deeper cgroups into their ancestor's series at this level (exact sums; a removed "
                        "child's counts stay in its ancestor's series): --unit=slurm: task (every cgroup its "
                        "own: SLURM's cgroup/v2 makes one per task), step (default: one series set per step), "
                        "job; --unit=systemd: cgroup (default) or unit; --unit=k8s: container (default) or pod; "
                        "auto: the unit's default")
    add_sacct(s, "--unit=slurm: sacct, asked (batched, cached) for the id SLURM shows for an array task "
                 "(123_2) or heterogeneous component (100+1), whose cgroup carries its own raw job id; "
                 "'none', or no sacct answering: the job label is the raw id")
    s.add_argument("--slurm.squeue", dest="squeue", default="squeue", metavar="PROGRAM|none",
                   help="--unit=slurm: squeue, asked before sacct for the same ids: slurmctld knows a running "
                        "job at once, while sacct knows it only once slurmdbd has its record; 'none': sacct only")
    s.add_argument("--cgroup.retention", dest="retention", type=duration_or_zero_arg, default=120.0,
                   metavar="DURATION",
                   help="how long the series of a removed cgroup stay exported with their last counts "
                        "(default 120s: a few scrape intervals); its map entries are freed at once")
    add_storage_path(s, DEFAULT_STORE, f"SQLite accounting store for `ceemsnet report` (default {DEFAULT_STORE}; "
                                       "'none' turns it off)")
    s.add_argument("--storage.interval", dest="storage_interval", type=duration_arg, default=30.0,
                   metavar="DURATION", help="how often totals are written (default 30s); also written on "
                                            "SIGTERM. A crash loses at most one interval")
    add_pin_path(s, "DIR|none", f"keep the BPF maps and links in this bpffs directory (default {DEFAULT_PIN_PATH}; "
                                "bpffs is mounted on /sys/fs/bpf if it is not), so counting goes on while the "
                                "exporter is stopped, restarted or upgraded, and a new run continues the counters. "
                                "SIGTERM then leaves the programs counting; `ceemsnet detach` removes them. 'none': "
                                "the programs stop with the exporter")
    add_maxactive(s, "kretprobe family: how many calls of one function may be in flight before returns "
                     "are missed (ceemsnet_kretprobe_missed_total counts them); size it above the most "
                     "threads a node has blocked in recv() at once; 1-4096, 0 = kernel default "
                     "(max(10, 2 x CPUs)); default 1024")
    s.add_argument("--capabilities.keep", dest="keep_caps", default=None, choices=caps.KEEP,
                   help="once the programs are attached, the pins made and the socket bound: none (default) "
                        "drops every capability in every thread and sets no_new_privs, so a compromised HTTP "
                        "handler holds none; all keeps them. --skb.mode=per-cgroup attaches to new cgroups "
                        "while running, so it keeps them by default and refuses none")
    add_log_level(s, default="info", shown=True)
    collectors.add_flags(s)
    return s


def build_context(args) -> Context:
    """The running kernel, its BTF and the attribution every subsystem opens with."""
    release, kver, arch = running_kernel()
    btf = KernelBTF()
    hier = host_hierarchy(args.hierarchy, btf)
    log.info("attributing to %s", hier.describe())
    unit_kind = resolve_kind(args.unit, hier.root)
    level = resolve_level(args.aggregate, unit_kind)
    if unit_kind != "none":
        log.info("workload units: %s, series per %s", unit_kind, level)
    # before 5.5 bpf_get_current_cgroup_id() carries a generation in its upper half
    resolver = CgroupResolver(hier.root, low32=hier.version == "v2" and kver < Version("5.5"))
    pins = None if args.pin_path == "none" else PinDir(args.pin_path)
    return Context(args, release, kver, arch, btf, hier, resolver, unit_kind, PARSERS.get(unit_kind), pins,
                   fold=folder(unit_kind, level))


def run(args) -> int:
    # start-up cost: the HTTP server, TLS and YAML stacks (~28 ms) only serve needs, not every command
    from ceemsnet.serving import exporter
    exporter.tune_malloc()  # before any thread starts
    names = collectors.parse(args.collectors)
    collectors.check(args)
    exporter.parse_listen_address(args.listen)  # bad flags fail before anything is loaded
    if args.unit != "auto":  # with auto, the level is checked once the unit is known (build_context)
        resolve_level(args.aggregate, args.unit)
    if args.web_config_file:  # so does a bad web config
        # only here: TLS, YAML and bcrypt cost the exporter ~6 MiB resident, and serve needs them
        # only with a web config
        from ceemsnet.serving import webconfig
        webconfig.load(args.web_config_file, warn=False)  # serve loads it again, and warns then
    web = exporter.WebOptions(args.web_config_file, args.telemetry_path, args.max_requests)
    # capabilities, not uid 0: a one-line error naming the first one the collectors need that is missing
    skb_mode = getattr(args, "skb_mode", "root")
    caps.check("ceemsnet serve", names, skb_mode)
    args.keep_caps = caps.resolve_keep(args.keep_caps, names, skb_mode)
    ctx = build_context(args)
    # before any hook counts: every cgroup made from now on gets its path at once, so a job
    # shorter than the scrape interval is not counted as unknown:<id> (ceemsnet/attribution/cgwatch.py)
    ctx.resolver.watch()
    with contextlib.ExitStack() as stack:  # closes (detaches) every subsystem opened, also on errors
        subs = collectors.open_all(names, ctx, stack)
        ctx.btf.close()  # the kernel's BTF (6 MiB parsed) served the object choice; the exporter needs it no more
        exporter.trim_heap()  # and the heap it leaves free goes back (ceemsnet/serving/exporter.py)
        exporter.serve(subs, ctx, args.listen, args.storage_path, args.storage_interval, web)
    return 0
