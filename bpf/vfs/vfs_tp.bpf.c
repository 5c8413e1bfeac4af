// SPDX-License-Identifier: GPL-2.0
/*
 * Filesystem IO accounting at the system call boundary, for kernels that
 * refuse BPF trampolines and have no kprobes (the tracepoint family of
 * bpf/vfs/vfs.bpf.c's counters, same maps and keys).
 *
 * One program per counted system call, each on that call's own exit event
 * (syscalls:sys_exit_<name>, CONFIG_FTRACE_SYSCALLS): the kernel tests a
 * per-syscall bit before it runs any of them, so no BPF program runs for
 * the system calls we do not count (the raw sys_exit tracepoint this
 * replaces ran a program on every system call of every process). The
 * event's record holds only the return value; the arguments (fd, flags,
 * mode) are read from the task's saved user registers with
 * bpf_task_pt_regs(), 5.15 (commit dd6e10fbd9fb): that makes 5.15 this
 * object's first kernel. x86_64 only: syscall arguments by register name.
 * TP_ERA=2 (6.2+) reads the file's fields through bpf_rdonly_cast()
 * instead of probe reads; TP_ERA=1 is the 5.15 object.
 *
 * What is counted, per call (see also ceemsnet/planning/catalogue.py's notes):
 *   read, pread64, readv, preadv, preadv2 / write, pwrite64, writev,
 *     pwritev, pwritev2: bytes, calls, errors on regular files, keyed by
 *     the file system of the file the fd names;
 *   open, openat, openat2, creat: op open, keyed by the file system of the
 *     returned file, plus op create when that call created it
 *     (FMODE_CREATED);
 *   mknod, mknodat of regular files: op create;
 *   unlink, unlinkat: op unlink; rmdir, unlinkat(AT_REMOVEDIR): op rmdir;
 *   mkdir, mkdirat: op mkdir (these carry file system 0: the path is gone
 *   at exit).
 * Errors are the failures of the operation itself, as the fexit and
 * kretprobe families see them: a call that fails before the operation is
 * reached (the name or a directory on the way is missing, mkdir of a name
 * that exists, ...) is not an error of the operation (lookup_error()).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "vfs.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef TP_ERA
#error "TP_ERA must be 1 (5.15: probe reads) or 2 (6.2: bpf_rdonly_cast)"
#endif
#if !defined(__TARGET_ARCH_x86)
#error "the syscall tracepoint object reads x86_64 argument registers"
#endif

#define AT_REMOVEDIR 0x200

/* errno values (include/uapi/asm-generic/errno-base.h, errno.h) */
#define EPERM 1
#define ENOENT 2
#define EACCES 13
#define EFAULT 14
#define EEXIST 17
#define ENOTDIR 20
#define EISDIR 21
#define EINVAL 22
#define ENFILE 23
#define EMFILE 24
#define EROFS 30
#define ENAMETOOLONG 36
#define ELOOP 40
#define BIT(e) (1ULL << (e))

/* The record of a syscalls:sys_exit_* event (kernel/trace/trace_syscalls.c). */
struct sys_exit_args {
	__u64 common;  /* struct trace_entry */
	int nr;
	long ret;
};

#if TP_ERA >= 2
/*
 * bpf_rdonly_cast() (6.2, commit a35b9af4ec2c) makes any kernel address a
 * BTF pointer of a given type: the verifier then lets the program load its
 * fields directly (inline loads whose faults the kernel handles, as a
 * probe read's) instead of one bpf_probe_read_kernel() call each, which is
 * a call into the kernel and most of what a read or write cost
 * (bench/vfs_tp_cost.py, bench/event_parts.py). Used for the saved
 * registers, the fd table's slot and the file found there.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

/*
 * The caller's saved registers: the system call's arguments, unchanged at
 * exit. x86_64 keeps them at the top of the task's stack, task_pt_regs():
 * task->stack + THREAD_SIZE - TOP_OF_KERNEL_STACK_PADDING - sizeof(struct
 * pt_regs), the same offset for every task of a kernel, but THREAD_SIZE
 * (larger with KASAN) and the padding (FRED) are build options BTF does not
 * give. So the first event of this load asks bpf_task_pt_regs() and keeps
 * the offset (any CPU that races it stores the same value); every later one
 * loads from task->stack + offset: no call into the kernel, 14-24 ns less
 * per counted call on this project's host (bench/event_parts.py, regs
 * against regs-stack).
 */
__u64 user_regs_off;

