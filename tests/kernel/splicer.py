"""Child of tests/kernel/test_vfs_splice.py: file bytes moved by sendfile(), splice() and
copy_file_range(), never by read()/write(), on the file system of DIR.

Prints "ready" once its files exist (their writes are then already counted), waits for a
line on stdin, then moves exactly the bytes of EXPECTED and prints "done". Uses only
modules imported before "ready", so the interpreter reads no file meanwhile.
"""

import os
import socket
import sys

SIZE = 10_000
# (read bytes, read calls, read errors, write bytes, write calls, write errors) on DIR's file system
SENDFILE_FILE, COPY, SPLICE, SENDFILE_SOCKET = 10_000, 7_000, 4_096, 3_000
EXPECTED = (SENDFILE_FILE + COPY + SPLICE + SENDFILE_SOCKET, 4, 1,
            SENDFILE_FILE + COPY + SPLICE, 3, 0)


def main():
    d = sys.argv[1]
    src = os.open(os.path.join(d, "src"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(src, os.urandom(SIZE))
    dsts = [os.open(os.path.join(d, f"dst{i}"), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600) for i in range(3)]
    readonly = os.open(os.path.join(d, "src"), os.O_RDONLY)
    pipe_r, pipe_w = os.pipe()
    a, b = socket.socketpair()
    print("ready", flush=True)
    sys.stdin.readline()

    # sendfile() file -> file: read and written
    assert os.sendfile(dsts[0], src, 0, SENDFILE_FILE) == SENDFILE_FILE
    # copy_file_range() file -> file
    assert os.copy_file_range(src, dsts[1], COPY, 0, 0) == COPY
    # splice() file -> pipe (a read of the file), pipe -> file (a write)
    assert os.splice(src, pipe_w, SPLICE, offset_src=0) == SPLICE
    assert os.splice(pipe_r, dsts[2], SPLICE, offset_dst=0) == SPLICE
    # sendfile() file -> socket: only the file side is file IO
    assert os.sendfile(a.fileno(), src, 0, SENDFILE_SOCKET) == SENDFILE_SOCKET
    got = 0
    while got < SENDFILE_SOCKET:
        got += len(b.recv(SENDFILE_SOCKET))
    # sendfile() to a file opened read-only fails (EBADF): one read error of the input file
    try:
        os.sendfile(readonly, src, 0, 100)
        raise SystemExit("sendfile to a read-only file succeeded")
    except OSError:
        pass
    print("done", flush=True)


if __name__ == "__main__":
    main()
