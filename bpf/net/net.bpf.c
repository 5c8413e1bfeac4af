// SPDX-License-Identifier: GPL-2.0
/*
 * Socket-level network accounting: payload bytes, calls and errors of TCP
 * and UDP sends and receives, charged to the cgroup of the calling task.
 *
 * One source, several objects; each one's defines come from the catalogue
 * in ceemsnet/planning/catalogue.py (see bpf/README.md):
 *   CEEMSNET_HOOK_FEXIT       fexit programs, one object per recvmsg era
 *   CEEMSNET_HOOK_KRETPROBE   kprobe + kretprobe pairs, per era and arch
 *   CEEMSNET_HOOK_TRACEPOINT  tp_btf on sock_send_length/sock_recv_length
 * RECVMSG_ERA picks the recvmsg prototype:
 *   1: (sk, msg, len, nonblock, flags, addr_len)  before 5.19
 *   2: (sk, msg, len, flags, addr_len)            5.19: commit ec095263a965
 *                                                 "net: remove noblock parameter from recvmsg() entities"
 *   3: (sk, msg, len, flags)                      7.1: commit 8341c989ac77
 *                                                 "net: remove addr_len argument of recvmsg() handlers"
 */
#include "vmlinux.h"
#include "arch.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "compat.h"
#include "net.h"

char LICENSE[] SEC("license") = "GPL";

#if defined(CEEMSNET_HOOK_FEXIT)

#if RECVMSG_ERA == 1
#define RECVMSG_ARGS struct sock *sk, struct msghdr *msg, size_t len, int nonblock, int flags, int *addr_len
#elif RECVMSG_ERA == 2
#define RECVMSG_ARGS struct sock *sk, struct msghdr *msg, size_t len, int flags, int *addr_len
#elif RECVMSG_ERA == 3
#define RECVMSG_ARGS struct sock *sk, struct msghdr *msg, size_t len, int flags
#else
#error "RECVMSG_ERA must be 1, 2 or 3"
#endif

SEC("fexit/tcp_sendmsg")
int BPF_PROG(fexit_tcp_sendmsg, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	return handle_send(sk, NET_PROTO_TCP, ret);
}

SEC("fexit/udp_sendmsg")
int BPF_PROG(fexit_udp_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	return handle_udp_send(sk, ret);
}

SEC("fexit/udpv6_sendmsg")
int BPF_PROG(fexit_udpv6_sendmsg, struct sock *sk, struct msghdr *msg, size_t len, int ret)
{
	return handle_send(sk, NET_PROTO_UDP, ret);
}

SEC("fexit/tcp_recvmsg")
int BPF_PROG(fexit_tcp_recvmsg, RECVMSG_ARGS, int ret)
{
	return handle_recv(sk, NET_PROTO_TCP, flags, ret);
}

SEC("fexit/udp_recvmsg")
int BPF_PROG(fexit_udp_recvmsg, RECVMSG_ARGS, int ret)
{
	return handle_recv(sk, NET_PROTO_UDP, flags, ret);
}

SEC("fexit/udpv6_recvmsg")
int BPF_PROG(fexit_udpv6_recvmsg, RECVMSG_ARGS, int ret)
{
	return handle_recv(sk, NET_PROTO_UDP, flags, ret);
}

/* Gone in 6.5 (commit dc97391e6610 "sock: Remove ->sendpage*() in favour of sendmsg(MSG_SPLICE_PAGES)"):
 * the loader switches these off where the kernel has no such function. */
SEC("fexit/tcp_sendpage")
int BPF_PROG(fexit_tcp_sendpage, struct sock *sk, struct page *page, int offset, size_t size, int flags, int ret)
{
	return handle_send(sk, NET_PROTO_TCP, ret);
}

SEC("fexit/udp_sendpage")
int BPF_PROG(fexit_udp_sendpage, struct sock *sk, struct page *page, int offset, size_t size, int flags, int ret)
{
	return handle_udp_send(sk, ret);
}

#elif defined(CEEMSNET_HOOK_KRETPROBE)

#if RECVMSG_ERA == 1
#define RECV_FLAGS(ctx) ((int)PT_REGS_PARM5(ctx))
#elif RECVMSG_ERA == 2
/* Era 3 only drops the trailing addr_len: flags stay the 4th argument. */
#define RECV_FLAGS(ctx) ((int)PT_REGS_PARM4(ctx))
#else
#error "RECVMSG_ERA must be 1 or 2 for kretprobe objects"
#endif

SEC("kprobe/tcp_sendmsg")
int BPF_KPROBE(kprobe_tcp_sendmsg, struct sock *sk)
{
	return stash_entry(FN_TCP_SENDMSG, sk, true);
}

