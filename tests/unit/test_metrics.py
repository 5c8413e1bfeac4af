"""The direct text renderer and prometheus_client agree, sample for sample."""

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ceemsnet.common.metrics import Family

from .helpers import render_text


def parsed(text):
    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for fam in text_string_to_metric_families(text) for s in fam.samples}


class _Reg:
    def __init__(self, fams):
        self.fams = fams

    def collect(self):
        return [f.to_prometheus() for f in self.fams]


def families():
    c = Family("ceemsnet_net_egress_bytes", "bytes \\ sent\nper cgroup", "counter", ("cgroup", "proto"))
    c.add(('/a "quoted"\\path\nnewline', "tcp"), 2**63 + 7)
    c.add(("/ünïcode dir", "udp"), 0)
    g = Family("ceemsnet_scrape_collector_duration_seconds", "d", "gauge", ("collector",))
    g.add(("net",), 0.00123)
    i = Family("ceemsnet_build_info", "b", "gauge", ())
    i.add((), 1)
    return [c, g, i]


def test_direct_text_matches_prometheus_client():
    fams = families()
    reg = CollectorRegistry()
    reg.register(_Reg(fams))
    ours = render_text(fams)
    theirs = generate_latest(reg).decode()
    assert parsed(ours) == parsed(theirs)
    assert "ceemsnet_net_egress_bytes_total" in ours and "# TYPE ceemsnet_net_egress_bytes_total counter" in ours


def test_big_counters_keep_integer_precision():
    text = render_text(families())
    assert f" {2**63 + 7}\n" in text  # no float rounding of a 64-bit counter
