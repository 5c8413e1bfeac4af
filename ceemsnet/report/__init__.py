"""`ceemsnet report`: per-job, per-cgroup or per-user totals.

Two sources give the same rows (rows.py): this node's SQLite store
(local.py) or the Prometheus server that scrapes every node
(prometheus.py). This module only picks the source and prints; the
imports flow one way, from here to the sources to rows, store, units and
timeparse, never back.
"""

from __future__ import annotations

import time

from .. import CeemsnetError
from ..store import DEFAULT_STORE
from ..timeparse import parse_time
from . import local
from .rows import format_rows

__all__ = ["DEFAULT_STORE", "run"]


def run(args) -> int:
    """The report subcommand, from its parsed flags."""
    now = time.time()
    if args.prometheus is None:
        since = parse_time(args.since, now, 0.0)
        until = parse_time(args.until, now, now + 1e9)
        rows = local.query(args.storage_path or DEFAULT_STORE, args.by, since, until, args.job)
    else:
        # imported here: the HTTP/TLS stack is not needed for a local report
        from . import prometheus
        if args.storage_path is not None:
            raise CeemsnetError("give --storage.path (this node's store) or --prometheus (the cluster), not both")
        until = parse_time(args.until, now, now)
        since = parse_time(args.since, now, until - 86400)
        api = prometheus.PrometheusAPI(args.prometheus, timeout=args.prom_timeout,
                                       bearer_token_file=args.prom_token, ca_file=args.prom_ca)
        progress = prometheus.stderr_progress()
        try:
            rows = prometheus.query(api, args.by, since, until, args.job, selector=args.prom_selector,
                                    lookback=args.prom_lookback, chunk=args.prom_chunk, progress=progress)
        finally:
            if progress:
                progress("")
    print(format_rows(rows, args.by, args.format))
    return 0
