// SPDX-License-Identifier: GPL-2.0
/*
 * The floor for bench/uring_cost.py (io_uring completions): a program that
 * only returns, on the same trace event as the vfs objects' own, so a
 * per-completion cost can be reported "above the empty program of the same
 * kind". Built by the bench (bench/hookcost.build_empty), not shipped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
SEC("tp_btf/io_uring_complete") int empty_uring_complete(void *ctx) { return 0; }
