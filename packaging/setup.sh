#!/bin/sh
# Idempotent set-up: Debian packages (only those missing), then .venv/ made
# from Debian's python3 with --system-site-packages so bcc (python3-bpfcc,
# not on PyPI) is importable, then ceemsnet and its Python deps into it.
set -eu
cd "$(dirname "$0")/.."

missing=""
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    echo "setup: installing Debian packages:$missing"
    if [ "$(id -u)" != 0 ]; then
        echo "setup: installing packages needs root (run make setup as root)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # prometheus's, victoria-metrics', munge's and SLURM's postinsts would start their daemons
    # through systemd/invoke-rc.d; we want the programs only (the SLURM suite
    # starts its own, inside a VM), so keep services from starting.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d.ceemsnet
    chmod +x /usr/sbin/policy-rc.d.ceemsnet
    [ -e /usr/sbin/policy-rc.d ] || { cp /usr/sbin/policy-rc.d.ceemsnet /usr/sbin/policy-rc.d; trap 'rm -f /usr/sbin/policy-rc.d' EXIT; }
    rm -f /usr/sbin/policy-rc.d.ceemsnet
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv (Debian python3, system site-packages for bcc)"
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
echo "setup: installing ceemsnet and its Python dependencies into .venv"
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/python -c 'import bcc' 2>/dev/null || echo "setup: note: bcc is not importable from .venv" >&2
echo "setup: done"
