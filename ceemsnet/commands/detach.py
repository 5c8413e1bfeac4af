"""`ceemsnet detach`: remove every pin `serve` made, so its programs stop counting (for uninstall)."""

from __future__ import annotations

import argparse
import os

from ceemsnet import CeemsnetError
from ceemsnet.commands.shared import add_log_level, add_pin_path
from ceemsnet.pinned.pins import DEFAULT_PIN_PATH, remove_all


def add_parser(sub) -> argparse.ArgumentParser:
    d = sub.add_parser("detach", help="stop counting: remove every pinned BPF map and link (for uninstall)",
                       description="Remove what `serve` pinned under --bpf.pin-path: its programs stop counting "
                                   "and its maps are freed once no exporter holds them. Succeeds when there is "
                                   "nothing to remove. Stop the exporter first (else it keeps its programs until "
                                   "it exits). Needs root.")
    add_pin_path(d, "DIR", f"the pin directory (default {DEFAULT_PIN_PATH})")
    add_log_level(d)
    return d


def run(args) -> int:
    if os.geteuid() != 0:  # the pins are root's alone (0700)
        raise CeemsnetError("ceemsnet detach: needs root (the pin directory is root's alone)")
    n = remove_all(args.pin_path)
    print(f"ceemsnet detach: {'removed ' + str(n) + ' pinned object(s)' if n else 'nothing pinned'} "
          f"under {args.pin_path}")
    return 0
