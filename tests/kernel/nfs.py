"""An NFSv4 server (kernel nfsd) exporting a tmpfs, mounted over 127.0.0.1: the test bed of
tests/kernel/test_vfs_nfs.py (DESIGN.md).

nfs4_mount() sets it up and tears it down, touching no configuration of the machine:
- no /etc/exports and no exportfs (which keeps its table in /var/lib/nfs): the one export is
  written to the etab of a private state directory, which rpc.mountd reads (-s DIR); the kernel
  asks mountd for it through /proc/net/rpc/*/channel;
- NFSv4 only, so no rpcbind: the kernel does not need rpcbind for version 4 (its registration is
  optional there), and mountd serves only the kernel's upcalls;
- nfsd listens on 127.0.0.1 only (rpc.nfsd -H), and the export is the NFSv4 root itself
  (fsid=0), so mountd builds no pseudo file system over the machine's directories;
- the grace period that a starting NFSv4 server keeps (opens wait up to 90 s) is ended at once
  through /proc/fs/nfsd/v4_end_grace.
Teardown, in reverse, also after a failure: umount the client, stop nfsd's threads (rpc.nfsd 0),
stop the mountd it started (by PID), flush the kernel's export caches, umount the tmpfs (and the
nfsd file system, if mounted here), remove the directories. An NFS server already running on the
machine is never touched: nfs4_mount() refuses to start then. The nfsd module stays loaded.
"""

import contextlib
import os
import shutil
import subprocess
import tempfile
import time

from ..programs import require_program

NFSD_FS = "/proc/fs/nfsd"
CACHES = ("auth.unix.ip", "auth.unix.gid", "nfsd.export", "nfsd.fh")


class NfsUnavailable(Exception):
    """This kernel or machine cannot run the test bed (the message says why)."""


def _run(argv, check=True, timeout=120):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {p.returncode}: {(p.stderr or p.stdout).strip()}")
    return p


def _filesystems():
    with open("/proc/filesystems") as f:
        return {line.split()[-1] for line in f if line.strip()}


def _write(path, text):
    with open(path, "w") as f:
        f.write(text)


def _flush_caches():
    """What `exportfs -f` does: the kernel forgets every export and client it was told of."""
    now = f"{int(time.time()) + 1}\n"
    for c in CACHES:
        with contextlib.suppress(OSError):
            _write(f"/proc/net/rpc/{c}/flush", now)


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def nfs4_mount(size="64m"):
    """Yields the directory where the exported tmpfs is mounted with -t nfs4 over 127.0.0.1."""
    modprobe = require_program("modprobe")
    mount, umount = require_program("mount"), require_program("umount")
    nfsd, mountd = require_program("rpc.nfsd", skip=True), require_program("rpc.mountd", skip=True)
    require_program("mount.nfs4", skip=True)
    release = os.uname().release
    for mod, fs in (("nfsd", "nfsd"), ("nfsv4", "nfs4")):
        if fs not in _filesystems():
            p = _run([modprobe, mod], check=False)
            if fs not in _filesystems():
                raise NfsUnavailable(f"kernel {release} has no {mod} ({fs} is not in /proc/filesystems; "
                                     f"modprobe {mod}: {(p.stderr or p.stdout).strip() or p.returncode})")
    with contextlib.ExitStack() as stack:
        if not os.path.exists(os.path.join(NFSD_FS, "threads")):
            _run([mount, "-t", "nfsd", "nfsd", NFSD_FS])
            stack.callback(_run, [umount, NFSD_FS], check=False)
        with open(os.path.join(NFSD_FS, "threads")) as f:
            if f.read().strip() not in ("", "0"):
                raise NfsUnavailable("an NFS server already runs on this machine: the test bed does not touch it")
        base = tempfile.mkdtemp(prefix="ceemsnet-nfs-")
        stack.callback(shutil.rmtree, base, ignore_errors=True)
        export, state, client = (os.path.join(base, d) for d in ("export", "state", "mnt"))
        for d in (export, state, client):
            os.mkdir(d)
        _run([mount, "-t", "tmpfs", "-o", f"size={size}", "ceemsnet-nfs-export", export])
        stack.callback(_run, [umount, export], check=False)
        # fsid=0: this export is the NFSv4 root (127.0.0.1:/); a tmpfs has no UUID to derive one from
        _write(os.path.join(state, "etab"),
               f"{export}\t127.0.0.1(rw,sync,wdelay,no_root_squash,no_subtree_check,insecure,sec=sys,fsid=0)\n")
        for name in ("rmtab", "xtab"):
            _write(os.path.join(state, name), "")
        stack.callback(_flush_caches)
        log = tempfile.TemporaryFile(mode="w+")
        stack.callback(log.close)
        md = subprocess.Popen([mountd, "-F", "-s", state, "-N", "2", "-N", "3", "-u"],
                              stdout=log, stderr=subprocess.STDOUT, text=True)
        stack.callback(_stop, md)
        time.sleep(0.5)
        if md.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"rpc.mountd exited with {md.returncode}: {log.read().strip()}")
        _run([nfsd, "-H", "127.0.0.1", "-N", "3", "-V", "4", "-U", "4"])
        stack.callback(_run, [nfsd, "0"], check=False)
        with contextlib.suppress(OSError):  # 4.20+; before, the grace period runs its course
            _write(os.path.join(NFSD_FS, "v4_end_grace"), "Y")
        p = _run([mount, "-t", "nfs4", "-o", "vers=4.2,proto=tcp,port=2049,hard,timeo=600",
                  "127.0.0.1:/", client], check=False, timeout=180)
        if p.returncode != 0:
            log.seek(0)
            raise RuntimeError(f"mount -t nfs4 127.0.0.1:/ failed: {(p.stderr or p.stdout).strip()}; "
                               f"rpc.mountd said: {log.read().strip()}")
        stack.callback(_umount_client, umount, client)
        yield client


def _umount_client(umount, path):
    if _run([umount, path], check=False).returncode != 0:
        _run([umount, "-l", path], check=False)


if __name__ == "__main__":  # a look at the test bed by hand: python -m tests.kernel.nfs
    with nfs4_mount() as d:
        print(d, [line for line in open("/proc/mounts") if f" {d} " in line])
        with open(os.path.join(d, "x"), "w") as f:
            f.write("hello")
        print(os.listdir(d))
        os.unlink(os.path.join(d, "x"))
