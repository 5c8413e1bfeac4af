// SPDX-License-Identifier: GPL-2.0
/*
 * RDMA accounting: live RDMA objects and soft-RoCE payload bytes per cgroup.
 *
 * Objects: the kernel's RDMA resource tracker (ib_core, drivers/infiniband/core/
 * restrack.c) records every PD, CQ, QP, MR and SRQ at creation with
 * rdma_restrack_add(res), in the creating task's context (the uverbs call of
 * whichever thread made it), on every driver, and forgets it in
 * rdma_restrack_del(res) (QPs, CQs and SRQs in rdma_restrack_commit_del(res) where
 * the kernel deletes them in two phases: Debian's 6.12). Objects made by user space (res->user) are charged
 * to the cgroup of the task that made them, keyed by the entry's address.
 *
 * Bytes (rdma_rxe only: hardware moves its data without the kernel): rxe
 * runs its requester, responder and completer in tasklets (6.1) or work
 * items (6.5+), not in the job's task, so bytes are charged to the owner of
 * the queue pair, found by its restrack entry (struct rxe_qp embeds the
 * struct ib_qp). Each byte is counted once, where a new in-sequence packet
 * is first seen, never again for a retransmission or a duplicate (rxe
 * retries even in loopback):
 *   rxe_xmit_packet(qp, pkt, skb)     requester's SEND/WRITE data out: egress,
 *                                     only packets beyond every PSN already sent
 *   rxe_resp_queue_pkt(qp, skb)       responder's SEND/WRITE data in (ingress)
 *                                     and READ requests (the read length: the
 *                                     responder's egress), only the request
 *                                     with the PSN the responder expects next
 *   rxe_comp_queue_pkt(qp, skb)       requester's READ response data in: ingress,
 *                                     only responses beyond those counted
 * UC and UD queue pairs are not retransmitted: every packet counts.
 *
 * Families (defines from ceemsnet/planning/catalogue.py):
 *   CEEMSNET_HOOK_FEXIT       fexit on rdma_restrack_add, fentry on the others
 *   CEEMSNET_HOOK_KRETPROBE   kprobe + kretprobe on rdma_restrack_add, kprobes on the others
 * Both need the modules' BTF (5.11+): the ib_core and rxe types are relocated against it.
 */
#include "vmlinux.h"
#include "arch.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "compat.h"
#include "cgroup.h"
#include "maps.bpf.h"
#include "rdma.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct rdma_obj);
} rdma_objs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rdma_count_key);
	__type(value, __s64);
} rdma_objects SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct rdma_bytes_key);
	__type(value, __u64);
} rdma_bytes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, struct rdma_dev_name);
} rdma_devs SEC(".maps");

/* what could not be counted: 0 objects map full, 1 counts map full, 2 bytes map full, 3 stash full */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} rdma_drops SEC(".maps");

#define PSN_MASK 0xffffff
#define UNTRACKED 0xff /* rdma_obj.type of a QP first seen on the data path */

static __always_inline int psn_cmp(__u32 a, __u32 b)
{
	return (__s32)((a - b) << 8);
}

static __always_inline void note_dev(struct ib_device *d)
{
	struct rdma_dev_name n = {};
	__u32 idx = BPF_CORE_READ(d, index);

	if (bpf_map_lookup_elem(&rdma_devs, &idx))
		return;
	bpf_probe_read_kernel_str(n.name, sizeof(n.name), &d->name);
	bpf_map_update_elem(&rdma_devs, &idx, &n, BPF_NOEXIST);
}

#define CONTAINER_DEV(T, res) \
	BPF_CORE_READ((struct T *)((unsigned long)(res) - bpf_core_field_offset(struct T, res)), device)

/* the counted type of a restrack entry and its device; -1: not counted */
static __always_inline int obj_type(struct rdma_restrack_entry *res, struct ib_device **dev)
{
	int t = BPF_CORE_READ(res, type);

	if (t == bpf_core_enum_value(enum rdma_restrack_type, RDMA_RESTRACK_QP)) {
		*dev = CONTAINER_DEV(ib_qp, res);
		return RDMA_T_QP;
	}
	if (t == bpf_core_enum_value(enum rdma_restrack_type, RDMA_RESTRACK_CQ)) {
		*dev = CONTAINER_DEV(ib_cq, res);
		return RDMA_T_CQ;
	}
	if (t == bpf_core_enum_value(enum rdma_restrack_type, RDMA_RESTRACK_MR)) {
		*dev = CONTAINER_DEV(ib_mr, res);
		return RDMA_T_MR;
	}
	if (t == bpf_core_enum_value(enum rdma_restrack_type, RDMA_RESTRACK_PD)) {
		*dev = CONTAINER_DEV(ib_pd, res);
		return RDMA_T_PD;
	}
	if (bpf_core_enum_value_exists(enum rdma_restrack_type, RDMA_RESTRACK_SRQ) &&
	    t == bpf_core_enum_value(enum rdma_restrack_type, RDMA_RESTRACK_SRQ)) {
		*dev = CONTAINER_DEV(ib_srq, res);
		return RDMA_T_SRQ;
	}
	return -1;
}

