/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The owner array of the slot layouts (bpf/net/net_slots.h,
 * bpf/vfs/vfs_slots.h), written once: a slot of a per-CPU array belongs to
 * one cgroup, named in an array of owners (0: free).
 *
 * A cgroup's slot is found by position, not by a hash table: its id times
 * a Fibonacci constant gives a slot, and the next one is the second
 * choice. The owner array is read-mostly (written only when a slot is
 * taken or given back), so its cache lines are shared, not bounced. A
 * cgroup's first event takes a free slot of its two with a compare and
 * swap (BPF atomics, 5.12: older kernels refuse the object, and the
 * loader keeps its hash twin). When both slots belong to other cgroups,
 * the caller counts on its hash path. User space gives a removed cgroup's
 * slot back (values zeroed first, then the owner cleared).
 */
#ifndef __CEEMSNET_SLOTS_H
#define __CEEMSNET_SLOTS_H

/* An owner array of `entries` slots (the loader sizes it, with its values array). */
#define SLOT_OWNER_MAP(name, entries)                      \
	struct {                                           \
		__uint(type, BPF_MAP_TYPE_ARRAY);          \
		__uint(max_entries, entries);              \
		__type(key, __u32);                        \
		__type(value, __u64);                      \
	} name SEC(".maps")

/*
 * The slot of `owner` (an owner array of mask + 1 slots) owned by cgroup id,
 * or (claim) claimed for it now; -1: none owned, or none free.
 */
static __always_inline long slot_of(void *owner, __u32 mask, __u64 id, bool claim)
{
	__u32 h = (__u32)((id * 0x9E3779B97F4A7C15ULL) >> 32);
	__u32 p0 = h & mask, p1 = (h + 1) & mask;
	__u64 *o0 = bpf_map_lookup_elem(owner, &p0);
	__u64 *o1;

	if (o0 && *o0 == id)
		return p0;
	o1 = bpf_map_lookup_elem(owner, &p1);
	if (o1 && *o1 == id)
		return p1;
	if (!claim)
		return -1;
	/* a free one: the compare and swap settles two CPUs taking it at once */
	if (o0 && !*o0 && !__sync_val_compare_and_swap(o0, 0, id))
		return p0;
	if (o1 && !*o1 && !__sync_val_compare_and_swap(o1, 0, id))
		return p1;
	return -1;
}

#endif /* __CEEMSNET_SLOTS_H */
