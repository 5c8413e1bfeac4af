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

#define S_IFMT 00170000
#define S_IFREG 0100000
#define MAX_ERRNO 4095

/* Per-CPU and not preallocated, like net_stats (see bpf/net/net.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct vfs_key);
	__type(value, struct vfs_value);
} vfs_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} vfs_drops SEC(".maps");

static __always_inline void vfs_drop(__u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(&vfs_drops, &reason);

	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void vfs_account(__u32 magic, __u8 op, long ret)
{
	struct vfs_key key;
	struct vfs_value *val;

	__builtin_memset(&key, 0, sizeof(key));
	key.cgroup_id = ceemsnet_cgroup_id();
	key.magic = magic;
	key.op = op;

	val = bpf_map_lookup_elem(&vfs_stats, &key);
	if (!val) {
		struct vfs_value zero = {};

		bpf_map_update_elem(&vfs_stats, &key, &zero, BPF_NOEXIST);
		val = bpf_map_lookup_elem(&vfs_stats, &key);
		if (!val) {
			vfs_drop(DROP_STATS_FULL);
			return;
		}
	}
	if (ret >= 0) {
		if (op <= VFS_OP_WRITE)
			__sync_fetch_and_add(&val->bytes, ret);
		__sync_fetch_and_add(&val->calls, 1);
	} else {
		__sync_fetch_and_add(&val->errors, 1);
	}
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

static __always_inline int handle_open(const struct path *path, long ret)
{
	vfs_account(path_magic(path), VFS_OP_OPEN, ret);
	return 0;
}

/* create, unlink, mkdir, rmdir: charged to the file system of the parent directory */
static __always_inline int handle_dirop(struct inode *dir, __u8 op, long ret)
{
	vfs_account(dir ? inode_magic(dir) : 0, op, ret);
	return 0;
}

/* 6.15+ vfs_mkdir() returns a dentry or ERR_PTR(-errno) (commit c54b386969a5). */
static __always_inline long dentry_ret(const void *ret)
{
	unsigned long v = (unsigned long)ret;

	return v >= (unsigned long)-MAX_ERRNO ? (long)v : 0;
}

#if defined(CEEMSNET_HOOK_KRETPROBE)
/*
 * Entry -> return hand-over: the entry side decides whether and how to
 * count (file system magic, operation); the return side adds the result.
 * Keyed by thread and function.
 */
struct vfs_stash_key {
	__u64 pid_tgid;
	__u32 fn;
	__u32 pad;
};

struct vfs_stash_val {
	__u32 magic;
	__u8 op;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct vfs_stash_key);
	__type(value, struct vfs_stash_val);
} vfs_stash SEC(".maps");

static __always_inline void vfs_stash_key_init(struct vfs_stash_key *k, __u32 fn)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->pid_tgid = bpf_get_current_pid_tgid();
	k->fn = fn;
}

static __always_inline int vfs_stash_put(__u32 fn, __u32 magic, __u8 op)
{
	struct vfs_stash_key k;
	struct vfs_stash_val v = {};

	vfs_stash_key_init(&k, fn);
	v.magic = magic;
	v.op = op;
	if (bpf_map_update_elem(&vfs_stash, &k, &v, BPF_ANY))
		vfs_drop(DROP_STASH_FULL);
	return 0;
}

/* Returns false if nothing was stashed; else fills *v and forgets the entry. */
static __always_inline bool vfs_stash_take(__u32 fn, struct vfs_stash_val *out)
{
	struct vfs_stash_key k;
	struct vfs_stash_val *v;

	vfs_stash_key_init(&k, fn);
	v = bpf_map_lookup_elem(&vfs_stash, &k);
	if (!v)
		return false;
	*out = *v;
	bpf_map_delete_elem(&vfs_stash, &k);
	return true;
}
#endif

#endif /* __CEEMSNET_VFS_H */
