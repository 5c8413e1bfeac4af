/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps and inline handlers of the VFS programs. vfs.bpf.c holds only the
 * SEC() programs; each one calls one handler below. Per call: one task
 * cgroup id, two or three pointer reads, one per-CPU hash lookup and
 * atomic adds. No path strings.
 */
#ifndef __CEEMSNET_VFS_H
#define __CEEMSNET_VFS_H

#include "ceemsnet.h"
#include "cgroup.h"
#include "maps.bpf.h"

#define S_IFMT 00170000
#define S_IFREG 0100000
#define MAX_ERRNO 4095
/*
 * file->f_mode bit set when an open really created the file: in
 * lookup_open() (fs/namei.c, or by ->atomic_open()), before do_open()
 * calls vfs_open(), and left set afterwards. Since 4.19 (commit
 * 73a09dd94377 "introduce FMODE_CREATED and switch to it"), 0x100000 in
 * every kernel since (spelled 1 << 20 in newer trees). A macro, not in BTF,
 * so CO-RE cannot relocate it. Before 4.19 the bit is unused: no creates
 * are seen through open(O_CREAT) there.
 */
#define FMODE_CREATED 0x100000
/*
 * file->f_mode bit of a file the kernel opens for itself, never installed
 * in a descriptor table and left out of nr_files: the backing file of an
 * open on a stacking file system (overlayfs, FUSE passthrough:
 * backing_file_open(), backing_tmpfile_open(); before 6.6 overlayfs's
 * open_with_fake_path(), which reaches neither vfs_open() nor
 * finish_open()), kernel_file_open() and kernel_tmpfile_open() (cachefiles,
 * overlayfs copy-up). 0x20000000 (1 << 29) in every kernel since 4.19
 * (introduced with alloc_empty_file_noaccount()); every backing file has it
 * besides FMODE_BACKING (6.6+), whose value moved (0x2000000, then 1 << 24
 * in 6.12). A macro, not in BTF: CO-RE cannot relocate it.
 */
#define FMODE_NOACCOUNT 0x20000000

/*
 * Per-CPU and not preallocated, like net_stats (see bpf/net/net.h): one
 * record per (cgroup, file system) holding every operation's counters.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct vfs_key);
	__type(value, struct vfs_counts);
} vfs_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} vfs_drops SEC(".maps");

/*
 * Atomic adds in every family, the tracepoint one included: several
 * programs write the same words (read(2), pread64, readv and preadv all
 * add to the read counters), and a program that can be preempted
 * (trampolines and kprobes on a preemptible kernel; tracepoints from 7.0)
 * may be followed on its CPU by a task of the same cgroup in another one
 * mid-add.
 */
static __always_inline void vfs_add(struct vfs_counts *c, __u8 op, long ret)
{
	struct vfs_value *val;

	if (op >= VFS_OP_MAX)
		return;
	val = &c->v[op & (VFS_COUNTERS - 1)];
	if (ret >= 0) {
		if (op <= VFS_OP_WRITE)
			__sync_fetch_and_add(&val->bytes, ret);
		__sync_fetch_and_add(&val->calls, 1);
	} else {
		__sync_fetch_and_add(&val->errors, 1);
	}
}

/* The hash path: the per-CPU hash keyed by (cgroup id, file system). */
static __always_inline void vfs_account_hash(__u64 id, __u32 magic, __u8 op, long ret)
{
	struct vfs_counts *c;
	struct vfs_key key;

	__builtin_memset(&key, 0, sizeof(key));
	key.cgroup_id = id;
	key.magic = magic;

	c = map_lookup_or_init(&vfs_stats, &key, struct vfs_counts);
	if (!c) {
		count_drop(&vfs_drops, DROP_STATS_FULL);
		return;
	}
	vfs_add(c, op, ret);
}

#ifdef VFS_SLOTS
#include "vfs_slots.h"
#endif

/* Add one call's result to the current task's cgroup, under file system magic. */
static __always_inline void vfs_account(__u32 magic, __u8 op, long ret)
{
	__u64 id = ceemsnet_cgroup_id();

#ifdef VFS_SLOTS
	/* reads and writes take an entry of the slot's table; other ops only use one (vfs_slots.h) */
	if (vfs_account_slot(id, magic, op, ret, op <= VFS_OP_WRITE))
		return;
#endif
	vfs_account_hash(id, magic, op, ret);
}

/* s_magic is an unsigned long; every file system magic fits 32 bits. */
static __always_inline __u32 inode_magic(struct inode *inode)
{
	return (__u32)BPF_CORE_READ(inode, i_sb, s_magic);
}

/*
 * Bytes count only for regular files: reads and writes of pipes, sockets,
 * ttys and device nodes (/dev/null lives on devtmpfs, a tmpfs) are not
 * storage IO, and socket bytes are the net collector's.
 */
