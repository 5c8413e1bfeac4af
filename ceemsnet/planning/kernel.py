"""What the running (or a named) kernel is: version and arch, and whether a
function's BTF prototype is the one an object expects. Pure functions;
BTF itself is read by ceemsnet/runtime/btf.py.
"""

from __future__ import annotations

import os
import platform
import re

from packaging.version import Version

from ceemsnet import CeemsnetError
from ceemsnet.runtime.btf import Signature

# ASCII digits: \d takes any script's digits
_VERSION_RE = re.compile(r"^\s*v?([0-9]+)\.([0-9]+)(?:\.([0-9]+))?(?=\Z|[-+._~a-zA-Z])")

ARCH_ALIASES = {
    "x86_64": "x86_64", "amd64": "x86_64", "x86": "x86_64",
    "aarch64": "aarch64", "arm64": "aarch64",
}


def parse_kernel_version(text: str) -> Version:
    """The upstream version of a kernel release string.

    Accepts what `uname -r` prints on the distributions we support
    ("5.14.0-427.el9.x86_64", "6.8.0-45-generic", "6.12.117+deb12-amd64",
    "6.18.44-fc-v769") and Ubuntu's /proc/version_signature line
    ("Ubuntu 6.8.0-45.45-generic 6.8.12"), whose last field is the mainline
    version the Ubuntu kernel is based on.
    """
    if not isinstance(text, str) or not text.strip():
        raise CeemsnetError("empty kernel version")
    s = text.strip()
    if s.startswith("Ubuntu ") or s.startswith("Ubuntu-"):
        s = s.split()[-1]
    m = _VERSION_RE.match(s)
    if not m:
        raise CeemsnetError(
            f"cannot parse kernel version {text!r}: expected MAJOR.MINOR[.PATCH][-suffix], e.g. 6.1.0-28-amd64")
    if any(len(g) > 9 for g in m.groups("")):  # int() refuses more than 4300 digits (ValueError)
        raise CeemsnetError(f"implausible kernel version {text!r}")
    major, minor, patch = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if major < 2 or major > 99 or minor > 999:
        raise CeemsnetError(f"implausible kernel version {text!r}")
    return Version(f"{major}.{minor}.{patch}")


def normalize_arch(arch: str) -> str:
    a = ARCH_ALIASES.get((arch or "").strip().lower())
    if a is None:
        raise CeemsnetError(
            f"unsupported architecture {arch!r}: ceemsnet supports x86_64 and aarch64")
    return a


def running_release(proc: str = "/proc") -> str:
    """The running kernel's release, preferring Ubuntu's mainline version."""
    try:
        with open(os.path.join(proc, "version_signature")) as f:
            sig = f.read().strip()
        if sig:
            return sig
    except OSError:
        pass
    return platform.release()


def compare_signature(expected: Signature, actual: Signature, reads: tuple[int, ...] | None) -> str | None:
    """None when `actual` satisfies what the object assumes, else why not.

    reads=None: the program depends on the whole prototype (fexit: its return
    value sits after the last argument, so the count must match exactly).
    reads=(0, 3): only those argument positions (and the return type) matter
    (kprobe entry/return pairs read registers by position).
    """
    if expected.ret != actual.ret:
        return f"returns {actual.ret}, object expects {expected.ret}"
    if reads is None:
        if len(expected.params) != len(actual.params):
            return (f"has {len(actual.params)} arguments, object expects {len(expected.params)} "
                    f"({_names(actual)} vs {_names(expected)})")
        positions = range(len(expected.params))
    else:
        positions = reads
    for i in positions:
        if i >= len(actual.params):
            return f"has no argument {i + 1}, object reads {expected.params[i][0]} there"
        en, et = expected.params[i]
        an, at = actual.params[i]
        if et != at or (en and an and en != an):
            return f"argument {i + 1} is {at} {an}, object expects {et} {en}"
    return None


def _names(sig: Signature) -> str:
    return "(" + ",".join(n or "?" for n, _ in sig.params) + ")"