static __always_inline struct pt_regs *user_regs(struct task_struct *task)
{
	__u64 off = user_regs_off;
	struct pt_regs *regs;

	if (off)
		return bpf_rdonly_cast(task->stack + off, bpf_core_type_id_kernel(struct pt_regs));
	__u64 at = 0;

	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	/*
	 * regs is a BTF pointer: verifiers before 6.18's refuse arithmetic on it with a
	 * register they cannot bound (6.12: "math between ptr_ pointer and register with
	 * unbounded min value"), so take its value as a number, once per load, with a read
	 * of the stack slot holding it.
	 */
	bpf_probe_read_kernel(&at, sizeof(at), &regs);
	user_regs_off = at - (__u64)task->stack;
	return regs;
}
#else
/* The caller's saved registers: the system call's arguments, unchanged at exit. */
static __always_inline struct pt_regs *user_regs(struct task_struct *task)
{
	return (struct pt_regs *)bpf_task_pt_regs(task);
}
#endif

/*
 * The file an fd names: task->files->fdt->fd[fd]. BTF pointer loads up to
 * the array; the slot at a variable index is not a BTF access (fdt->fd is a
 * struct file **, a plain number to the verifier). From 6.2 its address is
 * cast to a struct whose only member is one pointer (struct llist_node, in
 * every kernel's BTF) and that member loaded: 22-49 ns less per read or
 * write than the probe read on this project's host (bench/event_parts.py,
 * fd against fd-cast); before 6.2 one probe read.
 */
static __always_inline struct file *fd_file(struct task_struct *task, long fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (fd < 0 || fd >= fdt->max_fds)
		return NULL;
#if TP_ERA >= 2
	file = (struct file *)((struct llist_node *)bpf_rdonly_cast(fdt->fd + fd,
								    bpf_core_type_id_kernel(struct llist_node)))->next;
#else
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
#endif
	return file;
}

#if TP_ERA >= 2
static __always_inline struct file *btf_file(struct file *file)
{
	return file ? bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file)) : NULL;
}

static __always_inline int exit_rw(__u8 op, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct file *file = btf_file(fd_file(task, user_regs(task)->di));
	struct inode *inode;

	if (!file)
		return 0;
	inode = file->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
		return 0;
	vfs_account((__u32)inode->i_sb->s_magic, op, ret);
	return 0;
}

/* (file system magic, created?) of the file an open returned */
static __always_inline void opened(long fd, __u32 *magic, bool *created)
{
	struct file *file = btf_file(fd_file(bpf_get_current_task_btf(), fd));

	if (!file || !file->f_inode)
		return;
	*magic = (__u32)file->f_inode->i_sb->s_magic;
	*created = file->f_mode & FMODE_CREATED;
}
#else
static __always_inline int exit_rw(__u8 op, long ret)
{
	struct task_struct *task = bpf_get_current_task_btf();

	return handle_rw(fd_file(task, user_regs(task)->di), op, ret);
}

static __always_inline void opened(long fd, __u32 *magic, bool *created)
{
	struct file *file = fd_file(bpf_get_current_task_btf(), fd);

	if (!file)
		return;
	*magic = inode_magic(BPF_CORE_READ(file, f_inode));
	*created = file_created(file);
}
#endif

/*
 * The errors a call returns before it reaches the VFS operation the fexit
 * and kretprobe families hook (fs/namei.c, fs/open.c): the path walk and
 * the last name's lookup (ENOENT, ENOTDIR, ELOOP, ENAMETOOLONG, EFAULT), a
 * read-only mount (EROFS, mnt_want_write() before the operation), and per
 * operation: mkdir and mknod of a name that exists (EEXIST, found by
 * filename_create()); mknod of a bad type (EINVAL, may_mknod()); rmdir of
 * "." (EINVAL); opens refused by open_last_lookups()/may_open() or the fd
 * table before vfs_open() (EEXIST with O_EXCL, EISDIR, EACCES, EPERM,
 * EINVAL, EMFILE, ENFILE). These calls are not counted at all: neither
 * family sees an operation there. rmdir keeps ENOTDIR, which is mostly
 * vfs_rmdir()'s "not a directory". What an errno cannot tell apart stays
 * counted here and not there: EACCES of a directory on the way (unlink,
 * rmdir, mkdir, mknod), unlink("/") (EISDIR), rmdir("..") (ENOTEMPTY).
 */
#define LOOKUP_ERRORS (BIT(ENOENT) | BIT(ENOTDIR) | BIT(ELOOP) | BIT(ENAMETOOLONG) | BIT(EFAULT) | BIT(EROFS))