static __always_inline void count_obj(struct rdma_obj *o, __s64 d)
{
	struct rdma_count_key k = { .cgroup = o->cgroup, .dev = o->dev, .type = o->type };
	__s64 *n = map_lookup_or_init(&rdma_objects, &k, __s64);

	if (n)
		__sync_fetch_and_add(n, d);
	else
		count_drop(&rdma_drops, 1);
}

/* after rdma_restrack_add(res): a user object now tracked */
static __always_inline void track_add(struct rdma_restrack_entry *res)
{
	struct ib_device *dev = NULL;
	struct rdma_obj o = {}, *old;
	__u64 key = (unsigned long)res;
	int t;

	if (!BPF_CORE_READ(res, valid) || !BPF_CORE_READ(res, user))
		return;
	t = obj_type(res, &dev);
	if (t < 0 || !dev)
		return;
	old = bpf_map_lookup_elem(&rdma_objs, &key);
	if (old && old->type != UNTRACKED)  /* a del we did not see: the address was reused */
		count_obj(old, -1);
	o.cgroup = ceemsnet_cgroup_id();
	o.dev = BPF_CORE_READ(dev, index);
	o.type = t;
	note_dev(dev);
	if (bpf_map_update_elem(&rdma_objs, &key, &o, BPF_ANY)) {
		count_drop(&rdma_drops, 0);
		return;
	}
	count_obj(&o, 1);
}

static __always_inline void track_del(struct rdma_restrack_entry *res)
{
	__u64 key = (unsigned long)res;
	struct rdma_obj *o = bpf_map_lookup_elem(&rdma_objs, &key);

	if (!o)
		return;
	if (o->type != UNTRACKED)
		count_obj(o, -1);
	bpf_map_delete_elem(&rdma_objs, &key);
}

/* ---- bytes over rxe ------------------------------------------------------ */

static __always_inline __u64 qp_key(struct rxe_qp *qp)
{
	return (unsigned long)qp + bpf_core_field_offset(struct rxe_qp, ibqp) +
	       bpf_core_field_offset(struct ib_qp, res);
}

/* the queue pair's record; one made (owner unknown: cgroup 0) for a QP whose creation was not seen */
static __always_inline struct rdma_obj *qp_obj(struct rxe_qp *qp)
{
	__u64 key = qp_key(qp);
	struct rdma_obj *o = bpf_map_lookup_elem(&rdma_objs, &key);
	struct rdma_obj n = {};

	if (o)
		return o;
	n.dev = BPF_CORE_READ(qp, ibqp.device, index);
	n.type = UNTRACKED;
	bpf_map_update_elem(&rdma_objs, &key, &n, BPF_NOEXIST);
	return bpf_map_lookup_elem(&rdma_objs, &key);
}

static __always_inline void add_bytes(struct rdma_obj *o, __u8 port, __u8 dir, __s64 n)
{
	struct rdma_bytes_key k = { .cgroup = o->cgroup, .dev = o->dev, .port = port ? port : 1, .dir = dir };
	__u64 *v;

	if (n <= 0)
		return;
	v = map_lookup_or_init(&rdma_bytes, &k, __u64);
	if (v)
		__sync_fetch_and_add(v, n);
	else
		count_drop(&rdma_drops, 2);
}

/* header length (BTH and the extended headers) of the opcodes that carry a payload; 0: none */
static __always_inline int hdr_len(__u8 op)
{
	__u8 low = op & 0x1f, cls = op >> 5;

	if (cls == 3) /* UD: BTH + DETH (+ immediate) */
		return low == 0x04 ? 20 : low == 0x05 ? 24 : 0;
	if (cls > 1)
		return 0;
	switch (low) {
	case 0x00: case 0x01: case 0x02: case 0x04:  /* SEND first, middle, last, only */
	case 0x07: case 0x08:                        /* RDMA WRITE middle, last */
	case 0x0e:                                   /* READ RESPONSE middle */
		return 12;
	case 0x03: case 0x05: case 0x09:             /* ... with immediate */
	case 0x0d: case 0x0f: case 0x10:             /* READ RESPONSE first, last, only (AETH) */
	case 0x16: case 0x17:                        /* SEND last, only with invalidate */
		return 16;
	case 0x06: case 0x0a:                        /* RDMA WRITE first, only (RETH) */
		return 28;
	case 0x0b:                                   /* RDMA WRITE only with immediate */
		return 32;
	}
	return 0;
}

