"""A crash at every step of a retire neither loses nor doubles a count.

Retiring removed cgroups' keys is a sequence of system calls on the ledger's
pinned maps and the counters map (ceemsnet/pinned/ledger.py). Here the
sequence is stopped after its k-th system call, for every k, and a restart
adopts the same maps; the totals must be exact.

- On real BPF maps made on this kernel (BpfMap.create): the lifecycle and the
  ledger as serve runs them, stopped in process at step k (and again at step j
  of the restart's first scrape, for every j), then restarted on the same maps.
- End to end: serve with pins, a child sends known UDP bytes in a fresh
  cgroup, the cgroup is removed, and the exporter SIGKILLs itself after step k
  of the retire (CEEMSNET_TEST_CRASH_AFTER_RETIRE_STEP); a new exporter
  adopts the pins (or migrates them to other maps) and must export exactly
  the bytes sent, for every k.
"""

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from ceemsnet.attribution.lifecycle import Lifecycle
from ceemsnet.collectors.counters import HashSource
from ceemsnet.pinned.ledger import CRASH_ENV, PATH_BYTES, Ledger, path_id
from ceemsnet.planning.structs import NET, sum_percpu
from ceemsnet.runtime.collection import Collection, ObjectSpec
from ceemsnet.runtime.maps import BpfMap

from .helpers import ROOT, Exporter, host_only, traffic_argv
from .peer import Peer

WORDS = 3


# The ledger is generic over its counters map's key and value: these tests use a 16-byte key of
# (cgroup id, proto, family, direction) and 3 words a key (ceemsnet 0.1's net layout), under the
# subsystem name "t", which no layout conversion claims.
def pack_net_key(cid, proto, fam, d):
    return NET.legacy_key.pack(cid, proto, fam, d)


def decode_net(keys, values, n, ncpus):
    return dict(zip(NET.legacy_key.iter_unpack(keys[:n * 16]), sum_percpu(values, n, ncpus, WORDS)))


class Crash(Exception):
    """The process died here: nothing after this step happened."""


def _raise():
    raise Crash


class Kernel:
    """The state a crash leaves: the counters map and the ledger's maps, in the kernel."""

    def __init__(self, intents=1024):
        self.coll = Collection(ObjectSpec(None), 0)
        self.stats = BpfMap.create("t_stats", 16, WORDS * 8, 1024)
        self.coll.add_map(self.stats)
        if intents != 1024:  # a small intents map: a retire goes in runs of that many keys
            self.coll.add_map(BpfMap.create("t_retiring", 16, 8 + WORDS * 8, intents))
        self.source = HashSource(self.stats, decode_net, pack_net_key)

    def start(self, alive, crash_after=0):
        """A new exporter on these maps: a ledger that loads them, a lifecycle."""
        led = Ledger(self.coll, "t", 16, WORDS, 1024, decode_net, pack_net_key)
        led.crash_after, led._crash = crash_after, _raise
        return led, Lifecycle("/unused", retention=600, alive=lambda c, p: alive.get(c, False), ledger=led)

    def scrape(self, life, paths):
        stats, _ = self.source.read()
        out, p = life.process(stats, {c: paths.get(c, f"unknown:{c}") for c in {k[0] for k in stats}},
                              self.source.delete)
        totals = {}
        for k, v in out.items():
            t = totals.setdefault((p[k[0]],) + k[1:], [0] * WORDS)
            for i in range(WORDS):
                t[i] += v[i]
        return {k: tuple(v) for k, v in totals.items()}

    def close(self):
        self.coll.close()


# cgroup id -> (path, {(proto, family, dir): counts}); 13 and 11 share a path (a job's cgroup made again)
EARLY = {10: ("/job_1", {(17, 2, 0): (1000, 1, 0)})}
GONE = {11: ("/job_1", {(17, 2, 0): (111, 1, 0), (17, 2, 1): (222, 2, 0), (6, 2, 0): (333, 3, 1)}),
        12: ("/job_2", {(6, 10, 0): (44, 4, 0), (6, 10, 1): (55, 5, 0)}),
        13: ("/job_1", {(17, 2, 0): (7, 1, 0), (6, 2, 1): (9, 1, 0)})}
LIVE = {20: ("/job_3", {(17, 2, 0): (5, 5, 0)})}


def truth():
    """What must be exported at the end: every count once, under its path."""
    want = {}
    for cg in (EARLY, GONE, LIVE):
        for path, keys in cg.values():
            for rest, v in keys.items():
                t = want.setdefault((path,) + rest, [0] * WORDS)
                for i in range(WORDS):
                    t[i] += v[i]
    return {k: tuple(v) for k, v in want.items()}


