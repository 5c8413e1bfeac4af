"""argparse types shared by the subcommands and the subsystems' own flags."""

from __future__ import annotations

import argparse


def whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def nonnegative_int(text: str, what: str = "0 or more") -> int:
    v = whole_number(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be {what}: {text!r}")
    return v


def positive_int(text: str) -> int:
    v = whole_number(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return v
