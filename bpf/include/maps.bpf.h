/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Map helpers shared by every ceemsnet object, written once:
 *   map_lookup_or_init()      counters keyed by cgroup: find the record or add it
 *   count_drop()              one event a program could not count
 *   stash_put()/stash_take()  kprobe entry -> kretprobe hand-over
 * The idea of the first follows libbpf-tools' bpf_map_lookup_or_try_init.
 */
#ifndef __CEEMSNET_MAPS_BPF_H
#define __CEEMSNET_MAPS_BPF_H

#include "ceemsnet.h"

#ifndef EEXIST
#define EEXIST 17
#endif

/*
 * The slow path of map_lookup_or_init(): add *zero under key. BPF_NOEXIST:
 * if another CPU adds the same key between our lookup and our update, its
 * entry (and its counts) wins and the second lookup finds it. NULL only
 * when no entry could be added (the map is full): the caller counts a drop
 * instead of losing the event silently.
 */
static __always_inline void *map_try_init(void *map, const void *key, const void *zero)
{
	long err;

	err = bpf_map_update_elem(map, key, zero, BPF_NOEXIST);
	if (err && err != -EEXIST)
		return NULL;
	return bpf_map_lookup_elem(map, key);
}

/*
 * The value (of type `type`) stored under key, added zeroed first when the
 * key is new. The zeroed value is built on the stack in the slow path only:
 * a whole cgroup's record (192 bytes for net) is not cleared on every event.
 */
#define map_lookup_or_init(map, key, type)                              \
	({                                                              \
		void *__val = bpf_map_lookup_elem(map, key);            \
		if (!__val) {                                           \
			type __zero;                                    \
			__builtin_memset(&__zero, 0, sizeof(__zero));   \
			__val = map_try_init(map, key, &__zero);        \
		}                                                       \
		__val;                                                  \
	})

/* drops: a per-CPU array indexed by enum drop_reason. */
static __always_inline void count_drop(void *drops, __u32 reason)
{
	__u64 *n = bpf_map_lookup_elem(drops, &reason);

	if (n)
		__sync_fetch_and_add(n, 1);
}

/*
 * Entry stash for kprobe/kretprobe pairs. A return probe sees only the
 * return value, so the entry probe keeps what the return needs. The key is
 * the thread (a return fires on the thread that entered) and the hooked
 * function, so nested hooked calls on one thread (udpv6_sendmsg ->
 * udp_sendmsg) do not overwrite each other's entry.
 */
struct stash_key {
	__u64 pid_tgid;
	__u32 fn;  /* the subsystem's function index */
	__u32 pad; /* explicit and always zero: hashed as part of the key */
};

/* Enough for every thread that can sleep inside a hooked function at once. */
#define STASH_ENTRIES 16384

/* A stash map named name holding values of val_type. */
#define STASH_MAP(name, val_type)                          \
	struct {                                           \
		__uint(type, BPF_MAP_TYPE_HASH);           \
		__uint(max_entries, STASH_ENTRIES);        \
		__type(key, struct stash_key);             \
		__type(value, val_type);                   \
	} name SEC(".maps")

static __always_inline void stash_key_init(struct stash_key *k, __u32 fn)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->pid_tgid = bpf_get_current_pid_tgid();
	k->fn = fn;
}

/* Entry side: false if the stash is full (the caller counts a drop). */
static __always_inline bool stash_put(void *stash, __u32 fn, const void *val)
{
	struct stash_key k;

	stash_key_init(&k, fn);
	return bpf_map_update_elem(stash, &k, val, BPF_ANY) == 0;
}

/*
 * Return side: copy the entry's value to *out and delete it. false when
 * nothing was stashed: skipped on purpose at entry, or the entry was missed.
 * size must be a compile-time constant (use stash_take()).
 */
static __always_inline bool stash_take_sized(void *stash, __u32 fn, void *out, __u32 size)
{
	struct stash_key k;
	void *v;

	stash_key_init(&k, fn);
	v = bpf_map_lookup_elem(stash, &k);
	if (!v)
		return false;
	__builtin_memcpy(out, v, size);
	bpf_map_delete_elem(stash, &k);
	return true;
}

#define stash_take(stash, fn, out) stash_take_sized(stash, fn, out, sizeof(*(out)))

#endif /* __CEEMSNET_MAPS_BPF_H */
