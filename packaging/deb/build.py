#!/usr/bin/env python3
"""make deb: dist/ceemsnet_<version>_<arch>.deb with dpkg-deb, from the checkout.

Layout (Debian's, so a distro Python upgrade keeps it working: pure Python in
/usr/lib/python3/dist-packages is shared by every python3 version, and the
dependencies are Debian packages, never pip):
  /usr/lib/python3/dist-packages/ceemsnet/   the package
  /usr/lib/ceemsnet/bpf/objs/*.bpf.o         the committed objects (ceemsnet/planning/catalogue.py OBJ_DIR)
  /usr/bin/ceemsnet                          packaging/deb/ceemsnet
  /lib/systemd/system/ceemsnet.service       packaging/systemd/ (not enabled)
  /etc/default/ceemsnet, /etc/ceemsnet/web-config.yml   conffiles
  /usr/share/doc/ceemsnet/README.md.gz, docs/*.md.gz   the documentation (the unit's Documentation=)
  /usr/lib/ceemsnet/ceemsnet-record-epilog.sh, /usr/share/doc/ceemsnet/slurm.conf.example   packaging/slurm/
Usage: build.py OUTDIR
"""

import glob
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "packaging", "deb")


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


def gz(data: bytes) -> bytes:
    return gzip.compress(data, 9, mtime=0)


def main(outdir):
    ver = version()
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stage = os.path.join(ROOT, ".build", "deb", f"ceemsnet_{ver}_{arch}")
    shutil.rmtree(stage, ignore_errors=True)
    for src in sorted(glob.glob(os.path.join(ROOT, "ceemsnet", "**", "*.py"), recursive=True)):
        put(stage, src, "/usr/lib/python3/dist-packages/" + os.path.relpath(src, ROOT))
    objs = sorted(glob.glob(os.path.join(ROOT, "bpf", "objs", "*.bpf.o")))
    if not objs:
        sys.exit("make deb: no objects in bpf/objs (a broken checkout?)")
    for o in objs:
        put(stage, o, "/usr/lib/ceemsnet/bpf/objs/" + os.path.basename(o))
    put(stage, os.path.join(HERE, "ceemsnet"), "/usr/bin/ceemsnet", 0o755)
    put(stage, os.path.join(ROOT, "packaging", "systemd", "ceemsnet.service"), "/lib/systemd/system/ceemsnet.service")
    put(stage, os.path.join(HERE, "default"), "/etc/default/ceemsnet")
    put(stage, os.path.join(HERE, "web-config.yml"), "/etc/ceemsnet/web-config.yml")
    doc = "/usr/share/doc/ceemsnet/"
    # SLURM: the EpilogSlurmctld wrapper of `ceemsnet record` and the slurm.conf lines that name it
    slurm = os.path.join(ROOT, "packaging", "slurm")
    put(stage, os.path.join(slurm, "ceemsnet-record-epilog.sh"), "/usr/lib/ceemsnet/ceemsnet-record-epilog.sh", 0o755)
    put(stage, os.path.join(slurm, "slurm.conf.example"), doc + "slurm.conf.example")
    put(stage, os.path.join(HERE, "copyright"), doc + "copyright")
    put(stage, os.path.join(HERE, "lintian-overrides"), "/usr/share/lintian/overrides/ceemsnet")
    # README.md links docs/X.md; here they are docs/X.md.gz beside it
    for src in [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        with open(src, "rb") as f:
            put(stage, None, doc + os.path.relpath(src, ROOT) + ".gz", data=gz(f.read()))
    when = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(int(os.environ.get("SOURCE_DATE_EPOCH", time.time()))))
    changelog = (f"ceemsnet ({ver}) unstable; urgency=medium\n\n  * Built from the ceemsnet checkout "
                 f"with make deb.\n\n -- ceemsnet developers <ceemsnet@users.noreply.github.com>  {when}\n")
    put(stage, None, doc + "changelog.gz", data=gz(changelog.encode()))

    files, size = [], 0
    for d, _, names in os.walk(stage):
        os.chmod(d, 0o755)
        for n in names:
            p = os.path.join(d, n)
            size += os.path.getsize(p)
            files.append(os.path.relpath(p, stage))
    md5 = "".join(f"{hashlib.md5(open(os.path.join(stage, p), 'rb').read()).hexdigest()}  {p}\n"
                  for p in sorted(files) if not p.startswith("etc/"))
    with open(os.path.join(HERE, "control.in")) as f:
        control = f.read().replace("@VERSION@", ver).replace("@ARCH@", arch).replace("@SIZE@", str(size // 1024 + 1))
    put(stage, None, "/DEBIAN/control", data=control.encode())
    put(stage, None, "/DEBIAN/md5sums", data=md5.encode())
    put(stage, os.path.join(HERE, "conffiles"), "/DEBIAN/conffiles")
    for script in ("postinst", "prerm", "postrm"):
        put(stage, os.path.join(HERE, script), "/DEBIAN/" + script, 0o755)

    os.makedirs(outdir, exist_ok=True)
    deb = os.path.join(outdir, f"ceemsnet_{ver}_{arch}.deb")
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zxz", "--build", stage, deb], check=True,
                   stdout=subprocess.DEVNULL)
    print(deb)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.rsplit("Usage: ", 1)[1])
    main(sys.argv[1])
