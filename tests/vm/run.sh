#!/bin/sh
# tests/vm/run.sh KERNEL CMD...   (KERNEL: 5.10, 6.1, 6.12 or 7)
#
# Boots Debian's generic kernel of that series in a VM (virtme-ng on
# qemu-system-x86, software emulation) with this machine's file system
# shared read-only and the checkout as a guest-writable overlay, runs CMD
# as root in the checkout, prints its output and exits with its exit code.
# The kernel package is fetched with apt-get download and cached, extracted,
# in tests/vm/cache/ (ignored by git).
#
# 6.1 and 6.12 come from this machine's own apt sources (Debian 12), the
# image its metapackage points at. 5.10 (Debian 11) and 7 (7.3 from
# trixie-backports) are pinned to one exact package version, so that runs
# repeat, and fetched through a private apt sources list, state and cache
# under tests/vm/cache/apt/<kernel>/: the machine's apt configuration is
# never changed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$here/cache"

usage() { echo "usage: tests/vm/run.sh 5.10|6.1|6.12|6.18|7|arm64-5.10|arm64-6.1|arm64-6.12|arm64-6.18|arm64-7 CMD [ARG...]" >&2; exit 2; }
[ $# -ge 2 ] || usage
# the aarch64 guest has its own script (qemu-system-aarch64, an arm64 root file system)
case "$1" in
    arm64-*) k=${1#arm64-}; shift; CEEMSNET_ARM64_KERNEL=$k exec "$here/arm64.sh" "$@" ;;
esac
meta= suite= version= debs=
case "$1" in
    5.10) suite=bullseye version=5.10.223-1 debs=linux-image-5.10.0-32-amd64 ;;
    6.1)  meta=linux-image-amd64 ;;
    6.12) meta=linux-image-6.12-amd64 ;;
    # the last era before 6.19's vfs_* changes (vfs-*-6.15 objects)
    6.18) suite=trixie-backports version=6.18.15-1~bpo13+1 debs=linux-image-6.18.15+deb13-amd64 ;;
    # 7.x is packaged as a metapackage (linux-image-7.3.4+deb13-amd64)
    # over linux-binary-* (vmlinuz under usr/lib/modules/<version>/),
    # linux-modules-* (the modules, without modules.dep) and linux-base-*
    # (config, modules.builtin, modules.order)
    7)    suite=trixie-backports version=7.3.4-1~bpo13+1
          debs="linux-binary-7.3.4+deb13-amd64 linux-modules-7.3.4+deb13-amd64 linux-base-7.3.4+deb13-amd64" ;;
    *)    echo "tests/vm/run.sh: unknown kernel '$1': choose 5.10, 6.1, 6.12, 6.18, 7 or arm64-5.10, -6.1, -6.12, -6.18, -7" >&2; exit 2 ;;
esac
series=$1
shift

