"""The Debian package installed into a throwaway root (dpkg -x, its control files
beside it): its unit's ExecStart, with the unit's capability bounding set and
no_new_privs, runs from Debian's python3 and Debian's python3-* packages (no
venv, no pip), loads the packaged objects and answers a scrape; stopping it
leaves the programs pinned, and the package's prerm (remove) detaches them,
postrm (purge) removes the store. About 10 s.
"""

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from ..promserver import free_port, stop_by_pid
from .helpers import ROOT, host_only, raise_memlock, require_program

pytestmark = host_only("the package and its unit do not depend on the hook family")


@pytest.fixture
def installed(tmp_path):
    """(root, env) of the package extracted into tmp_path/root."""
    require_program("dpkg-deb")
    out = tmp_path / "dist"
    p = subprocess.run([sys.executable, "packaging/deb/build.py", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    deb = p.stdout.strip()
    # its Depends resolve from Debian's packages on this host (make setup installs them)
    dry = subprocess.run(["dpkg", "--dry-run", "-i", deb], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    subprocess.run(["dpkg-deb", "-e", deb, str(root / "DEBIAN")], check=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONNOUSERSITE": "1", "DPKG_ROOT": str(root),
           # what dpkg would put in /usr: the extracted package first on the path
           "PYTHONPATH": str(root / "usr/lib/python3/dist-packages"),
           "CEEMSNET_OBJ_DIR": str(root / "usr/lib/ceemsnet/bpf/objs")}
    return root, env


def _unit(root):
    text = (root / "lib/systemd/system/ceemsnet.service").read_text()
    return dict(re.findall(r"^([A-Za-z]+)=(.*)$", text, re.M))


def test_installed_execstart_serves_and_removal_detaches(installed):
    root, env = installed
    setpriv = require_program("setpriv")
    unit = _unit(root)
    # from Debian's python3, not the venv: the package and its dependencies as installed
    where = subprocess.run(["/usr/bin/python3", "-c", "import ceemsnet, prometheus_client, yaml, packaging; "
                            "print(ceemsnet.__file__); print(prometheus_client.__file__)"],
                           env=env, cwd="/", capture_output=True, text=True)
    assert where.returncode == 0, where.stderr
    assert where.stdout.split()[0].startswith(str(root)) and where.stdout.split()[1].startswith("/usr/lib/python3/")

    port = free_port()
    pins = f"/sys/fs/bpf/ceemsnet-test-deb-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    store = root / "var/lib/ceemsnet"
    store.mkdir(parents=True)
    default = root / "etc/default/ceemsnet"
    default.write_text(default.read_text() + f'ARGS="$ARGS --web.listen-address=127.0.0.1:{port} --unit=none '
                       f'--bpf.pin-path={pins} --storage.path={store}/accounting.db"\n')
    args = subprocess.run(["sh", "-c", f'. "{default}"; printf %s "$ARGS"'], capture_output=True, text=True,
                          check=True).stdout
    cmd = shlex.split(unit["ExecStart"].replace("$ARGS", args))
    assert cmd[0] == "/usr/bin/ceemsnet"
    cmd[0] = str(root / "usr/bin/ceemsnet")
    caps = [c.lower().removeprefix("cap_") for c in unit["CapabilityBoundingSet"].split()]
    assert unit["LimitMEMLOCK"] == "infinity"  # as raise_memlock() sets it, before the capabilities go
    proc = subprocess.Popen([setpriv, "--no-new-privs", "--bounding-set", ",".join(["-all"] + [f"+{c}" for c in caps]),
                             "--", *cmd], env=env, cwd="/", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=raise_memlock)
    try:
        text = ""
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    text = r.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert 'ceemsnet_hook_info{' in text, proc.stderr.read() if proc.poll() is not None else "no scrape"
        time.sleep(0.5)  # its SIGTERM handler is set just after the socket answers
    finally:
        stop_by_pid(proc)
        _, err = proc.communicate()
    try:
        assert proc.returncode == 0, err
        assert "dropped every capability" in err
        # stopping is not removing: the programs stay pinned and counting
        assert os.listdir(pins), "stopping the exporter removed its pins"
        rm = subprocess.run([str(root / "DEBIAN/prerm"), "remove"], env=env, capture_output=True, text=True)
        assert rm.returncode == 0, rm.stderr
        assert not os.path.exists(pins), rm.stdout + rm.stderr
        for step in ("remove", "purge"):
            p = subprocess.run([str(root / "DEBIAN/postrm"), step], env=env, capture_output=True, text=True)
            assert p.returncode == 0, p.stderr
        assert not store.exists()
    finally:
        subprocess.run([sys.executable, "-m", "ceemsnet.cli", "detach", f"--bpf.pin-path={pins}"], cwd=ROOT,
                       capture_output=True)
