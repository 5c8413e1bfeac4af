"""A small RDMA netlink (NETLINK_RDMA, the nldev client) client in pure Python: devices and
ports, the queue pairs each device tracks, and per-QP statistic counters (bind a QP to a
counter, unbind it, read the counters' hardware values, optional ones included).

What `rdma dev`, `rdma res show qp` and `rdma statistic qp bind|unbind|show` do, from
include/uapi/rdma/rdma_netlink.h: a message is a netlink header whose type is
RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, command), no family header, then attributes. Replies to a
dump are tables (a nested attribute holding one nested entry per object). Each error the
kernel answers becomes an RdmaNetlinkError with its errno and one line (the kernel's
extended-ack message when it sends one).

Encoding and decoding are pure functions (tests/unit/test_rdmanl.py checks them against
bytes written from the header); RdmaNetlink is the socket.
"""

from __future__ import annotations

import errno as errnos
import os
import socket
import struct
from dataclasses import dataclass, field

from ceemsnet import CeemsnetError

NETLINK_RDMA = 20
RDMA_NL_NLDEV = 5  # enum: RDMA_NL_IWCM = 2, RSVD, LS, NLDEV

# enum rdma_nldev_command
CMD_GET = 1
CMD_PORT_GET = 5
CMD_RES_QP_GET = 10
CMD_STAT_SET = 16
CMD_STAT_GET = 17
CMD_STAT_DEL = 18

# enum rdma_nldev_attr (the ABI: numbered in the header's order)
ATTR_PAD = 0
ATTR_DEV_INDEX = 1           # u32
ATTR_DEV_NAME = 2            # string
ATTR_PORT_INDEX = 3          # u32 (CMD_GET: the number of ports)
ATTR_PORT_STATE = 12         # u8
ATTR_RES_QP = 19             # nested table
ATTR_RES_QP_ENTRY = 20       # nested
ATTR_RES_LQPN = 21           # u32
ATTR_RES_TYPE = 26           # u8 (enum ib_qp_type)
ATTR_RES_STATE = 27          # u8 (enum ib_qp_state)
ATTR_RES_PID = 28            # u32
ATTR_RES_KERN_NAME = 29      # string
ATTR_NDEV_NAME = 51          # string
ATTR_DEV_PROTOCOL = 67       # string
ATTR_STAT_MODE = 74          # u32 (enum rdma_nl_counter_mode)
ATTR_STAT_RES = 75           # u32 (the resource counted: ATTR_RES_QP)
ATTR_STAT_AUTO_MODE_MASK = 76  # u32
ATTR_STAT_COUNTER = 77       # nested table
ATTR_STAT_COUNTER_ENTRY = 78  # nested
ATTR_STAT_COUNTER_ID = 79    # u32
ATTR_STAT_HWCOUNTERS = 80    # nested table
ATTR_STAT_HWCOUNTER_ENTRY = 81  # nested
ATTR_STAT_HWCOUNTER_ENTRY_NAME = 82   # string
ATTR_STAT_HWCOUNTER_ENTRY_VALUE = 83  # u64
ATTR_STAT_HWCOUNTER_DYNAMIC = 95      # u8: an optional counter (Linux 5.18+)
ATTR_STAT_OPCOUNTER_ENABLED = 104     # u8 (Linux 6.15+)

# enum rdma_nl_counter_mode
MODE_NONE, MODE_AUTO, MODE_MANUAL = 0, 1, 2
MODE_NAMES = {MODE_NONE: "none", MODE_AUTO: "auto", MODE_MANUAL: "manual"}

# enum ib_qp_type (include/rdma/ib_verbs.h), the ones `rdma res show qp` names
QP_TYPES = {0: "SMI", 1: "GSI", 2: "RC", 3: "UC", 4: "UD", 5: "RAW_IPV6", 6: "RAW_ETHERTYPE",
            8: "RAW_PACKET", 9: "XRC_INI", 10: "XRC_TGT", 0xFF: "DRIVER"}

# netlink (include/uapi/linux/netlink.h)
NLMSG_HDR = struct.Struct("=IHHII")   # len, type, flags, seq, pid
NLA_HDR = struct.Struct("=HH")        # len, type
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x2, 0x4, 0x300
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200  # flags of an NLMSG_ERROR message
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLA_TYPE_MASK = 0x3FFF                # without NLA_F_NESTED, NLA_F_NET_BYTEORDER
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
RECV_SIZE = 1 << 16  # the kernel sizes dump messages to the reader's buffer, at most 32 KiB


