/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Opens and creates inside file systems with ->atomic_open (NFS, CIFS/SMB,
 * FUSE, Lustre, Ceph, 9p, GFS2), and O_TMPFILE opens: finish_open(). fexit
 * and kretprobe objects (vfs.bpf.c). Included at the end of the object's
 * source, after vfs.h.
 *
 * do_open() calls vfs_open() only for a file not yet opened: a file system
 * with ->atomic_open looks the name up, creates it if asked and opens it in
 * one call, through finish_open() -> do_dentry_open(), and vfs_open() never
 * sees that open (on NFS: every open of a name not in the dentry cache and
 * every open(O_CREAT)). An O_TMPFILE open goes through finish_open() too
 * (do_tmpfile(), or ->tmpfile() -> finish_open_simple() from 6.1).
 * finish_open() never calls vfs_open(), and vfs_open() never calls
 * finish_open(): with both hooked, every open is counted once. Both are
 * exported, so a module's call cannot be inlined; finish_open(file, dentry,
 * open) has had that prototype since 4.18 (BTF of 5.10 - 7.3 checked).
 *
 * The file system is the dentry's: on error do_dentry_open() has already
 * cleared file->f_path. The create is FMODE_CREATED, set by the file system
 * before it calls finish_open() (nfs_atomic_open(), cifs, fuse, ceph, 9p,
 * gfs2). The kernel's own opens (FMODE_NOACCOUNT, or under overridden
 * credentials, see vfs.h: overlayfs's O_TMPFILE backing file, copy-up's
 * tmpfile) are not counted.
 */
#ifndef __CEEMSNET_VFS_OPEN_H
#define __CEEMSNET_VFS_OPEN_H

#if defined(CEEMSNET_HOOK_FEXIT)

SEC("fexit/finish_open")
int BPF_PROG(fexit_finish_open, struct file *file, struct dentry *dentry, void *open, int ret)
{
	if (open_internal(file))
		return 0;
	account_open(dentry_magic(dentry), file_created(file), ret);
	return 0;
}

#elif defined(CEEMSNET_HOOK_KRETPROBE)

/* finish_open's stash key: apart from enum vfs_fn (vfs.bpf.c) and the other headers' */
#define FN_FINISH_OPEN 64

/*
 * As kprobe_vfs_open: the create is counted at entry (FMODE_CREATED is set
 * already), so one run adds at most one key to vfs_stats; the open at the
 * return, with finish_open's result.
 */
SEC("kprobe/finish_open")
int BPF_KPROBE(kprobe_finish_open, struct file *file, struct dentry *dentry)
{
	__u32 magic;

	if (open_internal(file))
		return 0;
	magic = dentry_magic(dentry);
	if (file_created(file))
		vfs_account(magic, VFS_OP_CREATE, 0);
	return vfs_stash_put(FN_FINISH_OPEN, magic, VFS_OP_OPEN);
}

SEC("kretprobe/finish_open")
int BPF_KRETPROBE(kretprobe_finish_open, int ret)
{
	return any_return(FN_FINISH_OPEN, ret);
}

#endif

#endif /* __CEEMSNET_VFS_OPEN_H */
