"""report --prometheus without a kernel: the exact-growth arithmetic, bad input, and
the PromQL itself against each real engine (Prometheus, VictoriaMetrics) scraping exporters
this test plays."""

import datetime as dt
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ceemsnet.report.prometheus import (PrometheusAPI, _label_regex, exact_increase, fold_baselines, job_matcher,
                                       merge_series, query)

from ..promserver import ENGINES, free_port, start_engine
from .test_cli import assert_one_line_error, run


def test_exact_increase_counts_growth_inside_the_range():
    s = [(90, 100), (100, 100), (101, 150), (102, 180)]
    assert exact_increase(s, since=100) == 80          # baseline: the last sample at or before since
    assert exact_increase(s, since=95) == 80
    assert exact_increase(s, since=89) == 180          # born in range: from zero
    assert exact_increase(s, since=102) is None        # nothing in range


def test_exact_increase_resets():
    s = [(0, 500), (1, 600), (2, 40), (3, 90)]        # went down: restarted from zero
    assert exact_increase(s, since=0.5) == 100 + 40 + 50
    starts = [(0, 1.0), (1, 1.0), (2, 7.0), (3, 7.0)]
    s = [(0, 500), (1, 600), (2, 700), (3, 900)]      # new run counted more than the old: start time says so
    assert exact_increase(s, since=0.5, starts=starts) == 100 + 700 + 200
    assert exact_increase(s, since=0.5) == 400         # without it, undercounted (why the start time matters)


def test_exact_increase_continues_pinned_counters_across_a_restart():
    starts = [(0, 1.0), (1, 1.0), (2, 7.0), (3, 7.0)]
    s = [(0, 500), (1, 600), (2, 700), (3, 900)]
    same = [(0, ("g1", "cgroup")), (3, ("g1", "cgroup"))]
    assert exact_increase(s, since=0.5, starts=starts, states=same) == 100 + 100 + 200  # pins adopted
    fresh = [(0, ("g1", "cgroup")), (2, ("g2", "cgroup"))]
    assert exact_increase(s, since=0.5, starts=starts, states=fresh) == 100 + 700 + 200  # new counters
    down = [(0, 500), (1, 600), (2, 40), (3, 90)]
    assert exact_increase(down, since=0.5, starts=starts, states=same) == 100 + 40 + 50


def test_staleness_markers_are_no_samples():
    """VictoriaMetrics answers a raw range (m[5m]) with the staleness marker its scrape wrote when
    the exporter stopped, as a NaN sample (Prometheus leaves it out): the counter is the others."""
    results = [{"metric": {"instance": "n1", "cgroup": STEP, "proto": "udp"},
                "values": [[1, "500"], [2, "600"], [3, "NaN"], [5, "40"], [6, "90"]]}]
    (samples,) = merge_series(results).values()
    assert samples == [(1.0, 500.0), (2.0, 600.0), (5.0, 40.0), (6.0, 90.0)]
    assert exact_increase(samples, since=1.5) == 100 + 40 + 50     # the restart: from zero, once


