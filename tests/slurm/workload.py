"""What the SLURM suite's job steps run: known bytes over IPv6 loopback and known file IO.

Usage: python workload.py ROLE RESULTS_DIR NAME [OPTIONS as JSON]

Every role keeps its own tally of what each of its calls returned and, when
done (also after SIGTERM, which scancel sends), writes it as JSON to
RESULTS_DIR/NAME.json: {"tcp/egress": bytes, "tcp/ingress": ..., "udp/egress":
..., "udp/ingress": ..., "read": ..., "write": ...}, bytes the calls moved
(their return values), so the test compares the exporter's counters with
what really happened. The network goes over ::1, which SLURM's own daemons
do not use here (they talk IPv4), so the ipv6 series of a job hold exactly
these bytes; the file IO goes to a ramfs the test mounts, which nothing else
uses (the exporters count only ramfs).

Roles:
  server  listens on TCP and UDP ::1, writes the ports to RESULTS_DIR/NAME.ports,
          reads one TCP connection to its end and answers opts["reply"] bytes,
          receives opts["datagrams"] UDP datagrams and answers each with one of
          opts["udp_reply"] bytes; then the file IO
  client  waits for opts["server"].ports, sends opts["send"] bytes over TCP and
          reads the reply to its end, sends opts["udp"] datagrams (sizes) and
          reads the answers; then the file IO
  self    a TCP connection to itself (both ends in this process): sends
          opts["send"] bytes; then the file IO
  stream  waits for opts["server"].ports, sends 4096-byte chunks over TCP every
          opts["every"] s until RESULTS_DIR/STOP exists or SIGTERM comes;
          writes RESULTS_DIR/NAME.started after its first chunk
File IO (any role): opts["file"] bytes written to opts["dir"]/NAME, then read back.
opts["array"]: in an array task i (SLURM_ARRAY_TASK_ID), NAME gets i appended and
opts["send"] and opts["file"] are multiplied by i + 1.
"""

import json
import os
import signal
import socket
import sys
import threading
import time

tally = {"tcp/egress": 0, "tcp/ingress": 0, "udp/egress": 0, "udp/ingress": 0, "read": 0, "write": 0}
stop = threading.Event()


def send_all(sock, data):
    view = memoryview(data)
    while view:
        n = sock.send(view)
        tally["tcp/egress"] += n
        view = view[n:]


def recv_to_eof(sock):
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        tally["tcp/ingress"] += len(chunk)


def wait_ports(results, name, timeout=300):
    path = os.path.join(results, name + ".ports")
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise SystemExit(f"workload: no {path} after {timeout} s")
        time.sleep(0.05)
    with open(path) as f:
        return json.load(f)


def file_io(opts, name):
    size = opts.get("file", 0)
    if not size:
        return
    path = os.path.join(opts["dir"], name)
    data = os.urandom(size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            tally["write"] += n
            view = view[n:]
    finally:
        os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    try:
        while True:
            chunk = os.read(fd, 65536)
            tally["read"] += len(chunk)
            if not chunk:
                break
    finally:
        os.close(fd)
    os.unlink(path)


def server(results, name, opts):
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as ls, \
            socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as us:
        ls.bind(("::1", 0))
        ls.listen(1)
        us.bind(("::1", 0))
        tmp = os.path.join(results, name + ".ports.tmp")
        with open(tmp, "w") as f:
            json.dump({"tcp": ls.getsockname()[1], "udp": us.getsockname()[1]}, f)
        os.rename(tmp, os.path.join(results, name + ".ports"))
        conn, _ = ls.accept()
        with conn:
            recv_to_eof(conn)
            if opts.get("reply"):
                send_all(conn, os.urandom(opts["reply"]))
        for _ in range(opts.get("datagrams", 0)):
            data, addr = us.recvfrom(65536)
            tally["udp/ingress"] += len(data)
            if opts.get("udp_reply"):
                tally["udp/egress"] += us.sendto(os.urandom(opts["udp_reply"]), addr)


def client(results, name, opts):
    ports = wait_ports(results, opts["server"])
    with socket.create_connection(("::1", ports["tcp"])) as s:
        send_all(s, os.urandom(opts["send"]))
        s.shutdown(socket.SHUT_WR)
        recv_to_eof(s)
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as us:
        us.settimeout(120)
        for size in opts.get("udp", []):
            tally["udp/egress"] += us.sendto(os.urandom(size), ("::1", ports["udp"]))
            if opts.get("udp_reply"):
                tally["udp/ingress"] += len(us.recv(65536))


def self_loop(results, name, opts):
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as ls:
        ls.bind(("::1", 0))
        ls.listen(1)
        reader = threading.Thread(target=lambda: _read_one(ls))
        reader.start()
        with socket.create_connection(("::1", ls.getsockname()[1])) as s:
            send_all(s, os.urandom(opts["send"]))
        reader.join()


def _read_one(ls):
    conn, _ = ls.accept()
    with conn:
        recv_to_eof(conn)


def stream(results, name, opts):
    ports = wait_ports(results, opts["server"])
    flag = os.path.join(results, "STOP")
    chunk = os.urandom(4096)
    with socket.create_connection(("::1", ports["tcp"])) as s:
        first = True
        while not stop.is_set() and not os.path.exists(flag):
            send_all(s, chunk)
            if first:
                open(os.path.join(results, name + ".started"), "w").close()
                first = False
            time.sleep(opts.get("every", 0.05))
        s.shutdown(socket.SHUT_WR)


ROLES = {"server": server, "client": client, "self": self_loop, "stream": stream}


def main():
    role, results, name = sys.argv[1:4]
    opts = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
    if opts.get("array"):
        i = int(os.environ["SLURM_ARRAY_TASK_ID"])
        name += str(i)
        opts.update({k: opts[k] * (i + 1) for k in ("send", "file") if k in opts})
    # scancel's SIGTERM: stop sending at the next chunk, then report what was sent
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        ROLES[role](results, name, opts)
        file_io(opts, name)
    finally:
        tmp = os.path.join(results, name + ".json.tmp")
        with open(tmp, "w") as f:
            json.dump(tally, f)
        os.rename(tmp, os.path.join(results, name + ".json"))


if __name__ == "__main__":
    main()
