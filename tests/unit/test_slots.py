"""The net slot layout's pure parts: decoding slot maps, the default slot count, the key index."""

import struct

from ceemsnet.collectors import slots
from ceemsnet.planning.structs import net_index, net_index_parts


def _vals(n, ncpus, fill):
    """A per-CPU array read: n slots x ncpus x 8 counters x 3 words; fill(s, cpu, k) -> 3 words."""
    out = []
    for s in range(n):
        for cpu in range(ncpus):
            for k in range(8):
                out += fill(s, cpu, k)
    return struct.pack(f"={len(out)}Q", *out)


def test_decode_sums_cpus_and_skips_free_slots():
    owners = struct.pack("=4Q", 0, 77, 0, 88)

    def fill(s, cpu, k):
        if s == 1 and k == 5:
            return [64 * (cpu + 1), cpu + 1, 0]
        if s == 2:
            return [1, 1, 1]  # free slot: whatever it holds is not reported
        return [0, 0, 0]
    got = slots.decode_slots(owners, _vals(4, 3, fill), 4, 3)
    want = [0] * 24
    want[15:18] = (64 * 6, 6, 0)
    assert got == {1: (77, tuple(want)), 3: (88, (0,) * 24)}


def test_key_index_round_trip():
    for proto in (0, 1):
        for fam in (0, 1):
            for d in (0, 1):
                assert net_index_parts(net_index(proto, fam, d)) == (proto, fam, d)
                assert net_index(proto, fam, d) == (proto << 2) | (fam << 1) | d


def test_default_slots_fit_the_budget_and_are_powers_of_two():
    for ncpus in (1, 2, 21, 64, 256, 1024, 4096):
        n = slots.default_slots(ncpus)
        assert n & (n - 1) == 0
        assert slots.MIN_SLOTS <= n <= slots.MAX_SLOTS
        assert n == slots.MIN_SLOTS or n * slots.SLOT_BYTES * ncpus <= slots.BUDGET
    assert slots.default_slots(2) == 4096 and slots.default_slots(256) == 256