def test_a_fold_change_counts_each_byte_once():
    """task -> step over continuing counters: the step series starts from its tasks' last values."""
    j = "/system.slice/slurmstepd.scope/job_9"
    t0, t1, st = f"{j}/step_0/user/task_0", f"{j}/step_0/user/task_1", f"{j}/step_0"

    def series(cg, values, **labels):
        return {"metric": {"instance": "n1", "cgroup": cg, "proto": "udp", **labels},
                "values": [[t, str(v)] for t, v in values]}
    results = [series(t0, [(1, 10), (2, 15)], job="9"), series(t1, [(1, 20), (2, 20)], job="9"),
               series(st, [(3, 38), (4, 40)], job="9"),     # 3 bytes more while no exporter ran
               series(st, [(5, 41)], job="9_1")]            # SLURM's name arrived: the same counter
    merged = merge_series(results)
    assert merged[("n1", st, (("proto", "udp"),))] == [(3.0, 38.0), (4.0, 40.0), (5.0, 41.0)]
    states = {("n1", "net"): [(1, ("g", "cgroup")), (2, ("g", "cgroup")), (3, ("g", "slurm:step")),
                              (4, ("g", "slurm:step")), (5, ("g", "slurm:step"))]}
    base = fold_baselines(merged, states, "net")
    assert base == {("n1", st, (("proto", "udp"),)): {3.0: 35.0}}
    total = sum(exact_increase(v, 0, None, states[("n1", "net")], base.get(k)) for k, v in merged.items())
    assert total == 41
    # from after the tasks' first values: only what was counted since
    assert sum(exact_increase(v, 1, None, states[("n1", "net")], base.get(k)) for k, v in merged.items()) == 11
    # another generation: new counters, no baseline, all counted
    states[("n1", "net")][2:] = [(3, ("h", "slurm:step")), (4, ("h", "slurm:step")), (5, ("h", "slurm:step"))]
    assert fold_baselines(merged, states, "net") == {}


def _promql_string(s):
    return s.replace('\\\\', '\\')


def test_label_regex_matches_exactly_those_values():
    rx = re.compile(_promql_string(_label_regex({"node1:9977", "n.2:9977", ""})))
    assert all(rx.fullmatch(v) for v in ("node1:9977", "n.2:9977", ""))
    assert not any(rx.fullmatch(v) for v in ("nx2:9977", "node1:99770", "x"))


def test_job_matcher_prefilters_and_rejects_odd_ids():
    rx = re.compile(_promql_string(job_matcher("42").split('"')[1]))
    assert rx.fullmatch("/system.slice/slurmstepd.scope/job_42/step_0")
    assert rx.fullmatch("/slurm/uid_1/job_42")
    assert not rx.fullmatch("/slurm/uid_1/job_421/step_0")
    with pytest.raises(Exception, match="SLURM job"):
        job_matcher('4" or vector(1)')


@pytest.mark.parametrize("args,needle", [
    (("--prometheus", f"http://127.0.0.1:{free_port()}"), "cannot reach Prometheus"),
    (("--prometheus", "prometheus:9090"), "http:// or https://"),
    (("--prometheus", "http://127.0.0.1:1", "--storage.path", "/tmp/x.db"), "not both"),
    (("--prometheus", "http://127.0.0.1:1", "--job", "4 2"), "SLURM job"),
    (("--prometheus", "http://127.0.0.1:1", "--since", "1h", "--until", "2h"), "empty time range"),
    (("--prometheus", "http://127.0.0.1:1", "--prometheus.bearer-token-file", "/nonexistent"),
     "bearer-token-file"),
])
def test_bad_input_is_one_line(args, needle):
    rc, out, err = run("report", *args)
    assert_one_line_error(rc, err, needle)


def test_bad_duration_is_usage_error():
    rc, out, err = run("report", "--prometheus", "http://127.0.0.1:1", "--prometheus.lookback", "soon")
    assert rc == 2 and "not a positive duration" in err and "Traceback" not in err


class Served:
    """A loopback HTTP server answering every request with what `answer(path)` returns."""

    def __init__(self, answer):
        class H(BaseHTTPRequestHandler):
            def _reply(self):
                code, ctype, body = answer(self.path)
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            do_GET = do_POST = _reply

            def log_message(self, *a):
                pass
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize("answer,needle", [
    ((404, "text/html", b"<html>nope</html>"), "answered HTTP 404"),
    ((200, "text/plain", b"hello"), "did not answer /api/v1/query with Prometheus JSON"),
    ((422, "application/json", b'{"status":"error","errorType":"execution","error":"query processing would '
                               b'load too many samples into memory in query execution"}'), "--query.max-samples"),
])
def test_not_a_prometheus_or_refused(answer, needle):
    srv = Served(lambda path: answer)
    try:
        rc, out, err = run("report", "--prometheus", srv.url)
    finally:
        srv.close()
    assert_one_line_error(rc, err, needle)


