"""Fuzzing what ceemsnet reads about the host and from flags: kernel release strings
(ceemsnet/planning/kernel.py; `probe --kernel`), arch names, /proc/cgroups and /proc/self/mountinfo
(ceemsnet/attribution/cgroups.py: the cgroup2 and v1 mounts, the --cgroup.hierarchy choice),
durations and times (ceemsnet/common/timeparse.py) and the whole-number flags (ceemsnet/common/flags.py).

Each parser answers with a value in its range or one CeemsnetError (argparse.ArgumentTypeError for
flag types) line. Inputs are what distributions and kernels print, then mutated."""

import argparse
import datetime as dt
import math
import os
import re
import time

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from packaging.version import Version

from ceemsnet import CeemsnetError
from ceemsnet.attribution import cgroups
from ceemsnet.common import flags, timeparse
from ceemsnet.planning import kernel

from .conftest import examples, tally, within

EDIT_CHARS = st.sampled_from(["", ".", "-", "+", "_", "~", " ", "\n", "\t", "0", "9", "٣", "²", "x", "v",
                              "\\", "\\999", "\\040", "\0", "1" * 5000, ",", "#", ":", "=", "é"])


@st.composite
def edited(draw, texts, max_edits=2):
    """A text with up to `max_edits` edits: a character replaced, a snippet inserted, a span deleted."""
    text = draw(texts)
    for _ in range(draw(st.integers(0, max_edits))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 4)))
        text = text[:i] + draw(EDIT_CHARS) + text[j:]
    return text


def _one_line(e: Exception) -> str:
    msg = str(e)
    assert msg and "\n" not in msg and "\r" not in msg, msg
    return msg


# --- kernel versions -------------------------------------------------------------------------------------------

SUFFIXES = ["", "-427.el9.x86_64", "-45-generic", "+deb12-amd64", "-fc-v769", "-rc3", "_1", "~22.04", "-arch1-1",
            "+", "-1-cloud-amd64", ".x86_64"]
RELEASES = st.builds(lambda a, b, c, s: (f"{a}.{b}" + (f".{c}" if c is not None else "") + s, (a, b, c or 0)),
                     st.integers(2, 99), st.integers(0, 999), st.one_of(st.none(), st.integers(0, 400)),
                     st.sampled_from(SUFFIXES))


@examples(200)
@given(case=RELEASES, ubuntu=st.booleans())
def test_fuzz_kernel_releases_as_distributions_print_them(case, ubuntu):
    text, (a, b, c) = case
    if ubuntu:  # /proc/version_signature: its last field is the mainline version
        text = f"Ubuntu 6.8.0-45.45-generic {text}"
    assert kernel.parse_kernel_version(text) == Version(f"{a}.{b}.{c}")


@examples(400)
@given(text=st.one_of(edited(RELEASES.map(lambda c: c[0])), edited(st.sampled_from(
    ["Ubuntu 6.8.0-45.45-generic 6.8.12", "Ubuntu-6.8.0-45.45", "v6.1", "  6.1.0  "])), st.text(max_size=12)))
@example(text="1" * 5000 + ".1")  # int() of more than 4300 digits: ValueError
@example(text="6." + "1" * 5000)
@example(text="٦.١")  # \d read any script's digits as a version
def test_fuzz_kernel_release_strings(text):
    try:
        with within(5, "parse_kernel_version"):
            v = kernel.parse_kernel_version(text)
    except CeemsnetError as e:
        _one_line(e)
        tally("kernel: refused")
        return
    tally("kernel: parsed")
    assert isinstance(v, Version) and 2 <= v.major <= 99 and v.minor <= 999
    assert re.search(rf"(?<![0-9])0*{v.major}\.0*{v.minor}(?![0-9])", text)  # from the text, in ASCII digits


@examples(100)
@given(arch=st.one_of(st.sampled_from(["x86_64", "amd64", "AARCH64", " arm64 ", "x86", "i386", "", "ARM64\n",
                                       "arm", "riscv64"]), st.text(max_size=8)))
def test_fuzz_arch_names(arch):
    try:
        a = kernel.normalize_arch(arch)
    except CeemsnetError as e:
        _one_line(e)
        return
    assert a in ("x86_64", "aarch64")


# --- /proc/cgroups and /proc/self/mountinfo ------------------------------------------------------------------

CONTROLLERS = ["cpuset", "cpu", "cpuacct", "blkio", "memory", "devices", "freezer", "net_cls", "perf_event",
               "net_prio", "hugetlb", "pids", "rdma", "misc"]
