"""BPF programs' run time and run count as the kernel keeps them: what the cost
benchmarks (bench/hookcost.py, bench/vfs_tp_cost.py) and tests/kernel/test_vfs.py
read. The exporter itself never turns them on.

The kernel counts while kernel.bpf_stats_enabled is 1 (5.1) or while a
BPF_ENABLE_STATS fd is open (5.8, RunTimeStats); each program's counts are in
its fdinfo (program_stats).
"""

import ctypes
import os

from ceemsnet.runtime import libbpf

BPF_STATS_RUN_TIME = 0  # enum bpf_stats_type (include/uapi/linux/bpf.h)


class RunTimeStats:
    """Programs' run time and count kept by the kernel while this is open (BPF_ENABLE_STATS,
    5.8): unlike kernel.bpf_stats_enabled, another process writing that sysctl cannot turn
    them off under us, and nothing is left to restore."""

    def __enter__(self):
        enable = libbpf.lib().bpf_enable_stats
        enable.restype, enable.argtypes = ctypes.c_int, [ctypes.c_int]
        self.fd = libbpf.check_rc(enable(BPF_STATS_RUN_TIME), "bpf_enable_stats(BPF_STATS_RUN_TIME)")
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


def program_stats(coll, name: str) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a program of a loaded Collection (ceemsnet/runtime/collection.py),
    from its fdinfo: what the kernel counted while the stats were on."""
    info = {}
    with open(f"/proc/self/fdinfo/{coll.program_fd(name)}") as f:
        for line in f:
            k, _, v = line.partition(":")
            info[k.strip()] = v.strip()
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))
