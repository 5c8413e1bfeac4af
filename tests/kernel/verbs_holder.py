"""A process holding RDMA objects made through libibverbs (ctypes), for tests/kernel/test_rdma.py.

argv: DEVICE. Opens the device, allocates one protection domain, two completion queues,
one memory region and one shared receive queue, and two RC queue pairs: one made by the
main thread, one by a second thread (whose task is not the process's main one: a tool that
maps `rdma res show`'s pid through cgroup.procs misses such QPs). Prints "ready <qpn> <qpn>",
waits for a line on stdin, then exits without destroying anything: the kernel destroys the
objects as the process's uverbs file is released.
"""

import ctypes
import sys
import threading

EXPECTED = {"pd": 1, "cq": 2, "mr": 1, "srq": 1, "qp": 2}
IBV_QPT_RC, IBV_ACCESS_LOCAL_WRITE = 2, 1


class QpCap(ctypes.Structure):
    _fields_ = [("max_send_wr", ctypes.c_uint32), ("max_recv_wr", ctypes.c_uint32),
                ("max_send_sge", ctypes.c_uint32), ("max_recv_sge", ctypes.c_uint32),
                ("max_inline_data", ctypes.c_uint32)]


class QpInitAttr(ctypes.Structure):
    _fields_ = [("qp_context", ctypes.c_void_p), ("send_cq", ctypes.c_void_p), ("recv_cq", ctypes.c_void_p),
                ("srq", ctypes.c_void_p), ("cap", QpCap), ("qp_type", ctypes.c_int), ("sq_sig_all", ctypes.c_int)]


class SrqInitAttr(ctypes.Structure):
    _fields_ = [("srq_context", ctypes.c_void_p), ("max_wr", ctypes.c_uint32), ("max_sge", ctypes.c_uint32),
                ("srq_limit", ctypes.c_uint32)]


# struct ibv_qp: context, qp_context, pd, send_cq, recv_cq, srq, handle (u32), qp_num (u32), ...
class IbvQp(ctypes.Structure):
    _fields_ = [("context", ctypes.c_void_p), ("qp_context", ctypes.c_void_p), ("pd", ctypes.c_void_p),
                ("send_cq", ctypes.c_void_p), ("recv_cq", ctypes.c_void_p), ("srq", ctypes.c_void_p),
                ("handle", ctypes.c_uint32), ("qp_num", ctypes.c_uint32)]


def main(device: str) -> int:
    v = ctypes.CDLL("libibverbs.so.1", use_errno=True)
    v.ibv_get_device_list.restype = ctypes.POINTER(ctypes.c_void_p)
    v.ibv_get_device_name.restype = ctypes.c_char_p
    v.ibv_get_device_name.argtypes = [ctypes.c_void_p]
    for name in ("ibv_open_device", "ibv_alloc_pd", "ibv_create_cq", "ibv_reg_mr", "ibv_create_srq"):
        getattr(v, name).restype = ctypes.c_void_p
    v.ibv_open_device.argtypes = [ctypes.c_void_p]
    v.ibv_alloc_pd.argtypes = [ctypes.c_void_p]
    v.ibv_create_cq.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    v.ibv_reg_mr.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    v.ibv_create_srq.argtypes = [ctypes.c_void_p, ctypes.POINTER(SrqInitAttr)]
    v.ibv_create_qp.restype = ctypes.POINTER(IbvQp)
    v.ibv_create_qp.argtypes = [ctypes.c_void_p, ctypes.POINTER(QpInitAttr)]
    n = ctypes.c_int()
    devs = v.ibv_get_device_list(ctypes.byref(n))
    dev = next((devs[i] for i in range(n.value) if v.ibv_get_device_name(devs[i]).decode() == device), None)
    if dev is None:
        print(f"no device {device}", file=sys.stderr)
        return 1

    def must(p, what):
        if not p:
            raise OSError(ctypes.get_errno(), f"{what} failed")
        return p

    ctx = must(v.ibv_open_device(dev), "ibv_open_device")
    pd = must(v.ibv_alloc_pd(ctx), "ibv_alloc_pd")
    cqs = [must(v.ibv_create_cq(ctx, 16, None, None, 0), "ibv_create_cq") for _ in range(2)]
    buf = ctypes.create_string_buffer(1 << 16)
    must(v.ibv_reg_mr(pd, ctypes.addressof(buf), len(buf), IBV_ACCESS_LOCAL_WRITE), "ibv_reg_mr")
    sattr = SrqInitAttr(None, 16, 1, 0)
    must(v.ibv_create_srq(pd, ctypes.byref(sattr)), "ibv_create_srq")

    def qp():
        attr = QpInitAttr(None, cqs[0], cqs[1], None, QpCap(16, 16, 1, 1, 0), IBV_QPT_RC, 0)
        return must(v.ibv_create_qp(pd, ctypes.byref(attr)), "ibv_create_qp").contents.qp_num

    qpns = [qp()]
    errors = []

    def second():
        try:
            qpns.append(qp())
        except OSError as e:
            errors.append(e)
    t = threading.Thread(target=second)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    print("ready", *qpns, flush=True)
    sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
