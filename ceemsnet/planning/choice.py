"""Which BPF object and hook each kernel function gets: pure functions.

Given a kernel version, an arch, a hook family and (optionally) the kernel's
BTF prototypes, plan_family() picks one object of that family and says, for
every function, whether it will be hooked and why. Nothing here touches the
kernel: select_and_load (ceemsnet/planning/select.py) tries the families in
order and keeps the first one the kernel accepts (a load probe).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from packaging.version import Version

from ceemsnet import CeemsnetError
from ceemsnet.planning.catalogue import (FAMILIES, INLINED_AT, MIN_REASON, SUBSYSTEMS, SUPPORTED_MIN, Alternative,
                                         BpfObject, Hook, family_rule, objects_for)
from ceemsnet.planning.kernel import compare_signature
from ceemsnet.planning.preemption import Preemption
from ceemsnet.runtime.btf import Signature


# Why a function of the plan is not hooked, as a short stable token (HookChoice.cause; the reason
# label of ceemsnet_hook_skipped, docs/metrics.md); HookChoice.reason says it in full.
SKIP_CAUSES = {
    "absent": "the function, or the tracepoint or module that would serve it, is not in this kernel",
    "not_served": "the family's object does not serve it (a known gap of that object; ceemsnet probe says which)",
    "mismatch": "its prototype in this kernel's BTF is not the one the object reads",
    "attach_failed": "the kernel refused to attach its program",
    "unused": "given up: nothing else of its family attached",
    "refused": "the family cannot serve this kernel at all",
}
# the causes that mean the plan wanted the hook on this kernel and did not get it (alerted on)
WANTED_CAUSES = ("mismatch", "attach_failed")


class Signatures(Protocol):
    def function(self, name: str) -> Signature | None: ...
    def tracepoint(self, name: str) -> Signature | None: ...


@dataclass
class HookChoice:
    subsystem: str
    function: str
    hook: str      # fexit | kretprobe | tracepoint | none
    object: str    # file name in bpf/objs, "" when none
    status: str    # ok | skipped
    reason: str
    programs: tuple[str, ...] = ()
    # Hook.rides, or served by alternatives (io_uring): trace events that every family's object holds,
    # attached wherever the object loads, but not a reason to use a family
    anywhere: bool = False
    cause: str = ""  # skipped: a key of SKIP_CAUSES

    def as_dict(self) -> dict:
        return {"subsystem": self.subsystem, "function": self.function, "hook": self.hook,
                "object": self.object, "status": self.status, "reason": self.reason}


@dataclass
class FamilyPlan:
    subsystem: str
    family: str
    obj: BpfObject | None
    hooks: list[HookChoice] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    refused: str = ""   # non-empty: the family cannot serve this kernel at all

    @property
    def usable(self) -> bool:
        """Something is planned ok that the family serves itself (not only the hooks any family's
        object holds: those alone would make a family that attaches nothing else look fine)."""
        return not self.refused and any(h.status == "ok" and not h.anywhere for h in self.hooks)

    def programs(self) -> list[str]:
        """Programs to autoload: those of every hook planned ok, each once."""
        out: list[str] = []
        for h in self.hooks:
            if h.status == "ok":
                out += [p for p in h.programs if p not in out]
        return out

    def skip(self, programs: set[str], reason: str, cause: str = "attach_failed") -> None:
        """Mark the hooks served by `programs` skipped (e.g. attach failed)."""
        for h in self.hooks:
            if h.status == "ok" and programs.intersection(h.programs):
                h.status, h.hook, h.reason, h.cause = "skipped", "none", reason, cause
        if not any(h.status == "ok" and not h.anywhere for h in self.hooks):
            # nothing of the family's own is left: its object would count only what any family's
            # does; give those up too, so that the loader releases them and refuses the family
            for h in self.hooks:
                if h.status == "ok":
                    h.status, h.hook, h.cause = "skipped", "none", "unused"
                    h.reason = f"not used: nothing else of the {self.family} family attached ({reason})"


def check_supported(kver: Version) -> None:
    if kver < SUPPORTED_MIN:
        raise CeemsnetError(f"kernel {kver} is not supported: {MIN_REASON}")


def family_order(arch: str, forced: str | None = None, subsystem: str = "net",
                 lossy: tuple[str, ...] = ()) -> list[str]:
    """Families to try, best first: fexit -> kretprobe -> tracepoint, except that the
    families whose programs can be preempted on this kernel (`lossy`, from
    ceemsnet/planning/preemption.py: they lose events there) go last, in the same order."""
    if forced and forced != "auto":
        if forced not in FAMILIES:
            raise CeemsnetError(f"unknown hook family {forced!r}: choose auto, {', '.join(FAMILIES)}")
        return [forced]
    order = [f for f in FAMILIES if f not in lossy] + [f for f in FAMILIES if f in lossy]
    if arch == "any":  # every family, so a report can say why one does not apply
        return order
    return [f for f in order if arch in family_rule(subsystem, f, arch).arches]


def lossy_note(lossy: tuple[str, ...], preemption: Preemption) -> str:
    """The note probe and the log give when families go last for preemption."""
    fams = " and ".join(lossy)
    return (f"{fams} tried last: this kernel runs with {preemption.describe()}, and a program of "
            f"{'these families' if len(lossy) > 1 else 'this family'} can be preempted; the kernel then "
            "skips it for every other task that reaches the hook on that CPU meanwhile (a per-CPU "
            "recursion guard, counted in the program's recursion_misses): events lost. Return probes "
            "run with preemption off and lose none")


def _choose_alternative(hook: Hook, sigs: Signatures | None, kver: Version) -> tuple[Alternative | None, str]:
    """The alternative a hook with alternatives is served by on this kernel, and why; (None, why not)."""
    if sigs is None:
        for alt in hook.alternatives:
            if any(lo <= kver and (hi is None or kver < hi) for lo, hi in alt.kernels):
                return alt, (f"{alt.label} prototype, planned by version rules; BTF not checked (not the "
                             f"running kernel): {alt.note}")
        return None, f"{hook.absent} (by version rules; BTF not checked)"
    misses = []
    for alt in hook.alternatives:
        why = None
        for event, expects, reads in alt.events:
            tp = sigs.tracepoint(event)
            why = f"tracepoint {event} is not in this kernel's BTF" if tp is None else \
                compare_signature(expects, tp, reads)
            if why:
                why = why if tp is None else f"tracepoint {event} {why}"
                break
        if why is None:
            return alt, f"{alt.label} prototype matches this kernel's BTF: {alt.note}"
        misses.append(f"not the {alt.label} prototype ({why})")
    return None, f"{hook.absent}: " + "; ".join(misses)


def _check_hook(hook: Hook, sigs: Signatures | None, kver: Version) -> tuple[bool, str, str]:
    """(planned ok?, reason, cause: a key of SKIP_CAUSES when not ok, else "") for one hook of one object."""
    if hook.alternatives:
        alt, why = _choose_alternative(hook, sigs, kver)
        if alt is not None:
            return True, why, ""
        # absent unless some alternative's every event is in BTF (then its prototype did not match)
        present = sigs is not None and any(all(sigs.tracepoint(e) is not None for e, _, _ in a.events)
                                           for a in hook.alternatives)
        return False, why, "mismatch" if present else "absent"
    fn = hook.function
    removed = f" (removed in {hook.removed_in})" if hook.removed_in else ""
    if sigs is None:
        if hook.removed_in and kver >= hook.removed_in:
            return False, f"{fn} does not exist in {hook.removed_in} and later kernels", "absent"
        if not hook.programs:
            return False, hook.not_served, "not_served"
        where = f"at tracepoint {hook.tracepoint}" if hook.tracepoint else "by version rules"
        return True, f"planned {where}; BTF not checked (not the running kernel)", ""
    actual = sigs.function(fn)
    if actual is None and hook.inlined_at:
        why = _inlined_mismatch(hook, sigs)
        if why is None:
            return True, (f"{fn} is not in this kernel's BTF (inlined): counted at the system calls "
                          f"{', '.join(hook.inlined_at)} instead (regular files, the file from the fd)"), ""
        cause = "absent" if any(sigs.function(f) is None for f in hook.inlined_at) else "mismatch"
        return False, f"{fn} is not in this kernel's BTF{removed}, and {why}; {hook.absent}", cause
    if actual is None and (hook.removed_in or not hook.tracepoint):
        return False, f"{fn} is not in this kernel's BTF{removed}: nothing to hook" + \
            (f"; {hook.absent}" if hook.absent else ""), "absent"
    if not hook.programs:
        return False, hook.not_served, "not_served"
    if hook.tracepoint:
        tp = sigs.tracepoint(hook.tracepoint)
        if tp is None:
            return False, f"tracepoint {hook.tracepoint} is not in this kernel's BTF", "absent"
        why = compare_signature(hook.expects, tp, hook.reads)
        if why:
            return False, f"tracepoint {hook.tracepoint} {why}", "mismatch"
        return True, hook.note or f"counted at tracepoint {hook.tracepoint}", ""
    why = compare_signature(hook.expects, actual, hook.reads)
    if why:
        return False, f"BTF signature mismatch: {fn} {why}", "mismatch"
    return True, f"BTF prototype matches: {actual.render(fn)}" + (f"; {hook.note}" if hook.note else ""), ""


def _inlined_mismatch(hook: Hook, sigs: Signatures) -> str | None:
    """None when every function of hook.inlined_at is in BTF with the prototype its programs read."""
    for f in hook.inlined_at:
        actual = sigs.function(f)
        if actual is None:
            return f"{f} is not either"
        why = compare_signature(INLINED_AT, actual, None)
        if why:
            return f"{f} {why}"
    return None


def _programs(hook: Hook, sigs: Signatures | None, kver: Version) -> tuple[str, ...]:
    """The programs a hook planned ok loads: the inlined_at ones where its function is not in BTF, the
    chosen alternative's for a hook with alternatives."""
    if hook.alternatives:
        alt, _ = _choose_alternative(hook, sigs, kver)
        return alt.programs if alt else ()
    if hook.inlined_at and sigs is not None and sigs.function(hook.function) is None:
        return hook.inlined_programs
    return hook.programs


