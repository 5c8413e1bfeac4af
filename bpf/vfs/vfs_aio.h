/* SPDX-License-Identifier: GPL-2.0 */
/*
 * AIO (io_submit) file reads and writes, charged to the submitting task's
 * cgroup. Every family (vfs.bpf.c, vfs_tp.bpf.c).
 * Included at the end of the object's source, after vfs.h.
 *
 * fs/aio.c never calls vfs_read()/vfs_write(): io_submit() -> io_submit_one()
 * -> aio_read()/aio_write() call ->read_iter/->write_iter themselves, and the
 * result reaches the task through the kiocb's ki_complete, aio_complete_rw(),
 * called either inside aio_read()/aio_write() (aio_rw_done(): buffered IO,
 * and any error the file system returns at once) or later, from whatever
 * context ends the IO (O_DIRECT: the block layer's completion, in interrupt
 * or workqueue context, where the current task is not the submitter). So:
 *
 * fexit and kretprobe objects, per request (struct kiocb, inside the
 * struct aio_kiocb fs/aio.c allocates per iocb):
 *   aio_read/aio_write entry   aio_reqs[kiocb] = (submitter's cgroup id, op)
 *   aio_complete_rw entry      take aio_reqs[kiocb]: count res (bytes, or the
 *                              error) under the file's system, kiocb->ki_filp,
 *                              regular files only (as vfs_read/vfs_write)
 *   aio_read/aio_write return  < 0: refused before any IO, nothing completes:
 *                              take the entry and count one error
 * The entry is taken before aio_complete_rw can free the request (its
 * iocb_put() runs after), so a kiocb's address is never reused while its
 * entry is in the map; the file is read at completion: current kernels set
 * ki_filp in __io_submit_one() before aio_read(), older ones (4.18's code)
 * only inside aio_prep_rw(). A refusal
 * counts as an error because it is what vfs_read()/vfs_write() refuse, and
 * count, for read()/write(): a file not open for reading/writing (EBADF), no
 * ->read_iter/->write_iter (EINVAL), a bad buffer or iovec (EFAULT), an
 * offset rw_verify_area() rejects; plus AIO's own flag checks (EPERM for
 * IOCB_FLAG_IOPRIO without the capability, EOPNOTSUPP for RWF_* flags),
 * as preadv2() counts them. io_submit() reports it to the job. Requests
 * refused before aio_read/aio_write (a bad fd, ring full: EAGAIN) are not
 * read or write calls and are not counted.
 *
 * tracepoint objects (no kernel function hooks): the system calls.
 *   syscalls:sys_enter_io_submit    for each iocb of the call's array, a
 *                                   read or write (IOCB_CMD_PREAD, PWRITE,
 *                                   PREADV, PWRITEV) of a regular file:
 *                                   aio_ureqs[(tgid, iocb address)] =
 *                                   (cgroup id, file system, op)
 *   syscalls:sys_exit_io_getevents  for each io_event the call returned
 *   syscalls:sys_exit_io_pgetevents (obj: the iocb's address, res: bytes or
 *                                   the error), take the entry and count res
 * At entry, not exit: another thread may reap a completion before the
 * submitting call returns. Not seen there: completions reaped from the ring
 * in user space (the ring is mapped into the process; fio's
 * --userspace_reap), never reaped ones, more than AIO_TP_BATCH iocbs or
 * events in one call, and requests io_submit() refuses (not counted).
 */
#ifndef __CEEMSNET_VFS_AIO_H
#define __CEEMSNET_VFS_AIO_H

/*
 * Requests in flight at once on the node (all cgroups). The default
 * fs.aio-max-nr (65536) caps the events all AIO contexts reserve, twice
 * what they can have in flight (ioctx_alloc() doubles nr_events): 32768.
 * An LRU map, so that entries never taken (a missed program run, a ring
 * reaped in user space) cannot fill it: past it, the oldest entries go.
 */
#define AIO_INFLIGHT 32768

/*
 * Count one request's result for the cgroup that submitted it (not the
 * current task's: a completion may run anywhere). In a slot-layout object
 * (VFS_SLOTS) the cgroup's slot first, as its read()/write() calls: the
 * hash path costs ~170 ns more per IO on this project's host
 * (bench/fileio_cost.py).
 */
static __always_inline void aio_account(__u64 id, __u32 magic, __u8 op, long res)
{
#ifdef VFS_SLOTS
	if (vfs_account_slot(id, magic, op, res, true))
		return;
#endif
	vfs_account_hash(id, magic, op, res);
}

struct aio_req {
	__u64 cgroup_id; /* the submitter's */
	__u32 magic;     /* tracepoint objects: the file's system, found at submission */
	__u8 op;         /* VFS_OP_READ or VFS_OP_WRITE */
	__u8 pad[3];
};

