"""Which object runs: plan each hook family best first and keep the first the
kernel accepts (fexit -> kretprobe -> tracepoint).

Loading and attaching the real programs is the feature probe, so a kernel
that refuses trampolines (EPERM at load) or has no kprobes (attach fails)
is found out by what it does, not by a config flag. Where the planned
object has a slot-layout twin (catalogue.slots_twin) that twin is tried
first. kretprobes that need a maxactive are attached through bcc
(runtime/kprobes.py).
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass, field

from packaging.version import Version

from ceemsnet import CeemsnetError
from ceemsnet.planning.catalogue import slots_twin
from ceemsnet.planning.choice import FamilyPlan, family_order, lossy_note, plan_family, plan_object
from ceemsnet.planning.preemption import Preemption, lossy_families
from ceemsnet.planning.preemption import detect as detect_preemption
from ceemsnet.planning.structs import SLOT_MAPS
from ceemsnet.runtime.collection import Collection, LoadRefused, ObjectSpec, explain_errno, load
from ceemsnet.runtime.kprobes import libbcc, missed, tracefs
from ceemsnet.runtime.links import Link
from ceemsnet.runtime.maps import BpfMap

log = logging.getLogger("ceemsnet.planning.select")


@dataclass
class LoadedObject:
    """A planned kernel-function object, loaded and attached (net, vfs)."""
    plan: FamilyPlan
    collection: Collection
    maxactive: int | None = None  # kretprobes: instances per function (None: kernel default)

    @property
    def maps(self) -> dict[str, BpfMap]:
        return self.collection.maps

    @property
    def links(self) -> list[Link]:
        return self.collection.links

    @property
    def file(self) -> str:
        return self.collection.file

    def kretprobe_missed(self) -> dict[str, int]:
        """{function: returns missed} of return probes attached with a maxactive."""
        return missed(self.links)

    def close(self) -> None:
        self.collection.close()


def load_object(plan: FamilyPlan, map_entries: dict[str, int] | None = None,
                settings: dict[str, int] | None = None, maxactive: int | None = None,
                reuse: dict[str, BpfMap] | None = None, before_attach=None) -> LoadedObject:
    """Load plan.obj with the planned programs and attach them.

    Programs whose attach fails are detached from the plan (their hooks turn
    "skipped" with the reason); only when nothing attaches is the family
    refused. maxactive: kretprobe programs are attached through bcc with
    this many instances per function (see ceemsnet/runtime/kprobes.py), else with
    libbpf's default. reuse: existing maps the object takes over where they
    fit; before_attach(loaded): called once the object is loaded, before any
    program is attached (an upgrade detaches the old programs there).
    """
    if plan.obj is None:
        raise LoadRefused(plan.refused or "nothing planned")
    coll = load(ObjectSpec(plan.obj, tuple(plan.programs()), dict(map_entries or {}), dict(settings or {}),
                           dict(reuse or {})))
    loaded = LoadedObject(plan, coll)
    try:
        if before_attach is not None:
            before_attach(loaded)
        bcc = None
        if maxactive and plan.family == "kretprobe":
            if tracefs() is None:  # no kprobe_events: no kprobes at all, or tracefs not mounted
                log.debug("no tracefs kprobe_events: kretprobes attach with the kernel's default maxactive")
            else:
                bcc = libbcc()
                if bcc is not None:
                    loaded.maxactive = maxactive
        failed: dict[str, str] = {}
        # entry probes first: a return probe without its entry would only miss
        for name in sorted(plan.programs(), key=lambda n: (n.startswith("kretprobe_"), n)):
            try:
                if bcc is not None and name.startswith("kretprobe_"):
                    coll.attach_kretprobe(name, name[len("kretprobe_"):], maxactive, bcc)
                else:
                    coll.attach(name)
            except OSError as e:
                failed[name] = _attach_error(e.errno, plan.family)
        for name, why in failed.items():
            plan.skip({name}, f"attach of {name} failed: {why}")
        # A hook is all its programs or none: a kprobe whose kretprobe
        # failed would only fill the stash. Release what is left unused.
        still = set(plan.programs())
        coll.detach([ln for ln in coll.links if ln.program not in still])
        # hooks that ride along (trace events in any family's object) do not make the family
        # usable: only a program of the family's own kind does
        riding = {p for h in plan.obj.hooks if h.rides for p in h.programs + h.alternative_programs}
        if not any(ln.program not in riding for ln in coll.links):
            raise LoadRefused(f"no program of {plan.obj.file} could attach"
                              + (" but those every family carries (trace events)" if coll.links else "") + ": "
                              + "; ".join(sorted(set(failed.values()))))
        return loaded
    except BaseException:
        loaded.close()
        raise


def _attach_error(err: int, family: str) -> str:
    if family == "kretprobe" and err in (errno.ENOENT, errno.EINVAL, errno.EOPNOTSUPP, 524):
        return f"{os.strerror(err)} (no kprobe support: CONFIG_KPROBES off, or the symbol is not traceable)"
    return explain_errno(err, family)


@dataclass
class Selection:
    """What select_and_load decided, for probe, the log and the info metric."""
    loaded: LoadedObject | None
    plans: list[FamilyPlan]                          # every family considered, in order
    refusals: dict[str, str] = field(default_factory=dict)  # family -> why not used

    @property
    def plan(self) -> FamilyPlan | None:
        return self.loaded.plan if self.loaded else None




def _load_slots_twin(plan: FamilyPlan, kver: Version, sigs, map_entries, settings, reuse, before_attach):
    """The slot-layout twin of the planned object (catalogue.slots_twin), loaded and
    attached, or None where there is none or the kernel refuses it: the load is the
    feature probe (its compare and swap needs BPF atomics), and the hash object of the
    same era then serves."""
    twin = slots_twin(plan.obj) if plan.obj is not None else None
    if twin is None:
        return None
    tplan = plan_object(twin, kver, sigs)
    if tplan.refused or tplan.programs() != plan.programs():
        return None
    owner, _, mask = SLOT_MAPS[twin.subsystem]
    slots = dict(map_entries or {}).get(owner, 1024)
    if slots == 0:
        plan.notes.append(f"counter layout: hash (--{twin.subsystem}.slots=0)")
        return None
    try:
        loaded = load_object(tplan, map_entries, settings={**(settings or {}), mask: slots - 1},
                             reuse=reuse, before_attach=before_attach)
    except LoadRefused as e:
        plan.notes.append(f"counter layout: hash ({twin.file} refused: {e})")
        return None
    tplan.notes = plan.notes + tplan.notes
    return loaded


def select_and_load(subsystem: str, kver: Version, arch: str, sigs, forced: str | None = None,
                    map_entries: dict[str, int] | None = None, keep: bool = True,
                    maxactive: int | None = None, settings: dict[str, int] | None = None,
                    reuse: dict[str, BpfMap] | None = None, before_attach=None,
                    preemption: Preemption | None = None) -> Selection:
    """Plan each family best first and keep the first the kernel accepts.

    forced: a family name; then only that one is tried and its refusal is
    an error (a forced hook never falls back silently). keep=False loads and
    attaches to find out, then detaches (ceemsnet probe). preemption: the
    running kernel's (read here when not given); fexit goes last where it
    preempts in kernel code.
    """
    sel = Selection(None, [])
    if preemption is None:
        preemption = detect_preemption()
    lossy = lossy_families(kver, preemption)
    order = family_order("any", forced, lossy=lossy)  # plan_family explains families that do not apply
    for family in order:
        plan = plan_family(subsystem, family, kver, arch, sigs)
        sel.plans.append(plan)
        if plan.refused:
            sel.refusals[family] = plan.refused
            continue
        loaded = _load_slots_twin(plan, kver, sigs, map_entries, settings, reuse, before_attach)
        try:
            if loaded is None:
                loaded = load_object(plan, map_entries, settings=settings, maxactive=maxactive, reuse=reuse,
                                     before_attach=before_attach)
        except LoadRefused as e:
            sel.refusals[family] = str(e)
            plan.refused = str(e)
            log.debug("%s: %s family refused: %s", subsystem, family, e)
            continue
        if not keep:
            loaded.close()
        notes = loaded.plan.notes  # the slots twin's plan where that was loaded
        if family in lossy:
            why = f"--hook={family}" if forced and forced != "auto" else \
                f"{family} (no family that keeps preemption off was accepted)"
            notes.append(f"{why} on a kernel with {preemption.describe()}: events are lost when a task "
                         "is preempted inside a program and another reaches the same hook on that CPU "
                         "(the programs' recursion_misses)")
            log.warning("%s: %s", subsystem, notes[-1])
        elif lossy:
            notes.append(lossy_note(lossy, preemption))
        sel.loaded = loaded
        break
    if sel.loaded is None and forced and forced != "auto":
        raise CeemsnetError(f"--hook={forced} cannot be used for {subsystem} on this kernel: "
                            f"{sel.refusals.get(forced, 'refused')}")
    return sel
