/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Opens and creates inside file systems with ->atomic_open (NFS, CIFS/SMB, FUSE,
 * Lustre, Ceph, 9p): finish_open(). fexit and kretprobe objects (vfs.bpf.c).
 * Included at the end of the object's source, after vfs.h.
 */
#ifndef __CEEMSNET_VFS_OPEN_H
#define __CEEMSNET_VFS_OPEN_H

#endif /* __CEEMSNET_VFS_OPEN_H */
