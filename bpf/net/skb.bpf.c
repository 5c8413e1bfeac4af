// SPDX-License-Identifier: GPL-2.0
/*
 * cgroup_skb backend: IP-layer bytes, skbs and GSO segments per cgroup, to
 * compare with the socket-level programs of net.bpf.c. Two objects:
 *   skb-root     (CEEMSNET_SKB_ROOT)     one attachment, hash keyed by skb cgroup id
 *   skb-cgroup   (CEEMSNET_SKB_STORAGE)  one attachment per cgroup, per-CPU cgroup storage
 * cgroup_skb programs and __sk_buff fields are stable since 4.10 (gso_segs 4.20):
 * no signature eras here.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "skb.h"

char LICENSE[] SEC("license") = "GPL";

SEC("cgroup_skb/egress")
int cgroup_skb_egress(struct __sk_buff *skb)
{
	return skb_count(skb, NET_DIR_EGRESS);
}

SEC("cgroup_skb/ingress")
int cgroup_skb_ingress(struct __sk_buff *skb)
{
	return skb_count(skb, NET_DIR_INGRESS);
}
