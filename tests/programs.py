"""Programs the tests run, and the Debian package each one comes from.

packaging/apt-packages.txt is the one list: `make setup` installs its
packages, and a `# programs: a, b` note after a package names the programs
the project runs from it. tests/unit/test_setup_coverage.py checks that every
program a test, benchmark or script calls is named there.
"""

import os
import re
import shutil

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APT_PACKAGES = os.path.join(ROOT, "packaging", "apt-packages.txt")

# "pkg", "pkg  # programs: a, b" or "pkg  # any other note"
_LINE = re.compile(r"^([a-z0-9][a-z0-9.+-]*)\s*(?:#\s*(?:programs:\s*(.*)|.*))?$")


def parse_apt_packages(text):
    """{package: [program, ...]} in file order; comment lines are skipped."""
    packages = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line.strip())
        if not m:
            raise ValueError(f"packaging/apt-packages.txt:{n}: not 'package  # programs: a, b': {line!r}")
        packages[m.group(1)] = [p for p in re.split(r"[,\s]+", m.group(2) or "") if p]
    return packages


def apt_packages():
    with open(APT_PACKAGES) as f:
        return parse_apt_packages(f.read())


def declared_programs():
    """{program: Debian package} of every program packaging/apt-packages.txt declares."""
    return {prog: pkg for pkg, progs in apt_packages().items() for prog in progs}


def require_program(name, skip=False):
    """Full path of the program `name`, which packaging/apt-packages.txt must declare.

    When it is missing the test fails (skip=True: skips) with a message that
    names its Debian package, instead of a FileNotFoundError traceback. Fail is
    the default because `make test` runs `make setup`, which installs every
    declared package: a missing program means a broken set-up, and a skip
    would let `make test` pass while testing less.
    """
    pkg = declared_programs().get(name)
    if pkg is None:
        pytest.fail(f"{name} is not declared in packaging/apt-packages.txt: add it after the Debian package "
                    "it comes from ('package  # programs: ...')", pytrace=False)
    path = shutil.which(name)
    if path:
        return path
    msg = f"{name} is missing: install Debian package {pkg} (make setup installs packaging/apt-packages.txt)"
    if skip:
        pytest.skip(msg)
    pytest.fail(msg, pytrace=False)
