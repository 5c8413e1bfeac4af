/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmlinux.h is generated from an x86_64 kernel. Programs that read kprobe
 * registers on arm64 need the arm64 register layout, which that header
 * lacks: declare it here (arch/arm64/include/uapi/asm/ptrace.h).
 */
#ifndef __CEEMSNET_ARCH_H
#define __CEEMSNET_ARCH_H

#if defined(__TARGET_ARCH_arm64)
struct user_pt_regs {
	__u64 regs[31];
	__u64 sp;
	__u64 pc;
	__u64 pstate;
};
#endif

#endif /* __CEEMSNET_ARCH_H */