def _score(obj: BpfObject, sigs: Signatures, kver: Version) -> int:
    return sum(1 for h in obj.hooks if h.programs and _check_hook(h, sigs, kver)[0])


def _version_era(objs: list[BpfObject], kver: Version) -> BpfObject:
    for o in objs:
        if o.since <= kver and (o.until is None or kver < o.until):
            return o
    return max(objs, key=lambda o: o.since) if kver >= max(o.since for o in objs) \
        else min(objs, key=lambda o: o.since)


def plan_family(subsystem: str, family: str, kver: Version, arch: str,
                sigs: Signatures | None) -> FamilyPlan:
    """Plan one hook family for one subsystem on one kernel."""
    rule = family_rule(subsystem, family, arch)
    plan = FamilyPlan(subsystem, family, None)

    def refuse(reason: str) -> FamilyPlan:
        plan.refused = reason
        plan.hooks = [HookChoice(subsystem, f, "none", "", "skipped", reason, cause="refused")
                      for f in SUBSYSTEMS[subsystem]]
        return plan

    if arch not in rule.arches:
        return refuse(f"{family} objects are not used on {arch}: {rule.why}")
    if kver < rule.since:
        return refuse(f"{family} needs kernel >= {rule.since} ({rule.why}); this is {kver}")
    objs = objects_for(subsystem, family, arch)
    if not objs:
        return refuse(f"no {family} object for {subsystem} on {arch}")
    chosen = _version_era(objs, kver)
    if sigs is not None and len(objs) > 1:
        # Version numbers lie on backport kernels (RHEL, this very 6.18 with
        # 7.1's recvmsg): let BTF pick the era when another object matches more.
        best = max(objs, key=lambda o: (_score(o, sigs, kver), o is chosen))
        if best is not chosen and _score(best, sigs, kver) > _score(chosen, sigs, kver):
            plan.notes.append(
                f"kernel {kver} is in the era of {chosen.file}, but its BTF matches {best.file} "
                f"(a backported signature change): using {best.file}")
            chosen = best
    planned = plan_object(chosen, kver, sigs)
    planned.notes = plan.notes + planned.notes
    return planned


def plan_object(obj: BpfObject, kver: Version, sigs: Signatures | None) -> FamilyPlan:
    """Plan one given object: each hook ok only if this kernel's prototype fits it."""
    plan = FamilyPlan(obj.subsystem, obj.family, obj)
    for hook in obj.hooks:
        ok, reason, cause = _check_hook(hook, sigs, kver)
        anywhere = hook.rides or bool(hook.alternatives)
        plan.hooks.append(HookChoice(obj.subsystem, hook.function, obj.family if ok else "none",
                                     obj.file, "ok" if ok else "skipped", reason,
                                     _programs(hook, sigs, kver) if ok else (), anywhere, cause))
    if not plan.usable:
        plan.refused = f"no function of {obj.subsystem} can be hooked with {obj.file}"
    return plan
