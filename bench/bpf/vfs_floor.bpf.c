// SPDX-License-Identifier: GPL-2.0
/*
 * Bench only (bench/vfs_tp_cost.py builds it with clang-19): programs that
 * only return, on the hooks the vfs tracepoint objects use, so that their
 * run time is reported above the floor of the same kind of program.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* the kind of vfs-tracepoint-5.15: a classic tracepoint, one syscall's exit event */
SEC("tp/syscalls/sys_exit_write")
int empty_sys_exit_write(void *ctx)
{
	return 0;
}

/* the kind of vfs-tracepoint-5.11: the raw sys_exit tracepoint, every system call */
SEC("tp_btf/sys_exit")
int BPF_PROG(empty_sys_exit, struct pt_regs *regs, long ret)
{
	return 0;
}
