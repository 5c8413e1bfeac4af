"""The other end of the test traffic: loopback servers in the test process.

TCP: read to EOF, then answer reply_size(received) bytes and close.
UDP: echo every datagram back to its sender.
"""

import os
import socket
import threading


def reply_size(received: int) -> int:
    return received // 2 + 1000


class Peer:
    def __init__(self):
        self._socks = []
        self._threads = []
        self.tcp4 = self._tcp(socket.AF_INET, "127.0.0.1")
        self.tcp6 = self._tcp(socket.AF_INET6, "::1")
        self.udp4 = self._udp(socket.AF_INET, "127.0.0.1")
        self.udp6 = self._udp(socket.AF_INET6, "::1")

    def _start(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _tcp(self, af, host):
        s = socket.socket(af, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        s.listen(64)
        self._socks.append(s)
        self._start(self._accept, s)
        return s.getsockname()[:2]

    def _accept(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            self._start(self._serve, c)

    @staticmethod
    def _serve(c):
        with c:
            got = 0
            while True:
                b = c.recv(1 << 20)
                if not b:
                    break
                got += len(b)
            c.sendall(os.urandom(reply_size(got)))

    def _udp(self, af, host):
        s = socket.socket(af, socket.SOCK_DGRAM)
        s.bind((host, 0))
        self._socks.append(s)
        self._start(self._echo, s)
        return s.getsockname()[:2]

    @staticmethod
    def _echo(s):
        while True:
            try:
                data, addr = s.recvfrom(65536)
                if addr is None:  # shut down by close()
                    return
                s.sendto(data, addr)
            except OSError:
                return

    def close(self):
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(timeout=5)
