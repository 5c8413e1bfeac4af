"""SHA-256 without OpenSSL where the interpreter has its own.

hashlib's sha256 comes from OpenSSL's libcrypto, about 3.4 MiB resident in
the exporter, which needs SHA-256 only to name its pins and ledger paths
(ceemsnet/pinned/pins.py, ledger.py). CPython builds its own SHA-256 as a
module (`_sha2` from 3.12, `_sha256` before): the same digest, so names
made by one are found by the other. hashlib is the fallback.
"""

from __future__ import annotations

try:
    from _sha2 import sha256  # type: ignore[import-not-found]  # CPython 3.12+
except ImportError:
    try:
        from _sha256 import sha256  # type: ignore[import-not-found,no-redef]  # CPython before 3.12
    except ImportError:
        from hashlib import sha256  # type: ignore[no-redef]

__all__ = ["sha256"]