def scenario(crash_at=0, crash_again_at=0, intents=1024):
    """Run the sequence on fresh maps: EARLY retired by a first exporter, GONE retired by a
    second one stopped after step crash_at (0: not stopped), a third exporter stopped after step
    crash_again_at of its first scrape, a fourth that finishes. Returns (exported, the kernel
    maps' state, steps of the second exporter's retire, whether the third one was stopped).
    The order of the steps follows the order the kernel's hash maps return their keys in,
    which each map's random hash seed sets: each call may order them differently."""
    k = Kernel(intents)
    try:
        paths = {c: p for cg in (EARLY, GONE, LIVE) for c, (p, _) in cg.items()}
        for cg in (EARLY, GONE, LIVE):
            for cid, (_, keys) in cg.items():
                for rest, v in keys.items():
                    k.stats.update(pack_net_key(cid, *rest), b"".join(x.to_bytes(8, "little") for x in v))
        alive = {c: True for c in paths}
        _, life = k.start(alive)
        k.scrape(life, paths)
        for cid in EARLY:
            alive[cid] = False
        k.scrape(life, paths)                  # the first exporter retires EARLY, then stops
        for cid in GONE:
            alive[cid] = False                 # removed while no exporter runs
        led, life = k.start(alive, crash_at)
        try:
            k.scrape(life, paths)
            crashed = False
        except Crash:
            crashed = True
        assert crashed == bool(crash_at), (crash_at, led.steps)
        retire_steps = led.steps
        led, life = k.start(alive, crash_again_at)
        try:
            k.scrape(life, paths)
            crashed = False
        except Crash:
            crashed = True
        again = crashed
        _, life = k.start(alive)
        out = k.scrape(life, paths)
        assert k.scrape(life, paths) == out    # and a scrape later, the same
        state = {name: m.read_all()[2] for name, m in k.coll.maps.items()}
        state["stats_ids"] = {key[0] for key in k.source.read()[0]}
        keys, _, n = k.coll.maps["t_paths"].read_all()
        state["path_ids"] = {int.from_bytes(keys[i * 8:(i + 1) * 8], "little") for i in range(n)}
        return out, state, retire_steps, again
    finally:
        k.close()


def check(out, state):
    assert out == truth()
    assert state["t_retiring"] == 0                       # no intent left
    assert state["stats_ids"] == set(LIVE)                # the removed cgroups' keys are gone
    # the paths map names the live id and the retired paths, and no removed id any more
    assert state["path_ids"] == set(LIVE) | {path_id(p) for p in ("/job_1", "/job_2")}


@host_only("the ledger's retire steps are map system calls, the same with every hook family")
@pytest.mark.parametrize("intents", [1024, 2])
def test_a_crash_after_any_step_of_a_retire_counts_everything_once(intents):
    out, state, steps, _ = scenario(intents=intents)
    check(out, state)
    if intents == 1024:
        # GONE: 2 new path names, 7 intents, 5 retired totals, 7 deletes, 7 intents cleared, 3 ids forgotten
        assert steps == 2 + 7 + 5 + 7 + 7 + 3
    else:
        # in runs of 2 keys (4 runs): each run writes the totals of its own keys' paths
        assert 2 + 7 + 7 + 7 + 3 + 5 <= steps <= 2 + 7 + 7 + 7 + 7 + 3
    for k in range(1, steps + 1):
        out, state, _, _ = scenario(k, intents=intents)
        try:
            check(out, state)
        except AssertionError as e:
            raise AssertionError(f"crash after step {k} of {steps}: {e}") from None


@host_only("the ledger's retire steps are map system calls, the same with every hook family")
def test_a_crash_during_the_restart_after_a_crash_counts_everything_once():
    _, _, steps, _ = scenario()
    runs = 0
    for k in range(1, steps + 1):
        for j in range(1, 100):
            out, state, _, stopped = scenario(k, j)
            try:
                check(out, state)
            except AssertionError as e:
                raise AssertionError(f"crash after step {k}, then after step {j}: {e}") from None
            if not stopped:  # the restart's first scrape had fewer steps than j
                break
            runs += 1
    assert runs > steps  # the restarts' scrapes had steps to stop at


def test_a_ledger_of_the_previous_layout_is_adopted_with_its_totals():
    """The ledger before intents had <name>_paths and <name>_retired only (same layouts):
    adopting it adds an empty <name>_retiring and keeps every retired total."""
    coll = Collection(ObjectSpec(None), 0)
    try:
        paths = BpfMap.create("t_paths", 8, PATH_BYTES, 64)
        retired = BpfMap.create("t_retired", 16, WORDS * 8, 64)
        coll.add_map(paths)
        coll.add_map(retired)
        pid = path_id("/job_9")
        paths.update(pid.to_bytes(8, "little"), b"/job_9".ljust(PATH_BYTES, b"\0"))
        retired.update(pack_net_key(pid, 17, 2, 0), b"".join(x.to_bytes(8, "little") for x in (4321, 3, 0)))
        led = Ledger(coll, "t", 16, WORDS, 64, decode_net, pack_net_key)
        assert set(coll.maps) == {"t_paths", "t_retired", "t_retiring"}
        assert led.load() == {("/job_9", 17, 2, 0): [4321, 3, 0]}
        life = Lifecycle("/unused", retention=600, alive=lambda c, p: True, ledger=led)
        out, p = life.process({}, {}, lambda key: True)
        assert {(p[k[0]],) + k[1:]: v for k, v in out.items()} == {("/job_9", 17, 2, 0): (4321, 3, 0)}
    finally:
        coll.close()


