// SPDX-License-Identifier: GPL-2.0
/*
 * Bench only (bench/event_parts.py builds it with clang-19 into
 * bench/objs/parts/, one object per part): the net tracepoint programs
 * (tp_btf sock_send_length / sock_recv_length) cut into cumulative parts,
 * so that the kernel's run time per event of each part, minus the part
 * before, is what that part costs.
 *
 *   NET_LEVEL 0  empty: return
 *             1  + the cgroup id (with CEEMSNET_HOOK_TRACEPOINT: cgroup.h's read for
 *                  the tracepoint objects)
 *             2  + the socket's field reads and the filters of handle_sock_tp()
 *             3  + the map update, NET_MAP selecting the layout:
 *                  1 old:   per-CPU hash, 16-byte key (cgroup, proto, family,
 *                           dir), one 24-byte value per counter, atomic adds
 *                  2 slots: owner array + per-CPU array of 8 counters a slot
 *                  3 new:   per-CPU hash keyed by the u64 cgroup id, value
 *                           v[8] of (bytes, calls, errors), plain adds
 *                           (NET_ATOMIC: __sync_fetch_and_add, as the fexit
 *                           and kretprobe objects will)
 *
 * Written for the bench, not copied from bpf/net/: the layouts are what
 * the lead's issue-27 layout and bpf/net/net_slots.h describe.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "cgroup.h"

char LICENSE[] SEC("license") = "GPL";

#ifndef NET_LEVEL
#error "NET_LEVEL must be 0..3"
#endif

#define P_AF_INET 2
#define P_AF_INET6 10
#define P_SOCK_STREAM 1
#define P_MSG_PEEK 0x2
#define P_MSG_ERRQUEUE 0x2000
#define P_TCP 0
#define P_UDP 1

/* keep a value the program computed but does not use yet (no store, no helper) */
#define KEEP(x) barrier_var(x)

/*
 * ceemsnet_cgroup_id() as bpf/include/cgroup.h has it: built without a hook
 * define it calls bpf_get_current_cgroup_id(); with CEEMSNET_HOOK_TRACEPOINT
 * (the "-task" parts) as the tracepoint objects build it.
 */
static __always_inline __attribute__((unused)) __u64 part_cgroup_id(void)
{
	return ceemsnet_cgroup_id();
}

#if NET_LEVEL >= 3
struct part_val {
	__u64 bytes, calls, errors;
};

#if NET_MAP == 1
struct part_old_key {
	__u64 cgroup_id;
	__u8 proto, family, dir, pad[5];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct part_old_key);
	__type(value, struct part_val);
} part_stats SEC(".maps");

static __always_inline void part_update(__u64 id, __u8 proto, __u8 family, __u8 dir, long ret)
{
	struct part_old_key key;
	struct part_val *v;

	__builtin_memset(&key, 0, sizeof(key));
	key.cgroup_id = id;
	key.proto = proto;
	key.family = family;
	key.dir = dir;
	v = bpf_map_lookup_elem(&part_stats, &key);
	if (!v) {
		struct part_val zero = {};

		bpf_map_update_elem(&part_stats, &key, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(&part_stats, &key);
		if (!v)
			return;
	}
	if (ret >= 0) {
		__sync_fetch_and_add(&v->bytes, ret);
		__sync_fetch_and_add(&v->calls, 1);
	} else {
		__sync_fetch_and_add(&v->errors, 1);
	}
}
#else
struct part_counts {
	struct part_val v[8]; /* index (proto << 2) | (family << 1) | dir */
};

#if defined(NET_ATOMIC)
#define PART_ADD(p, n) __sync_fetch_and_add((p), (n))
#else
#define PART_ADD(p, n) (*(p) += (n))
#endif

static __always_inline void part_add(struct part_counts *c, __u8 proto, __u8 family, __u8 dir, long ret)
{
	struct part_val *v = &c->v[((proto << 2) | (family << 1) | dir) & 7];

	if (ret >= 0) {
		PART_ADD(&v->bytes, ret);
		PART_ADD(&v->calls, 1);
	} else {
		PART_ADD(&v->errors, 1);
	}
}

#if NET_MAP == 2
/* a slot by position from the id (Fibonacci hashing), or the next one; owner checked */
#define PART_SLOTS 1024

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PART_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} part_owner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PART_SLOTS);
	__type(key, __u32);
	__type(value, struct part_counts);
} part_slots SEC(".maps");

/* the slot of cgroup id: its first choice or the next, checked against the owner; -1: both taken */
static __always_inline long part_slot(__u64 id)
{
	__u32 h = (__u32)((id * 0x9E3779B97F4A7C15ULL) >> 32);
	__u32 k0 = h & (PART_SLOTS - 1), k1 = (h + 1) & (PART_SLOTS - 1);
	__u64 *o0 = bpf_map_lookup_elem(&part_owner, &k0);
	__u64 *o1;

	if (o0 && *o0 == id)
		return k0;
	o1 = bpf_map_lookup_elem(&part_owner, &k1);
	if (o1 && *o1 == id)
		return k1;
	if (o0 && !*o0 && !__sync_val_compare_and_swap(o0, 0, id))
		return k0;
	if (o1 && !*o1 && !__sync_val_compare_and_swap(o1, 0, id))
		return k1;
	return -1;
}

static __always_inline void part_update(__u64 id, __u8 proto, __u8 family, __u8 dir, long ret)
{
	long slot = part_slot(id);
	struct part_counts *c;
	__u32 k;

	if (slot < 0)
		return;
	k = slot;
	c = bpf_map_lookup_elem(&part_slots, &k);
	if (c)
		part_add(c, proto, family, dir, ret);
}
#elif NET_MAP == 3
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct part_counts);
} part_stats SEC(".maps");

static __always_inline void part_update(__u64 id, __u8 proto, __u8 family, __u8 dir, long ret)
{
	struct part_counts *c = bpf_map_lookup_elem(&part_stats, &id);

	if (!c) {
		/* first event of this cgroup: the zeroed value is built only here */
		struct part_counts zero;

		__builtin_memset(&zero, 0, sizeof(zero));
		bpf_map_update_elem(&part_stats, &id, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(&part_stats, &id);
		if (!c)
			return;
	}
	part_add(c, proto, family, dir, ret);
}
#else
#error "NET_MAP must be 1 (old), 2 (slots) or 3 (new)"
#endif
#endif
#endif

static __always_inline int part(struct sock *sk, __u8 dir, int flags, int ret)
{
#if NET_LEVEL >= 2
	__u16 fam, protocol;
	__u8 proto;

	if (!sk)
		return 0;
	fam = sk->__sk_common.skc_family;
	if (fam != P_AF_INET && fam != P_AF_INET6)
		return 0;
	protocol = sk->sk_protocol;
	if (protocol == IPPROTO_TCP && sk->sk_type == P_SOCK_STREAM)
		proto = P_TCP;
	else if (protocol == IPPROTO_UDP)
		proto = P_UDP;
	else
		return 0;
	if (dir == 1 && (flags & (P_MSG_PEEK | P_MSG_ERRQUEUE)))
		return 0;
#endif
#if NET_LEVEL >= 1
	__u64 id = part_cgroup_id();
#endif
#if NET_LEVEL >= 3
	part_update(id, proto, fam == P_AF_INET6, dir, ret);
#elif NET_LEVEL == 2
	KEEP(id);
	KEEP(proto);
#elif NET_LEVEL == 1
	KEEP(id);
#endif
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_btf_sock_send_length, struct sock *sk, int ret, int flags)
{
	return part(sk, 0, flags, ret);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_btf_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return part(sk, 1, flags, ret);
}
