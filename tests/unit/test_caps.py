"""What serve asks for per collector (ceemsnet/serving/caps.py): CAP_BPF and CAP_PERFMON for
net and vfs on kernels that have them (5.8+), CAP_SYS_ADMIN in their place before; the
measurements behind it are tests/kernel/test_capabilities.py."""

import errno
import os

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.runtime import collection
from ceemsnet.serving import caps

BPF, PERFMON, NET_ADMIN, SYS_ADMIN = caps.CAP_BPF, caps.CAP_PERFMON, caps.CAP_NET_ADMIN, caps.CAP_SYS_ADMIN


def _caps(collectors, mode="root", cap_bpf=True):
    return {c for c, _, _ in caps.needs(collectors, mode, cap_bpf=cap_bpf)}


def test_net_and_vfs_need_bpf_and_perfmon_not_sys_admin():
    assert _caps(["net"]) == _caps(["vfs"]) == _caps(["net", "vfs"]) == {BPF, PERFMON}
    assert _caps(["skb"], "root") == {BPF, NET_ADMIN}
    assert _caps(["skb"], "per-cgroup") == {BPF, PERFMON}


def test_before_5_8_sys_admin_stands_in_once_per_collector():
    rows = caps.needs(["net", "skb"], "root", cap_bpf=False)
    assert [(c, s) for c, s, _ in rows] == [(SYS_ADMIN, "net"), (SYS_ADMIN, "skb"), (NET_ADMIN, "skb")]
    assert "no CAP_BPF (5.8+)" in rows[0][2]


@pytest.mark.parametrize("eff,missing", [
    (0, [BPF, PERFMON]),
    (1 << BPF, [PERFMON]),
    (1 << PERFMON, [BPF]),
    (1 << BPF | 1 << PERFMON, []),
    (1 << SYS_ADMIN, []),  # bpf_capable() and perfmon_capable() accept it
])
def test_missing(eff, missing):
    assert [c for c, _, _ in caps.missing(["net"], eff=eff, cap_bpf=True)] == missing


def test_check_names_the_first_missing_one_in_one_line(monkeypatch):
    monkeypatch.setattr(caps, "effective", lambda: 1 << BPF)
    monkeypatch.setattr(caps, "kernel_has_cap_bpf", lambda: True)
    with pytest.raises(CeemsnetError) as e:
        caps.check("ceemsnet serve", ["vfs"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("ceemsnet serve: missing capability CAP_PERFMON (vfs: ")


def test_perf_event_paranoid_above_2_is_named(monkeypatch):
    # Debian's and Ubuntu's kernels: perf_event_open() refused (EACCES) to CAP_PERFMON above level 2
    monkeypatch.setattr(collection, "_holds", lambda *caps: False)
    monkeypatch.setattr(collection, "perf_event_paranoid", lambda: 3)
    msg = collection.explain_errno(errno.EACCES, "kretprobe")
    assert msg.startswith("missing capability CAP_SYS_ADMIN (kernel.perf_event_paranoid is 3") and "\n" not in msg
    assert collection.explain_errno(errno.EACCES, "fexit") == os.strerror(errno.EACCES)  # no perf_event_open
    monkeypatch.setattr(collection, "perf_event_paranoid", lambda: 2)
    assert collection.explain_errno(errno.EACCES, "kretprobe") == os.strerror(errno.EACCES)
