"""ceemsnet command line: serve, probe, compare, report."""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import sys
import threading

from . import CeemsnetError, __version__
from .report import DEFAULT_STORE

log = logging.getLogger("ceemsnet")

AVAILABLE_COLLECTORS = ("net", "vfs", "skb")
PLANNED_COLLECTORS: dict[str, str] = {}
DEFAULT_LISTEN = ":9977"


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like argparse, but with our prefix
        self.print_usage(sys.stderr)
        print(f"ceemsnet: error: {message}", file=sys.stderr)
        sys.exit(2)


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v


def _maxactive(text: str) -> int:
    from .kprobes import MAXACTIVE_MAX
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= v <= MAXACTIVE_MAX:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAXACTIVE_MAX} (the kernel's limit): {text!r}")
    return v


def _duration(text: str) -> float:
    """A positive duration: seconds, or a number with s, m, h or d (90, 90s, 15m, 1h)."""
    import re
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (e.g. 90s, 15m, 1h)")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ceemsnet", description=(
        "Per-cgroup (per-job) network and filesystem IO accounting with eBPF. "
        "Counts TCP/UDP bytes where each send/receive call returns, and charges them to the "
        "cgroup of the task that made the call."))
    p.add_argument("--version", action="version", version=f"ceemsnet {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("serve", help="run the Prometheus exporter",
                       description="Load the BPF objects this kernel accepts, attach them and serve "
                                   "per-cgroup counters on /metrics until SIGTERM or SIGINT "
                                   "(which detach everything cleanly). Needs root.")
    s.add_argument("--web.listen-address", dest="listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help=f"where to serve /metrics (default {DEFAULT_LISTEN}: every address, port 9977; "
                        "IPv6 as [::1]:9977)")
    s.add_argument("--collectors", default="net", metavar="LIST",
                   help="comma-separated collectors to run (default net; available: "
                        + ", ".join(AVAILABLE_COLLECTORS) + ")")
    s.add_argument("--hook", default="auto", choices=("auto", "fexit", "kretprobe", "tracepoint"),
                   help="hook family: auto (default) picks the best one the kernel accepts, "
                        "fexit -> kretprobe -> tracepoint; naming one makes its refusal an error")
    s.add_argument("--net.map-entries", dest="net_map_entries", type=_positive, default=65536, metavar="N",
                   help="capacity of the net counters map in keys (a cgroup uses up to 8); "
                        "entries are allocated on use (default 65536)")
    s.add_argument("--vfs.map-entries", dest="vfs_map_entries", type=_positive, default=65536, metavar="N",
                   help="capacity of the vfs counters map in keys (a cgroup uses up to 7 per file system "
                        "it touches); entries are allocated on use (default 65536)")
    s.add_argument("--vfs.fstypes", dest="vfs_fstypes", default="storage", metavar="LIST",
                   help="file system types the vfs collector reports: storage (default: all but pseudo "
                        "file systems such as proc, sysfs, cgroup), all, or a comma list (ext4,xfs,nfs,"
                        "lustre,...); 'storage,-tmpfs' removes one")
    s.add_argument("--cgroup.hierarchy", dest="hierarchy", default="auto", metavar="auto|v2|v1:CONTROLLER",
                   help="which cgroup the net and vfs collectors charge: v2 (the task's cgroup2 cgroup), "
                        "v1:<controller> (its cgroup in that cgroup v1 hierarchy, e.g. v1:memory), or auto "
                        "(default: v2 on unified hosts; on v1/hybrid hosts the controller holding a slurm "
                        "tree, else v2 if mounted)")
    s.add_argument("--unit", dest="unit", default="auto", choices=("auto", "none", "slurm", "systemd", "k8s"),
                   help="add the workload unit to every series and export per-unit sums: slurm (label job, "
                        "ceemsnet_job_*), systemd (unit, ceemsnet_unit_*), k8s (pod, ceemsnet_pod_*); auto "
                        "(default) is slurm where a SLURM cgroup tree exists, else none")
    s.add_argument("--cgroup.retention", dest="retention", type=float, default=120.0, metavar="SECONDS",
                   help="how long the series of a removed cgroup stay exported with their last counts "
                        "(default 120: a few scrape intervals); its map entries are freed at once")
    s.add_argument("--storage.path", dest="storage_path", default=DEFAULT_STORE, metavar="FILE",
                   help=f"SQLite accounting store for `ceemsnet report` (default {DEFAULT_STORE}; 'none' turns "
                        "it off)")
    s.add_argument("--storage.interval", dest="storage_interval", type=float, default=30.0, metavar="SECONDS",
                   help="how often totals are written (default 30); also written on SIGTERM. A crash loses "
                        "at most one interval")
    s.add_argument("--skb.mode", dest="skb_mode", default="root", choices=("root", "per-cgroup"),
                   help="skb collector: root (default) attaches once to the cgroup2 root (or --skb.root) and "
                        "counts per skb cgroup in a hash map; per-cgroup attaches to every cgroup matching "
                        "--skb.cgroups and counts in per-CPU cgroup storage")
    s.add_argument("--skb.root", dest="skb_root", default="/", metavar="PATH",
                   help="root mode: the cgroup (relative to the cgroup2 root) to attach to (default /)")
    s.add_argument("--skb.cgroups", dest="skb_cgroups", metavar="GLOB",
                   help="per-cgroup mode: cgroup paths to attach to, e.g. '/slurm/*/job_*' or "
                        "'/system.slice/slurmstepd.scope/job_*' (descendants count into the match)")
    s.add_argument("--skb.sync-interval", dest="skb_sync", type=float, default=1.0, metavar="SECONDS",
                   help="per-cgroup mode: how often to look for new and removed cgroups (default 1)")
    s.add_argument("--skb.map-entries", dest="skb_map_entries", type=_positive, default=65536, metavar="N",
                   help="root mode: capacity of the skb counters map in keys (4 per cgroup)")
    s.add_argument("--kretprobe.maxactive", dest="maxactive", type=_maxactive, default=1024, metavar="N",
                   help="kretprobe family: how many calls of one function may be in flight before returns "
                        "are missed (ceemsnet_kretprobe_missed_total counts them); size it above the most "
                        "threads a node has blocked in recv() at once; 1-4096, 0 = kernel default "
                        "(max(10, 2 x CPUs)); default 1024")
    s.add_argument("--log.level", dest="log_level", default="info",
                   choices=("debug", "info", "warning", "error"), help="log verbosity (default info)")

    r = sub.add_parser("report", help="per-job, per-cgroup or per-user totals, from the local store or Prometheus",
                       description="Totals grouped by SLURM job, cgroup or user (SLURM v1 paths carry the uid). "
                                   "By default from the SQLite store this node's exporter keeps (serve "
                                   "--storage.path): whole totals of every cgroup seen in the range. With "
                                   "--prometheus: what every scraped node counted inside the range, from the "
                                   "Prometheus server's HTTP API (exact sample differences, counter resets and "
                                   "exporter restarts handled).")
    r.add_argument("--storage.path", dest="storage_path", default=None, metavar="FILE",
                   help=f"the local store (default {DEFAULT_STORE})")
    r.add_argument("--prometheus", metavar="URL",
                   help="report from this Prometheus server instead (e.g. http://prometheus:9090; "
                        "user:password@ in the URL for basic auth)")
    r.add_argument("--prometheus.selector", dest="prom_selector", metavar="MATCHERS",
                   help="label matchers added to every series selector, e.g. 'job=\"ceemsnet\",cluster=\"a\"'")
    r.add_argument("--prometheus.lookback", dest="prom_lookback", type=_duration, default=3600.0,
                   metavar="DURATION", help="how far before --since to look for a series' starting value "
                                            "(default 1h; must exceed the scrape interval)")
    r.add_argument("--prometheus.chunk", dest="prom_chunk", type=_duration, default=6 * 3600.0, metavar="DURATION",
                   help="ask for the range in pieces this long (default 6h), so no query loads more samples "
                        "than the server's --query.max-samples; smaller for very large clusters")
    r.add_argument("--prometheus.timeout", dest="prom_timeout", type=_duration, default=60.0, metavar="DURATION",
                   help="per query (default 60s)")
    r.add_argument("--prometheus.bearer-token-file", dest="prom_token", metavar="FILE",
                   help="send the token in this file as Authorization: Bearer")
    r.add_argument("--prometheus.ca-file", dest="prom_ca", metavar="FILE",
                   help="CA certificates to verify an https:// server with (default: the system's)")
    r.add_argument("--by", default="job", choices=("job", "cgroup", "user"), help="grouping (default job)")
    r.add_argument("--job", help="only this job (error if there is no such job)")
    r.add_argument("--since", help="start: ISO date or time, or an age such as 24h, 7d (default: everything in "
                                   "the store; 24h with --prometheus)")
    r.add_argument("--until", help="end: ISO date or time, or an age (default: now)")
    r.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output (default table)")
    r.add_argument("--log.level", dest="log_level", default="warning",
                   choices=("debug", "info", "warning", "error"), help=argparse.SUPPRESS)

    c = sub.add_parser("compare", help="socket-level vs cgroup_skb bytes per cgroup, with reasons",
                       description="Read a running exporter's /metrics (serve --collectors=net,skb) and show, "
                                   "per cgroup and direction, socket-level payload bytes beside cgroup_skb "
                                   "IP-layer bytes, their ratio, and why they differ beyond header overhead.")
    c.add_argument("--url", default="http://127.0.0.1:9977/metrics",
                   help="the exporter's metrics URL (default http://127.0.0.1:9977/metrics)")
    c.add_argument("--json", action="store_true", help="print JSON instead of a table")
    c.add_argument("--log.level", dest="log_level", default="warning",
                   choices=("debug", "info", "warning", "error"), help=argparse.SUPPRESS)

    pr = sub.add_parser("probe", help="show which BPF object and hook each kernel function gets, and why",
                        description="Without options: plan for the running kernel, check every hooked "
                                    "function's prototype against its BTF and load-probe the hook "
                                    "families (needs root). With --kernel: answer for another kernel "
                                    "from version and arch rules only (no BTF, no loading).")
    pr.add_argument("--json", action="store_true", help="print JSON instead of a table")
    pr.add_argument("--kernel", metavar="VERSION",
                    help="answer for this kernel release (e.g. 5.14.0-427.el9.x86_64) instead of this one")
    pr.add_argument("--arch", metavar="ARCH", help="with --kernel: x86_64 or aarch64 (default: this machine's)")
    pr.add_argument("--hook", default="auto", choices=("auto", "fexit", "kretprobe", "tracepoint"),
                    help="probe only this hook family")
    pr.add_argument("--cgroup.hierarchy", dest="hierarchy", default="auto", metavar="auto|v2|v1:CONTROLLER",
                    help="the attribution to plan for (see serve --help)")
    pr.add_argument("--log.level", dest="log_level", default="warning",
                    choices=("debug", "info", "warning", "error"), help="log verbosity (default warning)")
    return p


def _collectors(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise CeemsnetError("--collectors is empty: name at least one of " + ", ".join(AVAILABLE_COLLECTORS))
    for n in names:
        if n in PLANNED_COLLECTORS:
            raise CeemsnetError(f"collector {n!r} ({PLANNED_COLLECTORS[n]}) is not available in this version; "
                                "available: " + ", ".join(AVAILABLE_COLLECTORS))
        if n not in AVAILABLE_COLLECTORS:
            raise CeemsnetError(f"unknown collector {n!r}; available: " + ", ".join(AVAILABLE_COLLECTORS))
    return list(dict.fromkeys(names))


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        from .loader import PRIVILEGE_HINT
        raise CeemsnetError(f"{what}: {PRIVILEGE_HINT}")


def _running_kernel():
    from .choice import check_supported
    from .kernel import normalize_arch, parse_kernel_version, running_release
    release = platform.release()
    kver = parse_kernel_version(running_release())
    check_supported(kver)
    return release, kver, normalize_arch(platform.machine())


def cmd_serve(args) -> int:
    from packaging.version import Version
    from .cgroups import CgroupResolver, find_cgroup2_root, host_hierarchy
    from .collectors.skb import SkbBackend, SkbCollector
    from .collectors.net import NetCollector
    from .collectors.vfs import VfsCollector
    from .lifecycle import Lifecycle
    from .fstypes import parse_fstypes
    from .exporter import CeemsnetCollector, build_labels, build_registry, start_server
    from .exporter import parse_listen_address
    from .kernel import KernelBTF
    from .loader import select_and_load

    collectors = _collectors(args.collectors)
    parse_listen_address(args.listen)  # bad flags fail before anything is loaded
    counted_fs = parse_fstypes(args.vfs_fstypes)
    if "skb" in collectors and args.skb_mode == "per-cgroup" and not args.skb_cgroups:
        raise CeemsnetError("--skb.mode=per-cgroup needs --skb.cgroups=GLOB (e.g. '/slurm/*/job_*')")
    _require_root("ceemsnet serve")
    release, kver, arch = _running_kernel()
    btf = KernelBTF()
    hier = host_hierarchy(args.hierarchy)
    log.info("attributing to %s", hier.describe())
    resolver = CgroupResolver(hier.root, low32=hier.version == "v2" and kver < Version("5.5"))
    cg2 = skb_resolver = None
    if "skb" in collectors:
        try:
            cg2 = find_cgroup2_root()
        except CeemsnetError as e:
            raise CeemsnetError(f"--collectors=skb: cgroup_skb programs attach to cgroup2 cgroups: {e}") from None
        skb_resolver = resolver if hier.version == "v2" and hier.root == cg2 else CgroupResolver(cg2)
    settings = {"cgrp_v1_subsys": hier.subsys_index}
    from .units import PARSERS, resolve_kind
    unit_kind = resolve_kind(args.unit, hier.root)
    unit_of = PARSERS.get(unit_kind)
    if unit_kind != "none":
        log.info("workload units: %s", unit_kind)
    loaded, hooks, cols = [], [], []
    try:
        for name in collectors:
            if name == "skb":
                backend = SkbBackend(cg2, args.skb_mode, args.skb_root, args.skb_cgroups, args.skb_map_entries)
                cols.append(SkbCollector(backend, skb_resolver, args.skb_sync))
                hooks += backend.hooks()
                log.info("skb: %s mode, %d cgroup(s) attached", backend.mode, len(backend.attached))
                continue
            sel = select_and_load(name, kver, arch, btf, forced=args.hook,
                                  map_entries={"net_stats": args.net_map_entries,
                                               "vfs_stats": args.vfs_map_entries},
                                  maxactive=args.maxactive or None, settings=settings)
            if sel.loaded is None:
                why = "; ".join(f"{f}: {r}" for f, r in sel.refusals.items())
                raise CeemsnetError(f"no hook family works for {name} on this kernel ({why})")
            for fam, why in sel.refusals.items():
                log.info("%s: %s not used: %s", name, fam, why)
            plan = sel.plan
            for note in plan.notes:
                log.info("%s: %s", name, note)
            for h in plan.hooks:
                if h.status == "ok":
                    hooks.append(h)
                    log.info("%s: %s -> %s (%s)", name, h.function, h.hook, h.object)
                else:
                    # absent functions are expected; a mismatch or failed attach is not
                    level = logging.INFO if "not in this kernel" in h.reason or "does not exist" in h.reason \
                        else logging.WARNING
                    log.log(level, "%s: %s not hooked: %s", name, h.function, h.reason)
            loaded.append(sel.loaded)
            life = Lifecycle(hier.root, args.retention, unit_of=unit_of)
            cols.append(NetCollector(sel.loaded, resolver, life) if name == "net"
                        else VfsCollector(sel.loaded, resolver, counted_fs, life))
        collector = CeemsnetCollector(cols, hooks, build_labels(release), unit_kind)
        writer = None
        if args.storage_path != "none":
            from .store import Store, StoreWriter
            writer = StoreWriter(Store(args.storage_path, unit_of), collector.gather, args.storage_interval)
            log.info("accounting store %s, written every %gs", args.storage_path, args.storage_interval)
        httpd, _ = start_server(args.listen, build_registry(collector), collector)
        log.info("serving /metrics on %s", args.listen)
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        while not stop.wait(3600):
            pass
        log.info("stopping: writing the store, detaching BPF programs")
        httpd.shutdown()
        httpd.server_close()
        if writer is not None:
            writer.stop()
    finally:
        for c in cols:
            if hasattr(c, "close"):
                c.close()
        for lo in loaded:
            lo.close()
    return 0


def probe_report(args) -> dict:
    from .choice import check_supported, family_order, plan_family
    from .kernel import normalize_arch, parse_kernel_version
    from .objects import SUBSYSTEMS

    if args.kernel is None:
        if args.arch:
            raise CeemsnetError("--arch goes with --kernel (the running kernel's arch is known)")
        _require_root("ceemsnet probe (load-probing hook families)")
        from .kernel import KernelBTF
        from .loader import select_and_load
        release, kver, arch = _running_kernel()
        btf = KernelBTF()
        from .cgroups import host_hierarchy
        hier = host_hierarchy(args.hierarchy)
        report = {"kernel": release, "version": str(kver), "arch": arch, "btf_checked": True,
                  "cgroup_hierarchy": {"version": hier.version, "controller": hier.controller,
                                       "root": hier.root, "reason": hier.reason},
                  "subsystems": {}, "hooks": []}
        for sub in SUBSYSTEMS:
            sel = select_and_load(sub, kver, arch, btf, forced=args.hook, keep=False,
                                  settings={"cgrp_v1_subsys": hier.subsys_index})
            plan = sel.plan
            rows = plan.hooks if plan else (sel.plans[-1].hooks if sel.plans else [])
            report["subsystems"][sub] = {
                "family": plan.family if plan else "none",
                "object": plan.obj.file if plan else "",
                "refused": sel.refusals,
                "notes": plan.notes if plan else [],
            }
            report["hooks"] += [h.as_dict() for h in rows]
        return report
    kver = parse_kernel_version(args.kernel)
    check_supported(kver)
    arch = normalize_arch(args.arch or platform.machine())
    report = {"kernel": args.kernel, "version": str(kver), "arch": arch, "btf_checked": False,
              "note": "answered from version and arch rules only: BTF not checked and nothing loaded; "
                      "the node itself may refuse a family and fall back to the next",
              "subsystems": {}, "hooks": []}
    for sub in SUBSYSTEMS:
        chosen, refused = None, {}
        for fam in family_order("any", args.hook, sub):
            plan = plan_family(sub, fam, kver, arch, None)
            if plan.usable:
                chosen = plan
                break
            refused[fam] = plan.refused
        report["subsystems"][sub] = {"family": chosen.family if chosen else "none",
                                     "object": chosen.obj.file if chosen else "", "refused": refused,
                                     "notes": chosen.notes if chosen else []}
        rows = chosen.hooks if chosen else plan.hooks
        report["hooks"] += [h.as_dict() for h in rows]
    return report


def format_probe(report: dict) -> str:
    lines = [f"kernel {report['kernel']} (version {report['version']}), {report['arch']}, "
             + ("prototypes checked against this kernel's BTF" if report["btf_checked"]
                else "BTF not checked (not the running kernel)")]
    if report.get("note"):
        lines.append(f"note: {report['note']}")
    if report.get("cgroup_hierarchy"):
        h = report["cgroup_hierarchy"]
        what = "cgroup v2" if h["version"] == "v2" else f"cgroup v1 {h['controller']} hierarchy"
        lines.append(f"attribution: {what} at {h['root']} ({h['reason']})")
    for sub, info in report["subsystems"].items():
        lines.append(f"{sub}: {info['family']} family" + (f", object {info['object']}" if info["object"] else ""))
        for fam, why in info["refused"].items():
            lines.append(f"  {fam} not used: {why}")
        for note in info["notes"]:
            lines.append(f"  note: {note}")
    rows = [("FUNCTION", "HOOK", "OBJECT", "STATUS", "REASON")]
    rows += [(h["function"], h["hook"], h["object"] or "-", h["status"], h["reason"]) for h in report["hooks"]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines.append("")
    for r in rows:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return "\n".join(lines)


def cmd_probe(args) -> int:
    report = probe_report(args)
    print(json.dumps(report, indent=2) if args.json else format_probe(report))
    return 0 if any(h["status"] == "ok" for h in report["hooks"]) else 1


def cmd_report(args) -> int:
    from .report import run
    return run(args)


def cmd_compare(args) -> int:
    from .compare import compare_rows, fetch_metrics, format_compare
    rows = compare_rows(fetch_metrics(args.url))
    print(json.dumps(rows, indent=2) if args.json else format_compare(rows))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return {"serve": cmd_serve, "probe": cmd_probe, "compare": cmd_compare,
                "report": cmd_report}[args.command](args)
    except CeemsnetError as e:
        print(f"ceemsnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ceemsnet probe | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
