"""Hypothesis profiles for the fuzz tests (tests/unit/test_fuzz_*.py; docs/testing.md, Fuzzing).

HYPOTHESIS_PROFILE=ci (the default, what `make test` runs): each property runs
its own fixed number of examples (`examples(n)`), derandomized, so a run is
reproducible and CI never fails on an input the previous run did not try.
HYPOTHESIS_PROFILE=long (`make fuzz`): LONG_FACTOR times as many, random
(a new sample each run); failing examples are kept in .build/hypothesis and
tried first next time.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

from hypothesis import HealthCheck, event, settings
from hypothesis.control import currently_in_test_context
from hypothesis.database import DirectoryBasedExampleDatabase

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
LONG_FACTOR = 20
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example]

settings.register_profile("ci", max_examples=100, derandomize=True, database=None, deadline=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
settings.register_profile("long", max_examples=100 * LONG_FACTOR, derandomize=False, deadline=None,
                          database=DirectoryBasedExampleDatabase(
                              os.path.join(os.path.dirname(__file__), "..", "..", ".build", "hypothesis")),
                          suppress_health_check=_SLOW_OK, print_blob=True)
if PROFILE not in ("ci", "long"):
    raise RuntimeError(f"HYPOTHESIS_PROFILE={PROFILE!r}: use ci or long")
settings.load_profile(PROFILE)


def examples(n: int) -> settings:
    """@examples(n): a property's budget, n examples in the ci profile, LONG_FACTOR x n in long."""
    return settings(max_examples=n * (LONG_FACTOR if PROFILE == "long" else 1))


def tally(what: str) -> None:
    """Count an outcome in --hypothesis-show-statistics (a no-op in the plain regression tests)."""
    if currently_in_test_context():
        event(what)


class Hang(Exception):
    """An input took longer than the property allows: a hang, not a result."""


@contextmanager
def within(seconds: float, what: str = "the call"):
    """Raise Hang if the body runs longer than `seconds` (SIGALRM: main thread only; the re module and
    blocking system calls are interrupted too)."""
    def ring(*_):
        raise Hang(f"{what} did not end within {seconds:g} s")
    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