static __always_inline __s64 payload(struct rxe_pkt_info *pkt, __u8 op)
{
	int h = hdr_len(op);
	__u8 *hdr = BPF_CORE_READ(pkt, hdr);
	__u8 b1 = 0;

	if (!h)
		return 0;
	bpf_probe_read_kernel(&b1, 1, hdr + 1);
	/* rxe's payload_size(): paylen - header - pad - ICRC */
	return (__s64)BPF_CORE_READ(pkt, paylen) - h - ((b1 >> 4) & 3) - 4;
}

static __always_inline bool is_send_write(__u8 low)
{
	return low <= 0x0b || low == 0x16 || low == 0x17;
}

/* PSNs a request uses: one, or a READ's response packets */
static __always_inline __u32 read_len(struct rxe_pkt_info *pkt)
{
	__u8 *hdr = BPF_CORE_READ(pkt, hdr);
	__u32 len = 0;

	bpf_probe_read_kernel(&len, 4, hdr + 12 + 12);  /* BTH, RETH: va 8, rkey 4, length 4 */
	return bpf_ntohl(len);
}

static __always_inline __u32 read_psns(struct rxe_qp *qp, __u32 len)
{
	__u32 mtu = BPF_CORE_READ(qp, mtu);

	if (!len || !mtu)
		return 1;
	return (len + mtu - 1) / mtu;
}

static __always_inline struct rxe_pkt_info *skb_pkt(struct sk_buff *skb)
{
	return (struct rxe_pkt_info *)((unsigned long)skb + bpf_core_field_offset(struct sk_buff, cb));
}

static __always_inline void on_xmit(struct rxe_qp *qp, struct rxe_pkt_info *pkt)
{
	__u8 op = BPF_CORE_READ(pkt, opcode), low = op & 0x1f, cls = op >> 5;
	struct rdma_obj *o;
	__u32 psn, n = 1;

	if (cls == 3) {
		if ((o = qp_obj(qp)))
			add_bytes(o, BPF_CORE_READ(pkt, port_num), RDMA_EGRESS, payload(pkt, op));
		return;
	}
	if (cls > 1 || !(is_send_write(low) || (cls == 0 && low == 0x0c)))
		return;  /* responses and acknowledgements: counted at the request */
	o = qp_obj(qp);
	if (!o)
		return;
	if (cls == 0) {
		psn = BPF_CORE_READ(pkt, psn);
		if (o->req_init && psn_cmp(psn, o->req_next) < 0)
			return;  /* a retransmission */
		if (low == 0x0c)
			n = read_psns(qp, read_len(pkt));
		o->req_next = (psn + n) & PSN_MASK;
		o->req_init = 1;
	}
	if (low != 0x0c)
		add_bytes(o, BPF_CORE_READ(pkt, port_num), RDMA_EGRESS, payload(pkt, op));
}

static __always_inline void on_request(struct rxe_qp *qp, struct rxe_pkt_info *pkt)
{
	__u8 op = BPF_CORE_READ(pkt, opcode), low = op & 0x1f, cls = op >> 5;
	__u8 port = BPF_CORE_READ(pkt, port_num);
	struct rdma_obj *o = qp_obj(qp);
	__u32 psn, len, n = 1;

	if (!o || cls == 2 || cls > 3)
		return;
	if (cls != 0) {  /* UC, UD: never retransmitted */
		add_bytes(o, port, RDMA_INGRESS, payload(pkt, op));
		return;
	}
	psn = BPF_CORE_READ(pkt, psn);
	if (!o->resp_init) {
		o->resp_next = BPF_CORE_READ(qp, resp.psn);
		o->resp_init = 1;
	}
	if (psn != o->resp_next)
		return;  /* a duplicate, or out of sequence (the responder NAKs it, the requester resends) */
	if (low == 0x0c) {
		len = read_len(pkt);
		n = read_psns(qp, len);
		add_bytes(o, port, RDMA_EGRESS, len);
	} else if (is_send_write(low)) {
		add_bytes(o, port, RDMA_INGRESS, payload(pkt, op));
	}
	o->resp_next = (psn + n) & PSN_MASK;
}

