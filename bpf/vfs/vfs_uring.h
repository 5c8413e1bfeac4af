/* SPDX-License-Identifier: GPL-2.0 */
/*
 * io_uring file reads and writes, counted at their completion and charged
 * to the submitting task's cgroup. Every family (vfs.bpf.c, vfs_tp.bpf.c).
 * Included at the end of the object's source, after vfs.h.
 *
 * io_uring (io_uring/rw.c, fs/io_uring.c before 6.0) calls the file's
 * ->read_iter/->write_iter itself, never vfs_read()/vfs_write() nor a read
 * or write system call, so none of the other hooks sees its IO. These
 * programs are tp_btf ones on the io_uring trace events in every family:
 * they need BTF and 5.5, neither trampolines (fexit) nor kprobes.
 *
 * The event is io_uring:io_uring_complete, fired once per CQE the kernel
 * posts, with the request's result: bytes (>= 0) or -errno. Its prototype
 * changed three times; the loader enables the one program whose prototype
 * this kernel's BTF has (the catalogue's alternatives,
 * ceemsnet/planning/catalogue.py _uring_hooks()):
 *
 *   tp_btf_uring_cqe (6.13+, "io_uring: clean up cqe trace points"):
 *     (struct io_ring_ctx *ctx, void *req, struct io_uring_cqe *cqe)
 *   tp_btf_uring_req (5.18 - 6.12, "io-uring: Make tracepoints consistent";
 *     5.19 added extra1/extra2 after cflags, not read here):
 *     (void *ctx, void *req, u64 user_data, int res, unsigned cflags, ...)
 *   tp_btf_uring_sqe + tp_btf_uring_done (5.14 - 5.17, and 5.10.162+
 *     stable kernels, which carry 5.15's io_uring): the completion has no
 *     request, (void *ctx, u64 user_data, int res, unsigned cflags); the
 *     request is known only at io_uring:io_uring_submit_sqe(void *ctx,
 *     void *req, u8 opcode, u64 user_data, u32 flags, bool force_nonblock,
 *     bool sq_thread), so its cgroup, file system and op are kept there in
 *     uring_inflight, keyed by (ring, user_data), and taken at completion.
 *
 * Counted: opcodes READV, WRITEV, READ_FIXED, WRITE_FIXED, READ, WRITE,
 * READV_FIXED, WRITEV_FIXED (UAPI numbers, stable) on regular files (not
 * pipes nor sockets: the net collector counts sockets), keyed by the
 * file's file system like vfs_read(), in the same read/write counters as
 * the system calls: bytes and one call when res >= 0, one error when < 0.
 *
 * The cgroup is the submitter's: the request's task (req->task up to 6.12,
 * req->tctx->task from 6.13, "io_uring: move struct io_kiocb from
 * task_struct to io_uring_task"; CO-RE picks the field), read with
 * ceemsnet_task_cgroup_id(), not the task the completion runs in (an io-wq
 * worker, the SQPOLL thread, task work, an interrupt, or another process
 * that shares the ring). With the submission stash, the task that submits
 * (the io_uring_enter() caller, or the SQPOLL thread, a thread of the
 * submitter since 5.12 and in 5.10.162+).
 *
 * Not counted (bpf/README.md, "io_uring"): requests with
 * IOSQE_CQE_SKIP_SUCCESS that succeed (no CQE is posted, 5.17+); CQEs that
 * overflow the CQ ring (posted later from the overflow list, without this
 * event); with the stash, a request whose (ring, user_data) another
 * request in flight on the same ring reuses (the later one overwrites the
 * first's entry: one of the two completions is not counted), requests
 * refused at their preparation, before the submission event (EBADF of a
 * file not open for that direction, EINVAL), and requests submitted before
 * the programs were attached.
 */
#ifndef __CEEMSNET_VFS_URING_H
#define __CEEMSNET_VFS_URING_H

/* enum io_uring_op (include/uapi/linux/io_uring.h): UAPI, never renumbered */
#define URING_OP_READV 1
#define URING_OP_WRITEV 2
#define URING_OP_READ_FIXED 4
#define URING_OP_WRITE_FIXED 5
#define URING_OP_READ 22
#define URING_OP_WRITE 23
#define URING_OP_READV_FIXED 60  /* 6.15 */
#define URING_OP_WRITEV_FIXED 61 /* 6.15 */

