"""The generic BPF runtime: libbpf through ctypes, BTF, maps, object spec ->
collection, links, kprobe and tracepoint attach, bpffs. It knows nothing of
net, vfs or skb; every layer above loads through it."""
