"""`ceemsnet report --prometheus=URL`: the per-job report for a whole cluster.

Every node's exporter is scraped by one Prometheus; this asks it, over its
HTTP API, how much each counter grew inside (since, until], per cgroup, and
groups cgroups into jobs (or users) with the same path parsers the exporter
uses. Plain HTTP through the standard library: the API is one endpoint and
JSON, and the maintained client (prometheus-api-client) would bring pandas,
numpy and matplotlib onto every node that runs a report.

Why not `increase()`: it extrapolates to the ends of the range, so a job's
bytes come back as a non-integer estimate. The figures here are exact
sample differences instead:

- A series' growth is its last sample in the range minus its last sample
  at or before `since` (none: the series was born in the range, from 0).
  Prometheus computes this, summed per cgroup, for every series whose
  exporter neither restarted nor went backwards in the window.
- Counter resets: the exporter's BPF counters restart at zero with it. A
  restart is seen by `ceemsnet_process_start_time_seconds` changing, and a
  reset by a value going down (`resets()`); either sends that exporter's
  (instance's) series to the exact path: their raw samples are fetched and
  summed step by step, a step across a restart or reset counting the new
  value from zero. The start-time check catches a restart whose new run
  already counted more than the old one had, which `resets()` alone misses.
- Pinned counters continue across an exporter restart: the exporter's
  `ceemsnet_counters_info{subsystem,generation,aggregate}` says so (the same
  generation), and a step across such a restart counts only the growth. A
  new generation (counters from zero) counts the new value from zero; an
  exporter without that metric (older ceemsnet) is taken as restarting at zero.
- A change of fold (--unit, --cgroup.aggregate) over continuing counters
  renames the series (a task's counts move to its step's series): each new
  series then counts from the part of its first value the old series held
  (workloads.refold_baselines), so nothing is counted twice.
- A series whose `job`/`step` labels change (SLURM's name for an array task
  arrives after its first scrapes) is one counter with the one before.
- Long ranges are asked for in chunks (--prometheus.chunk), which add up
  exactly, so no query loads more samples than the server allows and a
  restart sends only its own chunk of that exporter down the exact path.
"""

from __future__ import annotations

import base64
import json
import math
import re
import socket
import ssl
import sys
import time as _time
import urllib.error
import urllib.parse
import urllib.request

from ceemsnet import CeemsnetError
from ceemsnet.serving.store import COLUMN_LABELS, COLUMNS, user_of
from ceemsnet.attribution.workloads import refold_baselines, slurm_job
from ceemsnet.report.rows import iso, make_row

METRICS = {col: name + "_total" for col, name in COLUMNS.items()}
# the matchers that pick a column's series out of its family (rdma: one family, a direction label)
SERIES = {col: ", ".join(f'{k}="{v}"' for k, v in COLUMN_LABELS.get(col, ())) for col in COLUMNS}
START_TIME = "ceemsnet_process_start_time_seconds"
COUNTERS_INFO = "ceemsnet_counters_info"
# labels the exporter derives from a series' cgroup: SLURM's names (which arrive later than the
# first scrapes) and the unit's label, under either scrape config (honor_labels or exported_*)
DERIVED = ("job", "step", "exported_job", "exported_step", "unit", "pod")
_NOT_KEY = {"__name__", "instance", "cgroup", *DERIVED}
_JOB_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


