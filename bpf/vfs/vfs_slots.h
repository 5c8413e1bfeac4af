/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The slot layout of the vfs counters (objects built with VFS_SLOTS): no
 * hashing in the common case, per-CPU counting kept.
 *
 *   vfs_slot_owner  array: the cgroup id each slot counts for (0: free)
 *   vfs_slot_vals   per-CPU array, one struct vfs_slot per slot: a table of
 *                   VFS_SLOT_FS file systems, each with a struct vfs_counts
 *                   (as vfs_stats' records)
 *
 * A cgroup's slot is found and claimed as net's (slot_of() in
 * include/slots.h). vfs records are per (cgroup, file system), so the
 * slot's value holds a small table: tag[i] = magic | 1 << 32 names the
 * file system of c[i] (0: free; the high bit lets magic 0, the tracepoint
 * family's "unknown", be a tag too). The table is per CPU and its entries
 * are claimed per CPU, first free first, with a compare and swap: a
 * program preempted on this CPU (tracepoints from 7.0) may race another
 * one there; the loser takes the next entry, and if two entries ever hold
 * the same magic, user space sums them: nothing is counted under another
 * file system. Entries are never given back while the slot is owned, so
 * the free ones are a suffix of the table: a search stops at the first.
 *
 * Only reads and writes claim an entry: they are what a job does most.
 * Opens, creates and directory operations count in an entry their file
 * system already has, else on the hash path (vfs_stats), as do a cgroup
 * whose two slots belong to others and a file system beyond the table.
 * Nothing is lost there, it is only slower. User space merges both into
 * one record per (cgroup, file system) (ceemsnet/collectors/vfs_slots.py)
 * and gives a removed cgroup's slot back after folding its counts.
 *
 * Counts add atomically, as on the hash path (vfs_add() in vfs.h).
 */
#ifndef __CEEMSNET_VFS_SLOTS_H
#define __CEEMSNET_VFS_SLOTS_H

#include "slots.h"

/* file systems per slot: a tag and a struct vfs_counts each, 800 B per slot and CPU */
#define VFS_SLOT_FS 4
#define VFS_SLOT_TAG(magic) ((__u64)(magic) | (1ULL << 32))

struct vfs_slot {
	__u64 tag[VFS_SLOT_FS];              /* magic | 1 << 32; 0: free */
	struct vfs_counts c[VFS_SLOT_FS];    /* the counts of tag[i]'s file system */
};

/* slots - 1, slots a power of two: the loader sizes both maps and sets it (--vfs.slots) */
const volatile __u32 vfs_slot_mask = 1023;

SLOT_OWNER_MAP(vfs_slot_owner, 1024);

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct vfs_slot);
} vfs_slot_vals SEC(".maps");

/*
 * true if counted in the cgroup's slot; false: the caller counts on the hash
 * path. claim: may take a free slot for the cgroup and a free entry of its
 * table for this file system. So a slot is owned only by a cgroup that read
 * or wrote, and then holds an entry: user space sees every owned slot's
 * cgroup in a record, and gives the slot back once those are retired.
 */
static __always_inline bool vfs_account_slot(__u64 id, __u32 magic, __u8 op, long ret, bool claim)
{
	__u64 tag = VFS_SLOT_TAG(magic);
	struct vfs_slot *s;
	long slot;
	__u32 k;

	if (!id)
		return false;
	slot = slot_of(&vfs_slot_owner, vfs_slot_mask, id, claim);
	if (slot < 0)
		return false;
	k = slot;
	s = bpf_map_lookup_elem(&vfs_slot_vals, &k);
	if (!s)
		return false;
#pragma clang loop unroll(full)
	for (int i = 0; i < VFS_SLOT_FS; i++) {
		__u64 t = s->tag[i];

		if (!t) {
			if (!claim)
				return false;
			t = __sync_val_compare_and_swap(&s->tag[i], 0, tag);
			if (t && t != tag)
				continue; /* taken on this CPU in between, for another file system */
		} else if (t != tag) {
			continue;
		}
		vfs_add(&s->c[i], op, ret);
		return true;
	}
	return false;
}

#endif /* __CEEMSNET_VFS_SLOTS_H */
