"""ceemsnet: per-cgroup network and filesystem IO accounting with eBPF."""

__version__ = "0.1.0"


class CeemsnetError(Exception):
    """An error the user can act on: printed as one line, never a traceback."""
