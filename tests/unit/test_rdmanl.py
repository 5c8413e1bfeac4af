"""RDMA netlink encoding and decoding (ceemsnet/runtime/rdmanl.py) against bytes written by
hand from include/uapi/rdma/rdma_netlink.h and include/uapi/linux/netlink.h, not from our
own encoder: RDMA_NL_NLDEV = 5, a message type is (client << 10) + op; RDMA_NLDEV_CMD_STAT_SET
= 16, STAT_GET = 17, STAT_DEL = 18, RES_QP_GET = 10; attributes DEV_INDEX = 1, DEV_NAME = 2,
PORT_INDEX = 3, RES_QP = 19, RES_QP_ENTRY = 20, RES_LQPN = 21, RES_TYPE = 26, RES_STATE = 27,
RES_PID = 28, RES_KERN_NAME = 29, STAT_MODE = 74, STAT_RES = 75, STAT_COUNTER = 77,
STAT_COUNTER_ENTRY = 78, STAT_COUNTER_ID = 79, STAT_HWCOUNTERS = 80, STAT_HWCOUNTER_ENTRY = 81,
ENTRY_NAME = 82, ENTRY_VALUE = 83; RDMA_COUNTER_MODE_MANUAL = 2. Little-endian host order
(x86_64, arm64: the machines ceemsnet runs on).
"""

import errno
import socket
import struct
import sys

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.runtime import rdmanl as R

pytestmark = pytest.mark.skipif(sys.byteorder != "little", reason="the hand-written bytes are little-endian")


