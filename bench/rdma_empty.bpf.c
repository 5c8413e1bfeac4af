// SPDX-License-Identifier: GPL-2.0
/*
 * The floor for bench/rdma_cost.py: programs that only return, on the same
 * module functions (ib_core, rdma_rxe) and with the same names and kinds as
 * bpf/rdma/rdma.bpf.c's own, so a per-event cost can be reported "above the
 * empty program of the same kind". Built by the bench (bench/hookcost.build_empty,
 * or bench/table.py for the aarch64 guest), not shipped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char LICENSE[] SEC("license") = "GPL";
#define EMPTY(sec, name) SEC(sec) int name(void *ctx) { return 0; }
EMPTY("fexit/rdma_restrack_add", fexit_rdma_restrack_add)
EMPTY("fentry/rdma_restrack_del", fentry_rdma_restrack_del)
EMPTY("fentry/rdma_restrack_commit_del", fentry_rdma_restrack_commit_del)
EMPTY("fentry/rxe_xmit_packet", fentry_rxe_xmit_packet)
EMPTY("fentry/rxe_resp_queue_pkt", fentry_rxe_resp_queue_pkt)
EMPTY("fentry/rxe_comp_queue_pkt", fentry_rxe_comp_queue_pkt)
EMPTY("kprobe/rdma_restrack_add", kprobe_rdma_restrack_add)
EMPTY("kretprobe/rdma_restrack_add", kretprobe_rdma_restrack_add)
EMPTY("kprobe/rdma_restrack_del", kprobe_rdma_restrack_del)
EMPTY("kprobe/rdma_restrack_commit_del", kprobe_rdma_restrack_commit_del)
EMPTY("kprobe/rxe_xmit_packet", kprobe_rxe_xmit_packet)
EMPTY("kprobe/rxe_resp_queue_pkt", kprobe_rxe_resp_queue_pkt)
EMPTY("kprobe/rxe_comp_queue_pkt", kprobe_rxe_comp_queue_pkt)