static __always_inline bool file_counted(struct file *file, __u32 *magic)
{
	struct inode *inode;

	if (!file)
		return false;
	inode = BPF_CORE_READ(file, f_inode);
	if (!inode || (BPF_CORE_READ(inode, i_mode) & S_IFMT) != S_IFREG)
		return false;
	*magic = inode_magic(inode);
	return true;
}

static __always_inline int handle_rw(struct file *file, __u8 op, long ret)
{
	__u32 magic;

	if (file_counted(file, &magic))
		vfs_account(magic, op, ret);
	return 0;
}

static __always_inline __u32 path_magic(const struct path *path)
{
	return (__u32)BPF_CORE_READ(path, dentry, d_sb, s_magic);
}

static __always_inline __u32 dentry_magic(struct dentry *dentry)
{
	return dentry ? (__u32)BPF_CORE_READ(dentry, d_sb, s_magic) : 0;
}

/* The kernel's own open of a file (FMODE_NOACCOUNT): never a user-visible open. */
static __always_inline bool file_internal(struct file *file)
{
	return file && (BPF_CORE_READ(file, f_mode) & FMODE_NOACCOUNT);
}

/*
 * True while the task runs with overridden credentials (override_creds():
 * current->cred is not current->real_cred). No system call of the task's
 * own leaves them so (setuid() and the like change both): the kernel does,
 * around calls it makes on someone's behalf: overlayfs on the file systems
 * below it (under its mounter's credentials: the open of the real file, a
 * copy-up's opens and creates, the create under an open(O_CREAT) or mknod),
 * nfsd and ksmbd for their clients, cachefiles. An open or a create made so
 * is such an inner call, not counted; the user-visible one is counted where
 * the user made it (the open or mknod on overlayfs; an NFS client's open on
 * the client). Also not counted so: opens of io_uring requests that carry a
 * registered personality, and the core file of a crashing task.
 */
static __always_inline bool creds_overridden(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, cred) != BPF_CORE_READ(task, real_cred);
}

/*
 * One open; plus one create when this open made the file: open(O_CREAT)
 * and creat() reach ->create() from lookup_open() directly, never through
 * vfs_create(). Counted as a successful create even if the open then
 * fails (the file exists now).
 */
static __always_inline void account_open(__u32 magic, bool created, long ret)
{
	vfs_account(magic, VFS_OP_OPEN, ret);
	if (created)
		vfs_account(magic, VFS_OP_CREATE, 0);
}

/* This open created the file, and is the user's (not under overridden credentials) */
static __always_inline bool file_created(struct file *file)
{
	return file && (BPF_CORE_READ(file, f_mode) & FMODE_CREATED) && !creds_overridden();
}

/*
 * An open that is not the user's: a file the kernel opens for itself
 * (FMODE_NOACCOUNT), or any open under overridden credentials.
 */
static __always_inline bool open_internal(struct file *file)
{
	return file_internal(file) || creds_overridden();
}

/*
 * vfs_open() (fexit): every open through the kernel's open path that the file
 * system does not open itself (finish_open(), vfs_open.h, counts those), and
 * in-kernel dentry_open() callers. The inner opens of a stacking file system
 * (overlayfs's real file, opened by vfs_open() from 6.8, nested in the outer
 * one; its copy-up's) are the kernel's own: one user-visible open counts
 * once, for the file system the user opened.
 */
static __always_inline int handle_open(const struct path *path, struct file *file, long ret)
{
	if (open_internal(file))
		return 0;
	account_open(path_magic(path), file_created(file), ret);
	return 0;
}

/*
 * create, unlink, mkdir, rmdir: charged to the file system of the parent
 * directory. A create made under overridden credentials is a file system's
 * or server's own inner call (see creds_overridden()): not counted.
 */
static __always_inline int handle_dirop(struct inode *dir, __u8 op, long ret)
{
	if (op == VFS_OP_CREATE && creds_overridden())
		return 0;
	vfs_account(dir ? inode_magic(dir) : 0, op, ret);
	return 0;
}

/* 6.19+ vfs_create() has no directory argument: the new dentry's parent is it */
static __always_inline struct inode *dentry_parent_inode(struct dentry *dentry)
{
	return dentry ? BPF_CORE_READ(dentry, d_parent, d_inode) : NULL;
}

/* 6.15+ vfs_mkdir() returns a dentry or ERR_PTR(-errno) (commit c54b386969a5). */
static __always_inline long dentry_ret(const void *ret)
{
	unsigned long v = (unsigned long)ret;

	return v >= (unsigned long)-MAX_ERRNO ? (long)v : 0;
}