# ---- the PromQL against a real Prometheus ----------------------------------------------------

STEP = "/system.slice/slurmstepd.scope/job_77/step_0"


class FakeExporter:
    """Serves one ceemsnet counter whose value the test sets, with a fixed process start time."""

    def __init__(self):
        self.value, self.start = 0, time.time()

        def answer(path):
            body = (f'ceemsnet_net_egress_bytes_total{{cgroup="{STEP}",proto="udp",family="ipv4"}} {self.value}\n'
                    f"ceemsnet_process_start_time_seconds {self.start}\n").encode()
            return 200, "text/plain; version=0.0.4", body
        self.srv = Served(answer)
        self.target = self.srv.url.split("//")[1]


@pytest.mark.parametrize("engine", ENGINES)
def test_promql_baseline_and_reset_against_each_engine(engine, tmp_path):
    a, b = FakeExporter(), FakeExporter()   # a: only grows; b: goes down once (a reset, same start time)
    prom = None

    def scraped(want_a, want_b):
        prom.wait_for("ceemsnet_net_egress_bytes_total",
                      lambda v: {m["instance"]: x for m, x in v} == {a.target: want_a, b.target: want_b})
        time.sleep(1.1)  # a returned time lies after this sample and before the next value
        return time.time()

    def report(since, until, *extra):
        iso = [dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")
               for t in (since, until)]
        rc, out, err = run("report", f"--prometheus={prom.url}", "--by=cgroup", f"--since={iso[0]}",
                           f"--until={iso[1]}", "--format=json", *extra)
        assert rc == 0, err
        return {r["cgroup"]: r["net_egress_bytes"] for r in json.loads(out)}

    try:
        prom = start_engine(engine, tmp_path, [a.target, b.target])
        t0 = time.time() - 1
        a.value, b.value = 100, 500
        t1 = scraped(100, 500)
        a.value, b.value = 250, 200   # b went down: a reset
        scraped(250, 200)
        a.value, b.value = 260, 260
        t2 = scraped(260, 260)
        assert report(t0, t2) == {STEP: 260 + (500 + 200 + 60)}
        assert report(t1, t2) == {STEP: 160 + (200 + 60)}   # a: fast path, minus its baseline of 100
        # chunks add up exactly: one-second pieces, boundaries between samples, give the same figures
        assert report(t0, t2, "--prometheus.chunk=1s") == {STEP: 260 + (500 + 200 + 60)}
        assert report(t1, t2, "--prometheus.chunk=1s") == {STEP: 160 + (200 + 60)}
        only_a = report(t1, t2, f'--prometheus.selector=instance="{a.target}"')
        assert only_a == {STEP: 160}
    finally:
        if prom:
            prom.stop()
        a.srv.close()
        b.srv.close()


# ---- RDMA: one family, two columns by its direction label -------------------------------------------

class AnsweringAPI:
    """Answers report's queries from fixed growth per (metric selector, cgroup); records every query."""

    def __init__(self, growth, seen):
        self.growth, self.seen, self.exprs, self.base = growth, seen, [], "http://fake"

    def query(self, expr, at):
        self.exprs.append(expr)
        if expr.startswith("sum by (cgroup) (last_over_time("):
            sel = expr[len("sum by (cgroup) (last_over_time("):expr.index("[")]
            return "vector", [{"metric": {"cgroup": cg}, "value": [at, str(v)]}
                              for cg, v in self.growth.get(sel, {}).items()]
        if expr.startswith(("min_over_time(timestamp(", "max_over_time(timestamp(")):
            i = 0 if expr.startswith("min") else 1
            return "vector", [{"metric": {"cgroup": cg}, "value": [at, str(t[i])]} for cg, t in self.seen.items()]
        return "vector", []   # no restart, reset or renamed series: every column on the fast path


