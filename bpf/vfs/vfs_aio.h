/* SPDX-License-Identifier: GPL-2.0 */
/*
 * AIO (io_submit) file reads and writes, charged to the submitting task's
 * cgroup. Every family (vfs.bpf.c, vfs_tp.bpf.c).
 * Included at the end of the object's source, after vfs.h.
 */
#ifndef __CEEMSNET_VFS_AIO_H
#define __CEEMSNET_VFS_AIO_H

#endif /* __CEEMSNET_VFS_AIO_H */
