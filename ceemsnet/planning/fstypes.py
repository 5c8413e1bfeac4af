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
    # network and parallel file systems: all counted by default ("storage")
    0x6969: "nfs",  # NFS_SUPER_MAGIC: NFSv2, v3 and v4 (mount -t nfs or nfs4) alike
    0x0BD00BD0: "lustre",  # LL_SUPER_MAGIC, the Lustre client (llite)
    0x47504653: "gpfs",  # "GPFS": IBM Storage Scale
    0x19830326: "beegfs",  # BEEGFS_MAGIC, the BeeGFS client module
    0x00C36400: "cephfs",  # CEPH_SUPER_MAGIC, the kernel client (mount -t ceph)
    0xFF534D42: "cifs",  # CIFS_SUPER_MAGIC: mount -t cifs or smb3
    0xFE534D42: "smb2",  # SMB2_SUPER_MAGIC: an SMB 3.1.1 mount with POSIX extensions
    0x65735546: "fuse",  # FUSE_SUPER_MAGIC: fuse and fuseblk, every subtype (fuse.sshfs, ...)
    0x01161970: "gfs2",  # GFS2_MAGIC
    0x7461636F: "ocfs2",  # OCFS2_SUPER_MAGIC
    0x20030528: "orangefs",  # ORANGEFS_SUPER_MAGIC (PVFS2)
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
# Mount type names (/proc/mounts) that are not a label themselves: the label(s) their magic gets.
# File systems sharing one magic cannot be told apart by the BPF side (it sees only the magic):
# nfs and nfs4 are "nfs"; every FUSE subtype (fuse.sshfs, fuse.gcsfuse, ...) is "fuse".
ALIASES = {
    "nfs4": ("nfs",),
    "ceph": ("cephfs",),
    "smb3": ("cifs", "smb2"),
    "fuseblk": ("fuse",),
    "ext2": ("ext4",),
    "ext3": ("ext4",),
}


def fstype(magic: int) -> str:
    if magic == 0:
        return UNKNOWN
    return MAGIC.get(magic, OTHER)


def _labels(name: str) -> tuple[str, ...]:
    """The labels a name in --vfs.fstypes stands for: itself, or its alias's ("nfs4", "fuse.sshfs")."""
    if name in ALL_NAMES:
        return (name,)
    if name.startswith("fuse.") and len(name) > len("fuse."):
        return ("fuse",)
    return ALIASES.get(name, ())


def parse_fstypes(spec: str) -> frozenset[str]:
    """The fstype names to count, from --vfs.fstypes.

    "storage" (the default): everything but pseudo file systems;
    "all": everything; otherwise a comma list of names, where "storage" and
    "all" may start the list and "-name" removes one ("storage,-tmpfs").
    A mount type name stands for its label (ALIASES; "fuse.<subtype>" for "fuse").
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
        elif p.startswith("-") and _labels(p[1:]):
            chosen.difference_update(_labels(p[1:]))
        elif _labels(p):
            chosen.update(_labels(p))
        else:
            raise CeemsnetError(f"unknown file system type {p!r} in --vfs.fstypes; known: "
                                + ", ".join(sorted(ALL_NAMES)) + " (and the mount types "
                                + ", ".join(sorted(ALIASES)) + ", fuse.<subtype>)")
    return frozenset(chosen)
