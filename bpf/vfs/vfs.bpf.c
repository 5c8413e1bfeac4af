// SPDX-License-Identifier: GPL-2.0
/*
 * Filesystem IO accounting: bytes, calls and errors of reads and writes on
 * regular files, and counts of open/create/unlink/mkdir/rmdir, charged to
 * the cgroup of the calling task and keyed by file system magic.
 *
 * One source, several objects; each one's defines come from the catalogue
 * in ceemsnet/planning/catalogue.py (see bpf/README.md):
 *   CEEMSNET_HOOK_FEXIT       fexit programs, one object per VFS_ERA
 *   CEEMSNET_HOOK_KRETPROBE   kprobe + kretprobe pairs, per era and arch
 * The tracepoint family (system call exit events) is vfs_tp.bpf.c, on the same maps.
 * VFS_ERA picks the inode-operation prototypes:
 *   1: vfs_mkdir(dir, dentry, mode)                      before 5.12
 *   2: vfs_mkdir(struct user_namespace *, dir, ...)     5.12 (idmapped mounts)
 *   3: vfs_mkdir(struct mnt_idmap *, dir, ...)          6.3 (commit abf08576afe3)
 *   4: struct dentry *vfs_mkdir(struct mnt_idmap *, ...) 6.15 (commit c54b386969a5)
 *   5: vfs_create(idmap, dentry, mode, di) without the directory; vfs_unlink's
 *      struct inode ** became a struct delegated_inode *, which vfs_mkdir and
 *      vfs_rmdir gained too                                6.19 (merge db74a7d02ae2,
 *      knfsd directory delegations; see DELEG in ceemsnet/planning/catalogue.py)
 */
#include "vmlinux.h"
#include "arch.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "compat.h"
#include "vfs.h"

char LICENSE[] SEC("license") = "GPL";

#if defined(CEEMSNET_HOOK_FEXIT)

#if VFS_ERA == 1
#define NS
#elif VFS_ERA == 2
#define NS struct user_namespace *ns,
#elif VFS_ERA >= 3
#define NS struct mnt_idmap *idmap,
#else
#error "VFS_ERA must be 1 to 5"
#endif

/* 6.19: the delegation argument of vfs_unlink, and of vfs_mkdir and vfs_rmdir (DELEG_ARG) */
#if VFS_ERA >= 5
struct delegated_inode;
#define DELEG struct delegated_inode *
#define DELEG_ARG , struct delegated_inode *delegated_inode
#else
#define DELEG struct inode **
#define DELEG_ARG
#endif

SEC("fexit/vfs_read")
int BPF_PROG(fexit_vfs_read, struct file *file, char *buf, size_t count, loff_t *pos, ssize_t ret)
{
	return handle_rw(file, VFS_OP_READ, ret);
}

SEC("fexit/vfs_write")
int BPF_PROG(fexit_vfs_write, struct file *file, const char *buf, size_t count, loff_t *pos, ssize_t ret)
{
	return handle_rw(file, VFS_OP_WRITE, ret);
}

SEC("fexit/vfs_readv")
int BPF_PROG(fexit_vfs_readv, struct file *file, const struct iovec *vec, unsigned long vlen, loff_t *pos,
	     rwf_t flags, ssize_t ret)
{
	return handle_rw(file, VFS_OP_READ, ret);
}

SEC("fexit/vfs_writev")
int BPF_PROG(fexit_vfs_writev, struct file *file, const struct iovec *vec, unsigned long vlen, loff_t *pos,
	     rwf_t flags, ssize_t ret)
{
	return handle_rw(file, VFS_OP_WRITE, ret);
}

SEC("fexit/vfs_open")
int BPF_PROG(fexit_vfs_open, const struct path *path, struct file *file, int ret)
{
	return handle_open(path, file, ret);
}

#if VFS_ERA >= 5
/* no directory argument: it is always the new dentry's parent */
SEC("fexit/vfs_create")
int BPF_PROG(fexit_vfs_create, NS struct dentry *dentry, umode_t mode, DELEG di, int ret)
{
	return handle_dirop(dentry_parent_inode(dentry), VFS_OP_CREATE, ret);
}
#else
SEC("fexit/vfs_create")
int BPF_PROG(fexit_vfs_create, NS struct inode *dir, struct dentry *dentry, umode_t mode, bool want_excl, int ret)
{
	return handle_dirop(dir, VFS_OP_CREATE, ret);
}
#endif

