"""Visit many cgroups: move into each, send one datagram, move on.

Usage: python churner.py PORT [--socket-per-cgroup] CGROUP_DIR... (a cgroup2
path each). Waits for a line on stdin, then for each directory in turn
writes its own pid into it, sends one 100-byte UDP datagram to
127.0.0.1:PORT, and prints the directory once it has left it (so the test
may remove it). Ends in the last. With --socket-per-cgroup each datagram
goes out on a socket created in that cgroup (cgroup_skb charges the
cgroup a socket was created in), else on one socket made at the start.
"""

import os
import socket
import sys


def main():
    port, dirs = int(sys.argv[1]), sys.argv[2:]
    per_cgroup = dirs[:1] == ["--socket-per-cgroup"]
    if per_cgroup:
        dirs = dirs[1:]
    sys.stdin.readline()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    prev = None
    for d in dirs:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
        if prev:
            print(prev, flush=True)
        if per_cgroup:
            s.close()
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"c" * 100, ("127.0.0.1", port))
        prev = d
    print("done", flush=True)


if __name__ == "__main__":
    main()
