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
 * Per-CPU counters, one record per cgroup (struct net_counts: every
 * protocol, family and direction of that cgroup): the hot path never
 * bounces a cache line between CPUs (an MPI job sends from every core of
 * a node at once), and a scrape reads one record per cgroup. Not
 * preallocated: a preallocated per-CPU hash costs max_entries * 192 B *
 * nr_cpus up front; entries are allocated when a cgroup first counts. The
 * loader resizes it before load.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct net_key);
	__type(value, struct net_counts);
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

/* A counter's place in struct net_counts (enum net_proto, net_family, net_dir). */
static __always_inline __u32 net_index(__u8 proto, __u8 family, __u8 dir)
{
	return ((proto << 2) | (family << 1) | dir) & (NET_COUNTERS - 1);
}

/*
 * Plain adds or atomics. The tracepoint objects add plainly: a
 * read-modify-write of one counter word can only lose an update if
 * another update of the same word runs on the same CPU in between (the
 * words are per CPU, and BPF programs run with migration disabled). Each
 * word here is written by one program only (egress words by
 * tp_btf_sock_send_length, ingress words by tp_btf_sock_recv_length), and
 * a raw tracepoint program never runs twice at once on one CPU: whatever
 * interrupts or preempts it there, a second run is skipped and counted as
 * missed by the per-CPU prog->active guard of __bpf_trace_run()
 * (kernel/trace/bpf_trace.c; "bpf: Prevent bpf program recursion for raw
 * tracepoint probes", 6.1, older than the tracepoint objects' 6.3). The
 * fexit and kretprobe objects keep atomics: there two programs write the
 * same words (tcp_sendmsg and tcp_sendpage, udp_sendmsg and udp_sendpage,
 * before 6.5), and trampolines and kprobes on a preemptible kernel can be
 * preempted mid-add in one and followed on that CPU by a task of the same
 * cgroup in the other.
 */
#ifdef CEEMSNET_HOOK_TRACEPOINT
#define NET_ADD(p, n) (*(p) += (n))
#else
#define NET_ADD(p, n) __sync_fetch_and_add((p), (n))
#endif

static __always_inline void net_add(struct net_counts *c, __u32 idx, long ret)
{
	struct net_value *v = &c->v[idx & (NET_COUNTERS - 1)];

	if (ret >= 0) {
		NET_ADD(&v->bytes, ret);
		NET_ADD(&v->calls, 1);
	} else {
		NET_ADD(&v->errors, 1);
	}
}

/* The hash path: the per-CPU hash keyed by cgroup id. */
static __always_inline void net_account_hash(__u64 id, __u32 idx, long ret)
{
	struct net_key key = { .cgroup_id = id };
	struct net_counts *c;

	c = map_lookup_or_init(&net_stats, &key, struct net_counts);
	if (!c) {
		count_drop(&net_drops, DROP_STATS_FULL);
		return;
	}
	net_add(c, idx, ret);
}

#ifdef NET_SLOTS
#include "net_slots.h"
#endif

/* Add one call's result to the current task's cgroup. */
static __always_inline void net_account(__u8 proto, __u8 family, __u8 dir, long ret)
{
	__u64 id = ceemsnet_cgroup_id();
	__u32 idx = net_index(proto, family, dir);

#ifdef NET_SLOTS
	if (net_account_slot(id, idx, ret))
		return;
#endif
	net_account_hash(id, idx, ret);
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
