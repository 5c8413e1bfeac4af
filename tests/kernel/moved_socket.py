"""Connect first, move later: the socket belongs to the cgroup it was made in.

Usage: python moved_socket.py HOST PORT NBYTES. Waits for a line, connects,
prints "connected", waits for a second line (the test moves this process
to another cgroup meanwhile), sends NBYTES, shuts down writing, reads the
reply to EOF and prints how many bytes came back.
"""

import socket
import sys


def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    sys.stdin.readline()
    s = socket.create_connection((host, port))
    print("connected", flush=True)
    sys.stdin.readline()
    data = memoryview(b"m" * n)
    while data:
        data = data[s.send(data):]
    s.shutdown(socket.SHUT_WR)
    got = 0
    while True:
        b = s.recv(65536)
        if not b:
            break
        got += len(b)
    print(got, flush=True)


if __name__ == "__main__":
    main()
