"""The subsystems `ceemsnet serve --collectors` can run, by name.

Each is one module (see base.py for the interface): adding a subsystem is
one new module and one line here.
"""

from __future__ import annotations

from ceemsnet import CeemsnetError
from ceemsnet.collectors import net, rdma, skb, vfs

REGISTRY = {m.NAME: m for m in (net, vfs, skb, rdma)}
DEFAULT = "net"


def parse(text: str) -> list[str]:
    """--collectors=LIST -> names, in order, each once; unknown names are an error."""
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise CeemsnetError("--collectors is empty: name at least one of " + ", ".join(REGISTRY))
    for n in names:
        if n not in REGISTRY:
            raise CeemsnetError(f"unknown collector {n!r}; available: " + ", ".join(REGISTRY))
    return list(dict.fromkeys(names))


def add_flags(parser) -> None:
    """Each subsystem's own flags, in a group of its own on the serve parser."""
    for name, mod in REGISTRY.items():
        mod.add_flags(parser.add_argument_group(f"{name} collector", mod.HELP))


def check(args) -> None:
    """Every subsystem's flag checks, also of those not run: a bad flag is a mistake either way."""
    for mod in REGISTRY.values():
        mod.check(args)


def open_all(names: list[str], ctx, stack) -> list:
    """Open each named subsystem; each is closed by `stack` (a contextlib.ExitStack)."""
    subs = []
    for n in names:
        sub = REGISTRY[n].open(ctx)
        stack.callback(sub.close)
        subs.append(sub)
    return subs
