"""make deb: the package holds what docs/install.md ("The package and the unit") promises, lintian
finds no error, and the unit passes `systemd-analyze verify`. About 15 s
(lintian is most of it). The install test is tests/kernel/test_deb_install.py.
"""

import os
import re
import subprocess

import pytest

from ceemsnet.serving import caps

from ..programs import ROOT, require_program


@pytest.fixture(scope="module")
def deb():
    make = require_program("make")
    require_program("dpkg-deb")
    p = subprocess.run([make, "--no-print-directory", "deb"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    path = os.path.join(ROOT, p.stdout.strip().splitlines()[-1])
    assert re.fullmatch(r"ceemsnet_[0-9][^_]*_[a-z0-9]+\.deb", os.path.basename(path)), path
    return path


def _contents(deb):
    out = subprocess.run(["dpkg-deb", "--contents", deb], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].lstrip(".") if "->" not in line else line.split()[-3].lstrip("."): line.split()[0]
            for line in out.splitlines()}


def test_contents(deb):
    files = _contents(deb)
    objs = sorted(f for f in os.listdir(os.path.join(ROOT, "bpf", "objs")) if f.endswith(".bpf.o"))
    for o in objs:
        assert f"/usr/lib/ceemsnet/bpf/objs/{o}" in files
    for f in ("/usr/bin/ceemsnet", "/lib/systemd/system/ceemsnet.service", "/etc/default/ceemsnet",
              "/etc/ceemsnet/web-config.yml", "/usr/lib/python3/dist-packages/ceemsnet/cli.py",
              "/usr/lib/python3/dist-packages/ceemsnet/serving/caps.py", "/usr/share/doc/ceemsnet/copyright"):
        assert f in files, f
    assert files["/usr/bin/ceemsnet"] == "-rwxr-xr-x"
    # not enabled: nothing in a .wants directory
    assert not [f for f in files if ".wants/" in f]
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_documentation_is_shipped(deb):
    # README.md and every docs/*.md, gzipped, under /usr/share/doc/ceemsnet/ as in the checkout
    files = _contents(deb)
    doc = "/usr/share/doc/ceemsnet/"
    docs = sorted(f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md"))
    assert docs
    for f in ["README.md"] + [f"docs/{d}" for d in docs]:
        assert f"{doc}{f}.gz" in files, f
    # the unit's Documentation= names files the package holds
    with open(os.path.join(ROOT, "packaging", "systemd", "ceemsnet.service")) as f:
        urls = [u for ln in f.read().splitlines() if ln.startswith("Documentation=")
                for u in ln.split("=", 1)[1].split()]
    assert urls
    for u in urls:
        assert u.startswith("file://") and u[len("file://"):] in files, u


def test_info(deb):
    info = subprocess.run(["dpkg-deb", "--info", deb], capture_output=True, text=True, check=True).stdout
    fields = dict(re.findall(r"^ ([A-Z][A-Za-z-]+): (.*)$", info, re.M))
    deps = {d.strip().split()[0] for d in fields["Depends"].split(",")}
    # Debian's packages, never pip: a distro Python upgrade upgrades them with it
    assert deps >= {"python3", "python3-prometheus-client", "python3-packaging", "python3-yaml", "python3-bcrypt",
                    "libbpf1", "python3-bpfcc"}
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert re.search(rf"^\s+\d+ bytes,\s+\d+ lines\s+\*?\s+{script}\b", info, re.M), (script, info)
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", deb], capture_output=True, check=True).stdout
    assert b"conffiles" in conffiles
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    assert fields["Architecture"] == arch and deb.endswith(f"_{arch}.deb")


def test_web_config_has_every_option_commented(deb):
    with open(os.path.join(ROOT, "packaging", "deb", "web-config.yml")) as f:
        text = f.read()
    assert not [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    for key in ("tls_server_config", "cert_file", "key_file", "client_auth_type", "client_ca_file",
                "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
                "curve_preferences", "http_server_config", "http2", "headers", "basic_auth_users", "rate_limit"):
        assert re.search(rf"^#\s*{key}:", text, re.M), key


def test_lintian_finds_no_error(deb):
    lintian = require_program("lintian")
    p = subprocess.run([lintian, "--no-tag-display-limit", deb], capture_output=True, text=True)
    errors = [ln for ln in p.stdout.splitlines() if ln.startswith("E:")]
    assert not errors, p.stdout


def test_unit_verifies(tmp_path, deb):
    analyze = require_program("systemd-analyze")
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    # verify checks that ExecStart exists: point it at the extracted one
    unit = (root / "lib/systemd/system/ceemsnet.service").read_text()
    (tmp_path / "ceemsnet.service").write_text(unit.replace("/usr/bin/ceemsnet", f"{root}/usr/bin/ceemsnet"))
    p = subprocess.run([analyze, "verify", str(tmp_path / "ceemsnet.service")], capture_output=True, text=True)
    if p.returncode != 0 and "System has not been booted with systemd" in p.stderr:
        pytest.skip("systemd-analyze verify cannot run here: " + p.stderr.strip())
    assert p.returncode == 0 and not p.stderr.strip(), p.stderr
    for directive in ("ProtectSystem=strict", "ProtectHome=yes", "NoNewPrivileges=yes", "PrivateTmp=yes",
                      "StateDirectory=ceemsnet", "ReadWritePaths=/sys/fs/bpf", "EnvironmentFile=-/etc/default/ceemsnet",
                      "ExecStart=/usr/bin/ceemsnet serve $ARGS", "CapabilityBoundingSet=", "AmbientCapabilities="):
        assert re.search(rf"^{re.escape(directive)}", unit, re.M), directive
    assert "detach" not in "".join(ln for ln in unit.splitlines() if ln.startswith("Exec")), \
        "stopping must not detach: the pins keep counting"


def test_unit_grants_what_the_collectors_need_and_no_cap_sys_admin():
    # the union of what every collector and skb mode needs on a kernel with CAP_BPF (5.8+), as
    # ceemsnet/serving/caps.py checks it; CAP_SYS_ADMIN only where a site adds it (docs/install.md)
    with open(os.path.join(ROOT, "packaging", "systemd", "ceemsnet.service")) as f:
        unit = dict(re.findall(r"^([A-Za-z]+)=(.*)$", f.read(), re.M))
    want = {caps.NAMES[c] for sub in ("net", "vfs", "skb") for mode in ("root", "per-cgroup")
            for c, _, _ in caps.needs([sub], mode, cap_bpf=True)}
    assert want == {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}
    assert set(unit["CapabilityBoundingSet"].split()) == want
    assert set(unit["AmbientCapabilities"].split()) == want
