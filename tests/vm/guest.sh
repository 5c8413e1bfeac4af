#!/bin/sh
# Runs inside the VM (started by tests/vm/run.sh): runs "$@" as root in the
# checkout and sends its output and exit code to the host through the
# virtme.stdout / virtme.stderr / virtme.ret virtio ports, found by name.
# Under software emulation virtme-ng's own init can miss these ports, so
# its output is lost and vng exits 255; writing to them ourselves is
# reliable. A kernel without BTF is refused before CMD runs: ceemsnet
# checks every hook's prototype against /sys/kernel/btf/vmlinux, and a run
# without it would test nothing of what a node does.
port() {
    for n in /sys/class/virtio-ports/*/name; do
        [ "$(cat "$n" 2>/dev/null)" = "$1" ] && { echo "/dev/$(basename "$(dirname "$n")")"; return 0; }
    done
    return 1
}
out=$(port virtme.stdout) || out=/dev/stdout
err=$(port virtme.stderr) || err=/dev/stderr
ret=$(port virtme.ret) || ret=
if [ -r /sys/kernel/btf/vmlinux ]; then
    "$@" >"$out" 2>"$err"
    rc=$?
else
    echo "tests/vm: kernel $(uname -r) has no BTF (/sys/kernel/btf/vmlinux missing): ceemsnet cannot run on it" >"$err"
    rc=3
fi
[ -n "$ret" ] && printf '%s' "$rc" >"$ret"
exit $rc
