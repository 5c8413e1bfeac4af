// SPDX-License-Identifier: GPL-2.0
/*
 * cgroup_skb backend: IP-layer bytes, skbs and GSO segments per cgroup, to
 * compare with the socket-level programs of net.bpf.c. Two objects:
 *   skb-root     (CEEMSNET_SKB_ROOT)     one attachment, hash keyed by skb cgroup id
 *   skb-cgroup   (CEEMSNET_SKB_STORAGE)  one attachment per cgroup, per-CPU cgroup storage
 * No signature eras, but first kernels (ceemsnet/planning/catalogue.py): cgroup_skb
 * programs 4.10; __sk_buff->gso_segs 5.1 (commit d9ff286a0f59), read by both;
 * bpf_skb_cgroup_id() in cgroup_skb programs 5.3 (commit 4ecabd55c904), so
 * skb-root needs 5.3; per-CPU cgroup storage 4.20, so skb-cgroup needs 5.1.
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