#if (defined(CEEMSNET_HOOK_FEXIT) || defined(CEEMSNET_HOOK_KRETPROBE)) && VFS_ERA == 1
/*
 * rmdir(2) that never calls vfs_rmdir(). Debian 11's 5.10 (gcc 10) splits
 * vfs_rmdir(): its first checks (may_delete(), no ->rmdir) are inlined into
 * do_rmdir() and the rest is a local clone, vfs_rmdir.part.0 in kallsyms,
 * which do_rmdir() calls directly. The exported vfs_rmdir() is a small
 * wrapper only other modules call (overlayfs, nfsd): a hook on it sees no
 * rmdir(2) at all, although BTF has the function and the hook attaches.
 * The clone has no BTF (no fexit), and which kernels split is the
 * compiler's choice, so these objects count an rmdir(2) that did not pass
 * through vfs_rmdir() at do_rmdir()'s return, once it reached the file
 * system's checks (security_inode_rmdir(), called in the clone right
 * before ->rmdir(), gives the directory): per thread,
 *   do_rmdir() entry           PENDING
 *   vfs_rmdir() entry          PENDING -> BY_VFS_RMDIR (vfs_rmdir's own hook counts it)
 *   security_inode_rmdir()     PENDING -> AT_FS, with the directory's file system
 *   do_rmdir() return          AT_FS: count it with do_rmdir's result
 * Only the outermost call changes the state, so an rmdir on overlayfs counts
 * once for overlayfs (here or at vfs_rmdir) and once for its upper file
 * system (at vfs_rmdir), as on kernels without the split. Not seen on a
 * split kernel: errors from the inlined checks (EACCES, EPERM, ENOTDIR).
 */
enum { RMDIR_PENDING, RMDIR_BY_VFS_RMDIR, RMDIR_AT_FS };

struct rmdir_call {
	__u32 magic; /* file system of the directory, once AT_FS */
	__u32 state;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64); /* pid_tgid */
	__type(value, struct rmdir_call);
} rmdir_calls SEC(".maps");

static __always_inline int rmdir_syscall_enter(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rmdir_call c = {};

	bpf_map_update_elem(&rmdir_calls, &id, &c, BPF_ANY);
	return 0;
}

static __always_inline int rmdir_via_vfs_rmdir(void)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rmdir_call *c = bpf_map_lookup_elem(&rmdir_calls, &id);

	if (c && c->state == RMDIR_PENDING)
		c->state = RMDIR_BY_VFS_RMDIR;
	return 0;
}

static __always_inline int rmdir_reached_fs(struct inode *dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rmdir_call *c = bpf_map_lookup_elem(&rmdir_calls, &id);

	if (c && c->state == RMDIR_PENDING) {
		c->magic = dir ? inode_magic(dir) : 0;
		c->state = RMDIR_AT_FS;
	}
	return 0;
}

static __always_inline int rmdir_syscall_exit(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct rmdir_call *c = bpf_map_lookup_elem(&rmdir_calls, &id);
	struct rmdir_call done;

	if (!c)
		return 0;
	done = *c;
	bpf_map_delete_elem(&rmdir_calls, &id);
	if (done.state == RMDIR_AT_FS)
		vfs_account(done.magic, VFS_OP_RMDIR, ret);
	return 0;
}
#endif

#if defined(CEEMSNET_HOOK_KRETPROBE)
/*
 * What the entry probe decides and the return probe needs: the file
 * system and the operation (vfs_open's create is counted at entry, see
 * kprobe_vfs_open). See stash_put() in maps.bpf.h.
 */
struct vfs_stash_val {
	__u32 magic;
	__u8 op;      /* enum vfs_op */
	__u8 pad[3];
};

STASH_MAP(vfs_stash, struct vfs_stash_val);

/*
 * Two rules of opens and creates live here, where the entry probes of
 * vfs_open(), finish_open() and vfs_create() hand over (kprobe_vfs_open,
 * kprobe_finish_open, dirop_entry):
 *  - an open or a create under overridden credentials is not counted (see
 *    creds_overridden()): overlayfs's own opens and creates below it;
 *  - an open keeps the outermost entry of its thread: a stacking file system
 *    that opens the file below with a nested vfs_open() under the user's
 *    credentials (FUSE passthrough, 6.9+) would otherwise replace the outer
 *    entry, and the open count for the file system below. The inner return
 *    takes the outer entry, with the inner result (which the outer call
 *    returns), the outer return finds none: one open, of the file system
 *    the user opened.
 * The kernel's own files (FMODE_NOACCOUNT) are left out before (vfs_open.h).
 */
static __always_inline int vfs_stash_put(__u32 fn, __u32 magic, __u8 op)
{
	struct vfs_stash_val v = {};
	struct stash_key k;
	long err;

	if ((op == VFS_OP_OPEN || op == VFS_OP_CREATE) && creds_overridden())
		return 0;
	v.magic = magic;
	v.op = op;
	stash_key_init(&k, fn);
	err = bpf_map_update_elem(&vfs_stash, &k, &v, op == VFS_OP_OPEN ? BPF_NOEXIST : BPF_ANY);
	if (err && !(op == VFS_OP_OPEN && err == -EEXIST))
		count_drop(&vfs_drops, DROP_STASH_FULL);
	return 0;
}
#endif

#endif /* __CEEMSNET_VFS_H */
