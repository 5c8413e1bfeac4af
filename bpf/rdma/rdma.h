/* SPDX-License-Identifier: GPL-2.0 */
/*
 * RDMA: the kernel types rdma.bpf.c reads and the maps' keys and values.
 *
 * The ib_core and rdma_rxe types are not in vmlinux.h (they live in the
 * modules' own BTF, /sys/kernel/btf/ib_core and rdma_rxe): only the fields
 * read are declared, with preserve_access_index, and libbpf relocates each
 * one against the module BTF at load (CO-RE). Mirrored in Python by
 * ceemsnet/planning/structs.py (RDMA_*).
 */
#ifndef __CEEMSNET_RDMA_H
#define __CEEMSNET_RDMA_H

/* include/rdma/restrack.h; values relocated by name (bpf_core_enum_value) */
enum rdma_restrack_type {
	RDMA_RESTRACK_PD,
	RDMA_RESTRACK_CQ,
	RDMA_RESTRACK_QP,
	RDMA_RESTRACK_CM_ID,
	RDMA_RESTRACK_MR,
	RDMA_RESTRACK_CTX,
	RDMA_RESTRACK_COUNTER,
	RDMA_RESTRACK_SRQ,
};

struct rdma_restrack_entry {
	bool valid;
	enum rdma_restrack_type type;
	bool user;
} __attribute__((preserve_access_index));

struct ib_device {
	char name[64];
	u32 index;
} __attribute__((preserve_access_index));

/* the objects that embed a restrack entry, each with its device */
struct ib_pd {
	struct ib_device *device;
	struct rdma_restrack_entry res;
} __attribute__((preserve_access_index));
struct ib_cq {
	struct ib_device *device;
	struct rdma_restrack_entry res;
} __attribute__((preserve_access_index));
struct ib_mr {
	struct ib_device *device;
	struct rdma_restrack_entry res;
} __attribute__((preserve_access_index));
struct ib_srq {
	struct ib_device *device;
	struct rdma_restrack_entry res;
} __attribute__((preserve_access_index));
struct ib_qp {
	struct ib_device *device;
	struct rdma_restrack_entry res;
} __attribute__((preserve_access_index));

/* drivers/infiniband/sw/rxe */
struct rxe_resp_info {
	u32 psn;
} __attribute__((preserve_access_index));

struct rxe_qp {
	struct ib_qp ibqp;
	unsigned int mtu;
	struct rxe_resp_info resp;
} __attribute__((preserve_access_index));

struct rxe_pkt_info {
	u8 *hdr;
	u32 psn;
	u16 paylen;
	u8 port_num;
	u8 opcode;
} __attribute__((preserve_access_index));

/* object types as counted (the `type` label): ceemsnet/planning/structs.py RDMA_TYPES */
enum { RDMA_T_PD, RDMA_T_CQ, RDMA_T_QP, RDMA_T_MR, RDMA_T_SRQ, RDMA_T_MAX };
/* byte directions (the `direction` label) */
enum { RDMA_EGRESS, RDMA_INGRESS };

/* rdma_objs: a tracked object (its restrack entry's address) -> its owner and, for QPs,
 * where each side of rxe's reliable transport has got to (packet sequence numbers) */
struct rdma_obj {
	__u64 cgroup;
	__u32 dev;
	__u8 type;
	__u8 req_init, resp_init, rresp_init;
	__u32 req_next;   /* requester: first PSN not yet sent */
	__u32 resp_next;  /* responder: next PSN a new request carries */
	__u32 rresp_next; /* requester: next PSN of a read response not yet counted */
	__u32 pad;
};

/* rdma_objects: live objects per (cgroup, device, type) */
struct rdma_count_key {
	__u64 cgroup;
	__u32 dev;
	__u32 type;
};

/* rdma_bytes: payload bytes per (cgroup, device, port, direction); cgroup 0: a queue pair
 * whose creation was not seen (made before the collector started, or by the kernel) */
struct rdma_bytes_key {
	__u64 cgroup;
	__u32 dev;
	__u8 port;
	__u8 dir;
	__u16 pad;
};

/* rdma_devs: device index -> name */
struct rdma_dev_name {
	char name[64];
};

#endif /* __CEEMSNET_RDMA_H */
