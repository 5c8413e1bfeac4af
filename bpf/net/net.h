/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Maps and inline handlers of the socket-level network programs. net.bpf.c
 * holds only the SEC() programs; each one calls one handler below.
 */
#ifndef __CEEMSNET_NET_H
#define __CEEMSNET_NET_H

#include "ceemsnet.h"
#include "cgroup.h"
#include "maps.bpf.h"

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define MSG_PEEK 0x2
#define MSG_ERRQUEUE 0x2000

/*
 * Per-CPU counters: the hot path never bounces a cache line between CPUs
 * (an MPI job sends from every core of a node at once). Not preallocated:
 * a preallocated per-CPU hash costs max_entries * 24 B * nr_cpus up front,
 * hundreds of MB on a 256-CPU node. The loader resizes it before load.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct net_key);
	__type(value, struct net_value);
} net_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_MAX);
	__type(key, __u32);
	__type(value, __u64);
} net_drops SEC(".maps");

static __always_inline __u8 net_family_of(__u16 sk_family)
{
	return sk_family == AF_INET6 ? NET_FAMILY_IPV6 : NET_FAMILY_IPV4;
}

/* The hash path: a per-CPU hash keyed by (cgroup id, proto, family, direction). */
static __always_inline void net_account_hash(__u8 proto, __u8 family, __u8 dir, long ret)
{
	struct net_value zero = {};
	struct net_key key;
	struct net_value *val;

	__builtin_memset(&key, 0, sizeof(key));
	key.cgroup_id = ceemsnet_cgroup_id();
	key.proto = proto;
	key.family = family;
	key.dir = dir;

	val = map_lookup_or_try_init(&net_stats, &key, &zero);
	if (!val) {
		count_drop(&net_drops, DROP_STATS_FULL);
		return;
	}
	/*
	 * Atomic although per-CPU: a preemptible kernel may switch to another
	 * task of the same cgroup on this CPU between a load and a store.
	 */
	if (ret >= 0) {
		__sync_fetch_and_add(&val->bytes, ret);
		__sync_fetch_and_add(&val->calls, 1);
	} else {
		__sync_fetch_and_add(&val->errors, 1);
	}
}

#ifdef NET_SLOTS
#include "net_slots.h"
#endif

/* Add one call's result to the current task's cgroup. */
static __always_inline void net_account(__u8 proto, __u8 family, __u8 dir, long ret)
{
#ifdef NET_SLOTS
	if (net_account_slot(proto, family, dir, ret))
		return;
#endif
	net_account_hash(proto, family, dir, ret);
}

/*
 * fexit and tp_btf programs get sk as a BTF pointer: a direct load (CO-RE
 * relocated, faults handled by the kernel) costs no helper call. kprobes
 * get a plain number and read through bpf_probe_read_kernel().
 */
#ifdef CEEMSNET_HOOK_KRETPROBE
#define SK_READ(sk, field) BPF_CORE_READ(sk, field)
#else
#define SK_READ(sk, field) ((sk)->field)
#endif

static __always_inline __u16 sk_family_of(struct sock *sk)
{
	return SK_READ(sk, __sk_common.skc_family);
}

/* A peek leaves the data in the socket; the error queue holds no payload. */
static __always_inline bool recv_moves_payload(int flags)
{
	return !(flags & (MSG_PEEK | MSG_ERRQUEUE));
}

/*
 * udpv6_sendmsg() hands a send to a v4-mapped address to udp_sendmsg() on
 * the same AF_INET6 socket (net/ipv6/udp.c). That send is counted once, by
 * the udpv6_sendmsg hook, as ipv6 (the socket's family): udp_sendmsg() on
 * an AF_INET6 socket is skipped.
 */
static __always_inline bool udp_sendmsg_is_nested(__u16 sk_family)
{
	return sk_family == AF_INET6;
}

static __always_inline int handle_send(struct sock *sk, __u8 proto, long ret)
{
	net_account(proto, net_family_of(sk_family_of(sk)), NET_DIR_EGRESS, ret);
	return 0;
}

static __always_inline int handle_udp_send(struct sock *sk, long ret)
{
	__u16 fam = sk_family_of(sk);

	if (udp_sendmsg_is_nested(fam))
		return 0;
	net_account(NET_PROTO_UDP, net_family_of(fam), NET_DIR_EGRESS, ret);
	return 0;
}

static __always_inline int handle_recv(struct sock *sk, __u8 proto, int flags, long ret)
{
	if (!recv_moves_payload(flags))
		return 0;
	net_account(proto, net_family_of(sk_family_of(sk)), NET_DIR_INGRESS, ret);
	return 0;
}

/*
 * Tracepoint family: sock_send_length / sock_recv_length fire in
 * sock_sendmsg_nosec() / sock_recvmsg_nosec() (net/socket.c, since 6.3)
 * for every socket; keep TCP and UDP over IPv4/IPv6 only.
 */
static __always_inline int handle_sock_tp(struct sock *sk, __u8 dir, int flags, int ret)
{
	__u16 fam, protocol;
	__u8 proto;

	if (!sk)
		return 0;
	fam = sk_family_of(sk);
	if (fam != AF_INET && fam != AF_INET6)
		return 0;
	protocol = SK_READ(sk, sk_protocol);
	if (protocol == IPPROTO_TCP && SK_READ(sk, sk_type) == SOCK_STREAM)
		proto = NET_PROTO_TCP;
	else if (protocol == IPPROTO_UDP)
		proto = NET_PROTO_UDP;
	else
		return 0;
	if (dir == NET_DIR_INGRESS && !recv_moves_payload(flags))
		return 0;
	net_account(proto, net_family_of(fam), dir, ret);
	return 0;
}

#ifdef CEEMSNET_HOOK_KRETPROBE
/*
 * The entry probe stashes what the return needs (the socket's family, and
 * by stashing at all, whether to count); see stash_put() in maps.bpf.h.
 */
enum net_fn {
	FN_TCP_SENDMSG,
	FN_TCP_RECVMSG,
	FN_UDP_SENDMSG,
	FN_UDP_RECVMSG,
	FN_UDPV6_SENDMSG,
	FN_UDPV6_RECVMSG,
	FN_TCP_SENDPAGE,
	FN_UDP_SENDPAGE,
};

struct net_stash_val {
	__u8 family; /* enum net_family */
	__u8 pad[7];
};

STASH_MAP(net_stash, struct net_stash_val);

static __always_inline int stash_entry(__u32 fn, struct sock *sk, bool count)
{
	struct net_stash_val v = {};

	if (!count)
		return 0;
	v.family = net_family_of(sk_family_of(sk));
	if (!stash_put(&net_stash, fn, &v))
		count_drop(&net_drops, DROP_STASH_FULL);
	return 0;
}

static __always_inline int account_return(__u32 fn, __u8 proto, __u8 dir, long ret)
{
	struct net_stash_val v;

	/* nothing stashed: not counted on purpose (peek, nested send), or entry missed */
	if (stash_take(&net_stash, fn, &v))
		net_account(proto, v.family, dir, ret);
	return 0;
}
#endif /* CEEMSNET_HOOK_KRETPROBE */

#endif /* __CEEMSNET_NET_H */
