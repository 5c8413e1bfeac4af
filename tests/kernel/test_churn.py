"""5,000 cgroups come and go under a running exporter.

One child visits 5,000 fresh cgroups in turn (moving itself; cgroup v2),
sending a datagram from each; the test removes each cgroup as soon as the
child has left it, while scraping the exporter in a loop. A surviving
cgroup's counters must never move, map entries must not pile up, and the
exporter's memory must stay flat. Run for the net collector's net_stats
and for the skb collector's root-mode skb_stats (the churner then makes
its socket in each cgroup: cgroup_skb charges the socket's cgroup).
"""

import os
import subprocess
import sys
import threading
import time

import pytest

from .helpers import Exporter, remove_cgroup_dir, traffic_argv
from .peer import Peer

HERE = os.path.dirname(os.path.abspath(__file__))
N = 5000


def churn_round(parent, peer, tag, socket_per_cgroup=False):
    """Create N cgroups below parent, visit them with one child, remove each once left."""
    dirs = []
    for i in range(N):
        d = os.path.join(parent.path, f"{tag}{i}")
        os.mkdir(d)
        dirs.append(d)
    flag = ["--socket-per-cgroup"] if socket_per_cgroup else []
    churner = subprocess.Popen([sys.executable, os.path.join(HERE, "churner.py"), str(peer.udp4[1]), *flag, *dirs],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        churner.stdin.write("go\n")
        churner.stdin.flush()
        for line in churner.stdout:
            d = line.strip()
            if d == "done":
                break
            try:
                os.rmdir(d)
            except OSError:
                pass  # retried below
        churner.wait(timeout=120)
    finally:
        if churner.poll() is None:
            churner.kill()
            churner.wait()
        for d in dirs:
            remove_cgroup_dir(d)


@pytest.mark.skipif(bool(os.environ.get("CEEMSNET_VM")),
                    reason="churn test runs on the host: it tests the exporter's lifecycle, not a hook family, "
                           "and its timing and memory figures mean nothing under software emulation")
@pytest.mark.parametrize("collector", ["net", "skb"])
def test_churn_keeps_survivors_and_frees_maps(collector, make_cgroup, spawn):
    e = Exporter(extra=("--cgroup.retention=1",), collectors=collector)
    peer = Peer()
    parent, survivor = make_cgroup(), make_cgroup()
    stop = threading.Event()
    seen, entries = [], []
    if collector == "net":
        lab = ("ceemsnet_net_egress_bytes_total", (("cgroup", survivor.rel), ("family", "ipv4"), ("proto", "udp")))
    else:
        lab = ("ceemsnet_skb_egress_bytes_total", (("cgroup", survivor.rel), ("family", "ipv4")))
    stats_map = f"{collector}_stats"
    entries_key = ("ceemsnet_map_entries", (("map", stats_map),))
    rss_key = ("ceemsnet_process_resident_memory_bytes", ())

    def scrape_loop():
        while not stop.is_set():
            try:
                s = e.samples()
            except OSError:  # a slow scrape: try again rather than lose the thread
                continue
            seen.append(s.get(lab))
            entries.append(s.get(entries_key))
            time.sleep(0.3)

    def settled():
        """Samples once the removed cgroups' keys are gone and their series expired: past
        --cgroup.retention and a few scrapes, longer on a loaded machine (up to a minute)."""
        time.sleep(2.5)
        deadline = time.time() + 60
        while True:
            s = e.samples()
            if s.get(entries_key, 0) <= base[entries_key] + 8 or time.time() > deadline:
                time.sleep(1.5)  # the retired series expire one retention after the keys went
                return e.samples()
            time.sleep(0.5)

    try:
        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [4321]}]), survivor).go()
        base = e.samples()
        t = threading.Thread(target=scrape_loop, daemon=True)
        t.start()
        churn_round(parent, peer, "a", collector == "skb")
        after1 = settled()
        stop.set()
        t.join(timeout=30)
        # Three more rounds without scrapes meanwhile: the first scrape after each
        # then meets all N removed cgroups at once, the same peak both times, so
        # their memory compares (with scrapes during a round, the peak depends
        # on how far the churner got between scrapes).
        churn_round(parent, peer, "b", collector == "skb")
        after2 = settled()
        churn_round(parent, peer, "c", collector == "skb")
        after3 = settled()
        churn_round(parent, peer, "d", collector == "skb")
        after4 = settled()
    finally:
        stop.set()
        peer.close()
        rc, err = e.stop()
    assert rc == 0, err
    # net counts the payload; skb the IP packet: 20 B IPv4 + 8 B UDP header more
    sent = 4321 if collector == "net" else 4321 + 28
    values = [v for v in seen if v is not None]
    assert values and all(v == sent for v in values), "the survivor's counter moved"
    assert after4[lab] == sent
    mib = [x[rss_key] / 2**20 for x in (base, after1, after2, after3, after4)]
    print(f"\n{collector}: 4 x {N} cgroups churned, {len(seen)} scrapes during the first; {stats_map} entries "
          f"{base[entries_key]:.0f} before, peak {max(x for x in entries if x is not None):.0f} in round 1, "
          f"{', '.join(f'{a[entries_key]:.0f}' for a in (after1, after2, after3, after4))} after each round; "
          f"exporter RSS {' -> '.join(f'{m:.1f}' for m in mib)} MiB")
    for after in (after1, after2, after3, after4):
        # with the exporter's warnings and errors, and the scrape timings, for a failure's cause
        assert after[entries_key] <= base[entries_key] + 8, (
            "map entries of removed cgroups were not freed; the exporter's log: "
            + "".join(ln + "\n" for ln in err.splitlines() if " INFO " not in ln)[-4000:])
    # what is kept per cgroup grows the memory in every round; the allocator's noise (a few MiB
    # either way from one round to the next, more on a loaded machine) does not
    assert min(mib[3] - mib[2], mib[4] - mib[3]) < 3, \
        "rounds 3 and 4 both grew the exporter's memory: something is kept per cgroup"