def h(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", "").replace("\n", ""))


def test_constants_follow_the_header():
    assert R.nl_type(R.CMD_STAT_SET) == 0x1410 == (5 << 10) + 16
    assert (R.CMD_GET, R.CMD_PORT_GET, R.CMD_RES_QP_GET, R.CMD_STAT_SET, R.CMD_STAT_GET, R.CMD_STAT_DEL) == \
        (1, 5, 10, 16, 17, 18)
    assert (R.ATTR_STAT_MODE, R.ATTR_STAT_RES, R.ATTR_STAT_COUNTER_ID, R.ATTR_STAT_HWCOUNTERS,
            R.ATTR_STAT_OPCOUNTER_ENABLED) == (74, 75, 79, 80, 104)


def test_bind_to_a_new_counter():
    # `rdma statistic qp bind link <dev 3>/1 lqpn 17`: header (56 bytes, type 0x1410,
    # REQUEST|ACK, seq 7), then five u32 attributes of 8 bytes each
    want = h("""
        38000000 1014 0500 07000000 00000000
        0800 4a00 02000000
        0800 4b00 13000000
        0800 0100 03000000
        0800 0300 01000000
        0800 1500 11000000""")
    assert R.bind_request(7, 3, 1, 17) == want


def test_bind_to_a_counter_and_unbind():
    bind = R.bind_request(8, 3, 1, 17, counter_id=4)
    assert bind[:16] == h("40000000 1014 0500 08000000 00000000")
    assert bind[-8:] == h("0800 4f00 04000000")  # STAT_COUNTER_ID = 79 last
    unbind = R.unbind_request(9, 3, 1, 17, 4)
    assert unbind == h("""
        40000000 1214 0500 09000000 00000000
        0800 4a00 02000000
        0800 4b00 13000000
        0800 0100 03000000
        0800 0300 01000000
        0800 4f00 04000000
        0800 1500 11000000""")


def test_strings_are_nul_terminated_and_padded():
    # "mlx5_0" + NUL: 7 bytes, length 11, padded to 12
    assert R.attr_str(R.ATTR_DEV_NAME, "mlx5_0") == h("0b00 0200") + b"mlx5_0\0" + b"\0"
    assert R.attr_u8(R.ATTR_STAT_OPCOUNTER_ENABLED, 1) == h("0500 6800 01 000000")


# one RES_QP_GET dump message for device 3 "rxe0": a user RC QP 17 on port 1 of pid 4242,
# and the kernel's GSI QP 1 (no pid: its owner's name); the table and entries carry
# NLA_F_NESTED (0x8000), as nla_nest_start() sets it
QP_DUMP = h("""
    0800 0100 03000000
    0900 0200 72786530 00 000000
    5000 1380
      2c00 1480
        0800 0300 01000000
        0800 1500 11000000
        0500 1a00 02 000000
        0500 1b00 03 000000
        0800 1c00 92100000
      2000 1480
        0800 1500 01000000
        0500 1a00 01 000000
        0c00 1d00 69625f636f726500
""")


def test_qp_dump_decodes():
    qps = R.decode_qps(R.Attrs.parse(QP_DUMP))
    assert qps == [R.Qp(3, "rxe0", 17, port=1, pid=4242, type=2, state=3),
                   R.Qp(3, "rxe0", 1, port=0, pid=0, type=1, state=-1, kern_name="ib_core")]
    assert [q.type_name for q in qps] == ["RC", "GSI"]


# one STAT_GET (QP) dump message: counter 4 on port 1 of device 3, manual mode, pid 4242,
# QPs 17 and 18, and two hardware counters; each u64 value is preceded by a PAD attribute
# (type 0), as nla_put_u64_64bit() adds one where the value would not be 8-byte aligned
COUNTER_DUMP = h("""
    0800 0100 03000000
    0b00 0200 6d6c78355f30 00 00
    9800 4d80
      9400 4e80
        0800 0300 01000000
        0800 4f00 04000000
        0800 4a00 02000000
        0800 1c00 92100000
        1c00 1380
          0c00 1480 0800 1500 11000000
          0c00 1480 0800 1500 12000000
        5400 5080
          2800 5180
            1200 5200 72646d615f74785f627974657300 0000
            0400 0000
            0c00 5300 0010000000010000
          2800 5180
            1200 5200 72646d615f72785f627974657300 0000
            0400 0000
            0c00 5300 2a00000000000000
""")


def test_counter_dump_decodes():
    (c,) = R.decode_counters(R.Attrs.parse(COUNTER_DUMP))
    assert c == R.Counter(3, "mlx5_0", 1, 4, R.MODE_MANUAL, 4242, (17, 18),
                          {"rdma_tx_bytes": 0x0000010000001000, "rdma_rx_bytes": 42})


def test_malformed_attribute_is_an_error():
    with pytest.raises(ValueError, match="malformed"):
        R.Attrs.parse(h("0c00 0100 03000000"))  # says 12 bytes, has 8
    with pytest.raises(ValueError, match="malformed"):
        R.Attrs.parse(h("0200 0100"))  # shorter than its own header


def test_missing_attributes_give_defaults():
    a = R.Attrs.parse(h("0800 0100 03000000"))
    assert (a.u32(R.ATTR_PORT_INDEX), a.str(R.ATTR_DEV_NAME), a.u64(R.ATTR_STAT_HWCOUNTER_ENTRY_VALUE)) == (0, "", 0)
    assert a.entries(R.ATTR_RES_QP, R.ATTR_RES_QP_ENTRY) == []


# NLMSG_ERROR answering the bind above with -EOPNOTSUPP (-95), capped (the request's header
# only) with the kernel's message as NLMSGERR_ATTR_MSG (1)
ERROR_REPLY = h("""
    3c000000 0200 0003 07000000 00000000
    a1ffffff
    38000000 1014 0500 07000000 00000000
    1700 0100 4e6f7420737570706f72746564206865726500 00
""")


def test_error_reply_maps_to_errno_and_message():
    (m,) = R.parse_messages(ERROR_REPLY)
    assert (m.type, m.seq) == (R.NLMSG_ERROR, 7)
    assert R.error_of(m) == (errno.EOPNOTSUPP, "Not supported here")
    err, text = R.error_of(m)
    e = R.RdmaNetlinkError(err, "bind QP 17", text)
    assert isinstance(e, CeemsnetError) and e.errno == errno.EOPNOTSUPP
    assert str(e) == "rdma netlink: bind QP 17: Operation not supported (EOPNOTSUPP): Not supported here"
    assert "\n" not in str(e)


def test_ack_is_errno_zero():
    ack = h("24000000 0200 0001 07000000 00000000 00000000 38000000 1014 0500 07000000 00000000")
    assert R.error_of(R.parse_messages(ack)[0]) == (0, "")


class FakeSock:
    """Answers each send with the scripted datagrams (seq rewritten to the request's)."""

    def __init__(self, script):
        self.script = list(script)
        self.sent = []

    def send(self, data):
        self.sent.append(data)
        return len(data)

    def recvmsg(self, size):
        if not self.script:
            raise socket.timeout()
        data = self.script.pop(0)
        if isinstance(data, Exception):
            raise data
        seq = struct.unpack_from("=I", self.sent[-1], 8)[0]
        out, off = bytearray(data), 0
        while off + 16 <= len(out):
            n = struct.unpack_from("=I", out, off)[0]
            if struct.unpack_from("=I", out, off + 8)[0] != 0xEEEEEEEE:
                struct.pack_into("=I", out, off + 8, seq)
            off += (n + 3) & ~3
        return bytes(out), [], 0, None  # socket.recvmsg: data, ancillary data, flags, address

    def close(self):
        pass


def client(script) -> R.RdmaNetlink:
    c = R.RdmaNetlink.__new__(R.RdmaNetlink)
    c.sock, c.seq = FakeSock(script), 0
    return c


def msg(kind, flags, payload, seq=0):
    return struct.pack("=IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


def test_request_collects_a_dump_until_done():
    stale = msg(R.nl_type(R.CMD_RES_QP_GET), R.NLM_F_MULTI, QP_DUMP, seq=0xEEEEEEEE)  # an earlier request's
    part = msg(R.nl_type(R.CMD_RES_QP_GET), R.NLM_F_MULTI, QP_DUMP)
    done = msg(R.NLMSG_DONE, R.NLM_F_MULTI, struct.pack("=i", 0))
    c = client([stale + part, part + done])
    assert [q.lqpn for q in c.qps(3)] == [17, 1, 17, 1]
    sent = c.sock.sent[0]
    assert struct.unpack_from("=HH", sent, 4) == (R.nl_type(R.CMD_RES_QP_GET), R.NLM_F_REQUEST | R.NLM_F_DUMP)
    assert sent[16:] == h("0800 0100 03000000")


def test_bind_returns_the_kernels_counter_id_then_ack():
    reply = msg(R.nl_type(R.CMD_STAT_SET), 0, h("0800 0100 03000000 0800 0300 01000000 0800 4f00 09000000"))
    ack = msg(R.NLMSG_ERROR, R.NLM_F_CAPPED, struct.pack("=i", 0) + bytes(16))
    assert client([reply + ack]).bind(3, 1, 17) == 9


def test_error_reply_raises_with_errno():
    c = client([msg(R.NLMSG_ERROR, R.NLM_F_CAPPED, struct.pack("=i", -errno.EOPNOTSUPP) + bytes(16))])
    with pytest.raises(R.RdmaNetlinkError) as e:
        c.bind(3, 1, 17)
    assert e.value.errno == errno.EOPNOTSUPP
    assert str(e.value).startswith("rdma netlink: bind QP 17 of device 3 port 1 to a new counter: ")


def test_dump_error_in_done_raises():
    c = client([msg(R.NLMSG_DONE, R.NLM_F_MULTI, struct.pack("=i", -errno.EINVAL))])
    with pytest.raises(R.RdmaNetlinkError) as e:
        c.counters(3)
    assert e.value.errno == errno.EINVAL


def test_timeout_and_garbage_are_errors_not_tracebacks():
    with pytest.raises(R.RdmaNetlinkError) as e:
        client([]).devices(sysfs="/nonexistent")
    assert e.value.errno == errno.ETIMEDOUT
    with pytest.raises(R.RdmaNetlinkError) as e:
        client([h("ffff0000 0000 0000 00000000 00000000")]).devices(sysfs="/nonexistent")
    assert e.value.errno == errno.EBADMSG