SEC("fexit/vfs_unlink")
int BPF_PROG(fexit_vfs_unlink, NS struct inode *dir, struct dentry *dentry, DELEG delegated_inode, int ret)
{
	return handle_dirop(dir, VFS_OP_UNLINK, ret);
}

#if VFS_ERA >= 4
SEC("fexit/vfs_mkdir")
int BPF_PROG(fexit_vfs_mkdir, NS struct inode *dir, struct dentry *dentry, umode_t mode DELEG_ARG,
	     struct dentry *ret)
{
	return handle_dirop(dir, VFS_OP_MKDIR, dentry_ret(ret));
}
#else
SEC("fexit/vfs_mkdir")
int BPF_PROG(fexit_vfs_mkdir, NS struct inode *dir, struct dentry *dentry, umode_t mode, int ret)
{
	return handle_dirop(dir, VFS_OP_MKDIR, ret);
}
#endif

SEC("fexit/vfs_rmdir")
int BPF_PROG(fexit_vfs_rmdir, NS struct inode *dir, struct dentry *dentry DELEG_ARG, int ret)
{
	return handle_dirop(dir, VFS_OP_RMDIR, ret);
}

#if VFS_ERA == 1
/* rmdir(2) where do_rmdir() does not call vfs_rmdir() (5.10: vfs_rmdir.part.0): see rmdir_calls in vfs.h */
SEC("fentry/vfs_rmdir")
int BPF_PROG(fentry_vfs_rmdir)
{
	return rmdir_via_vfs_rmdir();
}

SEC("fentry/do_rmdir")
int BPF_PROG(fentry_do_rmdir)
{
	return rmdir_syscall_enter();
}

SEC("fentry/security_inode_rmdir")
int BPF_PROG(fentry_security_inode_rmdir, struct inode *dir)
{
	return rmdir_reached_fs(dir);
}

/* long do_rmdir(int dfd, struct filename *name) from 5.9, (int dfd, const char __user *) before */
SEC("fexit/do_rmdir")
int BPF_PROG(fexit_do_rmdir, int dfd, const void *name, long ret)
{
	return rmdir_syscall_exit(ret);
}
#endif

#elif defined(CEEMSNET_HOOK_KRETPROBE)

/* The parent directory: first argument before 5.12, second since (the namespace comes first). */
#if VFS_ERA == 1
#define DIR_ARG(ctx) ((struct inode *)PT_REGS_PARM1(ctx))
#elif VFS_ERA == 2 || VFS_ERA == 4 || VFS_ERA == 5
#define DIR_ARG(ctx) ((struct inode *)PT_REGS_PARM2(ctx))
#else
#error "kretprobe objects use VFS_ERA 1, 2 (5.12-6.14: only the argument position matters), 4 or 5"
#endif
/* vfs_create's directory: from 6.19 the second argument is the new dentry, whose parent it is */
#if VFS_ERA >= 5
#define CREATE_DIR_ARG(ctx) dentry_parent_inode((struct dentry *)PT_REGS_PARM2(ctx))
#else
#define CREATE_DIR_ARG(ctx) DIR_ARG(ctx)
#endif

enum vfs_fn { FN_READ, FN_WRITE, FN_READV, FN_WRITEV, FN_OPEN, FN_CREATE, FN_UNLINK, FN_MKDIR, FN_RMDIR };

static __always_inline int rw_entry(__u32 fn, struct file *file, __u8 op)
{
	__u32 magic;

	if (file_counted(file, &magic))
		vfs_stash_put(fn, magic, op);
	return 0;
}

static __always_inline int dirop_entry(__u32 fn, struct inode *dir, __u8 op)
{
	return vfs_stash_put(fn, dir ? inode_magic(dir) : 0, op);
}

static __always_inline int any_return(__u32 fn, long ret)
{
	struct vfs_stash_val v;

	if (stash_take(&vfs_stash, fn, &v))
		vfs_account(v.magic, v.op, ret);
	return 0;
}

SEC("kprobe/vfs_read")
int BPF_KPROBE(kprobe_vfs_read, struct file *file)
{
	return rw_entry(FN_READ, file, VFS_OP_READ);
}