class RdmaNetlinkError(CeemsnetError):
    """The kernel (or the socket) refused an RDMA netlink request: errno and one line."""

    def __init__(self, err: int, what: str, detail: str = ""):
        self.errno = err
        self.what = what
        self.detail = detail
        # Python names 95 ENOTSUP; the kernel's sources (and `rdma`'s users) say EOPNOTSUPP
        name = "EOPNOTSUPP" if err == errnos.EOPNOTSUPP else errnos.errorcode.get(err, str(err))
        super().__init__(f"rdma netlink: {what}: {os.strerror(err)} ({name})" + (f": {detail}" if detail else ""))


def nl_type(command: int) -> int:
    """RDMA_NL_GET_TYPE(RDMA_NL_NLDEV, command)."""
    return (RDMA_NL_NLDEV << 10) + command


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One attribute, padded to 4 bytes (the padding is not counted in its length)."""
    n = NLA_HDR.size + len(payload)
    return NLA_HDR.pack(n, kind) + payload + b"\0" * (_align(n) - n)


def attr_u32(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=I", v))


def attr_u8(kind: int, v: int) -> bytes:
    return attr(kind, struct.pack("=B", v))


def attr_str(kind: int, v: str) -> bytes:
    return attr(kind, v.encode() + b"\0")


def message(command: int, flags: int, seq: int, attrs: bytes = b"", pid: int = 0) -> bytes:
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(attrs), nl_type(command), flags, seq, pid) + attrs


class Attrs:
    """Parsed attributes: [(type, payload)] in order, types without the nested/byte-order flags."""

    def __init__(self, items: list[tuple[int, bytes]]):
        self.items = items

    @classmethod
    def parse(cls, buf: bytes) -> Attrs:
        items, off = [], 0
        while off + NLA_HDR.size <= len(buf):
            n, kind = NLA_HDR.unpack_from(buf, off)
            if n < NLA_HDR.size or off + n > len(buf):
                raise ValueError(f"malformed netlink attribute at offset {off}: length {n}, {len(buf) - off} bytes left")
            items.append((kind & NLA_TYPE_MASK, bytes(buf[off + NLA_HDR.size:off + n])))
            off += _align(n)
        return cls(items)

    def get(self, kind: int) -> bytes | None:
        return next((p for k, p in self.items if k == kind), None)

    def all(self, kind: int) -> list[bytes]:
        return [p for k, p in self.items if k == kind]

    def has(self, kind: int) -> bool:
        return self.get(kind) is not None

    def u8(self, kind: int, default: int = 0) -> int:
        p = self.get(kind)
        return p[0] if p else default

    def u32(self, kind: int, default: int = 0) -> int:
        p = self.get(kind)
        return struct.unpack_from("=I", p)[0] if p is not None and len(p) >= 4 else default

    def u64(self, kind: int, default: int = 0) -> int:
        p = self.get(kind)
        return struct.unpack_from("=Q", p)[0] if p is not None and len(p) >= 8 else default

    def str(self, kind: int, default: str = "") -> str:
        p = self.get(kind)
        return p.split(b"\0", 1)[0].decode(errors="replace") if p is not None else default

    def nested(self, kind: int) -> Attrs:
        p = self.get(kind)
        return Attrs.parse(p) if p is not None else Attrs([])

    def entries(self, table: int, entry: int) -> list[Attrs]:
        """The entries of a table attribute (a nested attribute holding nested entries)."""
        return [Attrs.parse(p) for t in self.all(table) for p in Attrs.parse(t).all(entry)]


@dataclass(frozen=True)
class NlMessage:
    type: int
    flags: int
    seq: int
    pid: int
    payload: bytes


def parse_messages(buf: bytes) -> list[NlMessage]:
    out, off = [], 0
    while off + NLMSG_HDR.size <= len(buf):
        n, kind, flags, seq, pid = NLMSG_HDR.unpack_from(buf, off)
        if n < NLMSG_HDR.size or off + n > len(buf):
            raise ValueError(f"malformed netlink message at offset {off}: length {n}, {len(buf) - off} bytes left")
        out.append(NlMessage(kind, flags, seq, pid, bytes(buf[off + NLMSG_HDR.size:off + n])))
        off += _align(n)
    return out


def error_of(msg: NlMessage) -> tuple[int, str]:
    """(errno, the kernel's extended-ack message or "") of an NLMSG_ERROR or NLMSG_DONE
    message; errno 0 is an acknowledgement."""
    if len(msg.payload) < 4:
        return 0, ""
    err = -struct.unpack_from("=i", msg.payload)[0]
    text = ""
    if msg.type == NLMSG_ERROR and msg.flags & NLM_F_ACK_TLVS and len(msg.payload) >= 4 + NLMSG_HDR.size:
        # after the error: the request's header, and its attributes unless the reply is capped
        off = 4 + NLMSG_HDR.size
        if not msg.flags & NLM_F_CAPPED:
            off = 4 + _align(NLMSG_HDR.unpack_from(msg.payload, 4)[0])
        try:
            text = Attrs.parse(msg.payload[off:]).str(NLMSGERR_ATTR_MSG)
        except ValueError:
            text = ""
    return err, text


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    ports: int          # the number of ports (numbered from 1)
    protocol: str = ""  # ib, roce, iw, ...: where the kernel says
    driver: str = ""    # from sysfs (device/driver), where there is one


@dataclass(frozen=True)
class Port:
    device_index: int
    device: str
    port: int
    state: int = 0      # enum ib_port_state: 4 is ACTIVE
    netdev: str = ""


@dataclass(frozen=True)
class Qp:
    device_index: int
    device: str
    lqpn: int
    port: int = 0       # 0: not yet moved to INIT (no port)
    pid: int = 0        # 0: a kernel QP (kern_name says whose)
    type: int = -1
    state: int = -1
    kern_name: str = ""

    @property
    def type_name(self) -> str:
        return QP_TYPES.get(self.type, str(self.type))


@dataclass(frozen=True)
class Counter:
    device_index: int
    device: str
    port: int
    id: int
    mode: int = MODE_NONE
    pid: int = 0
    qpns: tuple[int, ...] = ()
    hw: dict[str, int] = field(default_factory=dict)


def decode_device(a: Attrs, driver: str = "") -> Device:
    return Device(a.u32(ATTR_DEV_INDEX), a.str(ATTR_DEV_NAME), a.u32(ATTR_PORT_INDEX), a.str(ATTR_DEV_PROTOCOL),
                  driver)


def decode_port(a: Attrs) -> Port:
    return Port(a.u32(ATTR_DEV_INDEX), a.str(ATTR_DEV_NAME), a.u32(ATTR_PORT_INDEX), a.u8(ATTR_PORT_STATE),
                a.str(ATTR_NDEV_NAME))


def decode_qps(msg: Attrs) -> list[Qp]:
    """The QPs of one RES_QP_GET reply: the device handle, then a table of entries."""
    idx, name = msg.u32(ATTR_DEV_INDEX), msg.str(ATTR_DEV_NAME)
    return [Qp(idx, name, e.u32(ATTR_RES_LQPN), e.u32(ATTR_PORT_INDEX), e.u32(ATTR_RES_PID),
               e.u8(ATTR_RES_TYPE, -1) if e.has(ATTR_RES_TYPE) else -1,
               e.u8(ATTR_RES_STATE) if e.has(ATTR_RES_STATE) else -1, e.str(ATTR_RES_KERN_NAME))
            for e in msg.entries(ATTR_RES_QP, ATTR_RES_QP_ENTRY)]


def decode_hwcounters(a: Attrs) -> dict[str, int]:
    """{name: value} of a STAT_HWCOUNTERS table."""
    return {e.str(ATTR_STAT_HWCOUNTER_ENTRY_NAME): e.u64(ATTR_STAT_HWCOUNTER_ENTRY_VALUE)
            for e in a.entries(ATTR_STAT_HWCOUNTERS, ATTR_STAT_HWCOUNTER_ENTRY)}


def decode_counter(e: Attrs, idx: int, name: str) -> Counter:
    qpns = tuple(q.u32(ATTR_RES_LQPN) for q in e.entries(ATTR_RES_QP, ATTR_RES_QP_ENTRY))
    return Counter(idx, name, e.u32(ATTR_PORT_INDEX), e.u32(ATTR_STAT_COUNTER_ID), e.u32(ATTR_STAT_MODE),
                   e.u32(ATTR_RES_PID), qpns, decode_hwcounters(e))


def decode_counters(msg: Attrs) -> list[Counter]:
    """The counters of one STAT_GET (QP) dump reply: the device handle, then a table of entries."""
    idx, name = msg.u32(ATTR_DEV_INDEX), msg.str(ATTR_DEV_NAME)
    return [decode_counter(e, idx, name) for e in msg.entries(ATTR_STAT_COUNTER, ATTR_STAT_COUNTER_ENTRY)]


def bind_attrs(dev: int, port: int, lqpn: int, counter_id: int | None = None) -> bytes:
    """STAT_SET's attributes in manual mode: bind QP lqpn to counter_id, or to a new counter
    when None (`rdma statistic qp bind link DEV/PORT lqpn N [cntn ID]`)."""
    a = (attr_u32(ATTR_STAT_MODE, MODE_MANUAL) + attr_u32(ATTR_STAT_RES, ATTR_RES_QP) + attr_u32(ATTR_DEV_INDEX, dev)
         + attr_u32(ATTR_PORT_INDEX, port) + attr_u32(ATTR_RES_LQPN, lqpn))
    if counter_id is not None:
        a += attr_u32(ATTR_STAT_COUNTER_ID, counter_id)
    return a


def unbind_attrs(dev: int, port: int, lqpn: int, counter_id: int) -> bytes:
    """STAT_DEL's attributes: unbind QP lqpn from counter_id (`rdma statistic qp unbind ...
    cntn ID lqpn N`)."""
    return (attr_u32(ATTR_STAT_MODE, MODE_MANUAL) + attr_u32(ATTR_STAT_RES, ATTR_RES_QP) + attr_u32(ATTR_DEV_INDEX, dev)
            + attr_u32(ATTR_PORT_INDEX, port) + attr_u32(ATTR_STAT_COUNTER_ID, counter_id)
            + attr_u32(ATTR_RES_LQPN, lqpn))


def bind_request(seq: int, dev: int, port: int, lqpn: int, counter_id: int | None = None) -> bytes:
    return message(CMD_STAT_SET, NLM_F_REQUEST | NLM_F_ACK, seq, bind_attrs(dev, port, lqpn, counter_id))


def unbind_request(seq: int, dev: int, port: int, lqpn: int, counter_id: int) -> bytes:
    return message(CMD_STAT_DEL, NLM_F_REQUEST | NLM_F_ACK, seq, unbind_attrs(dev, port, lqpn, counter_id))


def sysfs_driver(name: str, sysfs: str = "/sys/class/infiniband") -> str:
    """The kernel driver bound to a device's parent (mlx5_core, ...), "" where it has none."""
    try:
        return os.path.basename(os.readlink(os.path.join(sysfs, name, "device", "driver")))
    except OSError:
        return ""


class RdmaNetlink:
    """A NETLINK_RDMA socket. Needs ib_core loaded (the kernel registers the protocol then);
    binding and unbinding need CAP_NET_ADMIN."""

    def __init__(self, timeout: float = 5.0):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_RDMA)
        except OSError as e:
            hint = "ib_core is not loaded (no RDMA device)" if e.errno == errnos.EPROTONOSUPPORT else ""
            raise RdmaNetlinkError(e.errno or errnos.EIO, "cannot open a NETLINK_RDMA socket", hint) from None
        try:
            for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK):
                try:
                    self.sock.setsockopt(SOL_NETLINK, opt, 1)
                except OSError:
                    pass  # older kernels: errors come without the kernel's message, or with the request echoed
            self.sock.bind((0, 0))
            self.sock.settimeout(timeout)
        except OSError as e:
            self.sock.close()
            raise RdmaNetlinkError(e.errno or errnos.EIO, "cannot bind a NETLINK_RDMA socket") from None
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RdmaNetlink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        return self.seq

    def request(self, command: int, attrs: bytes = b"", dump: bool = False, what: str = "") -> list[Attrs]:
        """Send one request; the replies' attributes (a dump's every message), after the
        kernel's acknowledgement or NLMSG_DONE. An error reply raises RdmaNetlinkError."""
        what = what or f"nldev command {command}"
        seq = self._next_seq()
        flags = NLM_F_REQUEST | (NLM_F_DUMP if dump else NLM_F_ACK)
        try:
            self.sock.send(message(command, flags, seq, attrs))
        except OSError as e:
            raise RdmaNetlinkError(e.errno or errnos.EIO, what) from None
        replies: list[Attrs] = []
        while True:
            try:
                buf, _, mflags, _ = self.sock.recvmsg(RECV_SIZE)  # data, ancillary data, flags, address
            except socket.timeout:
                raise RdmaNetlinkError(errnos.ETIMEDOUT, what, "no answer from the kernel") from None
            except OSError as e:
                raise RdmaNetlinkError(e.errno or errnos.EIO, what) from None
            if mflags & socket.MSG_TRUNC:
                raise RdmaNetlinkError(errnos.EMSGSIZE, what, f"reply larger than {RECV_SIZE} bytes")
            try:
                msgs = parse_messages(buf)
            except ValueError as e:
                raise RdmaNetlinkError(errnos.EBADMSG, what, str(e)) from None
            for m in msgs:
                if m.seq != seq:
                    continue  # an answer to an earlier request that timed out
                if m.type in (NLMSG_ERROR, NLMSG_DONE):
                    err, text = error_of(m)
                    if err:
                        raise RdmaNetlinkError(err, what, text)
                    return replies
                if m.type in (NLMSG_NOOP, NLMSG_OVERRUN):
                    continue
                try:
                    replies.append(Attrs.parse(m.payload))
                except ValueError as e:
                    raise RdmaNetlinkError(errnos.EBADMSG, what, str(e)) from None

    def devices(self, sysfs: str = "/sys/class/infiniband") -> list[Device]:
        return [decode_device(a, sysfs_driver(a.str(ATTR_DEV_NAME), sysfs))
                for a in self.request(CMD_GET, dump=True, what="list devices")]

    def ports(self, dev: int) -> list[Port]:
        return [decode_port(a) for a in self.request(CMD_PORT_GET, attr_u32(ATTR_DEV_INDEX, dev), dump=True,
                                                     what=f"list the ports of device {dev}")]

    def qps(self, dev: int) -> list[Qp]:
        out: list[Qp] = []
        for a in self.request(CMD_RES_QP_GET, attr_u32(ATTR_DEV_INDEX, dev), dump=True,
                              what=f"list the queue pairs of device {dev}"):
            out += decode_qps(a)
        return out

    def counters(self, dev: int, port: int | None = None) -> list[Counter]:
        """The QP counters bound on a device (on one port), with their hardware values."""
        a = attr_u32(ATTR_DEV_INDEX, dev) + attr_u32(ATTR_STAT_RES, ATTR_RES_QP)
        if port is not None:
            a += attr_u32(ATTR_PORT_INDEX, port)
        out: list[Counter] = []
        for r in self.request(CMD_STAT_GET, a, dump=True, what=f"read the QP counters of device {dev}"):
            out += decode_counters(r)
        return [c for c in out if port is None or c.port == port]

    def counter(self, dev: int, port: int, counter_id: int) -> Counter | None:
        return next((c for c in self.counters(dev, port) if c.id == counter_id), None)

    def port_counters(self, dev: int, port: int) -> dict[str, int]:
        """The port's hardware counters (`rdma statistic show link DEV/PORT`): every enabled
        one, optional ones included, each with the port's history and its running counters."""
        r = self.request(CMD_STAT_GET, attr_u32(ATTR_DEV_INDEX, dev) + attr_u32(ATTR_PORT_INDEX, port),
                         what=f"read the counters of device {dev} port {port}")
        out: dict[str, int] = {}
        for a in r:
            out.update(decode_hwcounters(a))
        return out

    def port_mode(self, dev: int, port: int) -> tuple[int, int, bool]:
        """(mode, auto-mode mask, optional counters bound in auto mode) of a port's QP counters."""
        a = (attr_u32(ATTR_DEV_INDEX, dev) + attr_u32(ATTR_PORT_INDEX, port)
             + attr_u32(ATTR_STAT_MODE, MODE_MANUAL) + attr_u32(ATTR_STAT_RES, ATTR_RES_QP))
        for r in self.request(CMD_STAT_GET, a, what=f"read the counter mode of device {dev} port {port}"):
            if r.has(ATTR_STAT_MODE):
                return r.u32(ATTR_STAT_MODE), r.u32(ATTR_STAT_AUTO_MODE_MASK), bool(r.u8(ATTR_STAT_OPCOUNTER_ENABLED))
        return MODE_NONE, 0, False

    def bind(self, dev: int, port: int, lqpn: int, counter_id: int | None = None) -> int:
        """Bind QP lqpn to counter_id, or to a new counter; the counter's id."""
        what = f"bind QP {lqpn} of device {dev} port {port} to " + \
            ("a new counter" if counter_id is None else f"counter {counter_id}")
        for r in self.request(CMD_STAT_SET, bind_attrs(dev, port, lqpn, counter_id), what=what):
            if r.has(ATTR_STAT_COUNTER_ID):
                return r.u32(ATTR_STAT_COUNTER_ID)
        if counter_id is not None:
            return counter_id
        raise RdmaNetlinkError(errnos.EBADMSG, what, "the kernel's answer has no counter id")

    def unbind(self, dev: int, port: int, lqpn: int, counter_id: int) -> None:
        self.request(CMD_STAT_DEL, unbind_attrs(dev, port, lqpn, counter_id),
                     what=f"unbind QP {lqpn} of device {dev} port {port} from counter {counter_id}")
