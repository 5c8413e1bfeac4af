"""A crash in the middle of an upgrade loses no count and doubles none.

An upgrade (a new object, here the same one with maps too small for the
pinned counts, so they are copied over) pins the new object in
<dir>__partial, unpins the old object directory, then renames the new one
(ceemsnet/pinned/sequence.py). The exporter SIGKILLs itself after each of
those steps (CEEMSNET_TEST_CRASH_AT, read only there); the child keeps
sending while no exporter runs; the next exporter settles what it finds
(pins.settle_partial) and must export every byte sent, exactly.
"""

import os
import subprocess
import sys

import pytest

from ..promserver import free_port
from .helpers import HOOK, ROOT, Exporter, host_only
from .test_continuity import Stepper, expected, exporter_args, net_values, peer  # noqa: F401

BIGGER = ["--net.map-entries=70000", "--net.slots=2048"]


def assert_exact(samples, cgroup, steps, tally):
    want, calls = expected(steps, tally)
    got = {(p, d): (samples.get((f"ceemsnet_net_{d}_bytes_total", (("cgroup", cgroup), ("family", "ipv4"), ("proto", p)))),
                    samples.get((f"ceemsnet_net_{d}_calls_total", (("cgroup", cgroup), ("family", "ipv4"), ("proto", p)))))
           for p, d in want}
    assert got == {k: (want[k], calls[k]) for k in want}, net_values(samples, cgroup)


def crashing_serve(args, step):
    """serve with pins that SIGKILLs itself at `step` of its start; returns its log."""
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "serve", f"--web.listen-address=127.0.0.1:{free_port()}",
                        "--collectors=net", f"--hook={HOOK}", "--unit=none", "--storage.path=none", *args],
                       cwd=ROOT, env=dict(os.environ, CEEMSNET_TEST_CRASH_AT=step), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == -9, f"serve did not stop at {step}: exit {p.returncode}: {p.stderr}"
    return p.stderr


def object_dirs(path):
    d = os.path.join(path, "net")
    return sorted(os.listdir(d)) if os.path.isdir(d) else []


def first_step_pinned(make_cgroup, spawn, pin_path, peer):  # noqa: F811
    """A child in a fresh cgroup takes one step under an exporter that pins, then stopped;
    skips where this kernel cannot pin the family's links. Returns (cgroup, stepper)."""
    cg = make_cgroup()
    work = Stepper(spawn, cg, peer)
    e = Exporter(extra=exporter_args(pin_path))
    try:
        work.step()
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    if "no continuity" in err:
        pytest.skip(f"this kernel cannot pin the {HOOK} family's links")
    return cg, work


@host_only("the order of pinning does not depend on the hook family")
@pytest.mark.parametrize("step", ["pinned-partial", "dropped-old"])
def test_a_crash_during_an_upgrade_loses_and_doubles_nothing(step, make_cgroup, spawn, pin_path, peer):  # noqa: F811
    cg, work = first_step_pinned(make_cgroup, spawn, pin_path, peer)
    before = object_dirs(pin_path)
    assert len(before) == 1, before
    log = crashing_serve(exporter_args(pin_path) + BIGGER, step)
    left = object_dirs(pin_path)
    # what the crash left: the new object half-committed beside the old, or alone
    partial = [d for d in left if d.endswith("__partial")]
    assert len(partial) == 1, (left, log)
    assert (before[0] in left) == (step == "pinned-partial"), (left, log)
    work.step()                                   # no exporter runs: the new programs count
    e = Exporter(extra=exporter_args(pin_path) + BIGGER)
    try:
        tally = work.step()
        final = e.samples()
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    assert "finished an upgrade a crash had interrupted" in err, err
    assert "adopted the pinned" in err, err      # the settled directory is what this run wants
    after = object_dirs(pin_path)
    assert len(after) == 1 and not after[0].endswith("__partial"), after
    assert_exact(final, cg.rel, work.steps, tally)


@host_only("the order of pinning does not depend on the hook family")
def test_a_half_pinned_new_object_is_dropped_and_the_old_pins_kept(make_cgroup, spawn, pin_path, peer):  # noqa: F811
    """A __partial directory with no link (a crash while its maps were being pinned): its
    programs died with the exporter and its maps hold copies of the old counts; the old
    directory stays and the next upgrade carries its counts over once."""
    cg, work = first_step_pinned(make_cgroup, spawn, pin_path, peer)
    crashing_serve(exporter_args(pin_path) + BIGGER, "pinned-partial")
    [part] = [d for d in object_dirs(pin_path) if d.endswith("__partial")]
    pdir = os.path.join(pin_path, "net", part)
    for entry in os.listdir(pdir):                # as if the crash came before any link was pinned
        if entry.startswith("link__"):
            os.unlink(os.path.join(pdir, entry))
    # the old programs were detached by the upgrade before it crashed: nothing counts now, as
    # after any crash between detaching and pinning; the counts so far must all survive
    e = Exporter(extra=exporter_args(pin_path) + BIGGER)
    try:
        tally = work.step()
        final = e.samples()
    finally:
        rc, err = e.stop()
    assert rc == 0, err
    assert "left half pinned by a crash" in err, err
    assert "(migrate:" in err, err
    assert_exact(final, cg.rel, work.steps, tally)
