"""ceemsnet command line: serve, probe, compare, report."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import sys

from ceemsnet import CeemsnetError, __version__
from ceemsnet import collectors
from ceemsnet.pinned.pins import DEFAULT_PIN_PATH
from ceemsnet.serving.store import DEFAULT_STORE

DEFAULT_SACCT_CACHE = "/var/cache/ceemsnet/sacct.json"
from ceemsnet.common.timeparse import duration_arg, duration_or_zero_arg

log = logging.getLogger("ceemsnet")

DEFAULT_LISTEN = ":9977"
HOOKS = ("auto", "fexit", "kretprobe", "tracepoint")
LOG_LEVELS = ("debug", "info", "warning", "error")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like argparse, but with our prefix
        self.print_usage(sys.stderr)
        print(f"ceemsnet: error: {message}", file=sys.stderr)
        sys.exit(2)


def _telemetry_path(text: str) -> str:
    if not text.startswith("/") or any(c in text for c in "?# ") or "//" in text:
        raise argparse.ArgumentTypeError(f"must be a URL path starting with /, e.g. /metrics: {text!r}")
    return text


def _max_requests(text: str) -> int:
    from ceemsnet.common.flags import nonnegative_int
    return nonnegative_int(text, "0 (no limit) or more")


def _maxactive(text: str) -> int:
    from ceemsnet.common.flags import whole_number
    from ceemsnet.runtime.kprobes import MAXACTIVE_MAX
    v = whole_number(text)
    if not 0 <= v <= MAXACTIVE_MAX:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAXACTIVE_MAX} (the kernel's limit): {text!r}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ceemsnet", description=(
        "Per-cgroup (per-job) network and filesystem IO accounting with eBPF. "
        "Counts TCP/UDP bytes where each send/receive call returns, and charges them to the "
        "cgroup of the task that made the call."))
    p.add_argument("--version", action="version", version=f"ceemsnet {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

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
                        "exporter-toolkit format (README: Protecting the endpoint); re-read when it or the "
                        "files it names change")
    s.add_argument("--web.telemetry-path", dest="telemetry_path", type=_telemetry_path, default="/metrics",
                   metavar="PATH", help="where the metrics are served (default /metrics); / shows a page linking it")
    s.add_argument("--web.max-requests", dest="max_requests", type=_max_requests, default=40, metavar="N",
                   help="most scrapes served at once; more get 503 (default 40, 0 = no limit)")
    s.add_argument("--collectors", default=collectors.DEFAULT, metavar="LIST",
                   help=f"comma-separated collectors to run (default {collectors.DEFAULT}; available: "
                        + ", ".join(collectors.REGISTRY) + "; each has its flags below)")
    s.add_argument("--hook", default="auto", choices=HOOKS,
                   help="hook family: auto (default) picks the best one the kernel accepts, "
                        "fexit -> kretprobe -> tracepoint; naming one makes its refusal an error")
    s.add_argument("--cgroup.hierarchy", dest="hierarchy", default="auto", metavar="auto|v2|v1:CONTROLLER",
                   help="which cgroup the net and vfs collectors charge: v2 (the task's cgroup2 cgroup), "
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
    s.add_argument("--slurm.sacct", dest="sacct", default="sacct", metavar="PROGRAM|none",
                   help="--unit=slurm: sacct, asked (batched, cached) for the id SLURM shows for an array task "
                        "(123_2) or heterogeneous component (100+1), whose cgroup carries its own raw job id; "
                        "'none', or no sacct answering: the job label is the raw id")
    s.add_argument("--slurm.squeue", dest="squeue", default="squeue", metavar="PROGRAM|none",
                   help="--unit=slurm: squeue, asked before sacct for the same ids: slurmctld knows a running "
                        "job at once, while sacct knows it only once slurmdbd has its record; 'none': sacct only")
    s.add_argument("--cgroup.retention", dest="retention", type=duration_or_zero_arg, default=120.0,
                   metavar="DURATION",
                   help="how long the series of a removed cgroup stay exported with their last counts "
                        "(default 120s: a few scrape intervals); its map entries are freed at once")
    s.add_argument("--storage.path", dest="storage_path", default=DEFAULT_STORE, metavar="FILE",
                   help=f"SQLite accounting store for `ceemsnet report` (default {DEFAULT_STORE}; 'none' turns "
                        "it off)")
    s.add_argument("--storage.interval", dest="storage_interval", type=duration_arg, default=30.0,
                   metavar="DURATION", help="how often totals are written (default 30s); also written on "
                                            "SIGTERM. A crash loses at most one interval")
    s.add_argument("--bpf.pin-path", dest="pin_path", default=DEFAULT_PIN_PATH, metavar="DIR|none",
                   help=f"keep the BPF maps and links in this bpffs directory (default {DEFAULT_PIN_PATH}; "
                        "bpffs is mounted on /sys/fs/bpf if it is not), so counting goes on while the exporter "
                        "is stopped, restarted or upgraded, and a new run continues the counters. SIGTERM then "
                        "leaves the programs counting; `ceemsnet detach` removes them. 'none': the programs "
                        "stop with the exporter")
    s.add_argument("--kretprobe.maxactive", dest="maxactive", type=_maxactive, default=1024, metavar="N",
                   help="kretprobe family: how many calls of one function may be in flight before returns "
                        "are missed (ceemsnet_kretprobe_missed_total counts them); size it above the most "
                        "threads a node has blocked in recv() at once; 1-4096, 0 = kernel default "
                        "(max(10, 2 x CPUs)); default 1024")
    s.add_argument("--capabilities.keep", dest="keep_caps", default=None, choices=("none", "all"),
                   help="once the programs are attached, the pins made and the socket bound: none (default) "
                        "drops every capability in every thread and sets no_new_privs, so a compromised HTTP "
                        "handler holds none; all keeps them. --skb.mode=per-cgroup attaches to new cgroups "
                        "while running, so it keeps them by default and refuses none")
    s.add_argument("--log.level", dest="log_level", default="info", choices=LOG_LEVELS,
                   help="log verbosity (default info)")
    collectors.add_flags(s)

    r = sub.add_parser("report", help="per-job, per-cgroup or per-user totals, from the local store or Prometheus",
                       description="Totals grouped by SLURM job, cgroup, user or account, with SLURM's facts per "
                                   "job from sacct where it answers (user, account, partition, state, ...). "
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
    r.add_argument("--prometheus.lookback", dest="prom_lookback", type=duration_arg, default=3600.0,
                   metavar="DURATION", help="how far before --since to look for a series' starting value "
                                            "(default 1h; must exceed the scrape interval)")
    r.add_argument("--prometheus.chunk", dest="prom_chunk", type=duration_arg, default=6 * 3600.0, metavar="DURATION",
                   help="ask for the range in pieces this long (default 6h), so no query loads more samples "
                        "than the server's --query.max-samples; smaller for very large clusters")
    r.add_argument("--prometheus.timeout", dest="prom_timeout", type=duration_arg, default=60.0, metavar="DURATION",
                   help="per query (default 60s)")
    r.add_argument("--prometheus.bearer-token-file", dest="prom_token", metavar="FILE",
                   help="send the token in this file as Authorization: Bearer")
    r.add_argument("--prometheus.ca-file", dest="prom_ca", metavar="FILE",
                   help="CA certificates to verify an https:// server with (default: the system's)")
    r.add_argument("--by", default="job", choices=("job", "cgroup", "user", "account"),
                   help="grouping (default job); user and account are sacct's (without sacct, user falls back "
                        "to the uid in SLURM cgroup v1 paths)")
    r.add_argument("--job", help="only this job: its cgroups' id, or as SLURM shows it (123_2, 100+1) "
                                 "(error if there is no such job)")
    r.add_argument("--slurm.sacct", dest="sacct", default="sacct", metavar="PROGRAM|none",
                   help="join SLURM's facts per job (user, account, partition, job_name, state, start, end, "
                        "elapsed, nodes) from `sacct -P`, batched; 'none': do not ask. Without an answer the "
                        "report still works, and says on stderr what is missing")
    r.add_argument("--slurm.sacct-cache", dest="sacct_cache", default=DEFAULT_SACCT_CACHE, metavar="FILE|none",
                   help=f"finished jobs' sacct facts, kept between reports (default {DEFAULT_SACCT_CACHE}; "
                        "skipped where it cannot be written; running jobs are always asked again)")
    r.add_argument("--since", help="start: ISO date or time, or an age such as 24h, 7d (default: everything in "
                                   "the store; 24h with --prometheus)")
    r.add_argument("--until", help="end: ISO date or time, or an age (default: now)")
    r.add_argument("--format", default="table", choices=("table", "csv", "json"), help="output (default table)")
    r.add_argument("--log.level", dest="log_level", default="warning",
                   choices=("debug", "info", "warning", "error"), help=argparse.SUPPRESS)

    d = sub.add_parser("detach", help="stop counting: remove every pinned BPF map and link (for uninstall)",
                       description="Remove what `serve` pinned under --bpf.pin-path: its programs stop counting "
                                   "and its maps are freed once no exporter holds them. Succeeds when there is "
                                   "nothing to remove. Stop the exporter first (else it keeps its programs until "
                                   "it exits). Needs root.")
    d.add_argument("--bpf.pin-path", dest="pin_path", default=DEFAULT_PIN_PATH, metavar="DIR",
                   help=f"the pin directory (default {DEFAULT_PIN_PATH})")
    d.add_argument("--log.level", dest="log_level", default="warning", choices=LOG_LEVELS, help=argparse.SUPPRESS)

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
    pr.add_argument("--hook", default="auto", choices=HOOKS,
                    help="probe only this hook family")
    pr.add_argument("--cgroup.hierarchy", dest="hierarchy", default="auto", metavar="auto|v2|v1:CONTROLLER",
                    help="the attribution to plan for (see serve --help)")
    pr.add_argument("--kretprobe.maxactive", dest="maxactive", type=_maxactive, default=1024, metavar="N",
                    help="as serve's (default 1024): with a maxactive, return probes cannot be pinned")
    pr.add_argument("--log.level", dest="log_level", default="warning",
                    choices=("debug", "info", "warning", "error"), help="log verbosity (default warning)")
    return p


def _require_root(what: str, args=None) -> None:
    """Capabilities, not uid 0: a one-line error naming the first one missing (ceemsnet/serving/caps.py).
    serve needs what its collectors need; probe what net and vfs need; detach only access to the
    root-owned pin directory."""
    from ceemsnet.serving import caps
    if args is None:  # detach: the pins are root's alone (0700)
        if os.geteuid() != 0:
            raise CeemsnetError(f"{what}: needs root (the pin directory is root's alone)")
        return
    if getattr(args, "command", "") == "serve":
        names = collectors.parse(args.collectors)
        caps.check(what, names, getattr(args, "skb_mode", "root"))
        args.keep_caps = caps.resolve_keep(args.keep_caps, names, getattr(args, "skb_mode", "root"))
    else:
        caps.check(what, ("net", "vfs"))


def _running_kernel():
    from ceemsnet.planning.choice import check_supported
    from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version, running_release
    release = platform.release()
    kver = parse_kernel_version(running_release())
    check_supported(kver)
    return release, kver, normalize_arch(platform.machine())


def build_context(args):
    """The running kernel, its BTF and the attribution every subsystem opens with."""
    from packaging.version import Version
    from ceemsnet.attribution.cgroups import CgroupResolver, host_hierarchy
    from ceemsnet.collectors.base import Context
    from ceemsnet.runtime.btf import KernelBTF
    from ceemsnet.pinned.pins import PinDir
    from ceemsnet.attribution.workloads import PARSERS, folder, resolve_kind, resolve_level
    release, kver, arch = _running_kernel()
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


def cmd_serve(args) -> int:
    from ceemsnet.serving.exporter import WebOptions, parse_listen_address, serve, trim_heap
    names = collectors.parse(args.collectors)
    collectors.check(args)
    parse_listen_address(args.listen)  # bad flags fail before anything is loaded
    if args.unit != "auto":  # with auto, the level is checked once the unit is known (build_context)
        from ceemsnet.attribution.workloads import resolve_level
        resolve_level(args.aggregate, args.unit)
    if args.web_config_file:  # so does a bad web config
        from ceemsnet.serving.webconfig import load
        load(args.web_config_file, warn=False)  # serve loads it again, and warns then
    web = WebOptions(args.web_config_file, args.telemetry_path, args.max_requests)
    _require_root("ceemsnet serve", args)
    ctx = build_context(args)
    # before any hook counts: every cgroup made from now on gets its path at once, so a job
    # shorter than the scrape interval is not counted as unknown:<id> (ceemsnet/attribution/cgwatch.py)
    ctx.resolver.watch()
    with contextlib.ExitStack() as stack:  # closes (detaches) every subsystem opened, also on errors
        subs = collectors.open_all(names, ctx, stack)
        ctx.btf.close()  # the kernel's BTF (6 MiB parsed) served the object choice; the exporter needs it no more
        trim_heap()  # and the heap it leaves free goes back (ceemsnet/serving/exporter.py)
        serve(subs, ctx, args.listen, args.storage_path, args.storage_interval, web)
    return 0


def probe_report(args) -> dict:
    from ceemsnet.planning.choice import check_supported, family_order, plan_family
    from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version
    from ceemsnet.planning.catalogue import SUBSYSTEMS

    if args.kernel is None:
        if args.arch:
            raise CeemsnetError("--arch goes with --kernel (the running kernel's arch is known)")
        _require_root("ceemsnet probe (load-probing hook families)", args)
        from ceemsnet.runtime.btf import KernelBTF
        from ceemsnet.planning.select import select_and_load
        release, kver, arch = _running_kernel()
        btf = KernelBTF()
        from ceemsnet.attribution.cgroups import host_hierarchy
        hier = host_hierarchy(args.hierarchy, btf)
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
                "layout": plan.obj.layout if plan else "",
                "refused": sel.refusals,
                "notes": plan.notes if plan else [],
                "continuity": _continuity(plan.family if plan else "none", kver, args.maxactive),
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
                                     "object": chosen.obj.file if chosen else "",
                                     "layout": _layout_by_rules(chosen.obj) if chosen else "",
                                     "refused": refused,
                                     "notes": chosen.notes if chosen else [],
                                     "continuity": _continuity(chosen.family if chosen else "none", kver,
                                                               args.maxactive)}
        rows = chosen.hooks if chosen else plan.hooks
        report["hooks"] += [h.as_dict() for h in rows]
    return report


def _layout_by_rules(obj) -> str:
    from ceemsnet.planning.catalogue import slots_twin
    twin = slots_twin(obj)
    return f"slots where the node accepts {twin.file}, else hash" if twin else obj.layout


def _continuity(family: str, kver, maxactive: int) -> dict | None:
    if family == "none":
        return None
    from ceemsnet.pinned.continuity import continuity
    ok, why = continuity(family, kver, maxactive)
    return {"pinned": ok, "reason": why}


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
        if info.get("layout"):
            lines.append(f"  counter layout: {info['layout']}")
        for fam, why in info["refused"].items():
            lines.append(f"  {fam} not used: {why}")
        for note in info["notes"]:
            lines.append(f"  note: {note}")
        if info.get("continuity"):
            c = info["continuity"]
            lines.append(f"  continuity across exporter restarts: {'yes' if c['pinned'] else 'no'}: {c['reason']}")
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
    from ceemsnet.report import run
    return run(args)


def cmd_detach(args) -> int:
    from ceemsnet.pinned.pins import remove_all
    _require_root("ceemsnet detach")
    n = remove_all(args.pin_path)
    print(f"ceemsnet detach: {'removed ' + str(n) + ' pinned object(s)' if n else 'nothing pinned'} "
          f"under {args.pin_path}")
    return 0


def cmd_compare(args) -> int:
    from ceemsnet.commands.compare import compare_rows, fetch_metrics, format_compare
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
        return {"serve": cmd_serve, "probe": cmd_probe, "compare": cmd_compare, "report": cmd_report,
                "detach": cmd_detach}[args.command](args)
    except CeemsnetError as e:
        print(f"ceemsnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ceemsnet probe | head`
        sys.stderr.close()
        return 0
    except OSError as e:  # a system call the kernel refused (bpffs, pins, maps): one line, the detail in debug
        log.debug("failed", exc_info=True)
        print(f"ceemsnet: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
              + " (--log.level=debug shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
