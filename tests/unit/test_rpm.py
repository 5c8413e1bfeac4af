"""make rpm: the RPM holds the .deb's files (same bytes) at RHEL's paths, its Requires name RHEL/EPEL
packages, and its scriptlets do what the systemd macros and the .deb's maintainer scripts do. Read
back with rpm -qp, no install (the .deb's install test is tests/kernel/test_deb_install.py). About 5 s.
"""

import hashlib
import os
import re
import subprocess
import sys

import pytest

from ceemsnet.planning import catalogue
from ceemsnet.runtime import libbpf

from ..programs import ROOT, require_program

# .deb path prefix -> RPM path prefix; the rest is at the same path in both
MOVED = [("/usr/lib/python3/dist-packages/", "/usr/lib/ceemsnet/python/"),
         ("/lib/systemd/system/", "/usr/lib/systemd/system/"),
         ("/etc/default/ceemsnet", "/etc/sysconfig/ceemsnet")]
# Debian's alone: lintian's overrides and the Debian changelog
DEB_ONLY = {"/usr/share/lintian/overrides/ceemsnet", "/usr/share/doc/ceemsnet/changelog.gz"}
# the launcher differs by design: the RPM's puts /usr/lib/ceemsnet/python on sys.path
DIFFERENT = {"/usr/bin/ceemsnet"}