SEC("kretprobe/vfs_read")
int BPF_KRETPROBE(kretprobe_vfs_read, long ret)
{
	return any_return(FN_READ, ret);
}

SEC("kprobe/vfs_write")
int BPF_KPROBE(kprobe_vfs_write, struct file *file)
{
	return rw_entry(FN_WRITE, file, VFS_OP_WRITE);
}

SEC("kretprobe/vfs_write")
int BPF_KRETPROBE(kretprobe_vfs_write, long ret)
{
	return any_return(FN_WRITE, ret);
}

SEC("kprobe/vfs_readv")
int BPF_KPROBE(kprobe_vfs_readv, struct file *file)
{
	return rw_entry(FN_READV, file, VFS_OP_READ);
}

SEC("kretprobe/vfs_readv")
int BPF_KRETPROBE(kretprobe_vfs_readv, long ret)
{
	return any_return(FN_READV, ret);
}

SEC("kprobe/vfs_writev")
int BPF_KPROBE(kprobe_vfs_writev, struct file *file)
{
	return rw_entry(FN_WRITEV, file, VFS_OP_WRITE);
}

SEC("kretprobe/vfs_writev")
int BPF_KRETPROBE(kretprobe_vfs_writev, long ret)
{
	return any_return(FN_WRITEV, ret);
}

/*
 * do_open() has set FMODE_CREATED before it calls vfs_open(): read it at
 * entry, and count the create here, the open at the return. One run adds
 * at most one new key to vfs_stats: arm64 runs kprobe handlers with
 * interrupts off (a BRK exception), so the map's allocator (non-preallocated
 * hash: per-CPU caches refilled from irq_work) cannot refill within a run,
 * and a run that added two keys at once (open and create of a cgroup's first
 * open(O_CREAT) on a file system) failed the second insert on arm64 6.12 -
 * 7.3 (ceemsnet_map_update_failures_total{map="vfs_stats"} 1, one create
 * lost). A create counts even if the open then fails: the file exists.
 */
SEC("kprobe/vfs_open")
int BPF_KPROBE(kprobe_vfs_open, const struct path *path, struct file *file)
{
	__u32 magic = path_magic(path);

	if (file_created(file))
		vfs_account(magic, VFS_OP_CREATE, 0);
	return vfs_stash_put(FN_OPEN, magic, VFS_OP_OPEN);
}

SEC("kretprobe/vfs_open")
int BPF_KRETPROBE(kretprobe_vfs_open, int ret)
{
	return any_return(FN_OPEN, ret);
}

SEC("kprobe/vfs_create")
int BPF_KPROBE(kprobe_vfs_create)
{
	return dirop_entry(FN_CREATE, CREATE_DIR_ARG(ctx), VFS_OP_CREATE);
}

SEC("kretprobe/vfs_create")
int BPF_KRETPROBE(kretprobe_vfs_create, int ret)
{
	return any_return(FN_CREATE, ret);
}

SEC("kprobe/vfs_unlink")
int BPF_KPROBE(kprobe_vfs_unlink)
{
	return dirop_entry(FN_UNLINK, DIR_ARG(ctx), VFS_OP_UNLINK);
}

SEC("kretprobe/vfs_unlink")
int BPF_KRETPROBE(kretprobe_vfs_unlink, int ret)
{
	return any_return(FN_UNLINK, ret);
}

SEC("kprobe/vfs_mkdir")
int BPF_KPROBE(kprobe_vfs_mkdir)
{
	return dirop_entry(FN_MKDIR, DIR_ARG(ctx), VFS_OP_MKDIR);
}

#if VFS_ERA >= 4
SEC("kretprobe/vfs_mkdir")
int BPF_KRETPROBE(kretprobe_vfs_mkdir, struct dentry *ret)
{
	return any_return(FN_MKDIR, dentry_ret(ret));
}
#else
SEC("kretprobe/vfs_mkdir")
int BPF_KRETPROBE(kretprobe_vfs_mkdir, int ret)
{
	return any_return(FN_MKDIR, ret);
}
#endif

SEC("kprobe/vfs_rmdir")
int BPF_KPROBE(kprobe_vfs_rmdir)
{
#if VFS_ERA == 1
	rmdir_via_vfs_rmdir();
#endif
	return dirop_entry(FN_RMDIR, DIR_ARG(ctx), VFS_OP_RMDIR);
}

