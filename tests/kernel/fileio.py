"""File IO workload run inside a test cgroup.

Usage: python fileio.py DIR [DIR...]. Prints "ready" once loaded, waits for
a line on stdin, then does exactly the operations below in every DIR, plus
pipe and socket IO that the vfs counters must not include, and exits.
Per DIR: writes of 1000 + 500 + (100+200+300) bytes in 3 calls, reads of
the same 2100 bytes in 3 calls, 2 mkdir, 2 rmdir, 1 unlink, 1 failing
unlink (EISDIR), and OPENS opens of which CREATES created a file:
open(O_CREAT) of a new file (open + create), open(O_CREAT) of that file
again (open only), creat() of a new file (open + create), creat() of an
existing file (open only: it truncates), mknod() of a regular file (create).
"""

import ctypes
import os
import socket
import stat
import sys

OPENS, CREATES = 4, 3  # per DIR

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# the creat system call itself (glibc may turn creat() into openat); aarch64 has none
NR_CREAT = {"x86_64": 85}.get(os.uname().machine)


def creat(path, mode=0o600):
    if NR_CREAT is None:
        fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    else:
        fd = _libc.syscall(ctypes.c_long(NR_CREAT), os.fsencode(path), ctypes.c_long(mode))
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), path)
    os.close(fd)


def work(d):
    data, made = os.path.join(d, "data"), os.path.join(d, "made")
    for p in (data, made):  # lstat, not an open: the creates below must really create
        if os.path.lexists(p):
            raise SystemExit(f"{p} exists already")
    fd = os.open(data, os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"a" * 1000)
    os.pwrite(fd, b"b" * 500, 1000)
    os.writev(fd, [b"x" * 100, b"y" * 200, b"z" * 300])
    os.lseek(fd, 0, os.SEEK_SET)
    assert len(os.read(fd, 1000)) == 1000
    assert len(os.pread(fd, 500, 1000)) == 500
    assert os.readv(fd, [bytearray(100), bytearray(200), bytearray(300)]) == 600
    os.close(fd)
    os.close(os.open(data, os.O_CREAT | os.O_RDWR, 0o600))  # exists: no create
    creat(made)
    creat(data)  # exists: truncated, not created
    os.mkdir(os.path.join(d, "sub1"))
    os.mkdir(os.path.join(d, "sub2"))
    os.rmdir(os.path.join(d, "sub2"))
    os.mknod(os.path.join(d, "node"), 0o600 | stat.S_IFREG)
    os.unlink(os.path.join(d, "node"))
    try:
        os.unlink(os.path.join(d, "sub1"))  # a directory: EISDIR from vfs_unlink
        raise SystemExit("unlink of a directory succeeded")
    except IsADirectoryError:
        pass
    os.rmdir(os.path.join(d, "sub1"))


def not_storage():
    r, w = os.pipe()
    os.write(w, b"p" * 4096)
    os.read(r, 4096)
    a, b = socket.socketpair()
    a.send(b"s" * 1000)
    b.recv(1000)
    with open("/proc/self/stat", "rb") as f:  # procfs: left out by default
        f.read()


def main():
    dirs = sys.argv[1:]
    print("ready", flush=True)
    sys.stdin.readline()
    for d in dirs:
        work(d)
    not_storage()
    print("done", flush=True)


if __name__ == "__main__":
    main()
