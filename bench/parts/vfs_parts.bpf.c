// SPDX-License-Identifier: GPL-2.0
/*
 * Bench only (bench/event_parts.py builds it with clang-19 into
 * bench/objs/parts/, one object per part): the vfs tracepoint family's
 * write(2) program (tp/syscalls/sys_exit_write, bpf/vfs/vfs_tp.bpf.c with
 * TP_ERA=2) cut into cumulative parts, so that the kernel's run time per
 * write() of each part, minus the part before, is what that part costs.
 *
 *   VFS_LEVEL 0  empty: return
 *             1  + the cgroup id (with CEEMSNET_HOOK_TRACEPOINT: cgroup.h's read for
 *                  the tracepoint objects)
 *             2  + the task (bpf_get_current_task_btf) and its saved user
 *                  registers (bpf_task_pt_regs) for the fd; with REGS_STACK the
 *                  registers' offset from task->stack is learnt once (with
 *                  bpf_task_pt_regs) and the fd then read with two loads
 *             3  + the file the fd names: task->files->fdt, max_fds, then the
 *                  slot fdt->fd[fd]: one bpf_probe_read_kernel() (as shipped),
 *                  or with FD_CAST one load through bpf_rdonly_cast()
 *             4  + the file's fields through bpf_rdonly_cast(): f_inode,
 *                  i_mode (regular files only), i_sb->s_magic
 *             5  + the map update, VFS_MAP selecting the layout:
 *                  1 old: per-CPU hash, key (cgroup, magic, op), one 24-byte
 *                         value per op, atomic adds (bpf/vfs/vfs.h today)
 *                  3 new: per-CPU hash, key (cgroup, magic, pad), value v[7]
 *                         of (bytes, calls, errors) indexed by op, plain adds
 *
 * Written for the bench, not copied from bpf/vfs/.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cgroup.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef VFS_LEVEL
#error "VFS_LEVEL must be 0..5"
#endif

#define P_S_IFMT 00170000
#define P_S_IFREG 0100000
#define P_OP_WRITE 1

#define KEEP(x) barrier_var(x)

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

struct sys_exit_record {
	__u64 common;
	int nr;
	long ret;
};

/*
 * ceemsnet_cgroup_id() as bpf/include/cgroup.h has it: built without a hook
 * define it calls bpf_get_current_cgroup_id(); with CEEMSNET_HOOK_TRACEPOINT
 * (the "-task" parts) as the tracepoint objects build it.
 */
static __always_inline __attribute__((unused)) __u64 part_cgroup_id(void)
{
	return ceemsnet_cgroup_id();
}

#if VFS_LEVEL >= 5
struct part_val {
	__u64 bytes, calls, errors;
};

#if VFS_MAP == 1
struct part_key {
	__u64 cgroup_id;
	__u32 magic;
	__u8 op, pad[3];
};
#define PART_VALUE struct part_val
#elif VFS_MAP == 3
struct part_key {
	__u64 cgroup_id;
	__u32 magic;
	__u32 pad;
};
struct part_counts {
	struct part_val v[7]; /* index: enum vfs_op */
};
#define PART_VALUE struct part_counts
#else
#error "VFS_MAP must be 1 (old) or 3 (new)"
#endif

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct part_key);
	__type(value, PART_VALUE);
} part_stats SEC(".maps");

static __always_inline void part_update(__u64 id, __u32 magic, __u8 op, long ret)
{
	struct part_key key;
	PART_VALUE *c;
	struct part_val *v;

	__builtin_memset(&key, 0, sizeof(key));
	key.cgroup_id = id;
	key.magic = magic;
#if VFS_MAP == 1
	key.op = op;
#endif
	c = bpf_map_lookup_elem(&part_stats, &key);
	if (!c) {
		PART_VALUE zero;

		__builtin_memset(&zero, 0, sizeof(zero));
		bpf_map_update_elem(&part_stats, &key, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&part_stats, &key);
		if (!c)
			return;
	}
#if VFS_MAP == 1
	v = c;
	if (ret >= 0) {
		__sync_fetch_and_add(&v->bytes, ret);
		__sync_fetch_and_add(&v->calls, 1);
	} else {
		__sync_fetch_and_add(&v->errors, 1);
	}
#else
	if (op >= 7)
		return;
	v = &c->v[op];
	if (ret >= 0) {
		v->bytes += ret;
		v->calls += 1;
	} else {
		v->errors += 1;
	}
#endif
}
#endif

#if VFS_LEVEL >= 2
#ifdef REGS_STACK
/*
 * x86_64's task_pt_regs(task) is task->stack + THREAD_SIZE - padding - sizeof(struct pt_regs):
 * the same offset for every task of a kernel, but THREAD_SIZE (KASAN) and the padding (FRED)
 * are build options BTF does not give. The first event learns it with the helper.
 */
__u64 regs_off;

static __always_inline long part_fd(struct task_struct *task)
{
	__u64 off = regs_off;
	struct pt_regs *regs;

	if (!off) {
		regs = (struct pt_regs *)bpf_task_pt_regs(task);
		regs_off = (__u64)regs - (__u64)task->stack;
		return regs->di;
	}
	regs = bpf_rdonly_cast(task->stack + off, bpf_core_type_id_kernel(struct pt_regs));
	return regs->di;
}
#else
static __always_inline long part_fd(struct task_struct *task)
{
	return ((struct pt_regs *)bpf_task_pt_regs(task))->di;
}
#endif
#endif

#if VFS_LEVEL >= 3
/* task->files->fdt->fd[fd], or NULL */
static __always_inline struct file *part_fd_file(struct task_struct *task, long fd)
{
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;

	if (fd < 0 || fd >= fdt->max_fds)
		return NULL;
#ifdef FD_CAST
	{
		/* fdt->fd is a struct file ** (a plain number to the verifier): make the slot's
		 * address a BTF pointer to an 8-byte struct and load its one member */
		struct llist_node *slot = bpf_rdonly_cast(fdt->fd + fd, bpf_core_type_id_kernel(struct llist_node));

		file = (struct file *)slot->next;
	}
#else
	bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]);
#endif
	return file;
}
#endif

SEC("tp/syscalls/sys_exit_write")
int tp_sys_exit_write(struct sys_exit_record *ctx)
{
#if VFS_LEVEL >= 2
	struct task_struct *task = bpf_get_current_task_btf();
	long fd = part_fd(task);
#endif
#if VFS_LEVEL >= 3
	struct file *file = part_fd_file(task, fd);
#endif
#if VFS_LEVEL >= 4
	struct inode *inode;
	__u32 magic;

	if (!file)
		return 0;
	file = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
	inode = file->f_inode;
	if (!inode || (inode->i_mode & P_S_IFMT) != P_S_IFREG)
		return 0;
	magic = (__u32)inode->i_sb->s_magic;
#endif
#if VFS_LEVEL >= 1
	__u64 id = part_cgroup_id();
#endif
#if VFS_LEVEL >= 5
	part_update(id, magic, P_OP_WRITE, ctx->ret);
#elif VFS_LEVEL == 4
	KEEP(id);
	KEEP(magic);
#elif VFS_LEVEL == 3
	KEEP(id);
	KEEP(file);
#elif VFS_LEVEL == 2
	KEEP(id);
	KEEP(fd);
#elif VFS_LEVEL == 1
	KEEP(id);
#endif
	return 0;
}
