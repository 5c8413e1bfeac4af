#!/bin/busybox sh
# The aarch64 guest's init (tests/vm/arm64.sh boots it), in two stages.
#
# Stage 1 is /init of the small initramfs arm64.sh builds (the rootfs's
# arm64 busybox, the modules for virtio-pci, virtio-console, 9p and overlay,
# this file): it mounts the Debian arm64 root file system (9p tag "root",
# read-only) under a tmpfs overlay, the checkout (tag "repo", read-only) at
# its host path under another tmpfs overlay, the kernel's modules (tag
# "modules") and the run's control directory (tag "ctl": the command), then
# switches to that root and runs this file again as stage 2.
#
# Stage 2 (PID 1 in the Debian root) mounts what the kernel tests use
# (cgroup2, bpffs, tracefs, debugfs), brings up loopback, runs the command
# through tests/vm/guest.sh (its output and exit code go to the host through
# virtio ports) and powers the guest off.
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

repo_path() {  # the checkout's path, from ceemsnet.repo= on the kernel command line
    for w in $(busybox cat /proc/cmdline); do
        case "$w" in ceemsnet.repo=*) echo "${w#ceemsnet.repo=}" ;; esac
    done
}

fail() {
    echo "arm64-init: $*" >&2
    busybox sleep 1
    busybox poweroff -f
}

ninep() {  # TAG DIR [ro]: a virtio 9p share; read-only shares may cache freely
    o=trans=virtio,version=9p2000.L,msize=262144
    [ "${3:-}" = ro ] && o=$o,ro,cache=loose
    busybox mount -t 9p -o "$o" "$1" "$2" || fail "cannot mount 9p share $1 on $2"
}

overlay() {  # LOWER TARGET NAME: LOWER with a tmpfs upper layer, at TARGET
    busybox mkdir -p "/rw/$3/u" "/rw/$3/w" "$2"
    busybox mount -t overlay overlay -o "lowerdir=$1,upperdir=/rw/$3/u,workdir=/rw/$3/w" "$2" ||
        fail "cannot mount the overlay on $2"
}

if [ "${1:-}" != stage2 ]; then
    busybox mkdir -p /proc /sys /dev /newroot /ro /repo /rw
    busybox mount -t proc proc /proc
    busybox mount -t sysfs sysfs /sys
    busybox mount -t devtmpfs devtmpfs /dev
    for m in virtio_pci virtio_console 9pnet_virtio 9p overlay; do
        busybox modprobe "$m" || fail "cannot load module $m"
    done
    repo=$(repo_path)
    [ -n "$repo" ] || fail "no ceemsnet.repo= on the kernel command line"
    busybox mount -t tmpfs -o mode=0755 tmpfs /rw
    ninep root /ro ro
    overlay /ro /newroot root
    ninep repo /repo ro
    overlay /repo "/newroot$repo" repo
    busybox mkdir -p /newroot/lib/modules /newroot/run/ceemsnet
    ninep modules /newroot/lib/modules ro
    ninep ctl /newroot/run/ceemsnet
    for d in proc sys dev; do busybox mount --move "/$d" "/newroot/$d"; done
    exec busybox switch_root /newroot /bin/busybox sh "$repo/tests/vm/arm64-init.sh" stage2
fi

repo=$(repo_path)
busybox mount -t cgroup2 cgroup2 /sys/fs/cgroup
busybox mount -t bpf bpf /sys/fs/bpf
busybox mount -t tracefs tracefs /sys/kernel/tracing
busybox mount -t debugfs debugfs /sys/kernel/debug
busybox mkdir -p /dev/shm /dev/pts
busybox mount -t tmpfs tmpfs /dev/shm
busybox mount -t devpts devpts /dev/pts
busybox ip link set lo up
busybox hostname ceemsnet-arm64
export HOME=/root LANG=C.UTF-8
cd "$repo" || fail "no checkout at $repo"
busybox sh "$repo/tests/vm/guest.sh" busybox sh /run/ceemsnet/cmd
busybox sync
busybox poweroff -f