#if VFS_ERA == 1
/* rmdir(2) where do_rmdir() does not call vfs_rmdir() (5.10: vfs_rmdir.part.0): see rmdir_calls in vfs.h */
SEC("kprobe/do_rmdir")
int BPF_KPROBE(kprobe_do_rmdir)
{
	return rmdir_syscall_enter();
}

SEC("kprobe/security_inode_rmdir")
int BPF_KPROBE(kprobe_security_inode_rmdir, struct inode *dir)
{
	return rmdir_reached_fs(dir);
}

SEC("kretprobe/do_rmdir")
int BPF_KRETPROBE(kretprobe_do_rmdir, long ret)
{
	return rmdir_syscall_exit(ret);
}
#endif

SEC("kretprobe/vfs_rmdir")
int BPF_KRETPROBE(kretprobe_vfs_rmdir, int ret)
{
	return any_return(FN_RMDIR, ret);
}

#if VFS_ERA == 1 && defined(__TARGET_ARCH_arm64)
/*
 * readv/writev where the kernel inlined vfs_readv()/vfs_writev() (Debian
 * 11's arm64 5.10: into the system calls, with do_readv, do_preadv and
 * do_iter_read; none of them is in its BTF). ceemsnet/planning/choice.py plans these
 * programs only where vfs_readv/vfs_writev are not in the kernel's BTF
 * (Hook.inlined_at), so nothing counts twice. Each system call's wrapper,
 * long __arm64_sys_<call>(const struct pt_regs *regs), gives the fd; the
 * file is that fd's entry in the task's table, counted as vfs_readv() would
 * count it: regular files only, the bytes or the error the call returns. A
 * negative offset fails with EINVAL before vfs_readv() is reached (preadv;
 * preadv2 below -1, where -1 means the file position) and is not counted,
 * as there. A bad fd has no file: not counted, as there.
 */
static __always_inline unsigned long sys_arg(const struct pt_regs *regs, int n)
{
	unsigned long v = 0;

	bpf_probe_read_kernel(&v, sizeof(v), &((const struct user_pt_regs *)regs)->regs[n]);
	return v;
}

static __always_inline struct file *fd_file(unsigned long fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds, *file = NULL;

	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

enum { POS_NONE, POS_PREADV, POS_PREADV2 };

static __always_inline int sys_rwv_entry(const struct pt_regs *regs, __u32 fn, __u8 op, int pos_kind)
{
	long pos = (long)sys_arg(regs, 3); /* pos_l: the whole offset on 64-bit */

	if (pos_kind != POS_NONE && pos < 0 && !(pos_kind == POS_PREADV2 && pos == -1))
		return 0;
	return rw_entry(fn, fd_file(sys_arg(regs, 0)), op);
}

#define SYS_RWV(call, fn, op, pos_kind)                                         \
	SEC("kprobe/__arm64_sys_" #call)                                        \
	int BPF_KPROBE(kprobe___arm64_sys_##call, const struct pt_regs *regs)   \
	{                                                                       \
		return sys_rwv_entry(regs, fn, op, pos_kind);                   \
	}                                                                       \
	SEC("kretprobe/__arm64_sys_" #call)                                     \
	int BPF_KRETPROBE(kretprobe___arm64_sys_##call, long ret)               \
	{                                                                       \
		return any_return(fn, ret);                                     \
	}

SYS_RWV(readv, FN_READV, VFS_OP_READ, POS_NONE)
SYS_RWV(preadv, FN_READV, VFS_OP_READ, POS_PREADV)
SYS_RWV(preadv2, FN_READV, VFS_OP_READ, POS_PREADV2)
SYS_RWV(writev, FN_WRITEV, VFS_OP_WRITE, POS_NONE)
SYS_RWV(pwritev, FN_WRITEV, VFS_OP_WRITE, POS_PREADV)
SYS_RWV(pwritev2, FN_WRITEV, VFS_OP_WRITE, POS_PREADV2)
#endif

#else
#error "define CEEMSNET_HOOK_FEXIT or CEEMSNET_HOOK_KRETPROBE (the tracepoint family is vfs_tp.bpf.c)"
#endif

/* File IO besides the vfs_* functions, each in its own header: the programs of this object's family */
#include "vfs_open.h"
#include "vfs_uring.h"
#include "vfs_aio.h"
#include "vfs_splice.h"