#if defined(CEEMSNET_HOOK_FEXIT) || defined(CEEMSNET_HOOK_KRETPROBE)

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AIO_INFLIGHT);
	__type(key, __u64); /* the struct kiocb's address */
	__type(value, struct aio_req);
} aio_reqs SEC(".maps");

static __always_inline int aio_submit(struct kiocb *req, __u8 op)
{
	__u64 key = (__u64)req;
	struct aio_req r = {};

	r.cgroup_id = ceemsnet_cgroup_id();
	r.op = op;
	bpf_map_update_elem(&aio_reqs, &key, &r, BPF_ANY);
	return 0;
}

/* Take the request's entry and count res for its submitter: bytes, or an error. */
static __always_inline int aio_done(struct kiocb *req, long res)
{
	__u64 key = (__u64)req;
	struct aio_req *r = bpf_map_lookup_elem(&aio_reqs, &key);
	__u64 id;
	__u32 magic;
	__u8 op;

	if (!r)
		return 0;
	id = r->cgroup_id;
	op = r->op;
	bpf_map_delete_elem(&aio_reqs, &key);
	if (file_counted(BPF_CORE_READ(req, ki_filp), &magic))
		aio_account(id, magic, op, res);
	return 0;
}

/* aio_read/aio_write's return: below 0, the request was refused before any IO and never completes */
static __always_inline int aio_submitted(struct kiocb *req, long ret)
{
	return ret < 0 ? aio_done(req, ret) : 0;
}

#if defined(CEEMSNET_HOOK_FEXIT)

/* static int aio_read(struct kiocb *req, const struct iocb *iocb, bool vectored, bool compat): every VM kernel 5.10-7.3 */
SEC("fentry/aio_read")
int BPF_PROG(fentry_aio_read, struct kiocb *req)
{
	return aio_submit(req, VFS_OP_READ);
}

SEC("fexit/aio_read")
int BPF_PROG(fexit_aio_read, struct kiocb *req, const struct iocb *iocb, bool vectored, bool compat, int ret)
{
	return aio_submitted(req, ret);
}

SEC("fentry/aio_write")
int BPF_PROG(fentry_aio_write, struct kiocb *req)
{
	return aio_submit(req, VFS_OP_WRITE);
}

SEC("fexit/aio_write")
int BPF_PROG(fexit_aio_write, struct kiocb *req, const struct iocb *iocb, bool vectored, bool compat, int ret)
{
	return aio_submitted(req, ret);
}

/*
 * void aio_complete_rw(struct kiocb *kiocb, long res), (..., long res2)
 * before 5.16 (commit 6b19b766e8f0): the first two are read. At entry: its
 * iocb_put() may free the request.
 */
SEC("fentry/aio_complete_rw")
int BPF_PROG(fentry_aio_complete_rw, struct kiocb *kiocb, long res)
{
	return aio_done(kiocb, res);
}

#else /* CEEMSNET_HOOK_KRETPROBE */

/* the request, from the entry probe to the return probe of the same call (stash_put() in maps.bpf.h) */
STASH_MAP(aio_stash, __u64);

static __always_inline int aio_entry(struct kiocb *req, __u8 op)
{
	__u64 r = (__u64)req;

	if (!stash_put(&aio_stash, op, &r))
		count_drop(&vfs_drops, DROP_STASH_FULL);
	return aio_submit(req, op);
}

static __always_inline int aio_return(__u8 op, long ret)
{
	__u64 r;

	if (!stash_take(&aio_stash, op, &r))
		return 0;
	return aio_submitted((struct kiocb *)r, ret);
}

SEC("kprobe/aio_read")
int BPF_KPROBE(kprobe_aio_read, struct kiocb *req)
{
	return aio_entry(req, VFS_OP_READ);
}

SEC("kretprobe/aio_read")
int BPF_KRETPROBE(kretprobe_aio_read, int ret)
{
	return aio_return(VFS_OP_READ, ret);
}

SEC("kprobe/aio_write")
int BPF_KPROBE(kprobe_aio_write, struct kiocb *req)
{
	return aio_entry(req, VFS_OP_WRITE);
}

SEC("kretprobe/aio_write")
int BPF_KRETPROBE(kretprobe_aio_write, int ret)
{
	return aio_return(VFS_OP_WRITE, ret);
}

/* no return probe: the result is the second argument (see fentry_aio_complete_rw) */
SEC("kprobe/aio_complete_rw")
int BPF_KPROBE(kprobe_aio_complete_rw, struct kiocb *kiocb, long res)
{
	return aio_done(kiocb, res);
}

#endif /* CEEMSNET_HOOK_FEXIT */

#elif defined(CEEMSNET_HOOK_TRACEPOINT)

/* IOCB_CMD_* (include/uapi/linux/aio_abi.h) */
#define IOCB_CMD_PREAD 0
#define IOCB_CMD_PWRITE 1
#define IOCB_CMD_PREADV 7
#define IOCB_CMD_PWRITEV 8

