"""A finished job's final totals from Prometheus, once every node's have been scraped
(`ceemsnet record`).

"Final" means: a sample of the job's series that Prometheus took more than
`settle` seconds after the job's End in sacct. The exporter keeps a job's
series, with their last counts, for --cgroup.retention after its cgroups go
(docs/reports.md), so a scrape after the end holds everything the job's
processes counted on that node; `settle` covers SLURM ending the steps and
the extern step just after it records End (End is whole seconds).

Which exporters must have scraped: the job's nodes (sacct's NodeList), each
matched to the exporters whose `instance` label's host is that node's name
(`node1:9977`, `node1.cluster:9977`); where no exporter is named after any
of the job's nodes (instances by address), every exporter that ever had a
series of the job. The wait is bounded; what is still missing then is
returned, and the record says it is incomplete.
"""

from __future__ import annotations

import time

from ceemsnet.report import prometheus

POLL = 2.0  # seconds between looks at Prometheus while waiting


def node_of(instance: str) -> str:
    """The host an instance label names, without port and domain, lower case."""
    host = instance
    if host.startswith("["):                 # [fd00::1]:9977
        host = host[1:host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":")[0]
    if not host.replace(".", "").isdigit() and ":" not in host:  # a name, not an address
        host = host.split(".")[0]
    return host.lower()


def missing(nodes: list[str], seen: set[str], fresh: set[str]) -> tuple[list[str], bool]:
    """(what has not been scraped since the end: node names, or instances; whether the check
    went by node names) (pure)."""
    wanted = {n.lower(): n for n in nodes}
    by_node = any(node_of(i) in wanted for i in seen | fresh)
    if by_node:
        done = {node_of(i) for i in fresh}
        out = [wanted[n] for n in sorted(wanted) if n not in done]
        # an exporter not named after one of the job's nodes but with the job's series: it too
        out += sorted(i for i in seen - fresh if node_of(i) not in wanted)
        return out, True
    if not seen and nodes:
        return [wanted[n] for n in sorted(wanted)], True
    return sorted(seen - fresh), False


def wait_final(api, raw: str, nodes: list[str], start: float, end: float, deadline: float, settle: float,
               selector: str | None = None, lookback: float = 3600.0, clock=time.time, sleep=time.sleep):
    """Poll until every node's exporter has scraped the job after end + settle, or the deadline.
    Returns (missing, by_node, seen instances)."""
    while True:
        now = clock()
        seen = prometheus.job_instances(api, raw, now, now - start + lookback, selector)
        fresh = prometheus.job_instances(api, raw, now, 0, selector, after=end + settle)
        miss, by_node = missing(nodes, seen, fresh)
        if not miss or now >= deadline:
            return miss, by_node, seen | fresh
        sleep(max(0.0, min(POLL, deadline - now)))


def totals(api, raw: str, start: float, until: float, selector: str | None = None, lookback: float = 3600.0,
           chunk: float = 6 * 3600.0) -> dict[str, dict[str, float]]:
    """{instance: {column: total}}: what each exporter counted for the job, from before its start."""
    return prometheus.job_by_instance(api, raw, start - 60.0, until, selector, lookback, chunk)
