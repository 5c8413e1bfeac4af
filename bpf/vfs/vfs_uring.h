/* SPDX-License-Identifier: GPL-2.0 */
/*
 * io_uring file reads and writes, counted at their completion and charged
 * to the submitting task's cgroup. Every family (vfs.bpf.c, vfs_tp.bpf.c).
 * Included at the end of the object's source, after vfs.h.
 */
#ifndef __CEEMSNET_VFS_URING_H
#define __CEEMSNET_VFS_URING_H

#endif /* __CEEMSNET_VFS_URING_H */
