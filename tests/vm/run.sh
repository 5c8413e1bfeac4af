#!/bin/sh
# tests/vm/run.sh KERNEL CMD...   (KERNEL: 6.1 or 6.12)
#
# Boots Debian's generic kernel of that series in a VM (virtme-ng on
# qemu-system-x86, software emulation) with this machine's file system
# shared read-only and the checkout as a guest-writable overlay, runs CMD
# as root in the checkout, prints its output and exits with its exit code.
# The kernel package is fetched with apt-get download and cached, extracted,
# in tests/vm/cache/ (ignored by git).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$here/cache"

usage() { echo "usage: tests/vm/run.sh 6.1|6.12 CMD [ARG...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
case "$1" in
    6.1)  meta=linux-image-amd64 ;;
    6.12) meta=linux-image-6.12-amd64 ;;
    *)    echo "tests/vm/run.sh: unknown kernel '$1': choose 6.1 or 6.12" >&2; exit 2 ;;
esac
series=$1
shift

die() { echo "tests/vm/run.sh: $*" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (Debian package qemu-system-x86; make setup installs it)"
vng="$repo/.venv/bin/vng"
[ -x "$vng" ] || die "virtme-ng is missing from .venv: run make setup"
command -v busybox >/dev/null || die "busybox is missing (Debian package busybox-static; make setup installs it)"

# The cached kernel of this series, else download the image the metapackage points at.
find_kimg() {
    for k in "$cache"/linux-image-"$series".*/boot/vmlinuz-* "$cache"/linux-image-"$series"-*/boot/vmlinuz-*; do
        [ -f "$k" ] && { echo "$k"; return 0; }
    done
    return 1
}
if ! kimg=$(find_kimg); then
    resolve() { apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
    pkg=$(resolve)
    if [ -z "$pkg" ]; then
        echo "tests/vm/run.sh: $meta unknown to apt, running apt-get update once" >&2
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(resolve)
    fi
    [ -n "$pkg" ] || die "cannot resolve $meta to a kernel image package (is Debian's package index reachable?)"
    echo "tests/vm/run.sh: fetching $pkg (once; cached in tests/vm/cache)" >&2
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.dl.XXXXXX")
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || { rm -rf "$tmp"; die "apt-get download $pkg failed"; }
    dpkg-deb -x "$tmp"/*.deb "$tmp/x" || { rm -rf "$tmp"; die "cannot extract $pkg"; }
    rm -rf "${cache:?}/$pkg"
    mv "$tmp/x" "$cache/$pkg"
    rm -rf "$tmp"
    kimg=$(find_kimg) || die "no vmlinuz in $pkg"
fi

# Quote CMD for the guest shell.
cmd="$repo/tests/vm/guest.sh"
for a in "$@"; do
    cmd="$cmd '$(printf '%s' "$a" | sed "s/'/'\\\\''/g")'"
done

cd "$repo"
export PATH="$repo/.venv/bin:$PATH"
# qemu reopens /proc/self/fd/1 and 2 for the guest's output: when those are
# regular files (CI logs) it would write from offset 0 over what is already
# there. Hand it pipes instead, and carry vng's exit code around them.
rcfile=$(mktemp)
trap 'rm -f "$rcfile"' EXIT
set +e
{ { "$vng" --run "$kimg" --disable-kvm --memory "${CEEMSNET_VM_MEMORY:-2G}" --cpus "${CEEMSNET_VM_CPUS:-2}" \
      --overlay-rwdir="$repo" --exec "$cmd" </dev/null; echo $? >"$rcfile"; } 2>&1 1>&3 | cat >&2; } 3>&1 | cat
rc=$(cat "$rcfile")
[ -n "$rc" ] || rc=255
if [ $rc -eq 255 ]; then
    echo "tests/vm/run.sh: the $series VM reported no exit code (qemu or the guest failed to start?)" >&2
fi
exit $rc