static __always_inline void on_response(struct rxe_qp *qp, struct rxe_pkt_info *pkt)
{
	__u8 op = BPF_CORE_READ(pkt, opcode), low = op & 0x1f;
	struct rdma_obj *o;
	__u32 psn;
	bool ok;

	if (op >> 5 != 0 || low < 0x0d || low > 0x10)
		return;  /* only READ responses carry data to the requester */
	o = qp_obj(qp);
	if (!o)
		return;
	psn = BPF_CORE_READ(pkt, psn);
	if (low == 0x0d || low == 0x10)  /* first or only: a new read's, or a retried read's */
		ok = !o->rresp_init || psn_cmp(psn, o->rresp_next) >= 0;
	else
		ok = o->rresp_init && psn == o->rresp_next;
	if (!ok)
		return;
	o->rresp_next = (psn + 1) & PSN_MASK;
	o->rresp_init = 1;
	add_bytes(o, BPF_CORE_READ(pkt, port_num), RDMA_INGRESS, payload(pkt, op));
}

#if defined(CEEMSNET_HOOK_FEXIT)

SEC("fexit/rdma_restrack_add")
int BPF_PROG(fexit_rdma_restrack_add, struct rdma_restrack_entry *res)
{
	track_add(res);
	return 0;
}

SEC("fentry/rdma_restrack_del")
int BPF_PROG(fentry_rdma_restrack_del, struct rdma_restrack_entry *res)
{
	track_del(res);
	return 0;
}

SEC("fentry/rdma_restrack_commit_del")
int BPF_PROG(fentry_rdma_restrack_commit_del, struct rdma_restrack_entry *res)
{
	track_del(res);
	return 0;
}

SEC("fentry/rxe_xmit_packet")
int BPF_PROG(fentry_rxe_xmit_packet, struct rxe_qp *qp, struct rxe_pkt_info *pkt)
{
	on_xmit(qp, pkt);
	return 0;
}

SEC("fentry/rxe_resp_queue_pkt")
int BPF_PROG(fentry_rxe_resp_queue_pkt, struct rxe_qp *qp, struct sk_buff *skb)
{
	on_request(qp, skb_pkt(skb));
	return 0;
}

SEC("fentry/rxe_comp_queue_pkt")
int BPF_PROG(fentry_rxe_comp_queue_pkt, struct rxe_qp *qp, struct sk_buff *skb)
{
	on_response(qp, skb_pkt(skb));
	return 0;
}

#elif defined(CEEMSNET_HOOK_KRETPROBE)

STASH_MAP(rdma_stash, __u64);

SEC("kprobe/rdma_restrack_add")
int BPF_KPROBE(kprobe_rdma_restrack_add, struct rdma_restrack_entry *res)
{
	__u64 r = (unsigned long)res;

	if (!stash_put(&rdma_stash, 0, &r))
		count_drop(&rdma_drops, 3);
	return 0;
}

SEC("kretprobe/rdma_restrack_add")
int BPF_KRETPROBE(kretprobe_rdma_restrack_add)
{
	__u64 r;

	if (stash_take(&rdma_stash, 0, &r))
		track_add((struct rdma_restrack_entry *)r);
	return 0;
}

SEC("kprobe/rdma_restrack_del")
int BPF_KPROBE(kprobe_rdma_restrack_del, struct rdma_restrack_entry *res)
{
	track_del(res);
	return 0;
}

SEC("kprobe/rdma_restrack_commit_del")
int BPF_KPROBE(kprobe_rdma_restrack_commit_del, struct rdma_restrack_entry *res)
{
	track_del(res);
	return 0;
}

SEC("kprobe/rxe_xmit_packet")
int BPF_KPROBE(kprobe_rxe_xmit_packet, struct rxe_qp *qp, struct rxe_pkt_info *pkt)
{
	on_xmit(qp, pkt);
	return 0;
}

SEC("kprobe/rxe_resp_queue_pkt")
int BPF_KPROBE(kprobe_rxe_resp_queue_pkt, struct rxe_qp *qp, struct sk_buff *skb)
{
	on_request(qp, skb_pkt(skb));
	return 0;
}

SEC("kprobe/rxe_comp_queue_pkt")
int BPF_KPROBE(kprobe_rxe_comp_queue_pkt, struct rxe_qp *qp, struct sk_buff *skb)
{
	on_response(qp, skb_pkt(skb));
	return 0;
}

#endif
