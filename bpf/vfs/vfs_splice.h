/* SPDX-License-Identifier: GPL-2.0 */
/*
 * File bytes that no read() or write() carries: sendfile(), splice() and
 * copy_file_range(). Every family (vfs.bpf.c, vfs_tp.bpf.c). Included at the
 * end of the object's source, after vfs.h.
 *
 * The kernel moves these bytes through the files' ->splice_read(),
 * ->splice_write(), ->copy_file_range() or ->remap_file_range() (fs/splice.c,
 * fs/read_write.c: do_splice_direct(), vfs_copy_file_range()), never through
 * vfs_read()/vfs_write() nor their system calls, so nothing else counts them
 * and they count no byte twice. They are counted at the system call, on its
 * own trace events (syscalls:sys_enter_<call> and sys_exit_<call>,
 * CONFIG_FTRACE_SYSCALLS, 2.6.33; perf tracepoint programs, 4.7): the enter
 * event's record holds the arguments (on every arch and kernel, unlike the
 * saved registers vfs_tp.bpf.c reads), so one implementation serves every
 * family, and the kernel runs no program for any other system call. The
 * enter program finds each fd's file and keeps, per thread, the file systems
 * of the sides that are regular files; the exit program adds the call's
 * result: the bytes as read bytes of the input file and written bytes of the
 * output file (a socket or pipe side is not file IO: the net collector
 * counts sockets), one call on each; an error once, on the input side if it
 * is a file, else the output's.
 *
 *   sendfile64(out_fd, in_fd, offset, count)
 *   splice(fd_in, off_in, fd_out, off_out, len, flags): one side is a pipe
 *   copy_file_range(fd_in, off_in, fd_out, off_out, len, flags)
 *
 * copy_file_range() on a file system that shares extents (reflink: btrfs,
 * xfs) or copies on the server (NFS 4.2) moves no data through this node;
 * its bytes are still what the job asked to copy, counted as read and
 * written. vmsplice() and tee() move no file bytes.
 */
#ifndef __CEEMSNET_VFS_SPLICE_H
#define __CEEMSNET_VFS_SPLICE_H

enum splice_fn { SPLICE_FN_SENDFILE, SPLICE_FN_SPLICE, SPLICE_FN_COPY };

/* what the enter event found, for the exit event of the same thread */
struct splice_sides {
	__u32 in_magic;
	__u32 out_magic;
	__u8 in_file;   /* the input is a regular file */
	__u8 out_file;  /* the output is a regular file */
	__u8 pad[6];
};

STASH_MAP(splice_stash, struct splice_sides);

/* The records of syscalls:sys_enter_* and sys_exit_* (kernel/trace/trace_syscalls.c): each argument in 8 bytes. */
struct splice_enter_args {
	__u64 common;  /* struct trace_entry */
	long nr;       /* int __syscall_nr, padded */
	unsigned long args[6];
};

struct splice_exit_args {
	__u64 common;
	long nr;
	long ret;
};

/* The file an fd of the current task names: task->files->fdt->fd[fd] (probe reads: any kernel, any family). */
static __always_inline struct file *splice_fd_file(unsigned long fd)
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

static __always_inline int splice_enter(__u32 fn, unsigned long in_fd, unsigned long out_fd)
{
	struct splice_sides s;

	__builtin_memset(&s, 0, sizeof(s));
	s.in_file = file_counted(splice_fd_file(in_fd), &s.in_magic);
	s.out_file = file_counted(splice_fd_file(out_fd), &s.out_magic);
	if (s.in_file || s.out_file)
		stash_put(&splice_stash, fn, &s);
	return 0;
}

static __always_inline int splice_exit(__u32 fn, long ret)
{
	struct splice_sides s;

	if (!stash_take(&splice_stash, fn, &s))
		return 0;
	if (ret < 0) {
		if (s.in_file)
			vfs_account(s.in_magic, VFS_OP_READ, ret);
		else
			vfs_account(s.out_magic, VFS_OP_WRITE, ret);
		return 0;
	}
	if (s.in_file)
		vfs_account(s.in_magic, VFS_OP_READ, ret);
	if (s.out_file)
		vfs_account(s.out_magic, VFS_OP_WRITE, ret);
	return 0;
}

SEC("tp/syscalls/sys_enter_sendfile64")
int tp_sys_enter_sendfile64(struct splice_enter_args *ctx)
{
	return splice_enter(SPLICE_FN_SENDFILE, ctx->args[1], ctx->args[0]);
}

SEC("tp/syscalls/sys_exit_sendfile64")
int tp_sys_exit_sendfile64(struct splice_exit_args *ctx)
{
	return splice_exit(SPLICE_FN_SENDFILE, ctx->ret);
}

SEC("tp/syscalls/sys_enter_splice")
int tp_sys_enter_splice(struct splice_enter_args *ctx)
{
	return splice_enter(SPLICE_FN_SPLICE, ctx->args[0], ctx->args[2]);
}

SEC("tp/syscalls/sys_exit_splice")
int tp_sys_exit_splice(struct splice_exit_args *ctx)
{
	return splice_exit(SPLICE_FN_SPLICE, ctx->ret);
}

SEC("tp/syscalls/sys_enter_copy_file_range")
int tp_sys_enter_copy_file_range(struct splice_enter_args *ctx)
{
	return splice_enter(SPLICE_FN_COPY, ctx->args[0], ctx->args[2]);
}

SEC("tp/syscalls/sys_exit_copy_file_range")
int tp_sys_exit_copy_file_range(struct splice_exit_args *ctx)
{
	return splice_exit(SPLICE_FN_COPY, ctx->ret);
}

#endif /* __CEEMSNET_VFS_SPLICE_H */