def _build(script, out):
    p = subprocess.run([sys.executable, script, str(out)], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(rpm path, {deb path: sha256} of the .deb's files)."""
    require_program("rpmbuild", skip=True)
    require_program("rpm", skip=True)
    require_program("dpkg-deb")
    tmp = tmp_path_factory.mktemp("pkgs")
    rpm = _build("packaging/rpm/build.py", tmp / "rpm")
    deb = _build("packaging/deb/build.py", tmp / "deb")
    root = tmp / "debroot"
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                files["/" + os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return rpm, files


def _q(rpm, *args):
    return subprocess.run(["rpm", "-qp", *args, rpm], capture_output=True, text=True, check=True).stdout


def _dump(rpm):
    """{path: (sha256, mode)} of the RPM's regular files (rpm -qp --dump)."""
    out = {}
    for line in _q(rpm, "--dump").splitlines():
        path, _size, _mtime, digest, mode = line.split()[:5]
        if int(mode, 8) & 0o170000 == 0o100000:
            out[path] = (digest, int(mode, 8) & 0o7777)
    return out


def _rpm_path(deb_path):
    for a, b in MOVED:
        if deb_path.startswith(a):
            return b + deb_path[len(a):]
    return deb_path


def test_name_and_arch(built):
    rpm, _ = built
    ver = re.search(r'^__version__ = "([^"]+)"', open(os.path.join(ROOT, "ceemsnet", "__init__.py")).read(),
                    re.M).group(1)
    assert os.path.basename(rpm) == f"ceemsnet-{ver}-1.noarch.rpm"
    assert _q(rpm, "--qf", "%{NAME} %{VERSION} %{RELEASE} %{ARCH}") == f"ceemsnet {ver} 1 noarch"


def test_same_files_same_bytes_as_the_deb(built):
    rpm, deb_files = built
    rpm_files = _dump(rpm)
    want = {_rpm_path(p): digest for p, digest in deb_files.items() if p not in DEB_ONLY}
    assert set(rpm_files) == set(want), (sorted(set(want) - set(rpm_files)), sorted(set(rpm_files) - set(want)))
    differ = sorted(p for p, digest in want.items() if rpm_files[p][0] != digest)
    assert differ == sorted(DIFFERENT), differ
    objs = sorted(f for f in os.listdir(os.path.join(ROOT, "bpf", "objs")) if f.endswith(".bpf.o"))
    assert objs and all(f"/usr/lib/ceemsnet/bpf/objs/{o}" in rpm_files for o in objs)
    assert rpm_files["/usr/bin/ceemsnet"][1] == 0o755
    assert not [p for p in rpm_files if ".wants/" in p or "__pycache__" in p or p.endswith(".pyc")]


def test_launcher_finds_the_package_and_the_objects(built):
    # the package's own folder on sys.path; catalogue.py's OBJ_DIR falls back to /usr/lib/ceemsnet/bpf/objs
    with open(os.path.join(ROOT, "packaging", "rpm", "ceemsnet")) as f:
        launcher = f.read()
    assert 'sys.path.insert(0, "/usr/lib/ceemsnet/python")' in launcher
    assert launcher.startswith("#!/usr/bin/python3\n")
    assert '"/usr/lib/ceemsnet/bpf/objs"' in open(catalogue.__file__).read()


def test_unit_and_its_environment_file(built):
    rpm, _ = built
    files = _dump(rpm)
    with open(os.path.join(ROOT, "packaging", "systemd", "ceemsnet.service"), "rb") as f:
        unit = f.read()
    assert files["/usr/lib/systemd/system/ceemsnet.service"][0] == hashlib.sha256(unit).hexdigest()
    # one unit for both packages: it reads the RPM's /etc/sysconfig/ceemsnet as well as /etc/default/ceemsnet
    assert re.search(rb"^EnvironmentFile=-/etc/sysconfig/ceemsnet$", unit, re.M)
    assert re.search(rb"^EnvironmentFile=-/etc/default/ceemsnet$", unit, re.M)
    assert set(_q(rpm, "--configfiles").split()) == {"/etc/sysconfig/ceemsnet", "/etc/ceemsnet/web-config.yml"}
    # the documentation the unit's Documentation= names is there
    urls = re.findall(rb"file://(\S+)", b"".join(ln for ln in unit.splitlines() if ln.startswith(b"Documentation=")))
    assert urls and all(u.decode() in files for u in urls)


def test_requires_rhel_packages(built):
    rpm, _ = built
    reqs = {ln.split()[0] for ln in _q(rpm, "--requires").splitlines() if not ln.startswith("rpmlib(")}
    assert reqs == {"python3", "python3-prometheus_client", "python3-packaging", "python3-pyyaml", "python3-bcrypt",
                    "libbpf.so.1()(64bit)", "python3-bcc", "/bin/sh"}
    # RHEL 9's python3 (3.9, the minimum tests/unit/test_python_version.py checks) and python3-packaging (20.9)
    # meet them; libbpf by the soname ceemsnet.runtime.libbpf loads first
    lines = set(_q(rpm, "--requires").splitlines())
    assert {"python3 >= 3.9", "python3-packaging >= 20.9"} <= lines, lines
    assert libbpf.LIBBPF_NAMES[0] == "libbpf.so.1"


def test_scriptlets(built):
    rpm, _ = built
    scripts = {name: _q(rpm, "--qf", f"%{{{name}}}") for name in ("POSTIN", "PREUN", "POSTUN")}
    for name, text in scripts.items():
        assert subprocess.run(["sh", "-n"], input=text, text=True).returncode == 0, name
        assert "enable " not in text, "the package never enables the unit"
    assert "daemon-reload" in scripts["POSTIN"] and "daemon-reload" in scripts["POSTUN"]
    # erase: stop and detach; upgrade: restart, counting goes on
    preun = scripts["PREUN"]
    assert re.search(r'"\$1" -eq 0', preun) and "disable --now ceemsnet.service" in preun
    assert "/usr/bin/ceemsnet detach" in preun and ". /etc/sysconfig/ceemsnet" in preun
    assert re.search(r'"\$1" -ge 1 \][^\n]*\n\s+systemctl try-restart ceemsnet.service', scripts["POSTUN"])


def test_preun_detaches_the_pin_path_the_sysconfig_file_names(tmp_path, built):
    # the erase scriptlet, run with / moved to tmp_path: it reads ARGS and calls detach on that pin path
    rpm, _ = built
    preun = _q(rpm, "--qf", "%{PREUN}")
    (tmp_path / "sysconfig").write_text('ARGS="--collectors=net --bpf.pin-path /sys/fs/bpf/elsewhere"\n')
    (tmp_path / "ceemsnet").write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/called"\n')
    (tmp_path / "ceemsnet").chmod(0o755)
    script = (preun.replace("/etc/sysconfig/ceemsnet", str(tmp_path / "sysconfig"))
              .replace("/etc/default/ceemsnet", str(tmp_path / "nothing"))
              .replace("/usr/bin/ceemsnet", str(tmp_path / "ceemsnet"))
              .replace("/run/systemd/system", str(tmp_path / "no-systemd")))
    p = subprocess.run(["sh", "-c", script, "preun", "0"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "called").read_text().split() == ["detach", "--bpf.pin-path=/sys/fs/bpf/elsewhere"]
    (tmp_path / "called").unlink()
    assert subprocess.run(["sh", "-c", script, "preun", "1"]).returncode == 0  # an upgrade: no detach
    assert not (tmp_path / "called").exists()


def test_rpmlint_finds_nothing_but_what_the_rpmlintrc_explains(built):
    """rpmlint (Debian's 2.4, openSUSE's checks) with packaging/rpm/ceemsnet.rpmlintrc: no error, no
    warning; each filter there says why (docs/install.md lists them)."""
    require_program("rpmlint", skip=True)
    rpm, _ = built
    rc_file = os.path.join(ROOT, "packaging", "rpm", "ceemsnet.rpmlintrc")
    p = subprocess.run(["rpmlint", "-r", rc_file, rpm], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and " 0 errors, 0 warnings" in p.stdout, p.stdout + p.stderr
    # every filter still matches something: none hides a finding that is gone
    plain = subprocess.run(["rpmlint", rpm], capture_output=True, text=True, timeout=300).stdout
    with open(rc_file) as f:
        filters = re.findall(r'^addFilter\("([^"]+)"\)$', f.read(), re.M)
    assert filters and all(re.search(x, plain) for x in filters), [x for x in filters if not re.search(x, plain)]