/* the request's owner up to 6.12: req->task (6.13: req->tctx->task) */
struct io_kiocb___old {
	struct task_struct *task;
} __attribute__((preserve_access_index));

/* VFS_OP_READ or VFS_OP_WRITE for the counted opcodes, else VFS_OP_MAX */
static __always_inline __u8 uring_vfs_op(__u8 opcode)
{
	switch (opcode) {
	case URING_OP_READV:
	case URING_OP_READ_FIXED:
	case URING_OP_READ:
	case URING_OP_READV_FIXED:
		return VFS_OP_READ;
	case URING_OP_WRITEV:
	case URING_OP_WRITE_FIXED:
	case URING_OP_WRITE:
	case URING_OP_WRITEV_FIXED:
		return VFS_OP_WRITE;
	}
	return VFS_OP_MAX;
}

/* Count one completion for cgroup `id`: the slot layout first where the object has it, as vfs_account(). */
static __always_inline void uring_account(__u64 id, __u32 magic, __u8 op, long res)
{
#ifdef VFS_SLOTS
	if (vfs_account_slot(id, magic, op, res, true))
		return;
#endif
	vfs_account_hash(id, magic, op, res);
}

static __always_inline struct task_struct *uring_req_task(struct io_kiocb *req)
{
	struct io_kiocb___old *old = (void *)req;

	if (bpf_core_field_exists(old->task))
		return BPF_CORE_READ(old, task);
	return BPF_CORE_READ(req, tctx, task);
}

/* One CQE of request `req` (NULL: an auxiliary CQE, no request) with result `res`. */
static __always_inline int uring_complete(struct io_kiocb *req, long res)
{
	struct task_struct *task;
	__u32 magic;
	__u8 op;

	if (!req)
		return 0;
	op = uring_vfs_op(BPF_CORE_READ(req, opcode));
	if (op == VFS_OP_MAX || !file_counted(BPF_CORE_READ(req, file), &magic))
		return 0;
	task = uring_req_task(req);
	if (task)
		uring_account(ceemsnet_task_cgroup_id(task), magic, op, res);
	return 0;
}

/* 6.13+: the CQE as posted (its res is the request's result) */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(tp_btf_uring_cqe, struct io_ring_ctx *ring, void *req, struct io_uring_cqe *cqe)
{
	return uring_complete(req, BPF_CORE_READ(cqe, res));
}

/* 5.18 - 6.12: the result as an argument */
SEC("tp_btf/io_uring_complete")
int BPF_PROG(tp_btf_uring_req, void *ring, void *req, __u64 user_data, int res)
{
	return uring_complete(req, res);
}

/* 5.14 - 5.17 and 5.10.162+: what a submitted read or write will be counted as */
struct uring_key {
	__u64 ring;
	__u64 user_data;
};

struct uring_pending {
	__u64 cgroup_id;
	__u32 magic;
	__u8 op;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct uring_key);
	__type(value, struct uring_pending);
} uring_inflight SEC(".maps");

SEC("tp_btf/io_uring_submit_sqe")
int BPF_PROG(tp_btf_uring_sqe, void *ring, void *req, __u8 opcode, __u64 user_data)
{
	struct uring_pending p = {};
	struct uring_key k = {};

	p.op = uring_vfs_op(opcode);
	if (p.op == VFS_OP_MAX || !req || !file_counted(BPF_CORE_READ((struct io_kiocb *)req, file), &p.magic))
		return 0;
	p.cgroup_id = ceemsnet_cgroup_id();
	k.ring = (__u64)ring;
	k.user_data = user_data;
	if (bpf_map_update_elem(&uring_inflight, &k, &p, BPF_ANY))
		count_drop(&vfs_drops, DROP_STASH_FULL);
	return 0;
}

SEC("tp_btf/io_uring_complete")
int BPF_PROG(tp_btf_uring_done, void *ring, __u64 user_data, int res)
{
	struct uring_key k = {};
	struct uring_pending *p, done;

	k.ring = (__u64)ring;
	k.user_data = user_data;
	p = bpf_map_lookup_elem(&uring_inflight, &k);
	if (!p)
		return 0;
	done = *p;
	bpf_map_delete_elem(&uring_inflight, &k);
	uring_account(done.cgroup_id, done.magic, done.op, res);
	return 0;
}

#endif /* __CEEMSNET_VFS_URING_H */
