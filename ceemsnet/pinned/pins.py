"""Pinned state: BPF maps and links that outlive the exporter.

With pins on (`serve --bpf.pin-path`, default /sys/fs/bpf/ceemsnet), each
subsystem keeps its maps and links in bpffs:

    <pin path>/<subsystem>/<object>__<identity>__g<generation>/map__<map name>
                                                                link__<link name>
                                                                prog__<program name>
(the programs pinned too, from 0.2, so an adopting exporter without
CAP_SYS_ADMIN can read their recursion_misses; tmp__<map name> only while
a map's layout is converted, see Collection.replace_map)

(bpffs refuses names with a dot, so the object's name there is its file
name without `.bpf.o`, dots written as underscores: net-fexit-5_19-x86.)

The object directory names what was loaded: the object file and an
identity (a hash of its bytes and its load-time settings), so a restart
can tell whether the pinned programs are the ones it would load (adopt
them: they never stopped counting) or not (upgrade, ceemsnet/pinned/continuity.py);
and the generation of its counters (the kernel id of the counters map
that started them), which an upgrade that carries the counts over keeps,
so the accounting store knows the counts continue. bpffs holds only BPF
objects and directories, so the layout itself is the record. The directory is root's alone (0700); one that holds anything
else is refused, never deleted.
"""

from __future__ import annotations

import logging
import os
import re
import stat

from ceemsnet import CeemsnetError
from ceemsnet.common.digest import sha256
from ceemsnet.runtime.bpffs import BPF_FS_MAGIC, ENTRY, mount_bpffs, remove_object_dir, statfs_magic

log = logging.getLogger("ceemsnet.pinned.pins")

DEFAULT_PIN_PATH = "/sys/fs/bpf/ceemsnet"
SUBSYSTEM_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
OBJECT_DIR = re.compile(r"^(?P<stem>[A-Za-z0-9-]+(?:_[A-Za-z0-9-]+)*)__(?P<ident>[0-9a-f]{16})__g(?P<gen>[0-9]+)"
                        r"(?P<partial>__partial)?$")
PARTIAL = "__partial"  # an object directory being pinned (pinned/sequence.py): see settle_partial


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return "unknown-boot"


def identity(obj_path: str, settings: dict[str, int]) -> str:
    """What a loaded object is: its bytes and the settings written into it."""
    h = sha256()
    with open(obj_path, "rb") as f:
        h.update(f.read())
    for k in sorted(settings):
        h.update(f"\0{k}={settings[k]}".encode())
    return h.hexdigest()[:16]


class PinDir:
    """The pin directory: made root-only on bpffs, refused if it is not ours."""

    def __init__(self, path: str, create: bool = True):
        self.path = os.path.abspath(path)
        if create:
            self._prepare()
        elif os.path.isdir(self.path):
            self.check()

    def _prepare(self) -> None:
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise CeemsnetError(f"--bpf.pin-path {self.path}: {parent} does not exist")
        if statfs_magic(parent) != BPF_FS_MAGIC:
            if parent != "/sys/fs/bpf":
                raise CeemsnetError(f"--bpf.pin-path {self.path}: {parent} is not a bpf file system "
                                    "(mount -t bpf bpf <dir>, or use a directory below /sys/fs/bpf)")
            mount_bpffs(parent)
        try:
            os.mkdir(self.path, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise CeemsnetError(f"cannot create pin directory {self.path}: {e.strerror}") from None
        self.check()

    def check(self) -> None:
        """Refuse a directory that is not ours: wrong owner or mode, or foreign entries."""
        st = os.lstat(self.path)
        if not stat.S_ISDIR(st.st_mode):
            raise CeemsnetError(f"pin path {self.path} is not a directory")
        if st.st_uid != 0 or st.st_mode & 0o077:
            raise CeemsnetError(f"pin directory {self.path} is not root's alone (owner uid {st.st_uid}, mode "
                                f"{stat.S_IMODE(st.st_mode):o}): refusing it; remove it or choose --bpf.pin-path")
        for sub in os.listdir(self.path):
            subdir = os.path.join(self.path, sub)
            if not SUBSYSTEM_NAME.match(sub) or not os.path.isdir(subdir):
                raise CeemsnetError(f"pin directory {self.path} holds {sub!r}, which ceemsnet did not make: "
                                    "refusing it (nothing was changed); choose another --bpf.pin-path")
            for od in os.listdir(subdir):
                odir = os.path.join(subdir, od)
                if not OBJECT_DIR.match(od) or not os.path.isdir(odir) \
                        or not all(ENTRY.match(e) for e in os.listdir(odir)):
                    raise CeemsnetError(f"pin directory {self.path} holds {sub}/{od}, which ceemsnet did not "
                                        "make: refusing it (nothing was changed)")

    def pinned(self, subsystem: str) -> list[str]:
        """Object directories pinned for a subsystem (normally at most one), once an
        interrupted pinning is settled (settle_partial)."""
        d = os.path.join(self.path, subsystem)
        if not os.path.isdir(d):
            return []
        settle_partial(d)
        return sorted(os.path.join(d, e) for e in os.listdir(d))

    def object_dir(self, subsystem: str, stem: str, ident: str, generation: int) -> str:
        d = os.path.join(self.path, subsystem)
        os.makedirs(d, mode=0o700, exist_ok=True)
        return os.path.join(d, f"{stem.replace('.', '_')}__{ident}__g{generation}")


def settle_partial(subsystem_dir: str) -> None:
    """Finish or undo what a crash left of pinning a new object (pinned/sequence.py pins it
    as <name>__partial: maps first, then links; then unpins the old object directories, then
    renames it to <name>). Its maps hold the old counts (carried over before pinning), so
    it either replaces the old directories or goes, never both:
      - a link pinned in it: every map was pinned before it, and its programs have been
        counting since: it replaces the others (they are unpinned), renamed to <name>;
      - no link: its programs died with the crashed exporter; its maps hold only copies
        of the old counts: it is unpinned, the old directories stay."""
    names = sorted(os.listdir(subsystem_dir))
    for e in [n for n in names if n.endswith(PARTIAL)]:
        part = os.path.join(subsystem_dir, e)
        if any(x.startswith("link__") for x in os.listdir(part)):
            for other in names:
                if other != e and not other.endswith(PARTIAL):
                    remove_object_dir(os.path.join(subsystem_dir, other))
            os.rename(part, part.removesuffix(PARTIAL))
            log.warning("%s: finished an upgrade a crash had interrupted: %s replaces the pins before it",
                        os.path.basename(subsystem_dir), e.removesuffix(PARTIAL))
        else:
            remove_object_dir(part)
            log.warning("%s: removed %s, left half pinned by a crash; the pins before it stay",
                        os.path.basename(subsystem_dir), e)


def parse_object_dir(path: str) -> tuple[str, str, int]:
    """(object file name without .bpf.o, identity, generation) of an object directory."""
    m = OBJECT_DIR.match(os.path.basename(path))
    if not m:
        raise CeemsnetError(f"{path} is not a ceemsnet object pin directory")
    return m.group("stem").replace("_", "."), m.group("ident"), int(m.group("gen"))


def remove_all(path: str) -> int:
    """`ceemsnet detach`: unpin every object directory below a pin directory; returns how many."""
    if not os.path.isdir(path):
        return 0
    pins = PinDir(path, create=False)
    n = 0
    for sub in sorted(os.listdir(pins.path)):
        for od in pins.pinned(sub):
            remove_object_dir(od)
            n += 1
        os.rmdir(os.path.join(pins.path, sub))
    os.rmdir(pins.path)
    return n
