/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps and handlers of the cgroup_skb programs: the IP-layer view of a
 * cgroup's traffic, for comparison with the socket-level hooks. A cgroup_skb
 * program sees each skb once per direction at the IP layer (headers
 * included) and charges it to the cgroup the *socket* was created in,
 * whoever sends on it. On loopback the same bytes leave one socket (egress)
 * and enter another (ingress).
 */
#ifndef __CEEMSNET_SKB_H
#define __CEEMSNET_SKB_H

#include "ceemsnet.h"
#include "maps.bpf.h"

#define ETH_P_IPV6_BE 0xDD86 /* htons(0x86DD) */

static __always_inline __u8 skb_family(struct __sk_buff *skb)
{
	return skb->protocol == ETH_P_IPV6_BE ? NET_FAMILY_IPV6 : NET_FAMILY_IPV4;
}

/* gso_segs is 0 for an skb that is not GSO: it still is one packet on the wire. */
static __always_inline __u64 skb_segments(struct __sk_buff *skb)
{
	__u32 segs = skb->gso_segs;

	return segs ? segs : 1;
}

static __always_inline void skb_add(struct skb_value *v, struct __sk_buff *skb)
{
	__sync_fetch_and_add(&v->bytes, skb->len);
	__sync_fetch_and_add(&v->packets, 1);
	__sync_fetch_and_add(&v->segments, skb_segments(skb));
}

#if defined(CEEMSNET_SKB_ROOT)
/* Root mode: attached once (cgroup2 root or a subtree), keyed by the skb's cgroup. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct skb_key);
	__type(value, struct skb_value);
} skb_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} skb_drops SEC(".maps");

static __always_inline int skb_count(struct __sk_buff *skb, __u8 dir)
{
	struct skb_key key;
	struct skb_value *v;

	__builtin_memset(&key, 0, sizeof(key));
	key.cgroup_id = bpf_skb_cgroup_id(skb);
	key.family = skb_family(skb);
	key.dir = dir;
	v = map_lookup_or_init(&skb_stats, &key, struct skb_value);
	if (v)
		skb_add(v, skb);
	else
		count_drop(&skb_drops, DROP_STATS_FULL);
	return 1; /* always let the packet through: we only count */
}
#elif defined(CEEMSNET_SKB_STORAGE)
/*
 * Per-cgroup mode: attached to each selected cgroup; the kernel hands every
 * attachment its own per-CPU storage, so the hot path does no hash lookup.
 * Traffic of descendant cgroups runs the ancestor's program (multi-attach
 * inheritance) and lands in the ancestor's storage: per job, not per step.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE);
	__type(key, struct bpf_cgroup_storage_key);
	__type(value, struct skb_storage);
} skb_cgroup_storage SEC(".maps");

static __always_inline int skb_count(struct __sk_buff *skb, __u8 dir)
{
	struct skb_storage *s = bpf_get_local_storage(&skb_cgroup_storage, 0);

	skb_add(&s->v[skb_family(skb) & 1][dir & 1], skb);
	return 1;
}
#else
#error "define CEEMSNET_SKB_ROOT or CEEMSNET_SKB_STORAGE"
#endif

#endif /* __CEEMSNET_SKB_H */