SEC("kretprobe/tcp_sendmsg")
int BPF_KRETPROBE(kretprobe_tcp_sendmsg, int ret)
{
	return account_return(FN_TCP_SENDMSG, NET_PROTO_TCP, NET_DIR_EGRESS, ret);
}

SEC("kprobe/udp_sendmsg")
int BPF_KPROBE(kprobe_udp_sendmsg, struct sock *sk)
{
	return stash_entry(FN_UDP_SENDMSG, sk, !udp_sendmsg_is_nested(sk_family_of(sk)));
}

SEC("kretprobe/udp_sendmsg")
int BPF_KRETPROBE(kretprobe_udp_sendmsg, int ret)
{
	return account_return(FN_UDP_SENDMSG, NET_PROTO_UDP, NET_DIR_EGRESS, ret);
}

SEC("kprobe/udpv6_sendmsg")
int BPF_KPROBE(kprobe_udpv6_sendmsg, struct sock *sk)
{
	return stash_entry(FN_UDPV6_SENDMSG, sk, true);
}

SEC("kretprobe/udpv6_sendmsg")
int BPF_KRETPROBE(kretprobe_udpv6_sendmsg, int ret)
{
	return account_return(FN_UDPV6_SENDMSG, NET_PROTO_UDP, NET_DIR_EGRESS, ret);
}

SEC("kprobe/tcp_recvmsg")
int BPF_KPROBE(kprobe_tcp_recvmsg, struct sock *sk)
{
	return stash_entry(FN_TCP_RECVMSG, sk, recv_moves_payload(RECV_FLAGS(ctx)));
}

SEC("kretprobe/tcp_recvmsg")
int BPF_KRETPROBE(kretprobe_tcp_recvmsg, int ret)
{
	return account_return(FN_TCP_RECVMSG, NET_PROTO_TCP, NET_DIR_INGRESS, ret);
}

SEC("kprobe/udp_recvmsg")
int BPF_KPROBE(kprobe_udp_recvmsg, struct sock *sk)
{
	return stash_entry(FN_UDP_RECVMSG, sk, recv_moves_payload(RECV_FLAGS(ctx)));
}

SEC("kretprobe/udp_recvmsg")
int BPF_KRETPROBE(kretprobe_udp_recvmsg, int ret)
{
	return account_return(FN_UDP_RECVMSG, NET_PROTO_UDP, NET_DIR_INGRESS, ret);
}

SEC("kprobe/udpv6_recvmsg")
int BPF_KPROBE(kprobe_udpv6_recvmsg, struct sock *sk)
{
	return stash_entry(FN_UDPV6_RECVMSG, sk, recv_moves_payload(RECV_FLAGS(ctx)));
}

SEC("kretprobe/udpv6_recvmsg")
int BPF_KRETPROBE(kretprobe_udpv6_recvmsg, int ret)
{
	return account_return(FN_UDPV6_RECVMSG, NET_PROTO_UDP, NET_DIR_INGRESS, ret);
}

/* Gone in 6.5 (commit dc97391e6610); switched off by the loader there. */
SEC("kprobe/tcp_sendpage")
int BPF_KPROBE(kprobe_tcp_sendpage, struct sock *sk)
{
	return stash_entry(FN_TCP_SENDPAGE, sk, true);
}

SEC("kretprobe/tcp_sendpage")
int BPF_KRETPROBE(kretprobe_tcp_sendpage, int ret)
{
	return account_return(FN_TCP_SENDPAGE, NET_PROTO_TCP, NET_DIR_EGRESS, ret);
}

SEC("kprobe/udp_sendpage")
int BPF_KPROBE(kprobe_udp_sendpage, struct sock *sk)
{
	return stash_entry(FN_UDP_SENDPAGE, sk, !udp_sendmsg_is_nested(sk_family_of(sk)));
}

SEC("kretprobe/udp_sendpage")
int BPF_KRETPROBE(kretprobe_udp_sendpage, int ret)
{
	return account_return(FN_UDP_SENDPAGE, NET_PROTO_UDP, NET_DIR_EGRESS, ret);
}

#elif defined(CEEMSNET_HOOK_TRACEPOINT)

/* include/trace/events/sock.h, since 6.3: TP_PROTO(struct sock *sk, int ret, int flags) */
SEC("tp_btf/sock_send_length")
int BPF_PROG(tp_btf_sock_send_length, struct sock *sk, int ret, int flags)
{
	return handle_sock_tp(sk, NET_DIR_EGRESS, flags, ret);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(tp_btf_sock_recv_length, struct sock *sk, int ret, int flags)
{
	return handle_sock_tp(sk, NET_DIR_INGRESS, flags, ret);
}

#else
#error "define one of CEEMSNET_HOOK_FEXIT, CEEMSNET_HOOK_KRETPROBE, CEEMSNET_HOOK_TRACEPOINT"
#endif
