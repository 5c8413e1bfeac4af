"""The one sequence every subsystem (net, vfs, skb) opens its pinned state through.

    read      the object directories pinned for the subsystem (pinned/pins.py)
    decide    fresh, adopt or upgrade (continuity.decide)
    adopt     open the pinned collection: its programs never stopped counting
    upgrade   load a new object on the old maps where they fit; once it is loaded
              and before it attaches, the old programs go and their counts come
              over (continuity.Upgrade: swap, migrate, or swap in place); the old
              pins are dropped when it works, kept when it does not
    generation  kept by adopt and upgrade, new (the counters map's kernel id) when fresh
    pin       the new object's maps and links in its object directory; a kernel that
              cannot pin its links leaves it unpinned, with a warning

What is the subsystem's own (which object it would load, how it loads and
attaches, its layout's extra carry-over) it hands in as Steps. This module
knows nothing of net, vfs or skb.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ceemsnet import CeemsnetError
from ceemsnet.pinned.continuity import Carry, Pinned, Upgrade, Wanted, decide, generation_of
from ceemsnet.pinned.pins import PARTIAL, PinDir, identity
from ceemsnet.runtime.collection import Collection, ObjectSpec
from ceemsnet.runtime.links import PinUnsupported

log = logging.getLogger("ceemsnet.pinned.sequence")


class Opens(Protocol):
    """What a subsystem's adopt and load steps return: its object, holding the collection."""
    @property
    def collection(self) -> Collection: ...


T = TypeVar("T", bound=Opens)


class Steps(Protocol[T]):
    """What a subsystem hands the sequence."""
    subsystem: str              # its name: its directory below the pin path, the log's prefix
    settings: dict[str, int]    # the load-time settings that name an object (pins.identity)
    counters: str               # its counters map: a fresh generation is this map's kernel id
    carry: Carry | None         # its layout's own carry-over in an upgrade (net: the slot fold)

    def wanted(self, pinned: Pinned) -> Wanted | None:
        """What this run would load if it adopted `pinned` (Wanted.of); None: not that object."""

    def adopt(self, pinned: Pinned) -> T:
        """Open the pinned collection; called only once wanted(pinned) matched it."""

    def load(self, up: Upgrade) -> T:
        """Load a new object on up.reuse's maps, call up.before_attach(loaded) (or
        up.take_over(collection)) once loaded and before any program attaches, attach.
        What it loaded it closes itself if it fails."""


@dataclass
class Opened(Generic[T]):
    obj: T               # what the subsystem's adopt or load step returned
    how: str             # fresh, adopt, swap, migrate or swap in place
    generation: int      # the lifetime of its counters (the store uses it)


def open_subsystem(pins: PinDir | None, steps: Steps[T]) -> Opened[T]:
    """Open a subsystem through its pins (pins None: --bpf.pin-path=none, always fresh)."""
    pinned = [Pinned.read(p) for p in pins.pinned(steps.subsystem)] if pins else []
    try:
        return _open(pins, steps, pinned)
    except OSError as e:
        if not pinned:
            raise
        raise CeemsnetError(f"{steps.subsystem}: cannot take over the pinned {', '.join(p.path for p in pinned)}: "
                            f"{e.strerror or e} (`ceemsnet detach` removes them)") from None


def _open(pins: PinDir | None, steps: Steps[T], pinned: list[Pinned]) -> Opened[T]:
    name = steps.subsystem
    how = decide(pinned, steps.wanted(pinned[0]) if len(pinned) == 1 else None)
    if how == "adopt":
        obj = steps.adopt(pinned[0])
        log.info("%s: adopted the pinned %s: its programs never stopped counting", name, obj.collection.file)
        return Opened(obj, how, pinned[0].generation)
    up = Upgrade(adopt_old(pinned), steps.carry)
    try:
        obj = steps.load(up)
    except BaseException:
        up.abandon()
        raise
    coll = obj.collection
    olds = ", ".join(c.file for c in up.old)
    up.take_ledgers(coll)
    gen = generation_of(pinned, coll.maps[steps.counters].id)
    if pins:
        pin(pins, name, coll, identity(coll.spec.obj.path, steps.settings), gen, up)
    else:
        up.drop_old()
    if up.how:
        log.info("%s: replaced the pinned %s by %s (%s: %s)", name, olds, coll.file, up.how, Upgrade.HOW[up.how])
    return Opened(obj, up.how or "fresh", gen)


def adopt_old(pinned: list[Pinned]) -> list[Collection]:
    """The pinned collections an upgrade replaces, opened (their objects need not be catalogued)."""
    old: list[Collection] = []
    try:
        for p in pinned:
            old.append(Collection.adopt(ObjectSpec(None), p.path, label=f"{p.stem}.bpf.o"))
    except BaseException:
        for coll in old:
            coll.close()
        raise
    return old


def pin(pins: PinDir, name: str, coll: Collection, ident: str, generation: int, up: Upgrade) -> None:
    """Pin the new object and retire the old pins, so that a crash at any point leaves
    exactly one of them counting (pins.settle_partial finishes or undoes it at the next start):
      1. pin in <dir>__partial: maps first, then links (a pinned link means every map is);
      2. unpin the old object directories (their counts are in the new maps already);
      3. rename <dir>__partial to <dir>: the subsystem's pins are the new object's alone."""
    d = pins.object_dir(name, coll.file.removesuffix(".bpf.o"), ident, generation)
    try:
        coll.pin(d + PARTIAL)
    except PinUnsupported as e:
        up.drop_old()
        log.warning("%s: %s: no continuity for the %s family here; the programs stop with the exporter",
                    name, e, coll.spec.obj.family)
        return
    _crash_point("pinned-partial")
    up.drop_old()
    _crash_point("dropped-old")
    os.rename(d + PARTIAL, d)
    coll.pin_dir = d
    for ln in coll.links:
        if ln.pin_path:
            ln.pin_path = os.path.join(d, os.path.basename(ln.pin_path))
    log.info("%s: maps and links pinned in %s: counting goes on when the exporter stops", name, d)


def _crash_point(step: str) -> None:
    """Tests only (tests/kernel/test_crash_upgrade.py): SIGKILL ourselves here, as a crash would."""
    if os.environ.get("CEEMSNET_TEST_CRASH_AT") == step:
        os.kill(os.getpid(), signal.SIGKILL)
