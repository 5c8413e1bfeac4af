"""ceemsnet command line: the top parser and one-line errors.

Each subcommand is one module in ceemsnet/commands/ (its parser and what it
runs); docs/cli.md is generated from build_parser() (tests/unit/test_cli_docs.py).
"""

from __future__ import annotations

import logging
import sys

from ceemsnet import CeemsnetError, __version__
from ceemsnet.commands import compare, detach, job, probe, record, report, serve
from ceemsnet.commands.shared import Parser

log = logging.getLogger("ceemsnet")

COMMANDS = (serve, report, job, record, detach, compare, probe)  # in the order --help lists them


def build_parser() -> Parser:
    p = Parser(prog="ceemsnet", description=(
        "Per-cgroup (per-job) network and filesystem IO accounting with eBPF. "
        "Counts TCP/UDP bytes where each send/receive call returns, and charges them to the "
        "cgroup of the task that made the call."))
    p.add_argument("--version", action="version", version=f"ceemsnet {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logging.basicConfig(level=getattr(logging, args.log_level.upper()),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except CeemsnetError as e:
        print(f"ceemsnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `ceemsnet probe | head`
        sys.stderr.close()
        return 0
    except OSError as e:  # a system call the kernel refused (bpffs, pins, maps): one line, the detail in debug
        log.debug("failed", exc_info=True)
        print(f"ceemsnet: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else "")
              + " (--log.level=debug shows where)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
