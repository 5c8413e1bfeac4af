// SPDX-License-Identifier: GPL-2.0
/*
 * The floor for bench/fileio_cost.py (AIO, sendfile/splice/copy_file_range,
 * finish_open): programs that only return, on the same hooks as the vfs
 * objects' own, so a per-IO cost can be reported "above the empty program of
 * the same kind". Built by the bench (bench/hookcost.build_empty), not shipped.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
char LICENSE[] SEC("license") = "GPL";
#define EMPTY(sec, name) SEC(sec) int name(void *ctx) { return 0; }
EMPTY("tp/syscalls/sys_enter_io_submit", tp_sys_enter_io_submit)
EMPTY("tp/syscalls/sys_exit_io_getevents", tp_sys_exit_io_getevents)
EMPTY("tp/syscalls/sys_exit_io_pgetevents", tp_sys_exit_io_pgetevents)
EMPTY("fentry/aio_read", fentry_aio_read)
EMPTY("fexit/aio_read", fexit_aio_read)
EMPTY("fentry/aio_write", fentry_aio_write)
EMPTY("fexit/aio_write", fexit_aio_write)
EMPTY("fentry/aio_complete_rw", fentry_aio_complete_rw)
EMPTY("kprobe/aio_read", kprobe_aio_read)
EMPTY("kretprobe/aio_read", kretprobe_aio_read)
EMPTY("kprobe/aio_write", kprobe_aio_write)
EMPTY("kretprobe/aio_write", kretprobe_aio_write)
EMPTY("kprobe/aio_complete_rw", kprobe_aio_complete_rw)
EMPTY("tp/syscalls/sys_enter_sendfile64", tp_sys_enter_sendfile64)
EMPTY("tp/syscalls/sys_exit_sendfile64", tp_sys_exit_sendfile64)
EMPTY("tp/syscalls/sys_enter_splice", tp_sys_enter_splice)
EMPTY("tp/syscalls/sys_exit_splice", tp_sys_exit_splice)
EMPTY("tp/syscalls/sys_enter_copy_file_range", tp_sys_enter_copy_file_range)
EMPTY("tp/syscalls/sys_exit_copy_file_range", tp_sys_exit_copy_file_range)
EMPTY("fexit/finish_open", fexit_finish_open)
EMPTY("kprobe/finish_open", kprobe_finish_open)
EMPTY("kretprobe/finish_open", kretprobe_finish_open)
