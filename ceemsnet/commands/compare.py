"""`ceemsnet compare`: socket-level vs cgroup_skb bytes, per cgroup.

Reads a running exporter's /metrics (both collectors, net and skb, must
run there: one load of each, and the numbers compared come from the same
scrape). The two backends answer different questions:
  socket level  payload bytes, charged to the task that made the call;
  cgroup_skb    IP-layer bytes (headers included), charged to the cgroup
                the socket was created in; TCP ACKs and SYNs count too.
A row's reason says why the two differ beyond what headers explain.
"""

from __future__ import annotations

import argparse
import json

from ceemsnet import CeemsnetError
from ceemsnet.commands.shared import add_json, add_log_level

# Most header bytes one skb can carry: IPv6 (40) + TCP with options (60),
# with room for extension headers. Payload <= skb bytes <= payload + packets * this.
MAX_HEADER = 120
DEFAULT_URL = "http://127.0.0.1:9977/metrics"


def fetch_metrics(url: str) -> str:
    import urllib.request  # start-up cost: the HTTP client (~14 ms) only compare needs, not every command
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.read().decode()
    except OSError as e:  # urllib.error.URLError is one
        reason = getattr(e, "reason", e)
        raise CeemsnetError(f"cannot read {url}: {reason} (is `ceemsnet serve --collectors=net,skb` running?)") \
            from None


def _sums(text: str) -> tuple[dict, dict, dict]:
    # start-up cost: prometheus_client (~19 ms) only compare needs, not every command
    from prometheus_client.parser import text_string_to_metric_families
    sock: dict[tuple[str, str], float] = {}
    skb: dict[tuple[str, str], float] = {}
    pkts: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            for d in ("egress", "ingress"):
                cg = s.labels.get("cgroup")
                if s.name == f"ceemsnet_net_{d}_bytes_total":
                    sock[(cg, d)] = sock.get((cg, d), 0) + s.value
                elif s.name == f"ceemsnet_skb_{d}_bytes_total":
                    skb[(cg, d)] = skb.get((cg, d), 0) + s.value
                elif s.name == f"ceemsnet_skb_{d}_packets_total":
                    pkts[(cg, d)] = pkts.get((cg, d), 0) + s.value
    return sock, skb, pkts


def reason(sock: float, skb: float, packets: float, direction: str) -> str:
    """Why skb-level and socket-level bytes differ, or "" when headers explain it."""
    if sock == 0 and skb == 0:
        return ""
    if sock == 0:
        return ("skb only: sockets created in this cgroup were used by tasks of other cgroups, "
                "or traffic other than TCP/UDP payload (ICMP, bare ACKs)")
    if skb == 0:
        return "socket only: this cgroup's tasks used sockets created in another cgroup"
    if skb < sock:
        return ("skb below socket bytes: part of this cgroup's traffic went through sockets created in "
                "another cgroup")
    if skb <= sock + packets * MAX_HEADER:
        return ""  # IP and transport headers
    extra = ("TCP ACKs for data received" if direction == "egress" else "TCP ACKs for data sent")
    return (f"more than headers explain: sockets created here used by other cgroups, {extra}, "
            "retransmissions, or loopback traffic this cgroup also sent or received")


def compare_rows(text: str) -> list[dict]:
    sock, skb, pkts = _sums(text)
    if not any(k for k in text.splitlines() if k.startswith("ceemsnet_skb_")):
        raise CeemsnetError("the exporter has no ceemsnet_skb_* metrics: run it with --collectors=net,skb")
    if not any(k for k in text.splitlines() if k.startswith("ceemsnet_net_") or k.startswith("# TYPE ceemsnet_net_")):
        raise CeemsnetError("the exporter has no ceemsnet_net_* metrics: run it with --collectors=net,skb")
    rows = []
    for cg, d in sorted(set(sock) | set(skb)):
        s, k, p = sock.get((cg, d), 0), skb.get((cg, d), 0), pkts.get((cg, d), 0)
        if s == 0 and k == 0:
            continue
        rows.append({"cgroup": cg, "direction": d, "socket_bytes": int(s), "skb_bytes": int(k),
                     "skb_packets": int(p), "ratio": round(k / s, 4) if s else None,
                     "reason": reason(s, k, p, d)})
    return rows


def _human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_compare(rows: list[dict]) -> str:
    if not rows:
        return "no traffic seen yet by either backend"
    table = [("CGROUP", "DIR", "SOCKET", "SKB", "RATIO", "REASON")]
    for r in rows:
        table.append((r["cgroup"], r["direction"], _human(r["socket_bytes"]), _human(r["skb_bytes"]),
                      "-" if r["ratio"] is None else f"{r['ratio']:.3f}", r["reason"] or "headers"))
    w = [max(len(t[i]) for t in table) for i in range(5)]
    return "\n".join("  ".join(t[i].ljust(w[i]) for i in range(5)) + "  " + t[5] for t in table)


def add_parser(sub) -> argparse.ArgumentParser:
    c = sub.add_parser("compare", help="socket-level vs cgroup_skb bytes per cgroup, with reasons",
                       description="Read a running exporter's /metrics (serve --collectors=net,skb) and show, "
                                   "per cgroup and direction, socket-level payload bytes beside cgroup_skb "
                                   "IP-layer bytes, their ratio, and why they differ beyond header overhead.")
    c.add_argument("--url", default=DEFAULT_URL, help=f"the exporter's metrics URL (default {DEFAULT_URL})")
    add_json(c)
    add_log_level(c)
    return c


def run(args) -> int:
    rows = compare_rows(fetch_metrics(args.url))
    print(json.dumps(rows, indent=2) if args.json else format_compare(rows))
    return 0

