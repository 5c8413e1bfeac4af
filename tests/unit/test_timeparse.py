"""The one duration and time grammar `serve` and `report` share."""

import argparse
import datetime as dt

import pytest

from ceemsnet import CeemsnetError
from ceemsnet.common.timeparse import duration_arg, duration_or_zero_arg, parse_duration, parse_time


@pytest.mark.parametrize("text,seconds", [
    ("90", 90), ("90s", 90), ("15m", 900), ("1h", 3600), ("7d", 7 * 86400), ("1w", 7 * 86400),
    ("1.5h", 5400), ("24 h", 86400), (" 30m ", 1800),
    # plain numbers as the old float flags read them keep working
    ("0.5", 0.5), (".5", 0.5), ("2.", 2), ("1e3", 1000), ("120.0", 120),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert duration_arg(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "0s", "-5", "-1m", "1x", "1hh", "h", "1 h 2", "inf", "nan",
                                  "1e999", "1_000", "+5", "5 minutes"])
def test_bad_durations_are_one_line_errors(text):
    with pytest.raises(CeemsnetError) as e:
        parse_duration(text)
    msg = str(e.value)
    assert "\n" not in msg and repr(text) in msg and "e.g. 90, 90s, 15m, 1h, 7d, 1w" in msg
    assert msg.startswith("not a positive duration")  # what `report --prometheus.lookback soon` has always said
    with pytest.raises(argparse.ArgumentTypeError, match="not a positive duration"):
        duration_arg(text)


def test_zero_where_allowed():
    assert parse_duration("0", zero_ok=True) == 0 == duration_or_zero_arg("0s")
    with pytest.raises(argparse.ArgumentTypeError, match=r"not a duration: '-1'"):
        duration_or_zero_arg("-1")


def test_duration_arg_in_a_parser():
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument("--every", type=duration_arg, default=30.0)
    assert p.parse_args(["--every=15m"]).every == 900
    assert p.parse_args(["--every", "30"]).every == 30
    assert p.parse_args([]).every == 30
    with pytest.raises(argparse.ArgumentError, match="not a positive duration: 'soon'"):
        p.parse_args(["--every=soon"])


NOW = 1_800_000_000.0


@pytest.mark.parametrize("text,want", [
    ("24h", NOW - 86400), ("30m", NOW - 1800), ("7d", NOW - 7 * 86400), ("1w", NOW - 7 * 86400),
    ("90s", NOW - 90), ("0s", NOW), ("1.5h", NOW - 5400), ("24 h", NOW - 86400),
    ("2026-11-22T00:00:00+00:00", 1795305600), ("2026-11-22T08:00Z", 1795305600 + 8 * 3600),
    ("2026-11-22 00:00:00+01:00", 1795305600 - 3600),
])
def test_times(text, want):
    assert parse_time(text, NOW, 0) == want


def test_local_times_and_defaults():
    assert parse_time("2026-11-22", NOW, 0) == dt.datetime(2026, 11, 22).timestamp()  # local midnight
    assert parse_time("2026-11-22T08:00", NOW, 0) == dt.datetime(2026, 11, 22, 8).timestamp()
    assert parse_time(None, NOW, 7) == 7
    assert parse_time("", NOW, 7) == 7


@pytest.mark.parametrize("text", ["yesterday", "90", "1x", "-1h", "2026-13-01", "24 hours"])
def test_bad_times(text):
    # a bare number is not an age: it might be meant as a Unix time, and a wrong guess is silent
    with pytest.raises(CeemsnetError) as e:
        parse_time(text, NOW, 0)
    msg = str(e.value)
    assert "\n" not in msg and repr(text) in msg and "ISO date" in msg and "24h" in msg