def udp(samples, cg, what):
    return samples.get((f"ceemsnet_net_{what}_total", (("cgroup", cg.rel), ("family", "ipv4"), ("proto", "udp"))))


SIZES = [1111, 2222]


@host_only("the ledger does not depend on the hook family")
@pytest.mark.parametrize("then", ["adopt", "migrate"])
def test_serve_killed_at_each_step_of_a_retire_exports_exact_bytes(then, make_cgroup, spawn, monkeypatch):
    """serve SIGKILLs itself after step k of the retire of a removed cgroup's keys; the next
    serve adopts the pins (or, with another map size, migrates them: the ledger's maps move
    to the new object) and exports exactly the bytes the cgroup moved. For k = 1, 2, ...
    until a serve no longer dies in that scrape (the retire had fewer steps)."""
    peer = Peer()
    crashed_at = []
    try:
        for k in range(1, 40):
            path = f"/sys/fs/bpf/ceemsnet-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            args = (f"--bpf.pin-path={path}", "--cgroup.retention=600", "--log.level=info")
            try:
                cg = make_cgroup()
                monkeypatch.setenv(CRASH_ENV, str(k))
                e = Exporter(extra=args)
                monkeypatch.delenv(CRASH_ENV)
                try:
                    spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": SIZES}]), cg).go()
                    assert udp(e.samples(), cg, "egress_bytes") == sum(SIZES)
                    cg.remove()
                    try:
                        e.samples()           # the scrape that retires the removed cgroup
                    except Exception as x:  # noqa: BLE001 (the connection ends as the exporter dies)
                        if e.proc.wait(timeout=30) != -signal.SIGKILL:
                            raise AssertionError(f"k={k}: serve died otherwise: {e.log()}") from x
                finally:
                    e.stop()
                died = e.proc.returncode == -signal.SIGKILL
                if died:
                    crashed_at.append(k)
                # adopts the pins the dead one left, or replaces them by an object with other maps
                # (as test_continuity's upgrade: the counts are copied, the slots folded into the hash)
                e = Exporter(extra=args + (("--net.map-entries=70000", "--net.slots=2048") if then == "migrate"
                                           else ()))
                try:
                    s = e.samples()
                    time.sleep(0.2)
                    again = e.samples()
                finally:
                    rc, err = e.stop()
                assert rc == 0, err
                assert ("adopted the pinned" if then == "adopt" else "(migrate:") in err, err
                for got in (s, again):
                    assert udp(got, cg, "egress_bytes") == sum(SIZES), (k, died)
                    assert udp(got, cg, "ingress_bytes") == sum(SIZES), (k, died)
                    assert udp(got, cg, "egress_calls") == len(SIZES), (k, died)
                    assert udp(got, cg, "ingress_calls") == len(SIZES), (k, died)
            finally:
                p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "detach", f"--bpf.pin-path={path}"],
                                   cwd=ROOT, capture_output=True, text=True, timeout=60)
                assert p.returncode == 0, p.stderr
            if not died:
                break
    finally:
        peer.close()
    # the cgroup's own retire: its path named, its one record (UDP egress and ingress alike) with
    # an intent, a retired total, a delete and a cleared intent, its id forgotten; other cgroups
    # of this host removed in the same scrape may add steps
    print(f"serve killed after step k of the retire, then exact, for k = 1..{len(crashed_at)}")
    assert crashed_at == list(range(1, len(crashed_at) + 1)) and len(crashed_at) >= 6, crashed_at


def test_a_full_paths_map_is_not_a_scrape_failure(caplog):
    """More cgroup ids than the ledger's paths map holds: the ones that fit are kept, the
    scrape goes on, and the log says it once."""
    coll = Collection(ObjectSpec(None), 0)
    try:
        coll.add_map(BpfMap.create("t_paths", 8, PATH_BYTES, 4))
        led = Ledger(coll, "t", 16, WORDS, 64, decode_net, pack_net_key)
        with caplog.at_level("WARNING", "ceemsnet.pinned.ledger"):
            led.record({cid: f"/job_{cid}" for cid in range(10, 20)})
            led.record({cid: f"/job_{cid}" for cid in range(20, 30)})
        assert sum(led.path_of(c) is not None for c in range(10, 30)) == 4
        assert caplog.text.count("is full (4 entries)") == 1
    finally:
        coll.close()
