#!/bin/sh
# tests/vm/arm64.sh CMD...
#
# Boots Debian 12's arm64 kernel in an aarch64 VM (qemu-system-aarch64 -M virt
# -cpu max, software emulation) on a Debian arm64 root file system, and runs
# CMD as root in the checkout there: prints its output, exits with its exit
# code (the calling convention of tests/vm/run.sh). The guest sees the checkout
# at its host path, writable through a tmpfs overlay (writes do not reach the
# host), and runs the checkout's own .venv: its python is /usr/bin/python3,
# the rootfs's arm64 Python 3.11 from bookworm like the host's, its packages
# are pure Python (x86 extension modules carry an x86_64 ABI tag, which arm64
# Python ignores) and the system site-packages give the arm64 bcc, libbpf,
# PyYAML, bcrypt, prometheus-client and pyelftools from Debian.
#
# Everything is built once and cached in tests/vm/cache/arm64/ (ignored by git):
# - the kernel: linux-image-6.1.0-56-arm64 6.1.192-2, bookworm's default arm64
#   kernel (linux-image-arm64), the arm64 twin of the 6.1 x86 run; BTF
#   (CONFIG_DEBUG_INFO_BTF=y, checked below), kprobes. Fetched with apt-get
#   download through a private apt configuration (sources list, lists and cache
#   under cache/arm64/apt, APT::Architecture=arm64): the machine's apt
#   configuration and dpkg's architectures are not touched. Pinned so runs
#   repeat; when the security archive drops that version, move the pin.
# - the root file system: mmdebstrap --variant=extract --arch=arm64, which
#   unpacks the packages and their dependencies without running any
#   maintainer script, so no arm64 program runs on the host (no binfmt_misc,
#   no qemu-user). Nothing the guest uses needs a script: Debian's ld.so finds
#   the multiarch libraries without ld.so.cache; /etc/passwd and /etc/group
#   are copied from base-passwd's masters.
# - the initramfs: the rootfs's static arm64 busybox, the modules 9p and
#   overlay need, and tests/vm/arm64-init.sh as /init, which mounts the shares
#   and runs CMD through tests/vm/guest.sh.
# CEEMSNET_VM_MEMORY (2G) and CEEMSNET_VM_CPUS (2) size the guest; CEEMSNET_VM_APPEND adds
# to the kernel command line (as in tests/vm/run.sh);
# CEEMSNET_ARM64_KERNEL=6.12 boots bookworm's linux-image-6.12-arm64 instead
# (6.12.117-1~deb12u1, pinned too), whose ftrace has direct calls, for fexit;
# 5.10 Debian 11's linux-image-5.10.0-32-arm64 5.10.223-1 (bullseye), 6.18
# linux-image-6.18.15+deb13-arm64 and 7 linux-binary-, linux-modules- and
# linux-base-7.3.4+deb13-arm64 (7.3.4-1~bpo13+1, trixie-backports), each
# pinned and fetched through its own private apt state (cache/arm64/apt-<kernel>),
# all on the same bookworm root file system.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache="$here/cache/arm64"

series=${CEEMSNET_ARM64_KERNEL:-6.1}
suite=bookworm
case "$series" in
    6.1)  kpkg=linux-image-6.1.0-56-arm64 kdeb=6.1.192-2 ;;
    6.12) kpkg=linux-image-6.12.117+deb12-arm64 kdeb=6.12.117-1~deb12u1 ;;
    # the older and newer eras' arm64 objects: Debian 11's 5.10 (before 5.12 / 5.19),
    # trixie-backports' 6.18 (6.15 - 6.18) and 7.3 (6.19+)
    5.10) kpkg=linux-image-5.10.0-32-arm64 kdeb=5.10.223-1 suite=bullseye ;;
    6.18) kpkg=linux-image-6.18.15+deb13-arm64 kdeb=6.18.15-1~bpo13+1 suite=trixie-backports ;;
    # 7.x comes split: linux-binary-* (vmlinuz under usr/lib/modules/<version>/),
    # linux-modules-* (no modules.dep: depmod below) and linux-base-* (config, modules.order)
    7)    kpkg=linux-binary-7.3.4+deb13-arm64 kdeb=7.3.4-1~bpo13+1 suite=trixie-backports
          kextra="linux-modules-7.3.4+deb13-arm64 linux-base-7.3.4+deb13-arm64" ;;
    *)    echo "tests/vm/arm64.sh: unknown CEEMSNET_ARM64_KERNEL '$series': choose 5.10, 6.1, 6.12, 6.18 or 7" >&2; exit 2 ;;
