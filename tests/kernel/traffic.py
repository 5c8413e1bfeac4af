"""Workload run inside a test cgroup: moves exactly what the plan says.

Usage: python traffic.py PLAN_JSON. Waits for one line on stdin (the test
moves this process into its cgroup first), runs the plan, and prints its own
tally of every send/receive syscall as JSON: {"proto/family/dir": [bytes,
calls, errors]}. The tally counts each call it makes itself, so the test
can compare the exporter's numbers with what really happened.

python traffic.py --steps: runs one plan per line read on stdin, printing
the tally so far after each, until stdin closes (a workload that goes on
while the test restarts the exporter).
"""

import json
import os
import socket
import sys
import tempfile

tally = {}


def note(key, ret=None, err=False):
    t = tally.setdefault(key, [0, 0, 0])
    if err:
        t[2] += 1
    else:
        t[0] += ret
        t[1] += 1


def send_all(sock, data, key):
    view = memoryview(data)
    while view:
        n = sock.send(view)
        note(key, n)
        view = view[n:]


def recv_to_eof(sock, key):
    total = 0
    while True:
        chunk = sock.recv(65536)
        note(key, len(chunk))
        if not chunk:
            return total
        total += len(chunk)


def fam_name(af):
    return "ipv6" if af == socket.AF_INET6 else "ipv4"


def op_tcp(op):
    af = socket.AF_INET6 if op["family"] == 6 else socket.AF_INET
    key = f"tcp/{fam_name(af)}"
    with socket.socket(af, socket.SOCK_STREAM) as s:
        s.connect(tuple(op["addr"]))
        if op.get("eagain"):
            s.setblocking(False)
            try:
                s.recv(100)
                raise SystemExit("expected EAGAIN")
            except BlockingIOError:
                note(f"{key}/ingress", err=True)
            s.setblocking(True)
        if op.get("sendfile"):
            with tempfile.TemporaryFile() as f:
                f.write(os.urandom(op["send"]))
                f.flush()
                off = 0
                while off < op["send"]:
                    n = os.sendfile(s.fileno(), f.fileno(), off, op["send"] - off)
                    note(f"{key}/egress", n)
                    off += n
        else:
            send_all(s, os.urandom(op["send"]), f"{key}/egress")
        s.shutdown(socket.SHUT_WR)
        if op.get("epipe"):
            try:
                s.send(b"x" * 10)
                raise SystemExit("expected EPIPE")
            except BrokenPipeError:
                note(f"{key}/egress", err=True)
        got = recv_to_eof(s, f"{key}/ingress")
        assert got == op["expect"], (got, op)


def op_udp(op):
    af = socket.AF_INET6 if op["family"] == 6 else socket.AF_INET
    key = f"udp/{fam_name(af)}"
    with socket.socket(af, socket.SOCK_DGRAM) as s:
        s.settimeout(10)
        for size in op["sizes"]:
            n = s.sendto(os.urandom(size), tuple(op["addr"]))
            note(f"{key}/egress", n)
            if op.get("peek"):
                s.recvfrom(65536, socket.MSG_PEEK)  # leaves the datagram: not counted
            data, _ = s.recvfrom(65536)
            note(f"{key}/ingress", len(data))


def run(plan):
    for op in plan:
        {"tcp": op_tcp, "udp": op_udp}[op["op"]](op)


def main():
    if sys.argv[1] == "--steps":
        for line in sys.stdin:
            run(json.loads(line))
            print(json.dumps(tally), flush=True)
        return
    plan = json.loads(sys.argv[1])
    sys.stdin.readline()
    run(plan)
    print(json.dumps(tally))


if __name__ == "__main__":
    main()