class PrometheusAPI:
    """The instant-query endpoint of a Prometheus server; every failure is a CeemsnetError."""

    def __init__(self, url: str, timeout: float = 60.0, bearer_token_file: str | None = None,
                 ca_file: str | None = None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CeemsnetError(f"--prometheus {url!r}: give the server's http:// or https:// URL, "
                                "e.g. http://prometheus:9090")
        self.headers = {"Accept": "application/json", "User-Agent": "ceemsnet-report"}
        if parts.username is not None:
            cred = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        if bearer_token_file:
            try:
                with open(bearer_token_file) as f:
                    self.headers["Authorization"] = "Bearer " + f.read().strip()
            except OSError as e:
                raise CeemsnetError(f"cannot read --prometheus.bearer-token-file {bearer_token_file}: "
                                    f"{e.strerror}") from None
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if parts.port:
            netloc += f":{parts.port}"
        self.base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout
        try:
            self.context = ssl.create_default_context(cafile=ca_file) if parts.scheme == "https" else None
        except (OSError, ssl.SSLError) as e:
            raise CeemsnetError(f"cannot use --prometheus.ca-file {ca_file}: {e}") from None
        self.queries = 0

    def query(self, expr: str, at: float) -> tuple[str, list]:
        """(resultType, result) of an instant query evaluated at `at`."""
        self.queries += 1
        # nocache=1: VictoriaMetrics otherwise moves an instant query's time back to now minus its
        # -search.latencyOffset (30 s by default) when it is closer to now than that (and may answer
        # from its response cache); Prometheus ignores the parameter
        body = urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}", "nocache": "1"}).encode()
        req = urllib.request.Request(self.base + "/api/v1/query", data=body, headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                msg = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                raise CeemsnetError(f"{self.base} answered HTTP {e.code} to /api/v1/query: is it a Prometheus "
                                    "server (with the path prefix, if it has one)?") from None
            hint = " (narrow --since/--until or --job, or raise the server's --query.max-samples)" \
                if "too many samples" in msg else ""
            raise CeemsnetError(f"Prometheus at {self.base} refused the query: {msg}{hint}") from None
        except urllib.error.URLError as e:
            reason = e.reason.strerror if isinstance(e.reason, OSError) and e.reason.strerror else e.reason
            raise CeemsnetError(f"cannot reach Prometheus at {self.base}: {reason}") from None
        except (TimeoutError, socket.timeout):
            raise CeemsnetError(f"Prometheus at {self.base} did not answer within {self.timeout:g} s "
                                "(--prometheus.timeout)") from None
        except OSError as e:
            raise CeemsnetError(f"cannot reach Prometheus at {self.base}: {e.strerror or e}") from None
        try:
            doc = json.loads(raw)
            if doc["status"] != "success":
                raise CeemsnetError(f"Prometheus at {self.base} refused the query: {doc.get('error')}")
            return doc["data"]["resultType"], doc["data"]["result"]
        except (ValueError, KeyError, TypeError):
            raise CeemsnetError(f"{self.base} did not answer /api/v1/query with Prometheus JSON") from None


def _matchers(*groups) -> str:
    return ", ".join(m for g in groups for m in g if m)


def _sel(metric: str, matchers: str) -> str:
    return f"{metric}{{{matchers}}}" if matchers else metric


def _dur(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _label_regex(values) -> str:
    """A PromQL label regex matching exactly these values (in a double-quoted string)."""
    alts = "|".join(re.escape(v) for v in sorted(values))
    return f"^(?:{alts})$".replace("\\", "\\\\").replace('"', '\\"')


def job_matcher(job: str) -> str:
    """A cheap server-side filter for one job's cgroups; the exact parse happens here."""
    if not _JOB_ID.match(job):
        raise CeemsnetError(f"--job {job!r}: a SLURM job is a number (or a 26.05 SLUID), e.g. 4242")
    esc = re.escape(job).replace("\\", "\\\\")
    return f'cgroup=~".*/(?:job_)?{esc}(?:/.*)?"'


def exact_increase(samples, since: float, starts=None, states=None, baselines=None) -> float | None:
    """Growth of one counter series inside (since, until] from its raw samples.

    samples: [(t, v)] in time order, starting up to the lookback before
    `since`; starts: the exporter's [(t, start_time)] samples, or None;
    states: its [(t, (generation, fold))] samples for this counter's
    subsystem (ceemsnet_counters_info), or None; baselines: {t: value} where
    a fold change made this series count from a baseline (fold_baselines).
    With states, a step to another generation is a counter reset (the new
    value counted from zero), a step in one generation counts the growth
    (across an exporter restart too: pinned counters continue), unless it
    goes down (a reset). Without them, a step that goes down or crosses a
    change of start time is a reset. None if no sample is in range.
    """
    starts, states, baselines = starts or [], states or [], baselines or {}
    i, run = 0, None  # starts[:i] are at or before the current sample; run: the latest start time among them
    j, st = 0, None   # the same for states
    prev_v = prev_run = prev_st = None
    total, seen = 0.0, False
    for t, v in samples:
        while i < len(starts) and starts[i][0] <= t:
            run = starts[i][1]
            i += 1
        while j < len(states) and states[j][0] <= t:
            st = states[j][1]
            j += 1
        if t > since:
            seen = True
            if prev_v is None:
                total += v - baselines.get(t, 0.0)
            elif st is not None and prev_st is not None:
                if st[0] != prev_st[0] or v < prev_v:
                    total += v
                elif st[1] != prev_st[1]:
                    total += v - baselines.get(t, 0.0)
                else:
                    total += v - prev_v
            elif v < prev_v or run != prev_run:
                total += v
            else:
                total += v - prev_v
        prev_v, prev_run, prev_st = v, run, st
    return total if seen else None


def samples_of(result) -> list[tuple[float, float]]:
    """A raw range result's [(t, v)], without staleness markers: VictoriaMetrics returns the marker
    a scrape writes when a series goes (its exporter stopped, the series left /metrics) as a NaN
    sample, where Prometheus leaves it out. The series' real samples are the counter."""
    return [(t, v) for t, v in ((float(t), float(v)) for t, v in result["values"]) if not math.isnan(v)]


def merge_series(results) -> dict[tuple, list]:
    """Raw range results -> {(instance, cgroup, other labels): [(t, v)] in time order}: series that
    differ only in labels derived from the cgroup (DERIVED: SLURM's job and step names, which
    may arrive after a job's first scrapes) are one counter."""
    out: dict[tuple, dict] = {}
    for r in results:
        m = r["metric"]
        key = (m.get("instance", ""), m.get("cgroup", ""),
               tuple(sorted((k, v) for k, v in m.items() if k not in _NOT_KEY)))
        acc = out.setdefault(key, {})
        for t, v in samples_of(r):
            acc[t] = max(v, acc.get(t, v))
    return {k: sorted(v.items()) for k, v in out.items()}


def fold_baselines(merged: dict[tuple, list], states: dict[tuple, list], subsystem: str) -> dict[tuple, dict]:
    """{series key: {t: baseline}} for the series that a change of fold (same generation, another
    `aggregate`) started or renamed at t: what of their first value the old fold's series held
    at the scrape before (workloads.refold_baselines), per instance and other labels."""
    by_inst: dict[str, list] = {}
    for key in merged:
        by_inst.setdefault(key[0], []).append(key)
    values: dict[tuple, dict] = {}
    out: dict[tuple, dict] = {}
    for (inst, sub), timeline in states.items():
        if sub != subsystem or inst not in by_inst:
            continue
        for (ta, (ga, fa)), (tc, (gc, fc)) in zip(timeline, timeline[1:]):
            if ga != gc or fa == fc:
                continue
            old: dict[tuple, dict] = {}
            new: dict[tuple, dict] = {}
            for key in by_inst[inst]:
                vals = values.get(key)
                if vals is None:
                    vals = values[key] = dict(merged[key])
                if ta in vals:
                    old.setdefault(key[2], {})[key[1]] = vals[ta]
                if tc in vals:
                    new.setdefault(key[2], {})[key[1]] = vals[tc]
            for rest, first in new.items():
                for cg, b in refold_baselines(old.get(rest, {}), first, fa, fc).items():
                    out.setdefault((inst, cg, rest), {})[tc] = b
    return out


def _states(results) -> dict[tuple, list]:
    """ceemsnet_counters_info range results -> {(instance, subsystem): [(t, (generation, fold))]}."""
    out: dict[tuple, list] = {}
    for r in results:
        m = r["metric"]
        st = (m.get("generation", ""), m.get("aggregate", ""))
        out.setdefault((m.get("instance", ""), m.get("subsystem", "")), []).extend(
            (t, st) for t, _ in samples_of(r))
    for v in out.values():
        v.sort(key=lambda x: x[0])
    return out


def _key_of(by: str):
    return {"job": slurm_job, "user": user_of, "cgroup": lambda p: p if p.startswith("/") else None}[by]


def _chunk(api, since, until, common, cg, lookback, tick, per_cg, seen, by_instance=False) -> None:
    """Add what every cgroup's counters grew by inside (since, until] to per_cg,
    and widen seen[cgroup] = [first, last] by when its series were there.
    by_instance: per_cg is keyed by (instance, cgroup), each exporter's counts apart."""
    rng, window = _dur(until - since), _dur(until - since + lookback)

    # 1. exporters whose counters restarted or went backwards in the window
    tick("restarts")
    raw_inst = {r["metric"].get("instance", "")
                for r in api.query(f"changes({_sel(START_TIME, _matchers(common))}[{window}]) > 0", until)[1]}
    derived = ", ".join(DERIVED)
    for col, m in METRICS.items():
        tick(f"resets of {_sel(m, SERIES[col])}")
        s = _sel(m, _matchers([cg, SERIES[col]]))
        # and series renamed by a label derived from their cgroup (SLURM's job name arriving)
        raw_inst |= {r["metric"].get("instance", "") for r in api.query(
            f"count by (instance) (resets({s}[{window}]) > 0) or count by (instance) "
            f"(count without ({derived}) (last_over_time({s}[{window}])) > 1)", until)[1]}
    inst_in = inst_out = None
    starts: dict[str, list] = {}
    states: dict[tuple, list] = {}
    tick("start times")
    if raw_inst:
        inst_re = _label_regex(raw_inst)
        inst_in, inst_out = f'instance=~"{inst_re}"', f'instance!~"{inst_re}"'
        _, res = api.query(_sel(START_TIME, _matchers(common, [inst_in])) + f"[{window}]", until)
        for r in res:
            starts[r["metric"].get("instance", "")] = samples_of(r)
    tick("counter generations")
    if raw_inst:
        states = _states(api.query(_sel(COUNTERS_INFO, _matchers(common, [inst_in])) + f"[{window}]", until)[1])

    # 2. per cgroup and column: the fast path for regular series, the exact path for the rest
    def add(cgroup, col, v):
        if math.isnan(v):   # no answer a server should give (see samples_of); never a traceback
            return
        row = per_cg.setdefault(cgroup, {})
        row[col] = row.get(col, 0.0) + v

    by = "instance, cgroup" if by_instance else "cgroup"
    for col, m in METRICS.items():
        tick(f"growth of {_sel(m, SERIES[col])}")
        s = _sel(m, _matchers([cg, SERIES[col]], [inst_out]))
        expr = (f"sum by ({by}) (last_over_time({s}[{rng}]) - "
                f"(last_over_time({s}[{_dur(lookback)}] offset {rng}) or last_over_time({s}[{rng}]) * 0))")
        for r in api.query(expr, until)[1]:
            key = r["metric"].get("cgroup", "")
            add((r["metric"].get("instance", ""), key) if by_instance else key, col, max(0.0, float(r["value"][1])))
        if raw_inst:
            s = _sel(m, _matchers([cg, SERIES[col]], [inst_in]))
            merged = merge_series(api.query(f"{s}[{window}]", until)[1])
            sub = col.split("_", 1)[0]
            base = fold_baselines(merged, states, sub)
            for key, samples in merged.items():
                inc = exact_increase(samples, since, starts.get(key[0]), states.get((key[0], sub)), base.get(key))
                if inc is not None:
                    add(key[:2] if by_instance else key[1], col, inc)

    # 3. first and last seen, to within 1/250 of the chunk
    names = "|".join(sorted(set(METRICS.values())))
    grp = "group by (cgroup) ({" + _matchers([f'__name__=~"{names}"'], [cg]) + "})"
    sub = f"[{rng}:{_dur(max(1.0, (until - since) / 250))}]"
    for fn, i, pick in (("min_over_time", 0, min), ("max_over_time", 1, max)):
        tick("first seen" if i == 0 else "last seen")
        for r in api.query(f"{fn}(timestamp({grp}){sub})", until)[1]:
            t = min(max(float(r["value"][1]), since), until)
            cur = seen.setdefault(r["metric"].get("cgroup", ""), [None, None])
            cur[i] = t if cur[i] is None else pick(cur[i], t)


def query(api: PrometheusAPI, by: str, since: float, until: float, job: str | None = None,
          selector: str | None = None, lookback: float = 3600.0, chunk: float = 6 * 3600.0,
          progress=None) -> list[dict]:
    """The same rows as local.query, from Prometheus, for the range (since, until].

    The range is asked for in chunks of at most `chunk` seconds, so that no
    query loads more samples than the server allows (--query.max-samples)
    and an exporter restart sends only its own chunk down the exact path.
    Chunks add up exactly: each starts from the last sample of the one before.
    """
    if since >= until:
        raise CeemsnetError("empty time range: --since is not before --until")
    since, until = round(since, 3), round(until, 3)
    common = [selector.strip().strip("{}")] if selector and selector.strip().strip("{}") else []
    cg = _matchers(common, [job_matcher(job)] if job else [])
    bounds = [since]
    while bounds[-1] < until:
        bounds.append(min(until, round(bounds[-1] + chunk, 3)))
    steps = (len(bounds) - 1) * (5 + 2 * len(METRICS))
    done = 0

    def tick(what):
        nonlocal done
        done += 1
        if progress:
            progress(f"querying Prometheus: {what} ({done}/{steps} queries)")

    per_cg: dict[str, dict[str, float]] = {}
    seen: dict[str, list] = {}
    for a, b in zip(bounds, bounds[1:]):
        _chunk(api, a, b, common, cg, lookback, tick, per_cg, seen)

    key_of = _key_of(by)
    groups: dict[str, dict] = {}
    for path, vals in per_cg.items():
        k = key_of(path)
        if k is None or (job is not None and slurm_job(path) != job):
            continue
        g = groups.setdefault(k, {"cols": {}, "first": until, "last": since})
        for c, v in vals.items():
            g["cols"][c] = g["cols"].get(c, 0.0) + v
        f, last = seen.get(path, (None, None))
        g["first"] = min(g["first"], since if f is None else f)
        g["last"] = max(g["last"], until if last is None else last)
    if job is not None and not groups:
        raise CeemsnetError(f"no job {job!r} in Prometheus at {api.base} between "
                            f"{iso(since)} and {iso(until)}")

    return [make_row(by, k, {c: round(v) for c, v in g["cols"].items()}, g["first"], g["last"])
            for k, g in sorted(groups.items())]


def job_split(api: PrometheusAPI, job: str, since: float, until: float, selector: str | None = None,
              lookback: float = 3600.0, chunk: float = 6 * 3600.0) -> dict[tuple, dict[str, float]]:
    """{(instance, cgroup): {column: growth inside (since, until]}} of one job's cgroups (the same
    arithmetic as query(); `ceemsnet job` splits them per step and per node)."""
    if since >= until:
        raise CeemsnetError("empty time range: --since is not before --until")
    since, until = round(since, 3), round(until, 3)
    common = [selector.strip().strip("{}")] if selector and selector.strip().strip("{}") else []
    cg = _matchers(common, [job_matcher(job)])
    bounds = [since]
    while bounds[-1] < until:
        bounds.append(min(until, round(bounds[-1] + chunk, 3)))
    per: dict[tuple, dict[str, float]] = {}
    for a, b in zip(bounds, bounds[1:]):
        _chunk(api, a, b, common, cg, lookback, lambda what: None, per, {}, by_instance=True)
    return {k: v for k, v in per.items() if slurm_job(k[1]) == job}


def job_by_instance(api: PrometheusAPI, job: str, since: float, until: float, selector: str | None = None,
                    lookback: float = 3600.0, chunk: float = 6 * 3600.0) -> dict[str, dict[str, float]]:
    """{instance: {column: growth inside (since, until]}} of one job's cgroups, each exporter apart
    (the same arithmetic as query(); `ceemsnet record`)."""
    out: dict[str, dict[str, float]] = {}
    for (inst, path), vals in job_split(api, job, since, until, selector, lookback, chunk).items():
        row = out.setdefault(inst, {})
        for c, v in vals.items():
            row[c] = row.get(c, 0.0) + v
    return out


def job_by_label(api: PrometheusAPI, job: str, since: float, until: float, metric: str, label: str,
                 selector: str | None = None, lookback: float = 3600.0) -> dict[str, float]:
    """{label value: growth inside (since, until]} of one metric family over one job's series, e.g.
    its file writes by `fstype` (`ceemsnet job`'s notes). The fast path of query() alone: a counter
    reset inside the range (an exporter restarting without pinned counters) makes it low."""
    common = [selector.strip().strip("{}")] if selector and selector.strip().strip("{}") else []
    s = _sel(metric, _matchers(common, [job_matcher(job)]))
    rng = _dur(max(1.0, until - since))
    expr = (f"sum by (cgroup, {label}) (last_over_time({s}[{rng}]) - "
            f"(last_over_time({s}[{_dur(lookback)}] offset {rng}) or last_over_time({s}[{rng}]) * 0))")
    out: dict[str, float] = {}
    for r in api.query(expr, until)[1]:
        if slurm_job(r["metric"].get("cgroup", "")) != job:
            continue
        k = r["metric"].get(label, "")
        out[k] = out.get(k, 0.0) + max(0.0, float(r["value"][1]))
    return out


def label_values(api: PrometheusAPI, metric: str, label: str, since: float, until: float,
                 selector: str | None = None) -> set[str]:
    """The values of `label` any series of `metric` had in (since, until], any cgroup's."""
    common = [selector.strip().strip("{}")] if selector and selector.strip().strip("{}") else []
    expr = f"group by ({label}) (last_over_time({_sel(metric, _matchers(common))}[{_dur(max(1.0, until - since))}]))"
    return {r["metric"].get(label, "") for r in api.query(expr, until)[1]}


# the last seconds before now that job_rates() reads as raw samples: a subquery at the top of an
# instant query is a range query to VictoriaMetrics, which replaces its points of the last
# -search.latencyOffset (30 s by default) with the value before them, `nocache` or not
RATES_RAW_TAIL = 120.0


def _last_per_step(samples, ends, step):
    """{end: the last value in (end - step, end]} of one series' [(t, v)], for each bucket end."""
    out, i = {}, 0
    for end in ends:
        last = None
        while i < len(samples) and samples[i][0] <= end:
            if samples[i][0] > end - step:
                last = samples[i][1]
            i += 1
        if last is not None:
            out[end] = last
    return out


def job_rates(api: PrometheusAPI, job: str, column: str, since: float, until: float, points: int = 60,
              selector: str | None = None, min_step: float = 30.0, now: float | None = None
              ) -> list[tuple[float, float]]:
    """[(t, bytes or calls per second)] of one column over one job's series: what its counters grew
    by in each of `points` steps across (since, until], divided by the step. Each (instance, cgroup)'s
    last value per step: asked as a subquery, except for the steps of the last RATES_RAW_TAIL
    seconds before `now` (default: the clock), read as raw samples and stepped here alike. A series
    counts from zero at its first value (rate() would miss what a step moved before its first
    scrape); a value going down is a reset (the new value counted), and so is a change of the
    exporter's counter generation (ceemsnet_counters_info: an exporter restarted without pins, its
    counters from zero, even where a series grew past its old value). The step is at least
    min_step: below the scrape interval, a step with no new sample would show as idle. For a
    picture only; totals come from job_split()."""
    common = [selector.strip().strip("{}")] if selector and selector.strip().strip("{}") else []
    now = _time.time() if now is None else now
    step_ms = max(1000, round(1000 * max(min_step, (until - since) / max(1, points))))
    step = step_ms / 1000
    s = _sel(METRICS[column], _matchers([SERIES[column]], common, [job_matcher(job)]))
    info = _sel(COUNTERS_INFO, _matchers(common, [f'subsystem="{column.split("_", 1)[0]}"']))
    # the steps end at multiples of the step (where Prometheus puts a subquery's points); those after
    # `split` come from raw samples
    split_ms = min(round(until * 1000), round((now - RATES_RAW_TAIL) * 1000)) // step_ms * step_ms
    first_ms = (round(since * 1000) // step_ms) * step_ms
    values: dict[tuple, dict[float, float]] = {}   # (instance, cgroup) -> {t: last value}
    gens: dict[str, dict[float, str]] = {}         # instance -> {t: counter generation}
    if split_ms > first_ms:
        window = f"[{split_ms - first_ms}ms:{step_ms}ms]"
        inner = (f"sum by (instance, cgroup) (max without ({', '.join(DERIVED)}) "
                 f"(last_over_time({s}[{step_ms}ms])))")
        for r in api.query(f"({inner}){window}", split_ms / 1000)[1]:
            key = (r["metric"].get("instance", ""), r["metric"].get("cgroup", ""))
            values.setdefault(key, {}).update(samples_of(r))
        for r in api.query(f"(max by (instance, generation) (last_over_time({info}[{step_ms}ms]))){window}",
                           split_ms / 1000)[1]:
            at = gens.setdefault(r["metric"].get("instance", ""), {})
            for t, _ in samples_of(r):
                at[t] = r["metric"].get("generation", "")
    tail_from = max(split_ms, first_ms)
    if round(until * 1000) > tail_from:
        ends = [min(until, t / 1000) for t in range(tail_from + step_ms, round(until * 1000) + step_ms, step_ms)]
        tail = f"[{round(until * 1000) - tail_from}ms]"
        for (inst, cgroup, _), samples in merge_series(api.query(f"{s}{tail}", until)[1]).items():
            row = values.setdefault((inst, cgroup), {})
            for t, v in _last_per_step(samples, ends, step).items():
                row[t] = row.get(t, 0.0) + v
        for r in api.query(f"{info}{tail}", until)[1]:
            at = gens.setdefault(r["metric"].get("instance", ""), {})
            for t in _last_per_step(samples_of(r), ends, step):
                at[t] = r["metric"].get("generation", "")
    grown: dict[float, float] = {}
    for (inst, cgroup), series in values.items():
        if slurm_job(cgroup) != job:
            continue
        gen_at = gens.get(inst, {})
        prev = prev_gen = None
        for t, v in sorted(series.items()):
            gen = gen_at.get(t)
            if prev is None:
                inc = v      # a job's series are born with it: the first value counts from zero
            elif v < prev or (gen is not None and prev_gen is not None and gen != prev_gen):
                inc = v      # a reset: counted from zero
            else:
                inc = v - prev
            grown[t] = grown.get(t, 0.0) + inc
            prev, prev_gen = v, gen if gen is not None else prev_gen
    return [(t, grown[t] / step) for t in sorted(grown)]


def job_instances(api: PrometheusAPI, job: str, at: float, window: float, selector: str | None = None,
                  after: float | None = None) -> set[str]:
    """The exporters (instance labels) with a sample of one job's series in (at - window, at],
    or, with `after`, in (after, at]: those that have scraped since then."""
    common = [selector.strip().strip("{}")] if selector and selector.strip().strip("{}") else []
    span = window if after is None else at - after
    if span <= 0:
        return set()
    # one metric name per count_over_time(): the function drops the name, and series of two
    # families with the same labels would collide ("vector cannot contain metrics with the same labelset")
    expr = " or ".join(f"group by (instance) (count_over_time({_sel(m, _matchers([SERIES[c]], common, [job_matcher(job)]))}"
                       f"[{_dur(span)}]))" for c, m in METRICS.items())
    _, res = api.query(expr, at)
    return {r["metric"].get("instance", "") for r in res}


def stderr_progress():
    """Progress lines on a terminal, nothing when stderr is a file or pipe."""
    if not sys.stderr.isatty():
        return None

    def show(msg):
        sys.stderr.write("\r\033[K" + msg)
        sys.stderr.flush()
    return show
