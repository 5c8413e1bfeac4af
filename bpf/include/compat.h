/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Helpers whose kernel is newer than an object's first kernel.
 *
 * BPF_CORE_READ() and cgroup.h read kernel memory with
 * bpf_probe_read_kernel(), which arrived in 5.5 (commit 6ae08ae3dea2). The
 * kretprobe objects are catalogued from 4.18 (RHEL 8), so they call
 * bpf_probe_read() (4.1) instead: on x86_64 and arm64, the only arches
 * built, user and kernel address spaces do not overlap and it reads kernel
 * memory the same way. fexit (5.5+) and tracepoint objects keep the
 * _kernel variant. Include after <bpf/bpf_core_read.h>.
 */
#ifndef __CEEMSNET_COMPAT_H
#define __CEEMSNET_COMPAT_H

#if defined(CEEMSNET_HOOK_KRETPROBE)
#define bpf_probe_read_kernel bpf_probe_read
#endif

#endif /* __CEEMSNET_COMPAT_H */
