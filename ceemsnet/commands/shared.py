"""What more than one subcommand uses: the parser class, the flags two or
more subcommands take (one function per flag, so its name, destination,
default and check are written once), and the running kernel.

A flag one subcommand alone takes is written in that subcommand's module;
argparse types the collectors use too live in ceemsnet/common/flags.py.
"""

from __future__ import annotations

import argparse
import platform
import sys

from packaging.version import Version

from ceemsnet.attribution import slurmdb
from ceemsnet.common.flags import whole_number
from ceemsnet.common.timeparse import duration_arg
from ceemsnet.pinned.pins import DEFAULT_PIN_PATH
from ceemsnet.planning.choice import check_supported
from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version, running_release
from ceemsnet.runtime.kprobes import MAXACTIVE_MAX

HOOKS = ("auto", "fexit", "kretprobe", "tracepoint")
LOG_LEVELS = ("debug", "info", "warning", "error")


def one_line(text: str) -> str:
    """text with its control characters (newline, CR, ...) escaped as repr() writes them: an error
    quoting what the user gave stays one line."""
    return "".join(c if c.isprintable() or c == " " else repr(c)[1:-1] for c in text)


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit 2, like argparse, but with our prefix
        self.print_usage(sys.stderr)
        print(f"ceemsnet: error: {one_line(message)}", file=sys.stderr)
        sys.exit(2)

    def _get_values(self, action, arg_strings):
        # Python 3.11's argparse drops a '--' from an option's values and stores what is left, so
        # `--log.level=--` gave the value [] past choices and type: '--' is no option's value
        if action.option_strings and "--" in arg_strings:
            self.error(f"argument {'/'.join(action.option_strings)}: expected a value, not '--'")
        return super()._get_values(action, arg_strings)


def maxactive(text: str) -> int:
    """argparse `type=` of --kretprobe.maxactive: 0 (the kernel's default) to the kernel's limit."""
    v = whole_number(text)
    if not 0 <= v <= MAXACTIVE_MAX:
        raise argparse.ArgumentTypeError(f"must be 0 to {MAXACTIVE_MAX} (the kernel's limit): {text!r}")
    return v


def add_hook(p, help: str) -> None:
    p.add_argument("--hook", default="auto", choices=HOOKS, help=help)


def add_hierarchy(p, help: str) -> None:
    p.add_argument("--cgroup.hierarchy", dest="hierarchy", default="auto", metavar="auto|v2|v1:CONTROLLER",
                   help=help)


def add_maxactive(p, help: str) -> None:
    p.add_argument("--kretprobe.maxactive", dest="maxactive", type=maxactive, default=1024, metavar="N", help=help)


def add_pin_path(p, metavar: str, help: str) -> None:
    p.add_argument("--bpf.pin-path", dest="pin_path", default=DEFAULT_PIN_PATH, metavar=metavar, help=help)


def add_storage_path(p, default: str | None, help: str) -> None:
    p.add_argument("--storage.path", dest="storage_path", default=default, metavar="FILE", help=help)


def add_sacct(p, help: str) -> None:
    p.add_argument("--slurm.sacct", dest="sacct", default="sacct", metavar="PROGRAM|none", help=help)


def add_prometheus(p, help: str) -> None:
    """--prometheus URL and how to ask it (report, record)."""
    p.add_argument("--prometheus", metavar="URL", help=help)
    p.add_argument("--prometheus.selector", dest="prom_selector", metavar="MATCHERS",
                   help="label matchers added to every series selector, e.g. 'job=\"ceemsnet\",cluster=\"a\"'")
    p.add_argument("--prometheus.lookback", dest="prom_lookback", type=duration_arg, default=3600.0,
                   metavar="DURATION", help="how far before the range's start to look for a series' starting value "
                                            "(default 1h; must exceed the scrape interval)")
    p.add_argument("--prometheus.chunk", dest="prom_chunk", type=duration_arg, default=6 * 3600.0, metavar="DURATION",
                   help="ask for the range in pieces this long (default 6h), so no query loads more samples "
                        "than the server's --query.max-samples; smaller for very large clusters")
    p.add_argument("--prometheus.timeout", dest="prom_timeout", type=duration_arg, default=60.0, metavar="DURATION",
                   help="per query (default 60s)")
    p.add_argument("--prometheus.bearer-token-file", dest="prom_token", metavar="FILE",
                   help="send the token in this file as Authorization: Bearer")
    p.add_argument("--prometheus.ca-file", dest="prom_ca", metavar="FILE",
                   help="CA certificates to verify an https:// server with (default: the system's)")


def add_json(p) -> None:
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def add_log_level(p, default: str = "warning", shown: bool = False) -> None:
    """--log.level; `shown`: listed in --help (the commands that log much), else accepted but not listed."""
    p.add_argument("--log.level", dest="log_level", default=default, choices=LOG_LEVELS,
                   help=f"log verbosity (default {default})" if shown else argparse.SUPPRESS)


def running_kernel() -> tuple[str, Version, str]:
    """(uname -r, its version, the machine's arch) of the running kernel; an error if it is too old."""
    release = platform.release()
    kver = parse_kernel_version(running_release())
    check_supported(kver)
    return release, kver, normalize_arch(platform.machine())


def record_field_arg(text: str, allow_none: bool = True) -> str:
    """A SLURM job record field `ceemsnet record` writes (slurmdb.field_name), or 'none'."""
    if allow_none and text.strip().lower() == "none":
        return "none"
    try:
        return slurmdb.field_name(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_record_field(parser, what: str) -> None:
    """--slurm.record-field (report, job): where the job's record is read back from."""
    parser.add_argument("--slurm.record-field", dest="record_field", type=record_field_arg, default="SystemComment",
                        metavar="FIELD|none", help="the job record field `ceemsnet record` writes (default "
                                                   f"SystemComment): {what}; 'none': do not")
