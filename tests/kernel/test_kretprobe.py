"""kretprobe accuracy when many receivers sleep in recv() at once.

A return probe tracks at most `maxactive` calls in flight per function; a
return beyond that is missed. 300 threads block in udp_recvmsg, then all
are woken: with the default --kretprobe.maxactive (1024) every byte is
counted; with a tiny one the misses are exported, and counted calls plus
missed returns add up to exactly the calls made.
"""

import json
import os
import socket
import subprocess
import sys
import warnings

import pytest

from .helpers import HOOK, VM, Exporter

# a VM pass forces its family (--hook): one that is not kretprobe skips here, before an exporter starts
pytestmark = pytest.mark.skipif(bool(VM) and HOOK != "kretprobe",
                                reason=f"needs the kretprobe hook family; this VM pass runs {HOOK}")

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 1000


def family_of(exporter):
    hooks = [dict(k[1]) for k in exporter.samples() if k[0] == "ceemsnet_hook_info"]
    return {h["hook"] for h in hooks}


def need_kretprobe(exporter):
    fams = family_of(exporter)
    if fams != {"kretprobe"}:
        pytest.skip(f"needs the kretprobe hook family; this kernel ({os.uname().release}) runs "
                    f"{', '.join(sorted(fams))} (the VM suite runs it with --hook=kretprobe)")


def blocked_receivers(make_cgroup, n):
    """Start n blocked receivers in a fresh cgroup, wake them all; returns (cgroup, tally)."""
    cg = make_cgroup()
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "blocked_recv.py"), str(n)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        cg.add(proc.pid)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        ports = json.loads(proc.stdout.readline())
        assert proc.stdout.readline().strip() == "blocked", proc.stderr.read()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for p in ports:
                s.sendto(b"x" * SIZE, ("127.0.0.1", p))
        tally = json.loads(proc.stdout.readline())
        proc.wait(timeout=120)
        return cg, tally
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def udp_in(samples, cg, what):
    return samples.get((f"ceemsnet_net_ingress_{what}_total",
                        (("cgroup", cg.rel), ("family", "ipv4"), ("proto", "udp"))), 0)


def missed(samples, fn="udp_recvmsg"):
    return samples.get(("ceemsnet_kretprobe_missed_total", (("function", fn),)))


def update_failures(samples):
    """ceemsnet_map_update_failures_total by map: events a program could not count (a new
    cgroup's record, or an entry stash, that could not be added)."""
    return {dict(k[1])["map"]: v for k, v in samples.items() if k[0] == "ceemsnet_map_update_failures_total"}


def test_300_blocked_receivers_are_counted_exactly(exporter, make_cgroup):
    need_kretprobe(exporter)
    before = missed(exporter.samples())
    assert before is not None, "ceemsnet_kretprobe_missed_total is not exported"
    cg, tally = blocked_receivers(make_cgroup, 300)
    assert tally == {"bytes": 300 * SIZE, "calls": 300}
    s = exporter.samples()
    assert (udp_in(s, cg, "bytes"), udp_in(s, cg, "calls")) == (300 * SIZE, 300)
    assert missed(s) == before


def test_too_small_maxactive_is_visible_as_missed(exporter, make_cgroup):
    need_kretprobe(exporter)
    small = Exporter(extra=("--kretprobe.maxactive=4",))
    try:
        before = missed(small.samples())
        for attempt in (1, 2):
            cg, tally = blocked_receivers(make_cgroup, 64)
            s = small.samples()
            counted, lost = udp_in(s, cg, "calls"), missed(s) - before
            # Once (6.1 VM, 1 run of many) a return was neither counted nor missed: 3 + 60.
            # Not reproduced since (docs/testing.md, One-off failures: 60 rounds on 6.1 all 4 + 60);
            # a second round tells a rare event from a broken count, and the first round's numbers
            # are kept as a warning (in the run's log even when the second round passes)
            if counted + lost == 64 or attempt == 2:
                break
            warnings.warn(f"64 receivers, --kretprobe.maxactive=4, round 1: {counted:g} returns counted + "
                          f"{lost:g} missed != 64; map update failures {update_failures(s)}")
            before = missed(s)
    finally:
        small.stop()
    assert lost > 0, "64 sleepers with maxactive 4 must miss returns"
    assert counted + lost == 64, f"counted {counted:g} + missed {lost:g}; map update failures {update_failures(s)}"
    assert udp_in(s, cg, "bytes") == counted * SIZE