def test_rdma_columns_sum_their_direction_only():
    s0, s1 = f"{STEP[:-1]}0", f"{STEP[:-1]}1"
    api = AnsweringAPI({
        'ceemsnet_rdma_bytes_total{direction="egress"}': {s0: 1 << 20, s1: 4096},
        'ceemsnet_rdma_bytes_total{direction="ingress"}': {s0: 512},
        "ceemsnet_net_egress_bytes_total": {s1: 100},
    }, {s0: (1010.0, 1050.0), s1: (1020.0, 1090.0)})
    (row,) = query(api, "job", 1000.0, 1100.0)
    assert (row["job"], row["rdma_egress_bytes"], row["rdma_ingress_bytes"], row["net_egress_bytes"]) == \
        ("77", (1 << 20) + 4096, 512, 100)
    assert row["net_ingress_bytes"] is None and row["skb_egress_bytes"] is None   # not counted: null
    # every query of ceemsnet_rdma_bytes_total picks one direction, except the first/last-seen
    # queries, which name each family once in their name regex
    rdma = [e for e in api.exprs if "ceemsnet_rdma_bytes_total" in e]
    assert len(rdma) == 2 * 2 + 2, rdma      # resets and growth per column; first and last seen
    picks = [e for e in rdma if "__name__" not in e]
    assert all(e.count("ceemsnet_rdma_bytes_total{direction=") == e.count("ceemsnet_rdma_bytes_total")
               for e in picks), picks
    assert sum('direction="egress"' in e for e in picks) == sum('direction="ingress"' in e for e in picks) == 2
    (named,) = {re.search(r'__name__=~"([^"]+)"', e).group(1) for e in rdma if "__name__" in e}
    assert named.split("|").count("ceemsnet_rdma_bytes_total") == 1


class RdmaExporter:
    """Serves one cgroup's RDMA bytes in both directions and the node's port bytes; a restart
    (start time changes, counters from zero) the test triggers."""

    def __init__(self):
        self.egress = self.ingress = 0
        self.start = time.time()

        def answer(path):
            lines = [f'ceemsnet_rdma_bytes_total{{cgroup="{STEP}",device="rxe0",port="1",direction="egress"}} '
                     f"{self.egress}",
                     f'ceemsnet_rdma_bytes_total{{cgroup="{STEP}",device="rxe0",port="1",direction="ingress"}} '
                     f"{self.ingress}",
                     'ceemsnet_rdma_port_bytes_total{device="mlx5_0",port="1",direction="egress"} 123456789',
                     f"ceemsnet_process_start_time_seconds {self.start}"]
            return 200, "text/plain; version=0.0.4", ("\n".join(lines) + "\n").encode()
        self.srv = Served(answer)
        self.target = self.srv.url.split("//")[1]


@pytest.mark.parametrize("engine", ENGINES)
def test_promql_rdma_columns_against_each_engine(engine, tmp_path):
    a, b = RdmaExporter(), RdmaExporter()   # a: only grows (fast path); b: restarts (exact path)
    prom = None

    def scraped(want):
        prom.wait_for('ceemsnet_rdma_bytes_total{direction="egress"}',
                      lambda v: {m["instance"]: x for m, x in v} == {a.target: want[0], b.target: want[1]})
        time.sleep(1.1)
        return time.time()

    def report(since, until):
        iso = [dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds")
               for t in (since, until)]
        rc, out, err = run("report", f"--prometheus={prom.url}", "--by=job", f"--since={iso[0]}",
                           f"--until={iso[1]}", "--format=json")
        assert rc == 0, err
        return [(r["job"], r["rdma_egress_bytes"], r["rdma_ingress_bytes"], r["net_egress_bytes"])
                for r in json.loads(out)]

    try:
        prom = start_engine(engine, tmp_path, [a.target, b.target])
        t0 = time.time() - 1
        a.egress, a.ingress, b.egress, b.ingress = 1000, 10, 5000, 50
        t1 = scraped((1000, 5000))
        b.start, b.egress, b.ingress = time.time(), 300, 3    # b restarted: its counters from zero
        a.egress, a.ingress = 1600, 16
        scraped((1600, 300))
        t2 = scraped((1600, 300))
        assert report(t0, t2) == [("77", 1600 + 5000 + 300, 16 + 50 + 3, None)]
        assert report(t1, t2) == [("77", 600 + 300, 6 + 3, None)]
    finally:
        if prom:
            prom.stop()
        a.srv.close()
        b.srv.close()


