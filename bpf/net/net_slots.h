/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The slot layout of the net counters (objects built with NET_SLOTS):
 * no hashing in the common case, per-CPU counting kept.
 *
 *   net_slot_owner  array: the cgroup id each slot counts for (0: free)
 *   net_slot_vals   per-CPU array, one struct net_counts per slot (as net_stats' records)
 *
 * A cgroup's slot is found by position, not by a hash table: its id times
 * a Fibonacci constant gives a slot, and the next one is the second
 * choice. The owner array is read-mostly (written only when a slot is
 * taken or given back), so its cache lines are shared, not bounced. A
 * cgroup's first event takes a free slot of its two with a compare and
 * swap (BPF atomics, 5.12: older kernels refuse the object, and the
 * loader keeps its hash twin). When both
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

/* slots - 1, slots a power of two: the loader sizes both maps and sets it (--net.slots) */
const volatile __u32 net_slot_mask = 1023;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} net_slot_owner SEC(".maps");

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
	__u32 h = (__u32)((id * 0x9E3779B97F4A7C15ULL) >> 32);
	__u32 p0 = h & net_slot_mask, p1 = (h + 1) & net_slot_mask;
	__u64 *o0 = bpf_map_lookup_elem(&net_slot_owner, &p0);
	__u64 *o1;

	if (o0 && *o0 == id)
		return p0;
	o1 = bpf_map_lookup_elem(&net_slot_owner, &p1);
	if (o1 && *o1 == id)
		return p1;
	/* a free one: the compare and swap settles two CPUs taking it at once */
	if (o0 && !*o0 && !__sync_val_compare_and_swap(o0, 0, id))
		return p0;
	if (o1 && !*o1 && !__sync_val_compare_and_swap(o1, 0, id))
		return p1;
	return -1;
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
