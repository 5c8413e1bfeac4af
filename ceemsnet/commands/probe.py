"""`ceemsnet probe`: which BPF object and hook each kernel function gets, and why.

For the running kernel it checks prototypes against the kernel's BTF and
load-probes the hook families (needs root); with --kernel it answers for
another kernel from version and arch rules only.
"""

from __future__ import annotations

import argparse
import json
import platform

from ceemsnet import CeemsnetError
from ceemsnet.attribution.cgroups import host_hierarchy
from ceemsnet.commands.shared import add_hierarchy, add_hook, add_json, add_log_level, add_maxactive, running_kernel
from ceemsnet.collectors.rdma_counters import QpCounters, cgroup_of_pid
from ceemsnet.pinned import continuity
from ceemsnet.planning.catalogue import NOT_COUNTED, SUBSYSTEM_MODULES, SUBSYSTEMS, slots_twin
from ceemsnet.planning.choice import check_supported, family_order, plan_family
from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version
from ceemsnet.planning.preemption import detect as detect_preemption
from ceemsnet.planning.select import select_and_load
from ceemsnet.runtime.btf import KernelBTF, ModuleBTF
from ceemsnet.serving import caps


def add_parser(sub) -> argparse.ArgumentParser:
    pr = sub.add_parser("probe", help="show which BPF object and hook each kernel function gets, and why",
                        description="Without options: plan for the running kernel, check every hooked "
                                    "function's prototype against its BTF and load-probe the hook "
                                    "families (needs root). With --kernel: answer for another kernel "
                                    "from version and arch rules only (no BTF, no loading).")
    add_json(pr)
    pr.add_argument("--kernel", metavar="VERSION",
                    help="answer for this kernel release (e.g. 5.14.0-427.el9.x86_64) instead of this one")
    pr.add_argument("--arch", metavar="ARCH", help="with --kernel: x86_64 or aarch64 (default: this machine's)")
    add_hook(pr, "probe only this hook family")
    add_hierarchy(pr, "the attribution to plan for (see serve --help)")
    add_maxactive(pr, "as serve's (default 1024): with a maxactive, return probes cannot be pinned")
    add_log_level(pr, shown=True)
    return pr


def probe_report(args) -> dict:
    if args.kernel is None:
        if args.arch:
            raise CeemsnetError("--arch goes with --kernel (the running kernel's arch is known)")
        # capabilities, not uid 0: a one-line error naming the first one net and vfs need that is missing
        caps.check("ceemsnet probe (load-probing hook families)", ("net", "vfs"))
        release, kver, arch = running_kernel()
        btf = KernelBTF()
        hier = host_hierarchy(args.hierarchy, btf)
        preemption = detect_preemption()
        report = {"kernel": release, "version": str(kver), "arch": arch, "btf_checked": True,
                  "cgroup_hierarchy": {"version": hier.version, "controller": hier.controller,
                                       "root": hier.root, "reason": hier.reason},
                  "preemption": {"mode": preemption.mode, "source": preemption.source},
                  "subsystems": {}, "hooks": []}
        for sub in SUBSYSTEMS:
            # module functions (rdma) are checked against their modules' BTF; a module not loaded: absent
            sigs = ModuleBTF(btf, SUBSYSTEM_MODULES[sub]) if sub in SUBSYSTEM_MODULES else btf
            try:
                sel = select_and_load(sub, kver, arch, sigs, forced=args.hook, keep=False,
                                      settings={"cgrp_v1_subsys": hier.subsys_index}, preemption=preemption)
            except CeemsnetError as e:  # --hook=F forced, and F cannot serve this subsystem: say so, go on
                report["subsystems"][sub] = {"family": "none", "object": "", "layout": "", "refused": {args.hook: str(e)},
                                             "notes": [], "not_counted": NOT_COUNTED.get(sub, ""), "continuity": None}
                # its rows all the same: each function skipped, with its own reason where the plan has one
                rows = plan_family(sub, args.hook, kver, arch, sigs).hooks
                report["hooks"] += [dict(h.as_dict(), hook="none", status="skipped",
                                         reason=h.reason if h.status != "ok" else str(e)) for h in rows]
                continue
            plan = sel.plan
            # nothing loaded: the rows of the best family that had an object for this kernel (its
            # per-function reasons: a module not loaded, a prototype), else the last family's
            rows = plan.hooks if plan else next((p.hooks for p in sel.plans if p.obj is not None),
                                                sel.plans[-1].hooks if sel.plans else [])
            report["subsystems"][sub] = {
                "family": plan.family if plan else "none",
                "object": plan.obj.file if plan else "",
                "layout": plan.obj.layout if plan else "",
                "refused": sel.refusals,
                "notes": plan.notes if plan else [],
                "not_counted": NOT_COUNTED.get(sub, ""),
                "continuity": _continuity(plan.family if plan else "none", kver, args.maxactive),
            }
            report["hooks"] += [h.as_dict() for h in rows]
        if "rdma" in report["subsystems"]:
            report["subsystems"]["rdma"]["hw_counters"] = _hw_counters(hier)
        return report
    kver = parse_kernel_version(args.kernel)
    check_supported(kver)
    arch = normalize_arch(args.arch or platform.machine())
    report = {"kernel": args.kernel, "version": str(kver), "arch": arch, "btf_checked": False,
              "note": "answered from version and arch rules only: BTF not checked and nothing loaded; "
                      "the node itself may refuse a family and fall back to the next, and a node whose "
                      "kernel preempts in kernel code (full, lazy or RT preemption) tries fexit (and from "
                      "7.0 tracepoint) last",
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
                                     "not_counted": NOT_COUNTED.get(sub, ""),
                                     "continuity": _continuity(chosen.family if chosen else "none", kver,
                                                               args.maxactive)}
        rows = chosen.hooks if chosen else plan.hooks
        report["hooks"] += [h.as_dict() for h in rows]
    return report


