"""N threads, each blocked in recvfrom() on its own UDP socket.

Usage: python blocked_recv.py N. Waits for "go" on stdin (the test moves it
into its cgroup first), binds N sockets on 127.0.0.1, prints their ports as
one JSON line, starts the N receivers, prints "blocked" once every thread
sits in the kernel, then waits for one datagram per socket and prints the
total bytes it received.
"""

import json
import os
import socket
import sys
import threading
import time


def in_kernel_wait(tid: int) -> bool:
    with open(f"/proc/self/task/{tid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] == "S"


def main():
    n = int(sys.argv[1])
    sys.stdin.readline()
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    print(json.dumps([s.getsockname()[1] for s in socks]), flush=True)
    got = [0] * n
    tids = [0] * n

    def recv(i):
        tids[i] = threading.get_native_id()
        data, _ = socks[i].recvfrom(65536)
        got[i] = len(data)

    threads = [threading.Thread(target=recv, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.time() + 120
    while not (all(tids) and all(in_kernel_wait(t) for t in tids)):
        if time.time() > deadline:
            sys.exit("receivers did not block")
        time.sleep(0.05)
    time.sleep(0.5)  # every thread is past the kprobe and asleep in the receive
    print("blocked", flush=True)
    for t in threads:
        t.join()
    print(json.dumps({"bytes": sum(got), "calls": n}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
