"""File IO workload run inside a test cgroup.

Usage: python fileio.py DIR [DIR...]. Prints "ready" once loaded, waits for
a line on stdin, then does exactly the operations below in every DIR, plus
pipe and socket IO that the vfs counters must not include, and exits.
Per DIR: 1 open, writes of 1000 + 500 + (100+200+300) bytes in 3 calls,
reads of the same 2100 bytes in 3 calls, 2 mkdir, 2 rmdir, 1 create
(mknod of a regular file), 1 unlink, 1 failing unlink (EISDIR).
"""

import os
import socket
import stat
import sys


def work(d):
    fd = os.open(os.path.join(d, "data"), os.O_CREAT | os.O_RDWR, 0o600)
    os.write(fd, b"a" * 1000)
    os.pwrite(fd, b"b" * 500, 1000)
    os.writev(fd, [b"x" * 100, b"y" * 200, b"z" * 300])
    os.lseek(fd, 0, os.SEEK_SET)
    assert len(os.read(fd, 1000)) == 1000
    assert len(os.pread(fd, 500, 1000)) == 500
    assert os.readv(fd, [bytearray(100), bytearray(200), bytearray(300)]) == 600
    os.close(fd)
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
