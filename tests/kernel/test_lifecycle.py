"""Removed cgroups: counts stay, map keys go, series expire after --cgroup.retention."""

import json
import os
import subprocess
import time

from .helpers import Exporter, require_program, traffic_argv
from .peer import Peer


def map_ids_held_by(pid, name):
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:bpf-map":
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                ids |= {int(line.split()[1]) for line in f if line.startswith("map_id:")}
        except OSError:
            continue
    out = json.loads(subprocess.run([require_program("bpftool"), "-j", "map", "show"], capture_output=True, text=True,
                                    check=True).stdout)
    return [m["id"] for m in out if m["id"] in ids and m.get("name") == name]


def cgroup_ids_in_map(map_id, field="key"):
    out = json.loads(subprocess.run([require_program("bpftool"), "-j", "map", "dump", "id", str(map_id)], capture_output=True,
                                    text=True, check=True).stdout)
    return {int.from_bytes(bytes(int(b, 16) for b in e[field][:8]), "little") for e in out}


def cgroup_ids_counted(pid):
    """Cgroup ids with counters: net_stats keys, and with the slot layout (-slots objects)
    the owners of net_slot_owner's slots."""
    (stats,) = map_ids_held_by(pid, "net_stats")
    ids = cgroup_ids_in_map(stats)
    for owner in map_ids_held_by(pid, "net_slot_owner"):
        ids |= cgroup_ids_in_map(owner, "value") - {0}
    return ids


def test_removed_cgroup_keeps_counts_frees_keys_then_expires(make_cgroup, spawn):
    e = Exporter(extra=("--cgroup.retention=2",))
    peer = Peer()
    try:
        cg = make_cgroup()
        spawn(traffic_argv([{"op": "udp", "family": 4, "addr": peer.udp4, "sizes": [1234]}]), cg).go()
        lab = ("ceemsnet_net_egress_bytes_total", (("cgroup", cg.rel), ("family", "ipv4"), ("proto", "udp")))
        assert e.samples()[lab] == 1234
        assert cg.id in cgroup_ids_counted(e.proc.pid)
        cg.remove()
        assert e.samples()[lab] == 1234           # the removed cgroup's counts stay exported
        assert cg.id not in cgroup_ids_counted(e.proc.pid)  # and its keys (or slot) are gone from the maps
        time.sleep(2.5)
        e.samples()
        assert lab not in e.samples()             # after --cgroup.retention the series go
    finally:
        peer.close()
        rc, err = e.stop()
    assert rc == 0, err
