/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Key and value structs shared by every ceemsnet BPF object. Python mirrors
 * them once, in ceemsnet/planning/structs.py; tests/unit/test_structs.py compiles
 * nothing but checks the sizes and offsets against the BTF of the committed
 * objects, so the two cannot drift apart silently.
 */
#ifndef __CEEMSNET_H
#define __CEEMSNET_H

enum net_proto {
	NET_PROTO_TCP = 0,
	NET_PROTO_UDP = 1,
};

enum net_family {
	NET_FAMILY_IPV4 = 0,
	NET_FAMILY_IPV6 = 1,
};

enum net_dir {
	NET_DIR_EGRESS = 0,
	NET_DIR_INGRESS = 1,
};

/*
 * One record per cgroup: net_stats is keyed by the cgroup id alone and its
 * value holds every counter of that cgroup, so a scrape reads (and user
 * space decodes) one record per cgroup, not one key per counter.
 */
struct net_key {
	__u64 cgroup_id; /* cgroup v2 id: the inode number of the cgroup's directory */
};

struct net_value {
	__u64 bytes;  /* sum of non-negative return values: payload bytes really moved */
	__u64 calls;  /* calls that returned >= 0 */
	__u64 errors; /* calls that returned < 0 (EAGAIN on non-blocking sockets included) */
};

/* [proto][family][direction]: index (proto << 2) | (family << 1) | dir (net_index() in net/net.h) */
#define NET_COUNTERS 8

struct net_counts {
	struct net_value v[NET_COUNTERS];
};

enum vfs_op {
	VFS_OP_READ = 0,   /* vfs_read, vfs_readv: read(2), pread64, readv, preadv[2] */
	VFS_OP_WRITE = 1,  /* vfs_write, vfs_writev */
	VFS_OP_OPEN = 2,
	VFS_OP_CREATE = 3,
	VFS_OP_UNLINK = 4,
	VFS_OP_MKDIR = 5,
	VFS_OP_RMDIR = 6,
	VFS_OP_MAX = 7,
};

/* One record per (cgroup, file system): every operation's counters in one value. */
struct vfs_key {
	__u64 cgroup_id; /* as in net_key */
	__u32 magic;     /* super block magic of the file system (0: unknown, tracepoint family) */
	__u32 pad;       /* explicit and always zero, so C and Python hash the same bytes */
};

struct vfs_value {
	__u64 bytes;  /* read/write: sum of non-negative return values; other ops: 0 */
	__u64 calls;  /* calls that returned success */
	__u64 errors; /* calls that returned an error */
};

/*
 * Counters per record: the ops of enum vfs_op and one spare, a power of two
 * so that a program indexes the record with a mask (op & 7), which the
 * verifier can bound whatever register the compiler checks the op in.
 */
#define VFS_COUNTERS 8

struct vfs_counts {
	struct vfs_value v[VFS_COUNTERS]; /* index: enum vfs_op; the last one unused */
};

struct skb_key {
	__u64 cgroup_id; /* bpf_skb_cgroup_id(): the cgroup the socket was created in */
	__u8 family;     /* enum net_family, from skb->protocol */
	__u8 dir;        /* enum net_dir */
	__u8 pad[6];     /* explicit and always zero */
};

struct skb_value {
	__u64 bytes;    /* skb->len: IP header, transport header and payload */
	__u64 packets;  /* skbs seen (one GSO super-packet is one) */
	__u64 segments; /* GSO segments: the packets a GSO skb stands for (1 for others) */
};

/* Per-CPU cgroup storage value (per-cgroup mode): [family][direction]. */
struct skb_storage {
	struct skb_value v[2][2];
};

/* Indexes of the per-CPU "drops" array: events a program could not count. */
enum drop_reason {
	DROP_STATS_FULL = 0,  /* the stats map was full: a new key could not be added */
	DROP_STASH_FULL = 1,  /* kprobe entry could not stash its arguments for the return probe */
	DROP_MAX = 2,
};

#endif /* __CEEMSNET_H */
