"""Durations and points in time, one grammar for every command.

A duration is a number of seconds, or a number with a unit: s, m, h, d, w
(90, 90s, 1.5m, 1h, 7d, 1w). `serve`'s intervals and retention,
`report --prometheus.*` and the ages `report --since/--until` take all read
it here, so a flag never accepts a unit its neighbour refuses.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import re

from ceemsnet import CeemsnetError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
EXAMPLES = "e.g. 90, 90s, 15m, 1h, 7d, 1w"
# a plain number as float() reads it (so old plain-seconds flags keep working), then an optional unit
_DURATION = re.compile(r"\s*((?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)\s*([smhdw]?)\s*")


def _seconds(text: str) -> tuple[float, bool] | None:
    """(seconds, had a unit) of a duration, or None if it is not one."""
    m = _DURATION.fullmatch(text)
    if not m:
        return None
    v = float(m.group(1)) * UNITS[m.group(2) or "s"]
    return (v, bool(m.group(2))) if math.isfinite(v) else None


def parse_duration(text: str, zero_ok: bool = False) -> float:
    """Seconds from "90", "90s", "15m", "1h", "7d", "1w"; positive (or zero with zero_ok)."""
    got = _seconds(text)
    if got is None or got[0] < 0 or (got[0] == 0 and not zero_ok):
        what = "duration" if zero_ok else "positive duration"
        raise CeemsnetError(f"not a {what}: {text!r} ({EXAMPLES})")
    return got[0]


def duration_arg(text: str) -> float:
    """argparse `type=`: a positive duration, else a usage error."""
    try:
        return parse_duration(text)
    except CeemsnetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def duration_or_zero_arg(text: str) -> float:
    """argparse `type=`: a duration that may be 0 (e.g. a retention: "not at all")."""
    try:
        return parse_duration(text, zero_ok=True)
    except CeemsnetError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_time(text: str | None, now: float, default: float) -> float:
    """A point in time as a Unix timestamp: an ISO 8601 date or date-time
    (local time unless it names a zone), or an age with a unit (30m, 24h, 7d:
    that long before `now`). Empty or None: `default`.

    A bare number is refused rather than read as seconds ago: on a --since
    it could as well be meant as a Unix time, and guessing wrong is silent.
    """
    if not text:
        return default
    got = _seconds(text)
    if got is not None and got[1]:
        return now - got[0]
    iso = text.strip()
    if iso[-1:] in ("Z", "z"):   # UTC: Python 3.11's fromisoformat reads a Z, 3.9's and 3.10's do not
        iso = iso[:-1] + "+00:00"
    try:
        t = dt.datetime.fromisoformat(iso)
    except ValueError:
        raise CeemsnetError(f"cannot read time {text!r}: use an ISO date (2026-11-22, 2026-11-22T08:00) "
                            "or an age (30m, 24h, 7d)") from None
    try:
        return t.timestamp()
    except (ValueError, OverflowError, OSError):  # local time of 0001-01-01 or 9999-12-31: "year 0 is out of range"
        raise CeemsnetError(f"time {text!r} is out of range in this time zone") from None