# ---- why not increase(): the engines differ, and neither gives a job's bytes -------------------------

class SeriesExporter:
    """Serves the net egress counter of the cgroups in `series` ({cgroup: value}, set by the test;
    none at first) and a fixed process start time."""

    def __init__(self):
        self.series, self.start = {}, time.time()

        def answer(path):
            lines = [f'ceemsnet_net_egress_bytes_total{{cgroup="{cg}",proto="udp",family="ipv4"}} {v}'
                     for cg, v in self.series.items()] + [f"ceemsnet_process_start_time_seconds {self.start}"]
            return 200, "text/plain; version=0.0.4", ("\n".join(lines) + "\n").encode()
        self.srv = Served(answer)
        self.target = self.srv.url.split("//")[1]


@pytest.mark.parametrize("engine", ENGINES)
def test_increase_is_not_a_jobs_bytes_on_either_engine(engine, tmp_path):
    """Two cgroups born inside the range (as a job's are), each counting 30 bytes more after
    their first scrape: one had counted 1 byte by then, one 100,000. report gives exactly 31 and
    100,030 on both engines. PromQL's increase() over the same range does not, each engine wrong
    its own way: Prometheus counts only the growth between the samples it has, extrapolated
    towards the window's ends (a non-integer between 30 and 60, less for the series whose first
    value is near 0); VictoriaMetrics (MetricsQL: no extrapolation) gives the growth between its
    samples and guesses from the size of a series' first value whether it started from 0: it
    counts the 1 byte (31) but not the 100,000 (30). docs/reports.md ("PromQL engines tested")
    says so; if this fails because an engine changed, update it there."""
    small, large = f"{STEP[:-len('77/step_0')]}78/step_0", STEP
    first, grow = {small: 1, large: 100_000}, 30
    e = SeriesExporter()
    prom = None

    def scraped(want):
        prom.wait_for("ceemsnet_net_egress_bytes_total", lambda v: {m["cgroup"]: x for m, x in v} == want)
        time.sleep(2.1)   # two more samples of each value

    try:
        prom = start_engine(engine, tmp_path, [e.target])
        prom.wait_for("count(ceemsnet_process_start_time_seconds)", 1)   # scraped before the series are born
        t0 = time.time() - 1
        e.series = dict(first)
        scraped(first)
        e.series = {cg: v + grow for cg, v in first.items()}
        scraped(e.series)
        until = time.time()
        iso = [dt.datetime.fromtimestamp(t, dt.timezone.utc).isoformat(timespec="milliseconds") for t in (t0, until)]
        rc, out, err = run("report", f"--prometheus={prom.url}", "--by=cgroup", f"--since={iso[0]}",
                           f"--until={iso[1]}", "--format=json")
        assert rc == 0, err
        assert {r["cgroup"]: r["net_egress_bytes"] for r in json.loads(out)} == {small: 31, large: 100_030}
        _, res = PrometheusAPI(prom.url).query(
            f"increase(ceemsnet_net_egress_bytes_total[{round((until - t0) * 1000)}ms])", until)
        inc = {r["metric"]["cgroup"]: float(r["value"][1]) for r in res}
        print(engine, "increase():", inc)
        if engine == "prometheus":
            assert all(grow < v < 2 * grow and v != round(v) for v in inc.values()) and inc[small] < inc[large], inc
        else:
            assert inc == {small: first[small] + grow, large: grow}, inc
    finally:
        if prom:
            prom.stop()
        e.srv.close()
