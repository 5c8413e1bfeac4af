"""The benchmarks' shared output protocol (`--rows`) and the table `make bench` prints.

With --rows a benchmark prints one JSON object per figure, one a line:
    {"what": str, "value": float, "unit": str, "baseline": float, "baseline_what": str,
     "ratio": float, "target": str, "meets": bool}
`baseline` is measured in the same run (an empty program of the same hook
kind, the code before a change, a bare interpreter, ...); `ratio` is
value / baseline; `target` says what the figure should be (issue 16) and
`meets` whether it is. A figure with no target says target "-" and meets true.
Other lines a benchmark prints are human notes; bench/table.py ignores them.
"""

from __future__ import annotations

import json
import sys


def row(what: str, value: float, unit: str, baseline: float, baseline_what: str, target: str = "-",
        meets: bool = True) -> dict:
    r = {"what": what, "value": round(float(value), 4), "unit": unit, "baseline": round(float(baseline), 4),
         "baseline_what": baseline_what, "ratio": round(value / baseline, 4) if baseline else 0.0,
         "target": target, "meets": bool(meets)}
    return r


def emit(r: dict, file=sys.stdout) -> None:
    print(json.dumps(r), file=file, flush=True)


def add_rows_flag(ap) -> None:
    ap.add_argument("--rows", action="store_true",
                    help="print the figures as JSON rows (bench/rows.py), for `make bench`'s table")