static __always_inline bool lookup_error(long ret, __u8 op)
{
	__u64 mask = LOOKUP_ERRORS;
	long e = -ret;

	if (op == VFS_OP_MKDIR)
		mask |= BIT(EEXIST);
	else if (op == VFS_OP_CREATE)
		mask |= BIT(EEXIST) | BIT(EINVAL);
	else if (op == VFS_OP_RMDIR)
		mask = (mask & ~BIT(ENOTDIR)) | BIT(EINVAL);
	else if (op == VFS_OP_OPEN)
		mask |= BIT(EEXIST) | BIT(EISDIR) | BIT(EACCES) | BIT(EPERM) | BIT(EINVAL) | BIT(EMFILE) | BIT(ENFILE);
	return e > 0 && e < 64 && (mask & BIT(e));
}

static __always_inline int exit_dirop(__u8 op, long ret)
{
	if (ret < 0 && lookup_error(ret, op))
		return 0;
	vfs_account(0, op, ret);
	return 0;
}

/*
 * One open, plus one create when the returned file has FMODE_CREATED (so
 * creat() or open(O_CREAT) of an existing file creates nothing). A failed
 * open carries no file system.
 */
static __always_inline int exit_open(long ret)
{
	bool created = false;
	__u32 magic = 0;

	if (ret < 0) {
		if (!lookup_error(ret, VFS_OP_OPEN))
			vfs_account(0, VFS_OP_OPEN, ret);
		return 0;
	}
	opened(ret, &magic, &created);
	account_open(magic, created, ret);
	return 0;
}

/* regular files only (type 0 means regular too); device nodes and fifos are not counted */
static __always_inline int exit_mknod(unsigned long mode, long ret)
{
	if ((mode & S_IFMT) == S_IFREG || (mode & S_IFMT) == 0)
		return exit_dirop(VFS_OP_CREATE, ret);
	return 0;
}

#define SYS_EXIT(name) \
	SEC("tp/syscalls/sys_exit_" #name) int tp_sys_exit_##name(struct sys_exit_args *ctx)

SYS_EXIT(read) { return exit_rw(VFS_OP_READ, ctx->ret); }
SYS_EXIT(pread64) { return exit_rw(VFS_OP_READ, ctx->ret); }
SYS_EXIT(readv) { return exit_rw(VFS_OP_READ, ctx->ret); }
SYS_EXIT(preadv) { return exit_rw(VFS_OP_READ, ctx->ret); }
SYS_EXIT(preadv2) { return exit_rw(VFS_OP_READ, ctx->ret); }
SYS_EXIT(write) { return exit_rw(VFS_OP_WRITE, ctx->ret); }
SYS_EXIT(pwrite64) { return exit_rw(VFS_OP_WRITE, ctx->ret); }
SYS_EXIT(writev) { return exit_rw(VFS_OP_WRITE, ctx->ret); }
SYS_EXIT(pwritev) { return exit_rw(VFS_OP_WRITE, ctx->ret); }
SYS_EXIT(pwritev2) { return exit_rw(VFS_OP_WRITE, ctx->ret); }
SYS_EXIT(open) { return exit_open(ctx->ret); }
SYS_EXIT(openat) { return exit_open(ctx->ret); }
SYS_EXIT(openat2) { return exit_open(ctx->ret); }
SYS_EXIT(creat) { return exit_open(ctx->ret); }
SYS_EXIT(mknod) { return exit_mknod(user_regs(bpf_get_current_task_btf())->si, ctx->ret); }
SYS_EXIT(mknodat) { return exit_mknod(user_regs(bpf_get_current_task_btf())->dx, ctx->ret); }
SYS_EXIT(mkdir) { return exit_dirop(VFS_OP_MKDIR, ctx->ret); }
SYS_EXIT(mkdirat) { return exit_dirop(VFS_OP_MKDIR, ctx->ret); }
SYS_EXIT(rmdir) { return exit_dirop(VFS_OP_RMDIR, ctx->ret); }
SYS_EXIT(unlink) { return exit_dirop(VFS_OP_UNLINK, ctx->ret); }
SYS_EXIT(unlinkat)
{
	return exit_dirop(user_regs(bpf_get_current_task_btf())->dx & AT_REMOVEDIR ? VFS_OP_RMDIR : VFS_OP_UNLINK,
			  ctx->ret);
}

/* File IO besides the system calls above: io_uring, AIO, sendfile/splice/copy_file_range, whose bytes no read/write call carries */
#include "vfs_uring.h"
#include "vfs_aio.h"
#include "vfs_splice.h"