PROC_CGROUPS = st.lists(st.tuples(st.sampled_from(CONTROLLERS), st.integers(0, 12), st.integers(0, 9999),
                                  st.integers(0, 1)), max_size=len(CONTROLLERS)).map(
    lambda rows: "#subsys_name\thierarchy\tnum_cgroups\tenabled\n"
    + "".join(f"{n}\t{h}\t{c}\t{e}\n" for n, h, c, e in rows))


def _escape(path: str) -> str:
    """As the kernel writes a mount point in mountinfo (show_path: space, tab, newline, backslash as \\ooo)."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


MOUNT_POINTS = st.one_of(st.sampled_from(["/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory",
                                          "/sys/fs/cgroup/cpu,cpuacct", "/run/my cgroup", "/a\\b", "/t\tab"]),
                         st.text(st.characters(codec="utf-8", exclude_characters="\0"), min_size=1, max_size=10)
                         .map(lambda s: "/" + s))


@st.composite
def mount_lines(draw):
    """(mountinfo line, (kind, mount point, controllers)) for a cgroup2, cgroup v1 or other mount."""
    point = draw(MOUNT_POINTS)
    kind = draw(st.sampled_from(["cgroup2", "cgroup", "cgroup", "tmpfs"]))
    ctrls = draw(st.lists(st.sampled_from(CONTROLLERS + ["name=systemd"]), min_size=1, max_size=3, unique=True))
    opts = {"cgroup2": "rw,nsdelegate,memory_recursiveprot", "cgroup": "rw," + ",".join(ctrls),
            "tmpfs": "rw,size=4k"}[kind]
    line = f"{draw(st.integers(1, 999))} 24 0:{draw(st.integers(1, 99))} / {_escape(point)} rw,nosuid,nodev " \
           f"shared:9 - {kind} {kind} {opts}"
    return line, (kind, point, [c for c in ctrls if "=" not in c])


@examples(100)
@given(mounts=st.lists(mount_lines(), max_size=6))
def test_fuzz_mountinfo_as_the_kernel_writes_it(mounts):
    text = "\n".join(line for line, _ in mounts) + "\n"
    assert cgroups.parse_cgroup2_mounts(text) == [p for _, (k, p, _) in mounts if k == "cgroup2"]
    want = {}
    for _, (k, p, ctrls) in mounts:
        if k == "cgroup":
            for c in ctrls:
                want.setdefault(c, p)
    assert cgroups.parse_v1_mounts(text) == want


@examples(200)
@given(mountinfo=edited(st.lists(mount_lines(), max_size=5).map(lambda ms: "\n".join(m for m, _ in ms)), 3),
       proc=edited(PROC_CGROUPS, 2),
       spec=st.one_of(st.sampled_from(["auto", "v2", "v1:memory", "v1:cpu", "v1:", "v1:name=systemd", "", " v2 ",
                                       "v3", "v1:nope"]), st.text(max_size=6)),
       slurm_dirs=st.booleans(),
       btf=st.one_of(st.none(), st.dictionaries(st.sampled_from([c + "_cgrp_id" for c in CONTROLLERS] + ["io_cgrp_id"]),
                                                st.integers(0, 20), max_size=5)))
@example(mountinfo="1 2 3 4 /a\\999b - cgroup2 x y", proc="", spec="auto", slurm_dirs=False, btf=None)  # int(,8)
@example(mountinfo="1 2 3 4 /a\\²²²b - cgroup c rw,memory", proc="memory 1 1 1", spec="auto", slurm_dirs=False,
         btf=None)  # isdigit() is true for superscripts, int() refuses them
def test_fuzz_cgroup_hierarchy_choice(mountinfo, proc, spec, slurm_dirs, btf):
    with within(5, "choose_hierarchy"):
        v2 = cgroups.parse_cgroup2_mounts(mountinfo)
        v1 = cgroups.parse_v1_mounts(mountinfo)
        names = cgroups.parse_proc_cgroups(proc)
        try:
            h = cgroups.choose_hierarchy(spec, mountinfo, proc, isdir=lambda p: slurm_dirs, subsys_ids=btf)
        except CeemsnetError as e:
            _one_line(e)
            tally("hierarchy: refused")
            return
    assert all(isinstance(p, str) for p in v2) and all(isinstance(p, str) for p in v1.values())
    assert all(n and not any(c.isspace() for c in n) and not n.startswith("#") for n in names)
    tally(f"hierarchy: {h.version}")
    if h.version == "v2":
        assert h.root in v2 and h.subsys_index == -1
    else:
        assert h.version == "v1" and v1.get(h.controller) == h.root and h.controller in names
        assert isinstance(h.subsys_index, int) and h.subsys_index >= 0
    h.describe()


@examples(60)
@given(data=st.one_of(st.lists(mount_lines(), max_size=4).map(lambda ms: "\n".join(m for m, _ in ms).encode()),
                      st.binary(max_size=60)),
       junk=st.sampled_from([b"", b"\xe9", b"\xff\xfe", b"\x00"]))
@example(data=b"1 2 0:3 / /mnt/caf\xe9 rw - tmpfs tmpfs rw\n35 24 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
         junk=b"")  # a mount point in Latin-1: UnicodeDecodeError reading mountinfo
def test_fuzz_mountinfo_file_bytes(tmp_path_factory, data, junk):
    path = tmp_path_factory.getbasetemp() / "mountinfo"
    path.write_bytes(data + junk)
    try:
        with within(5, "find_cgroup2_root"):
            root = cgroups.find_cgroup2_root(str(path))
    except CeemsnetError as e:
        _one_line(e)
        return
    # the mount point as its bytes are (os functions take it back), whatever their encoding
    text = (data + junk).decode(errors="surrogateescape")
    assert isinstance(root, str) and root in cgroups.parse_cgroup2_mounts(text)
    os.fsencode(root)


# --- durations, times and whole numbers ------------------------------------------------------------------------

DURATIONS = st.builds(lambda n, u: (f"{n}{u}", n * timeparse.UNITS[u or "s"]),
                      st.one_of(st.integers(0, 10**6), st.floats(0, 1e6, allow_nan=False).map(lambda f: round(f, 3))),
                      st.sampled_from(["", "s", "m", "h", "d", "w"]))


@examples(200)
@given(case=DURATIONS)
def test_fuzz_durations_as_written(case):
    text, seconds = case
    assert timeparse.parse_duration(text, zero_ok=True) == pytest.approx(seconds)


@examples(300)
@given(text=st.one_of(edited(DURATIONS.map(lambda c: c[0])), st.text(max_size=8),
                      st.sampled_from(["1e308w", "1e999", "nan", "inf", "-1s", ".s", "1_000s", "٣s", "0x10"])),
       zero_ok=st.booleans())
def test_fuzz_duration_strings(text, zero_ok):
    try:
        with within(5, "parse_duration"):
            v = timeparse.parse_duration(text, zero_ok)
    except CeemsnetError as e:
        _one_line(e)
        return
    assert math.isfinite(v) and (v > 0 or zero_ok and v == 0)
    try:
        timeparse.duration_arg(text)
    except argparse.ArgumentTypeError as e:
        assert v == 0 and _one_line(e)


ZONES = ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Pacific/Kiritimati", "Etc/GMT+12"]
TIMES = st.one_of(
    st.datetimes(min_value=dt.datetime(1, 1, 1), timezones=st.one_of(st.none(), st.timezones()))
    .map(lambda d: d.isoformat()),
    st.dates().map(str),
    DURATIONS.map(lambda c: c[0]),
    st.sampled_from(["0001-01-01", "9999-12-31T23:59:59", "0001-01-01T00:00+01:00", "2026-11-22T08:00",
                     "2026-02-30", "24h", "7d", "", "now", "1700000000"]))


@examples(300)
@given(text=st.one_of(TIMES, edited(TIMES)), zone=st.sampled_from(ZONES))
@example(text="0001-01-01", zone="UTC")  # datetime.timestamp(): ValueError: year 0 is out of range
@example(text="9999-12-31T23:59:59", zone="Asia/Tokyo")  # ... year 10000 is out of range
def test_fuzz_times(text, zone):
    old = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        with within(5, "parse_time"):
            t = timeparse.parse_time(text, 1.7e9, -1.0)
    except CeemsnetError as e:
        _one_line(e)
        tally("time: refused")
        return
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()
    tally("time: read")
    assert isinstance(t, float) and math.isfinite(t)
    assert text or t == -1.0


@examples(200)
@given(text=st.one_of(st.integers(-10**6, 10**6).map(str), edited(st.integers(-99, 99).map(str)), st.text(max_size=6),
                      st.sampled_from(["1" * 5000, " 7 ", "1_000", "٣", "²", "0x1", "+5", "-0"])))
def test_fuzz_whole_number_flags(text):
    for fn, ok in ((flags.whole_number, lambda v: True), (flags.nonnegative_int, lambda v: v >= 0),
                   (flags.positive_int, lambda v: v > 0)):
        try:
            v = fn(text)
        except argparse.ArgumentTypeError as e:
            _one_line(e)
            continue
        assert isinstance(v, int) and ok(v)