def _hw_counters(hier) -> list[dict]:
    """Each RDMA device's per-QP hardware byte counters, as the rdma collector would find them
    (collectors/rdma_counters.py); [] without RDMA devices or netlink."""
    q = QpCounters(lambda pid: cgroup_of_pid(pid, hier.version, hier.controller))
    try:
        return [{"device": d, "ok": ok, "reason": r} for d, ok, r in q.binding_status()]
    finally:
        q.close()


def _layout_by_rules(obj) -> str:
    twin = slots_twin(obj)
    return f"slots where the node accepts {twin.file}, else hash" if twin else obj.layout


def _continuity(family: str, kver, maxactive: int) -> dict | None:
    if family == "none":
        return None
    ok, why = continuity.continuity(family, kver, maxactive)
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
    if report.get("preemption"):
        pre = report["preemption"]
        lines.append(f"preemption: {pre['mode']} ({pre['source']})")
    for sub, info in report["subsystems"].items():
        lines.append(f"{sub}: {info['family']} family" + (f", object {info['object']}" if info["object"] else ""))
        if info.get("layout"):
            lines.append(f"  counter layout: {info['layout']}")
        for fam, why in info["refused"].items():
            lines.append(f"  {fam} not used: {why}")
        for note in info["notes"]:
            lines.append(f"  note: {note}")
        if info.get("not_counted"):
            lines.append(f"  not counted by any hook: {info['not_counted']}")
        if info.get("continuity"):
            c = info["continuity"]
            lines.append(f"  continuity across exporter restarts: {'yes' if c['pinned'] else 'no'}: {c['reason']}")
        for hw in info.get("hw_counters", ()):
            lines.append(f"  {hw['device']}: {hw['reason']}")
    rows = [("FUNCTION", "HOOK", "OBJECT", "STATUS", "REASON")]
    rows += [(h["function"], h["hook"], h["object"] or "-", h["status"], h["reason"]) for h in report["hooks"]]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines.append("")
    for r in rows:
        lines.append("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4])
    return "\n".join(lines)


def run(args) -> int:
    report = probe_report(args)
    print(json.dumps(report, indent=2) if args.json else format_probe(report))
    return 0 if any(h["status"] == "ok" for h in report["hooks"]) else 1
