// SPDX-License-Identifier: GPL-2.0
/*
 * The floor for bench/vfs_cost.py: programs on the vfs hooks of write(2)
 * that only return, named as the vfs objects' own, so a per-write cost can
 * be reported "above the empty program of the same kind". Built by the
 * bench itself with clang-19 (not shipped, not catalogued).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* the tracepoint family counts write(2) at its own exit event (bpf/vfs/vfs_tp.bpf.c) */
SEC("tp/syscalls/sys_exit_write")
int tp_sys_exit_write(void *ctx)
{
	return 0;
}

/* the vfs_write prototype does not matter to a program that reads nothing */
SEC("fexit/vfs_write")
int BPF_PROG(fexit_vfs_write, struct file *file)
{
	return 0;
}

SEC("kprobe/vfs_write")
int BPF_KPROBE(kprobe_vfs_write)
{
	return 0;
}

SEC("kretprobe/vfs_write")
int BPF_KRETPROBE(kretprobe_vfs_write)
{
	return 0;
}
