#!/bin/sh
# Runs inside the VM (started by tests/vm/run.sh): runs "$@" as root in the
# checkout; its output and exit code reach the host through the
# virtme.stdout / virtme.stderr / virtme.ret virtio ports, found by name.
# Two cases, both seen on ordinary machines:
#  - the host has udev (every ordinary Debian machine): virtme-ng's init
#    starts udevd, finds the ports through /dev/virtio-ports/ and relays the
#    script's output and exit code itself. It holds the ports open, and a
#    virtio port takes one opener at a time (a second open fails with
#    EBUSY), so we must not open them: we run CMD on the stdout and stderr
#    init gave us and exit with its code.
#  - no udev: under software emulation init can miss the ports, so its
#    output is lost and vng exits 255; we write to them ourselves.
# We tell the two apart by what our stdout is: the virtme.stdout port (init
# relays) or not. A kernel without BTF is refused before CMD runs: ceemsnet
# checks every hook's prototype against /sys/kernel/btf/vmlinux, and a run
# without it would test nothing of what a node does.
# (tests/unit/test_vm_guest.py points these two at a made-up tree)
sysports=${CEEMSNET_GUEST_SYSPORTS:-/sys/class/virtio-ports}
devdir=${CEEMSNET_GUEST_DEV:-/dev}
btf=${CEEMSNET_GUEST_BTF:-/sys/kernel/btf/vmlinux}
port() {
    for n in "$sysports"/*/name; do
        [ "$(cat "$n" 2>/dev/null)" = "$1" ] && { echo "$devdir/$(basename "$(dirname "$n")")"; return 0; }
    done
    return 1
}
btf_or_run() {
    if [ -r "$btf" ]; then
        "$@"
    else
        echo "tests/vm: kernel $(uname -r) has no BTF ($btf missing): ceemsnet cannot run on it" >&2
        return 3
    fi
}
out=$(port virtme.stdout) || out=
if [ -n "$out" ] && [ "$(readlink "/proc/$$/fd/1")" = "$out" ]; then
    btf_or_run "$@"
    exit $?
fi
err=$(port virtme.stderr) || err=/dev/stderr
ret=$(port virtme.ret) || ret=
btf_or_run "$@" >"${out:-/dev/stdout}" 2>"$err"
rc=$?
[ -n "$ret" ] && printf '%s' "$rc" >"$ret"
exit $rc
