"""The soft-RoCE test bed: rdma_rxe on a dummy netdev holding a 127.0.0.x address.

`soft_roce()` loads rdma_rxe (when it is not loaded), makes a dummy netdev with
127.0.0.<n>/32 (traffic never leaves the machine: rxe loops it back inside the device),
adds an rxe device on it with `rdma link add` and waits for its RoCE v2 GID
(::ffff:127.0.0.<n>); on exit it removes the device and the netdev, and unloads
rdma_rxe if it loaded it. It skips (with the reason) where the kernel has no rdma_rxe
module (this development host's kernel has no modules: the RDMA tests run in the VMs,
tests/vm/run.sh 6.1|6.12) or a program is missing (packaging/apt-packages.txt).
"""

import contextlib
import os
import subprocess
import time
import uuid

import pytest

from ..programs import require_program

GID_INDEX = 1  # RoCE v2 GID of the netdev's IPv4 address (index 0 is the link-local one)


class Bed:
    def __init__(self, device: str, netdev: str, address: str):
        self.device = device    # the rxe device (ib_write_bw -d)
        self.netdev = netdev
        self.address = address  # the server's address for perftest clients

    def perftest(self, tool: str, *args: str, server: str | None = None) -> list[str]:
        """argv of a perftest tool on this device (RoCE v2 GID, no CPU frequency check);
        with server=address: the client."""
        return [tool, "-d", self.device, "-x", str(GID_INDEX), "-F", *args] + ([server] if server else [])


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if check and p.returncode:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
    return p


def _module_loaded(name: str) -> bool:
    return os.path.isdir(f"/sys/module/{name}")


def have_rxe_module() -> str:
    """'' where rdma_rxe can be loaded here, else why not."""
    if _module_loaded("rdma_rxe"):
        return ""
    if not os.path.isdir(f"/lib/modules/{os.uname().release}"):
        return f"kernel {os.uname().release} has no modules (no /lib/modules/{os.uname().release}): " \
               "no rdma_rxe; the RDMA tests run in the VMs (tests/vm/run.sh 6.1|6.12)"
    p = _run("modprobe", "-n", "rdma_rxe", check=False)
    return "" if p.returncode == 0 else f"no rdma_rxe module for this kernel: {p.stderr.strip()}"


@contextlib.contextmanager
def soft_roce(octet: int = 2):
    for prog in ("modprobe", "ip", "rdma", "ib_write_bw"):
        require_program(prog)
    why = have_rxe_module()
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:6]
    netdev, device, address = f"cmsrxe{tag}", f"rxe{tag}", f"127.0.0.{octet}"
    loaded_here = not _module_loaded("rdma_rxe")
    made_netdev = made_device = False
    try:
        if loaded_here:
            _run("modprobe", "rdma_rxe")
        _run("ip", "link", "add", netdev, "type", "dummy")
        made_netdev = True
        _run("ip", "addr", "add", f"{address}/32", "dev", netdev)
        _run("ip", "link", "set", netdev, "up")
        _run("rdma", "link", "add", device, "type", "rxe", "netdev", netdev)
        made_device = True
        gid = f"/sys/class/infiniband/{device}/ports/1/gids/{GID_INDEX}"
        want = "0000:0000:0000:0000:0000:ffff:7f00:" + f"{octet:04x}"
        deadline = time.time() + 30
        while True:
            with contextlib.suppress(OSError):
                with open(gid) as f:
                    if f.read().strip() == want:
                        break
            if time.time() > deadline:
                raise RuntimeError(f"{device}: GID {GID_INDEX} is not {want} after 30 s")
            time.sleep(0.2)
        yield Bed(device, netdev, address)
    finally:
        if made_device:
            _run("rdma", "link", "delete", device, check=False)
        if made_netdev:
            _run("ip", "link", "del", netdev, check=False)
        if loaded_here:
            # the exporter's programs may still hold the module a moment after it stopped
            for _ in range(20):
                if _run("modprobe", "-r", "rdma_rxe", check=False).returncode == 0:
                    break
                time.sleep(0.5)
