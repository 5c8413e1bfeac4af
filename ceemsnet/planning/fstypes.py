"""File system magic numbers -> a bounded `fstype` label, and which count.

The magic comes from the super block (include/uapi/linux/magic.h and the
file systems' own headers). Unknown magics become "other", so the label
stays bounded whatever a node mounts. By default pseudo file systems are
left out: their bytes are not storage IO (procfs, sysfs, cgroupfs, ...).
Pipes, sockets and device nodes never reach the counters (the BPF side
counts regular files only).
"""

from __future__ import annotations

from ceemsnet import CeemsnetError

MAGIC = {
    0xEF53: "ext4",  # ext2, ext3 and ext4 share it
    0x58465342: "xfs",
    0x9123683E: "btrfs",
    0xF2F52010: "f2fs",
    0x2FC12FC1: "zfs",
    0x6969: "nfs",
    0x0BD00BD0: "lustre",
    0x47504653: "gpfs",
    0x19830326: "beegfs",
    0x00C36400: "cephfs",
    0xFF534D42: "cifs",
    0xFE534D42: "smb2",
    0x65735546: "fuse",
    0x01021994: "tmpfs",
    0x858458F6: "ramfs",
    0x958458F6: "hugetlbfs",
    0x794C7630: "overlay",
    0x73717368: "squashfs",
    0x01021997: "9p",
    0x4D44: "vfat",
    0x9660: "iso9660",
    0x5346544E: "ntfs",
    # pseudo file systems
    0x9FA0: "proc",
    0x62656572: "sysfs",
    0x27E0EB: "cgroup",
    0x63677270: "cgroup2",
    0x64626720: "debugfs",
    0x74726163: "tracefs",
    0x73636673: "securityfs",
    0xCAFE4A11: "bpf",
    0x62656570: "configfs",
    0xDE5E81E4: "efivarfs",
    0x6165676C: "pstore",
    0xF97CFF8C: "selinuxfs",
    0x42494E4D: "binfmt_misc",
    0x1CD1: "devpts",
    0x19800202: "mqueue",
    0x6E736673: "nsfs",
    0x50494446: "pidfs",
    0x534F434B: "sockfs",
    0x50495045: "pipefs",
    0x09041934: "anon_inode",
    0x0187: "autofs",
}
UNKNOWN = "unknown"  # magic 0: the tracepoint family's directory operations, failed opens
OTHER = "other"
PSEUDO = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "bpf",
                    "configfs", "efivarfs", "pstore", "selinuxfs", "binfmt_misc", "devpts", "mqueue", "nsfs",
                    "pidfs", "sockfs", "pipefs", "anon_inode", "autofs"})
ALL_NAMES = frozenset(MAGIC.values()) | {UNKNOWN, OTHER}


def fstype(magic: int) -> str:
    if magic == 0:
        return UNKNOWN
    return MAGIC.get(magic, OTHER)


def parse_fstypes(spec: str) -> frozenset[str]:
    """The fstype names to count, from --vfs.fstypes.

    "storage" (the default): everything but pseudo file systems;
    "all": everything; otherwise a comma list of names, where "storage" and
    "all" may start the list and "-name" removes one ("storage,-tmpfs").
    """
    parts = [p.strip() for p in (spec or "").split(",") if p.strip()]
    if not parts:
        raise CeemsnetError("--vfs.fstypes is empty: use storage, all, or a list such as ext4,xfs,nfs,lustre")
    chosen: set[str] = set()
    for p in parts:
        if p == "storage":
            chosen |= ALL_NAMES - PSEUDO
        elif p == "all":
            chosen |= ALL_NAMES
        elif p.startswith("-") and p[1:] in ALL_NAMES:
            chosen.discard(p[1:])
        elif p in ALL_NAMES:
            chosen.add(p)
        else:
            raise CeemsnetError(f"unknown file system type {p!r} in --vfs.fstypes; known: "
                                + ", ".join(sorted(ALL_NAMES)))
    return frozenset(chosen)