die() { echo "tests/vm/run.sh: $*" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 is missing (Debian package qemu-system-x86; make setup installs it)"
vng="$repo/.venv/bin/vng"
[ -x "$vng" ] || die "virtme-ng is missing from .venv: run make setup"
command -v busybox >/dev/null || die "busybox is missing (Debian package busybox-static; make setup installs it)"

# Kernel image inside an extracted tree: boot/vmlinuz-* (Debian's
# linux-image-*) or usr/lib/modules/<version>/vmlinuz (linux-binary-*).
kimg_in() {
    for k in "$1"/boot/vmlinuz-* "$1"/usr/lib/modules/*/vmlinuz; do
        [ -f "$k" ] && { echo "$k"; return 0; }
    done
    return 1
}

# The kernel's build configuration must have BTF (ceemsnet checks every hook's
# prototype against /sys/kernel/btf/vmlinux); guest.sh checks the booted kernel too.
check_btf_config() {
    for c in "$1"/boot/config-* "$1"/usr/lib/modules/*/config "$1"/lib/modules/*/config; do
        [ -f "$c" ] || continue
        grep -qx 'CONFIG_DEBUG_INFO_BTF=y' "$c" || die "kernel $series is built without CONFIG_DEBUG_INFO_BTF ($(basename "$c")): no BTF, ceemsnet cannot run on it"
        return 0
    done
    die "kernel $series: no config file in the package, cannot check that it has BTF"
}

# The pinned packages through a private apt configuration: sources list,
# package lists and download cache under tests/vm/cache/apt/<kernel>/.
fetch_pinned() {
    dir="$cache/apt/$series"
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
    echo "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $suite main" >"$dir/sources.list"
    set -- -o Dir::Etc::SourceList="$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null \
        -o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" -o Acquire::Languages=none
    specs=
    for p in $debs; do specs="$specs $p=$version"; done
    download() { (cd "$tmp" && apt-get "$@" download -q $specs >/dev/null 2>&1); }
    if ! download "$@"; then
        echo "tests/vm/run.sh: reading Debian's $suite package list (private apt state in tests/vm/cache/apt/$series)" >&2
        apt-get "$@" update -qq >/dev/null 2>&1 || die "apt-get update of Debian's $suite failed (is deb.debian.org reachable?)"
        if ! download "$@"; then
            for p in $debs; do
                apt-cache "$@" madison "$p" 2>/dev/null | grep -q "| $version |" ||
                    die "$p=$version is no longer in Debian's $suite; pick the version now offered ($(apt-cache "$@" madison "$p" 2>/dev/null | awk -F'|' '{gsub(/ /, "", $2); printf "%s%s", s, $2; s = ", "}')) in tests/vm/run.sh"
            done
            die "apt-get download of$specs failed"
        fi
    fi
}

# The cached kernel of this series, else download and extract it.
if [ -n "$meta" ]; then
    find_kimg() {
        for k in "$cache"/linux-image-"$series".*/boot/vmlinuz-* "$cache"/linux-image-"$series"-*/boot/vmlinuz-*; do
            [ -f "$k" ] && { echo "$k"; return 0; }
        done
        return 1
    }
else
    tree="$cache/${debs%% *}_$version"
    find_kimg() { kimg_in "$tree"; }
fi
if ! kimg=$(find_kimg); then
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.dl.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT
    if [ -n "$meta" ]; then
        resolve() { apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
        pkg=$(resolve)
        if [ -z "$pkg" ]; then
            echo "tests/vm/run.sh: $meta unknown to apt, running apt-get update once" >&2
            apt-get update -qq >/dev/null 2>&1 || true
            pkg=$(resolve)
        fi
        [ -n "$pkg" ] || die "cannot resolve $meta to a kernel image package (is Debian's package index reachable?)"
        echo "tests/vm/run.sh: fetching $pkg (once; cached in tests/vm/cache)" >&2
        (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
        tree="$cache/$pkg"
    else
        echo "tests/vm/run.sh: fetching $debs $version from Debian's $suite (once; cached in tests/vm/cache)" >&2
        fetch_pinned
    fi
    for d in "$tmp"/*.deb; do
        dpkg-deb -x "$d" "$tmp/x" || die "cannot extract $(basename "$d")"
    done
    kimg_in "$tmp/x" >/dev/null || die "no vmlinuz in $(cd "$tmp" && echo *.deb)"
    check_btf_config "$tmp/x"
    if [ -z "$meta" ]; then
        # virtme-ng loads the guest's 9p and virtio modules by modules.dep,
        # which linux-modules-* does not ship; make it in the cached tree once
        for m in "$tmp"/x/lib/modules/* "$tmp"/x/usr/lib/modules/*; do
            [ -d "$m/kernel" ] || continue
            depmod -b "${m%/lib/modules/*}" "$(basename "$m")" || die "depmod failed for $m"
        done
    fi
    rm -rf "${tree:?}"
    mv "$tmp/x" "$tree"
    rm -rf "$tmp"
    trap - EXIT
    kimg=$(find_kimg) || die "no vmlinuz in $tree"
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
# CEEMSNET_VM_APPEND: more kernel command line (tests/vm/matrix.py boots 6.18 and 7 a second time
# with preempt=voluntary for their fexit passes)
set --
for a in ${CEEMSNET_VM_APPEND:-}; do set -- "$@" --append "$a"; done
{ { "$vng" --run "$kimg" --disable-kvm --memory "${CEEMSNET_VM_MEMORY:-2G}" --cpus "${CEEMSNET_VM_CPUS:-2}" ${CEEMSNET_VM_VERBOSE:+--verbose} "$@" \
      --overlay-rwdir="$repo" --exec "$cmd" </dev/null; echo $? >"$rcfile"; } 2>&1 1>&3 | cat >&2; } 3>&1 | cat
rc=$(cat "$rcfile")
[ -n "$rc" ] || rc=255
if [ $rc -eq 255 ]; then
    echo "tests/vm/run.sh: the $series VM reported no exit code (qemu or the guest failed to start?)" >&2
fi
exit $rc
