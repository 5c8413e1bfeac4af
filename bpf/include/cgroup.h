/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Which cgroup a task's work is charged to.
 *
 * cgroup v2 (default): the id of the task's cgroup2 cgroup, which is the
 * inode number of its directory: current->cgroups->dfl_cgrp->kn->id, what
 * bpf_get_current_cgroup_id() returns. Objects whose first kernel has
 * bpf_get_current_task_btf() (5.11, commit 3ca1032ab7ab) read it with those
 * four BTF loads instead of the helper: the same fields, in the program's
 * own RCU read section (tracing programs run in one), without a call into
 * the kernel, which costs 15-28 ns more per event on this project's host
 * (bench/event_parts.py: AMD, where every kernel function return goes
 * through the SRSO return thunk). The others (fexit before 5.11, kretprobe
 * from 4.18) keep the helper.
 * cgroup v1 (RHEL 8, hybrid hosts): the id of the task's cgroup in one
 * controller's hierarchy, task->cgroups->subsys[i]->cgroup->kn->id, where
 * i is the controller's index in /proc/cgroups. The loader sets i before
 * load; the verifier then sees a constant and drops the branch not taken.
 */
#ifndef __CEEMSNET_CGROUP_H
#define __CEEMSNET_CGROUP_H

const volatile __s32 cgrp_v1_subsys = -1;

/* a bound for the verifier: kernels have at most ~14 controllers */
#define CGROUP_SUBSYS_MAX 16

/*
 * Before 5.5, kernfs_node.id was a union of { ino, generation } and a u64
 * (5.5, "kernfs: convert kernfs_node->id from union kernfs_node_id to u64"). User space
 * sees the inode number, so on old kernels read .ino.
 */
union kernfs_node_id {
	struct {
		__u32 ino;
		__u32 generation;
	};
	__u64 id;
} __attribute__((preserve_access_index));

struct kernfs_node___old {
	union kernfs_node_id id;
} __attribute__((preserve_access_index));

static __always_inline __u64 kn_ino(struct kernfs_node *kn)
{
	if (bpf_core_type_exists(union kernfs_node_id)) {
		struct kernfs_node___old *old = (void *)kn;

		return BPF_CORE_READ(old, id.ino);
	}
	return BPF_CORE_READ(kn, id);
}

/*
 * bpf_get_current_task_btf() is there: the tracepoint objects (5.15+, 6.3+)
 * and the fexit objects of eras from 5.12 (VFS_ERA 2) and 5.19
 * (RECVMSG_ERA 2) on; not the 5.5 fexit objects nor any kretprobe object.
 */
#if defined(CEEMSNET_HOOK_TRACEPOINT) || \
	(defined(CEEMSNET_HOOK_FEXIT) && ((defined(VFS_ERA) && VFS_ERA >= 2) || (defined(RECVMSG_ERA) && RECVMSG_ERA >= 2)))
#define CGROUP_ID_TASK_BTF 1
#endif

static __always_inline __u64 cgroup2_id(void)
{
#ifdef CGROUP_ID_TASK_BTF
	struct task_struct *task = bpf_get_current_task_btf();

	return task->cgroups->dfl_cgrp->kn->id;
#else
	return bpf_get_current_cgroup_id();
#endif
}

static __always_inline __u64 ceemsnet_cgroup_id(void)
{
	struct cgroup_subsys_state *css = NULL;
	struct task_struct *task;
	struct css_set *cset;
	__s32 i = cgrp_v1_subsys;

	if (i < 0)
		return cgroup2_id();
	if (i >= CGROUP_SUBSYS_MAX)
		return 0;
	task = (struct task_struct *)bpf_get_current_task();
	cset = BPF_CORE_READ(task, cgroups);
	if (!cset)
		return 0;
	/* subsys[] is relocated by CO-RE; the index is a load-time constant */
	bpf_probe_read_kernel(&css, sizeof(css), (void *)&cset->subsys[0] + i * sizeof(css));
	if (!css)
		return 0;
	return kn_ino(BPF_CORE_READ(css, cgroup, kn));
}

/*
 * The cgroup of a given task, not the current one, in the same hierarchy as
 * ceemsnet_cgroup_id() (cgroup2, or cgrp_v1_subsys's controller): for work
 * done on behalf of a task by whichever task runs it (an io_uring request
 * completes in an io-wq worker, the SQPOLL thread, task work or an
 * interrupt; the request names its submitter, bpf/vfs/vfs_uring.h). The
 * task pointer comes from a probe read, so every field is a CO-RE probe
 * read. 0 when there is no task or no cgroup.
 */
static __always_inline __u64 ceemsnet_task_cgroup_id(struct task_struct *task)
{
	struct cgroup_subsys_state *css = NULL;
	struct css_set *cset;
	__s32 i = cgrp_v1_subsys;

	if (!task)
		return 0;
	cset = BPF_CORE_READ(task, cgroups);
	if (!cset)
		return 0;
	if (i < 0)
		return kn_ino(BPF_CORE_READ(cset, dfl_cgrp, kn));
	if (i >= CGROUP_SUBSYS_MAX)
		return 0;
	bpf_probe_read_kernel(&css, sizeof(css), (void *)&cset->subsys[0] + i * sizeof(css));
	if (!css)
		return 0;
	return kn_ino(BPF_CORE_READ(css, cgroup, kn));
}

#endif /* __CEEMSNET_CGROUP_H */
