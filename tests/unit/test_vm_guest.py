"""tests/vm/guest.sh in both cases a host can put it in.

With udev on the host (every ordinary Debian machine), virtme-ng's init
holds the virtio ports and relays the script's output and exit code; a
second open of a port fails with EBUSY, so guest.sh must not open them.
Without udev it writes to the ports itself. The real ports exist only in a
VM, and which case a VM run takes depends on this machine, so this test
runs the script against a made-up sysfs tree and files standing in for
the ports: one case each, whatever the host has.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

GUEST = Path(__file__).resolve().parents[2] / "tests" / "vm" / "guest.sh"
CMD = ["sh", "-c", "echo to-out; echo to-err >&2; exit 7"]


def _tree(tmp_path: Path, btf: bool = True) -> dict:
    sysports, dev = tmp_path / "sys", tmp_path / "dev"
    dev.mkdir()
    for i, name in enumerate(("virtme.stdin", "virtme.stdout", "virtme.stderr", "virtme.ret"), 1):
        d = sysports / f"vport{i}p1"
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (dev / f"vport{i}p1").write_text("")
    (tmp_path / "vmlinux").write_text("")
    return dict(os.environ, CEEMSNET_GUEST_SYSPORTS=str(sysports), CEEMSNET_GUEST_DEV=str(dev),
                CEEMSNET_GUEST_BTF=str(tmp_path / ("vmlinux" if btf else "absent")))


def test_without_udev_it_writes_the_ports_itself(tmp_path):
    env = _tree(tmp_path)
    r = subprocess.run(["sh", str(GUEST), *CMD], env=env, capture_output=True, text=True, timeout=30)
    dev = tmp_path / "dev"
    assert r.returncode == 7
    assert (dev / "vport2p1").read_text() == "to-out\n"
    assert (dev / "vport3p1").read_text() == "to-err\n"
    assert (dev / "vport4p1").read_text() == "7"
    assert r.stdout == "" and r.stderr == ""


def test_with_udev_init_relays_and_the_ports_stay_untouched(tmp_path):
    # init gave the script the virtme.stdout port as its stdout: guest.sh runs
    # CMD on what it was given and opens no port
    env = _tree(tmp_path)
    dev = tmp_path / "dev"
    with open(dev / "vport2p1", "w") as out, open(tmp_path / "given-err", "w") as err:
        r = subprocess.run(["sh", str(GUEST), *CMD], env=env, stdout=out, stderr=err, timeout=30)
    assert r.returncode == 7
    assert (dev / "vport2p1").read_text() == "to-out\n"
    assert (tmp_path / "given-err").read_text() == "to-err\n"
    assert (dev / "vport3p1").stat().st_size == 0  # in the guest, an open here fails with EBUSY
    assert (dev / "vport4p1").stat().st_size == 0


def test_a_kernel_without_btf_is_refused_before_cmd_runs(tmp_path):
    env = _tree(tmp_path, btf=False)
    r = subprocess.run(["sh", str(GUEST), "sh", "-c", "echo ran"], env=env, capture_output=True, text=True, timeout=30)
    dev = tmp_path / "dev"
    assert r.returncode == 3
    assert "ran" not in (dev / "vport2p1").read_text()
    assert "has no BTF" in (dev / "vport3p1").read_text()
    assert (dev / "vport4p1").read_text() == "3"