esac
kver=${kpkg#linux-image-}
kver=${kver#linux-binary-}
mirror=http://deb.debian.org/debian
security=http://deb.debian.org/debian-security
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
rootfs_suite=bookworm  # one root file system for every kernel
packages=base-files,base-passwd,libc-bin,dash,bash,coreutils,busybox-static,procps,python3,libbpf1,python3-bpfcc,\
python3-prometheus-client,python3-packaging,python3-pyelftools,python3-yaml,python3-bcrypt,python3-cryptography,\
iproute2,mount,util-linux,kmod,e2fsprogs,bpftool,prometheus,fio,\
rdma-core,ibverbs-providers,ibverbs-utils,perftest
modules="virtio_pci virtio_console 9pnet_virtio 9p overlay"

die() { echo "tests/vm/arm64.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] || { echo "usage: tests/vm/arm64.sh CMD [ARG...]" >&2; exit 2; }
command -v qemu-system-aarch64 >/dev/null || die "qemu-system-aarch64 is missing (Debian package qemu-system-arm; make setup installs it)"
case "$repo" in *[!A-Za-z0-9_./+-]*) die "the checkout's path '$repo' has characters the guest's kernel command line cannot carry" ;; esac
mkdir -p "$cache"

# The kernel, extracted, with modules.dep: boot/vmlinuz-<version> and lib/modules/
# (linux-image-*) or usr/lib/modules/<version>/ (7.x's linux-binary-*).
kdir="$cache/${kpkg}_$kdeb"
kimg_in() {
    for k in "$1/boot/vmlinuz-$kver" "$1/usr/lib/modules/$kver/vmlinuz"; do
        [ -f "$k" ] && { echo "$k"; return 0; }
    done
    return 1
}
if ! kimg_in "$kdir" >/dev/null; then
    # a private apt configuration per suite (bookworm's keeps its old place)
    a="$cache/apt"
    [ "$suite" = bookworm ] || a="$cache/apt-$series"
    mkdir -p "$a/lists/partial" "$a/cache/archives/partial" "$a/empty"
    if [ "$suite" = bookworm ]; then
        printf 'deb [arch=arm64 signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$suite" "$keyring" "$security" "$suite-security" >"$a/sources.list"
    else
        printf 'deb [arch=arm64 signed-by=%s] %s %s main\n' "$keyring" "$mirror" "$suite" >"$a/sources.list"
    fi
    # (no blanks in these paths: the checkout's path was checked above)
    apt="-o Dir::Etc::SourceList=$a/sources.list -o Dir::Etc::SourceParts=$a/empty
        -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=$a/empty
        -o Dir::State::Lists=$a/lists -o Dir::Cache=$a/cache -o Dir::State::Status=/dev/null
        -o APT::Architecture=arm64 -o APT::Architectures=arm64 -o APT::Sandbox::User=root -o Acquire::Languages=none"
    specs=
    for p in $kpkg ${kextra:-}; do specs="$specs $p=$kdeb"; done
    echo "tests/vm/arm64.sh: fetching$specs from Debian's $suite (once; cached in tests/vm/cache/arm64)" >&2
    tmp=$(mktemp -d "$cache/.dl.XXXXXX")
    apt-get $apt update -qq >/dev/null 2>&1 || { rm -rf "$tmp"; die "apt-get update (private arm64 sources, $suite) failed"; }
    (cd "$tmp" && apt-get $apt download -q $specs >/dev/null 2>&1) ||
        { rm -rf "$tmp"; die "apt-get download$specs failed (superseded? move the pin in tests/vm/arm64.sh)"; }
    for d in "$tmp"/*.deb; do
        dpkg-deb -x "$d" "$tmp/x" || { rm -rf "$tmp"; die "cannot extract $(basename "$d")"; }
    done
    kimg_in "$tmp/x" >/dev/null || { rm -rf "$tmp"; die "no vmlinuz in$specs"; }
    config=
    for c in "$tmp/x/boot/config-$kver" "$tmp/x/usr/lib/modules/$kver/config"; do
        [ -f "$c" ] && config=$c
    done
    [ -n "$config" ] || { rm -rf "$tmp"; die "$kpkg: no config file, cannot check that it has BTF"; }
    grep -q '^CONFIG_DEBUG_INFO_BTF=y' "$config" || { rm -rf "$tmp"; die "$kpkg has no BTF"; }
    # depmod -b BASE looks in BASE/lib/modules: BASE is the tree, or its usr/ for 7.x
    base="$tmp/x"
    [ -d "$tmp/x/usr/lib/modules/$kver/kernel" ] && base="$tmp/x/usr"
    depmod -b "$base" "$kver" || { rm -rf "$tmp"; die "depmod failed on $kpkg"; }
    rm -rf "$kdir"
    mv "$tmp/x" "$kdir"
    rm -rf "$tmp"
fi
kimg=$(kimg_in "$kdir")
moddir="$kdir/lib/modules"
[ -d "$kdir/usr/lib/modules/$kver/kernel" ] && moddir="$kdir/usr/lib/modules"

# The root file system, one per package list (rootfs-<its CRC, cksum>): a checkout with
# another list (an older clone, another branch) builds and boots its own beside it instead of
# rebuilding one that a running guest has mounted. The soft-RoCE bed (tests/kernel/rdma.py)
# needs rdma-core, libibverbs' rxe provider (ibverbs-providers) and perftest, as
# packaging/apt-packages.txt lists for the x86 guests (which share this machine's file system).
sum=$(printf '%s' "$packages" | cksum)
rootfs="$cache/rootfs-${sum%% *}"
if [ "$(cat "$rootfs/.ceemsnet-packages" 2>/dev/null)" != "$packages" ]; then
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (Debian package mmdebstrap; make setup installs it)"
    echo "tests/vm/arm64.sh: building the arm64 root file system (once; cached in tests/vm/cache/arm64)" >&2
    tmp=$(mktemp -d "$cache/.rootfs.XXXXXX")
    mmdebstrap --quiet --variant=extract --arch=arm64 --include="$packages" "$rootfs_suite" "$tmp/root" \
        "deb [signed-by=$keyring] $mirror $rootfs_suite main" \
        "deb [signed-by=$keyring] $mirror $rootfs_suite-updates main" \
        "deb [signed-by=$keyring] $security $rootfs_suite-security main" || { rm -rf "$tmp"; die "mmdebstrap failed"; }
    cp "$tmp/root/usr/share/base-passwd/passwd.master" "$tmp/root/etc/passwd"
    cp "$tmp/root/usr/share/base-passwd/group.master" "$tmp/root/etc/group"
    printf '%s' "$packages" >"$tmp/root/.ceemsnet-packages"
    # (the initramfs keeps its busybox: static, the same bookworm package whatever the list)
    rm -rf "$rootfs"
    mv "$tmp/root" "$rootfs"
    rm -rf "$tmp"
fi

# The guest runs the checkout's .venv on the rootfs's python3: their versions must agree.
py=$(readlink "$rootfs/usr/bin/python3")
if [ -f "$repo/.venv/pyvenv.cfg" ] && ! grep -q "^version = ${py#python}\." "$repo/.venv/pyvenv.cfg"; then
    echo "tests/vm/arm64.sh: note: .venv was made from a python other than the guest's $py: .venv/bin/python will not start there" >&2
fi

# The initramfs: busybox, the modules (with their dependencies) and /init.
initrd="$cache/initrd-$kver.cpio"
if [ ! -f "$initrd" ] || [ "$here/arm64-init.sh" -nt "$initrd" ]; then
    tmp=$(mktemp -d "$cache/.initrd.XXXXXX")
    m="lib/modules/$kver"
    mkdir -p "$tmp/bin" "$tmp/$m"
    cp "$rootfs/bin/busybox" "$tmp/bin/busybox"
    cp "$here/arm64-init.sh" "$tmp/init"
    chmod 755 "$tmp/init"
    cp "$moddir/$kver/modules.dep" "$moddir/$kver/modules.order" "$moddir/$kver/modules.builtin" "$tmp/$m/"
    for ko in $(awk -v want="$modules" 'BEGIN { n = split(want, w, " "); for (i = 1; i <= n; i++) keep[w[i]] = 1 }
            { b = $1; sub(".*/", "", b); sub("[.]ko.*", "", b); if (b in keep) for (i = 1; i <= NF; i++) { sub(":$", "", $i); print $i } }' \
            "$moddir/$kver/modules.dep"); do
        mkdir -p "$tmp/$m/$(dirname "$ko")"
        cp "$moddir/$kver/$ko" "$tmp/$m/$ko"
    done
    (cd "$tmp" && busybox find . | busybox cpio -o -H newc >"$initrd.new" 2>/dev/null) || { rm -rf "$tmp"; die "cannot build the initramfs"; }
    mv "$initrd.new" "$initrd"
    rm -rf "$tmp"
fi

# The run's control directory (CMD, quoted for the guest's shell) and the
# virtio ports' ends on the host.
run=$(mktemp -d)
trap 'rm -rf "$run"' EXIT
printf 'exec' >"$run/cmd"
for a in "$@"; do
    printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")" >>"$run/cmd"
done
echo >>"$run/cmd"
mkfifo "$run/out" "$run/err"
: >"$run/ret"

cat "$run/out" &
outpid=$!
cat "$run/err" >&2 &
errpid=$!
set +e
qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on -smp "${CEEMSNET_VM_CPUS:-2}" -m "${CEEMSNET_VM_MEMORY:-2G}" \
    -display none -monitor none -no-reboot -serial "file:$run/console" \
    -kernel "$kimg" -initrd "$initrd" \
    -append "console=ttyAMA0 panic=-1 loglevel=4 ceemsnet.repo=$repo${CEEMSNET_VM_APPEND:+ $CEEMSNET_VM_APPEND}" \
    -virtfs "local,path=$rootfs,mount_tag=root,security_model=none,readonly=on" \
    -virtfs "local,path=$repo,mount_tag=repo,security_model=none,readonly=on" \
    -virtfs "local,path=$moddir,mount_tag=modules,security_model=none,readonly=on" \
    -virtfs "local,path=$run,mount_tag=ctl,security_model=none" \
    -device virtio-serial-pci,id=vs \
    -chardev "file,id=out,path=$run/out" -device virtserialport,bus=vs.0,chardev=out,name=virtme.stdout \
    -chardev "file,id=err,path=$run/err" -device virtserialport,bus=vs.0,chardev=err,name=virtme.stderr \
    -chardev "file,id=ret,path=$run/ret" -device virtserialport,bus=vs.0,chardev=ret,name=virtme.ret \
    </dev/null
qrc=$?
# If qemu never opened the fifos, their readers still wait in open(): give them a writer that closes at once.
exec 3<>"$run/out" 4<>"$run/err"
exec 3>&- 4>&-
wait $outpid $errpid
rc=$(cat "$run/ret")
if [ -z "$rc" ]; then
    echo "tests/vm/arm64.sh: the arm64 VM reported no exit code (qemu exited with $qrc); its console ends with:" >&2
    tail -n 30 "$run/console" >&2
    exit 255
fi
exit "$rc"
