#!/usr/bin/env python3
"""make rpm: dist/ceemsnet-<version>-1.noarch.rpm with rpmbuild, from the checkout.

The .deb's files (packaging/deb/build.py), at the paths RHEL expects:
  /usr/lib/ceemsnet/python/ceemsnet/         the package (no python3 version owns it)
  /usr/lib/ceemsnet/bpf/objs/*.bpf.o         the committed objects (ceemsnet/planning/catalogue.py OBJ_DIR)
  /usr/bin/ceemsnet                          packaging/rpm/ceemsnet
  /usr/lib/systemd/system/ceemsnet.service   packaging/systemd/, the .deb's unit (not enabled)
  /etc/sysconfig/ceemsnet, /etc/ceemsnet/web-config.yml   %config(noreplace), the .deb's files
  /usr/share/doc/ceemsnet/README.md.gz, docs/*.md.gz, copyright   as in the .deb (the unit's Documentation=)
Requires, scriptlets: packaging/rpm/ceemsnet.spec.in.   /usr/lib/ceemsnet/ceemsnet-record-epilog.sh, /usr/share/doc/ceemsnet/slurm.conf.example   packaging/slurm/
Usage: build.py OUTDIR
"""

import glob
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "packaging", "rpm")
DEB = os.path.join(ROOT, "packaging", "deb")
PYDIR = "/usr/lib/ceemsnet/python/"


def version() -> str:
    with open(os.path.join(ROOT, "ceemsnet", "__init__.py")) as f:
        return re.search(r'^__version__ = "([^"]+)"', f.read(), re.M).group(1)


def put(stage, src, dest, mode=0o644, data=None):
    path = os.path.join(stage, dest.lstrip("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if data is None:
        shutil.copyfile(src, path)
    else:
        with open(path, "wb") as f:
            f.write(data)
    os.chmod(path, mode)


def main(outdir):
    rpmbuild = shutil.which("rpmbuild")
    if not rpmbuild:
        sys.exit("make rpm: rpmbuild is missing (Debian package rpm: apt-get install rpm, or make setup)")
    ver = version()
    if "-" in ver:
        sys.exit(f"make rpm: version {ver!r} has a '-', which an RPM Version cannot hold")
    top = os.path.join(ROOT, ".build", "rpm")
    shutil.rmtree(top, ignore_errors=True)
    stage = os.path.join(top, "stage")
    for src in sorted(glob.glob(os.path.join(ROOT, "ceemsnet", "**", "*.py"), recursive=True)):
        put(stage, src, PYDIR + os.path.relpath(src, ROOT))
    objs = sorted(glob.glob(os.path.join(ROOT, "bpf", "objs", "*.bpf.o")))
    if not objs:
        sys.exit("make rpm: no objects in bpf/objs (a broken checkout?)")
    for o in objs:
        put(stage, o, "/usr/lib/ceemsnet/bpf/objs/" + os.path.basename(o))
    put(stage, os.path.join(HERE, "ceemsnet"), "/usr/bin/ceemsnet", 0o755)
    put(stage, os.path.join(ROOT, "packaging", "systemd", "ceemsnet.service"),
        "/usr/lib/systemd/system/ceemsnet.service")
    put(stage, os.path.join(DEB, "default"), "/etc/sysconfig/ceemsnet")
    put(stage, os.path.join(DEB, "web-config.yml"), "/etc/ceemsnet/web-config.yml")
    # the .deb's documentation, gzipped alike: the one unit's Documentation= names README.md.gz
    doc = "/usr/share/doc/ceemsnet/"
    # SLURM: the EpilogSlurmctld wrapper of `ceemsnet record` and the slurm.conf lines that name it
    slurm = os.path.join(ROOT, "packaging", "slurm")
    put(stage, os.path.join(slurm, "ceemsnet-record-epilog.sh"), "/usr/lib/ceemsnet/ceemsnet-record-epilog.sh", 0o755)
    put(stage, os.path.join(slurm, "slurm.conf.example"), doc + "slurm.conf.example")
    put(stage, os.path.join(DEB, "copyright"), doc + "copyright")
    for src in [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        with open(src, "rb") as f:
            put(stage, None, doc + os.path.relpath(src, ROOT) + ".gz", data=_gz(f.read()))
    for d, _, _ in os.walk(stage):
        os.chmod(d, 0o755)

    with open(os.path.join(HERE, "ceemsnet.spec.in")) as f:
        spec = f.read().replace("@VERSION@", ver)
    put(top, None, "/SPECS/ceemsnet.spec", data=spec.encode())
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=top) as rpmdir:
        p = subprocess.run([rpmbuild, "-bb", "--quiet", "--define", f"_topdir {top}", "--define", f"stage {stage}",
                            "--define", f"_rpmdir {rpmdir}", "--define", "_build_id_links none",
                            "--define", "_binary_payload w9.xzdio", os.path.join(top, "SPECS", "ceemsnet.spec")],
                           capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"make rpm: rpmbuild failed:\n{p.stderr.strip()}")
        built = glob.glob(os.path.join(rpmdir, "**", "*.rpm"), recursive=True)
        if len(built) != 1:
            sys.exit(f"make rpm: rpmbuild made {built}, not one package")
        rpm = os.path.join(outdir, f"ceemsnet-{ver}-1.noarch.rpm")
        shutil.move(built[0], rpm)
    print(rpm)


def _gz(data: bytes) -> bytes:
    # packaging/deb/build.py's gz(): the same bytes in both packages
    return gzip.compress(data, 9, mtime=0)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.rsplit("Usage: ", 1)[1])
    main(sys.argv[1])