/* iocbs read per io_submit(), io_events per io_getevents(): a bounded loop each */
#define AIO_TP_BATCH 128

struct aio_ukey {
	__u64 iocb; /* the iocb's user address: io_event.obj */
	__u32 tgid; /* the process: AIO contexts belong to its mm */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, AIO_INFLIGHT);
	__type(key, struct aio_ukey);
	__type(value, struct aio_req);
} aio_ureqs SEC(".maps");

/* The record of syscalls:sys_enter_io_submit (its format file). */
struct io_submit_enter_args {
	__u64 common;
	int nr_sys;
	int pad;
	__u64 ctx_id;
	long nr;
	__u64 iocbpp; /* struct iocb __user * __user * */
};

/* struct iocb's first 24 bytes (include/uapi/linux/aio_abi.h, little-endian) */
struct aio_iocb_head {
	__u64 aio_data;
	__u32 aio_key;
	__u32 aio_rw_flags;
	__u16 aio_lio_opcode;
	__s16 aio_reqprio;
	__u32 aio_fildes;
};

/* true if fd names a regular file: its file system in *magic */
static __always_inline bool aio_fd_magic(struct task_struct *task, long fd, __u32 *magic)
{
#if TP_ERA >= 2
	struct file *file = btf_file(fd_file(task, fd));
	struct inode *inode;

	if (!file)
		return false;
	inode = file->f_inode;
	if (!inode || (inode->i_mode & S_IFMT) != S_IFREG)
		return false;
	*magic = (__u32)inode->i_sb->s_magic;
	return true;
#else
	return file_counted(fd_file(task, fd), magic);
#endif
}

SEC("tp/syscalls/sys_enter_io_submit")
int tp_sys_enter_io_submit(struct io_submit_enter_args *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct aio_ukey key = {};
	struct aio_req r = {};
	long nr = ctx->nr;
	__u64 pp = ctx->iocbpp;
	long last_fd = -1;
	bool last_ok = false;
	__u32 magic = 0;
	int i;

	key.tgid = bpf_get_current_pid_tgid() >> 32;
	r.cgroup_id = ceemsnet_cgroup_id();
	for (i = 0; i < AIO_TP_BATCH; i++) {
		struct aio_iocb_head cb;
		__u64 p;

		if (i >= nr)
			break;
		if (bpf_probe_read_user(&p, sizeof(p), (void *)(pp + i * sizeof(__u64))) ||
		    bpf_probe_read_user(&cb, sizeof(cb), (void *)p))
			break; /* io_submit() stops there too (EFAULT) */
		if (cb.aio_lio_opcode == IOCB_CMD_PREAD || cb.aio_lio_opcode == IOCB_CMD_PREADV)
			r.op = VFS_OP_READ;
		else if (cb.aio_lio_opcode == IOCB_CMD_PWRITE || cb.aio_lio_opcode == IOCB_CMD_PWRITEV)
			r.op = VFS_OP_WRITE;
		else
			continue;
		/* a batch mostly names one file: look its fd up once */
		if ((long)cb.aio_fildes != last_fd) {
			last_fd = cb.aio_fildes;
			last_ok = aio_fd_magic(task, last_fd, &magic);
		}
		if (!last_ok)
			continue;
		r.magic = magic;
		key.iocb = p;
		bpf_map_update_elem(&aio_ureqs, &key, &r, BPF_ANY);
	}
	return 0;
}

/* io_getevents(ctx, min_nr, nr, struct io_event __user *events, timeout) returned ret events */
static __always_inline int aio_reaped(long ret)
{
	struct io_event *events = (struct io_event *)user_regs(bpf_get_current_task_btf())->r10;
	struct aio_ukey key = {};
	int i;

	key.tgid = bpf_get_current_pid_tgid() >> 32;
	for (i = 0; i < AIO_TP_BATCH; i++) {
		struct aio_req *r;
		struct io_event ev;
		__u64 id;
		__u32 magic;
		__u8 op;

		if (i >= ret)
			break;
		if (bpf_probe_read_user(&ev, sizeof(ev), &events[i]))
			break;
		key.iocb = ev.obj;
		r = bpf_map_lookup_elem(&aio_ureqs, &key);
		if (!r)
			continue;
		id = r->cgroup_id;
		magic = r->magic;
		op = r->op;
		bpf_map_delete_elem(&aio_ureqs, &key);
		aio_account(id, magic, op, ev.res);
	}
	return 0;
}

SYS_EXIT(io_getevents) { return aio_reaped(ctx->ret); }
SYS_EXIT(io_pgetevents) { return aio_reaped(ctx->ret); }

#endif

#endif /* __CEEMSNET_VFS_AIO_H */
