/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The slot layout of the net counters (objects built with NET_SLOTS):
 * no hashing in the common case, per-CPU counting kept.
 *
 *   net_slot_owner  array: the cgroup id each slot counts for (0: free)
 *   net_slot_vals   per-CPU array, one struct net_counts per slot (as net_stats' records)
 *
 * A cgroup's slot is found by position in the owner array (slot_of() in
 * include/slots.h, shared with the vfs slot layout). When both of its
 * slots belong to other cgroups, the caller counts on the hash path
 * (net_stats): nothing is lost, it is only slower. User space sums both,
 * and gives a removed cgroup's slot back after folding its counts into
 * the retired totals (ceemsnet/collectors/slots.py).
 *
 * The cgroup id is ceemsnet_cgroup_id(), so cgroup v1 attribution (a
 * controller's hierarchy) uses slots the same way, with its own ids.
 */
#ifndef __CEEMSNET_NET_SLOTS_H
#define __CEEMSNET_NET_SLOTS_H

#include "slots.h"

/* slots - 1, slots a power of two: the loader sizes both maps and sets it (--net.slots) */
const volatile __u32 net_slot_mask = 1023;

SLOT_OWNER_MAP(net_slot_owner, 1024);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct net_counts);
} net_slot_vals SEC(".maps");

/* Counts add plainly or atomically as on the hash path: NET_ADD in net.h. */

/* The slot owned by cgroup id, or claimed for it now; -1: none free. */
static __always_inline long net_slot_of(__u64 id)
{
	return slot_of(&net_slot_owner, net_slot_mask, id, true);
}

/* true if counted here; false: the caller counts on the hash path. */
static __always_inline bool net_account_slot(__u64 id, __u32 idx, long ret)
{
	struct net_counts *c;
	long slot;
	__u32 k;

	if (!id)
		return false;
	slot = net_slot_of(id);
	if (slot < 0)
		return false;
	k = slot;
	c = bpf_map_lookup_elem(&net_slot_vals, &k);
	if (!c)
		return false;
	net_add(c, idx, ret);
	return true;
}

#endif /* __CEEMSNET_NET_SLOTS_H */
