"""ctypes binding to the system libbpf (Debian's libbpf1, libbpf >= 1.0).

Only the calls ceemsnet needs, each with its C prototype declared. libbpf 1.x
reports errors as NULL pointers or negative returns with errno set; the
wrappers here turn those into OSError with the errno and a message.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno as errno_mod
import logging
import os
import threading

log = logging.getLogger("ceemsnet.runtime.libbpf")

c_void_p = ctypes.c_void_p
c_int = ctypes.c_int
c_char_p = ctypes.c_char_p
c_size_t = ctypes.c_size_t
c_uint32 = ctypes.c_uint32
c_uint64 = ctypes.c_uint64
c_bool = ctypes.c_bool

LIBBPF_NAMES = ("libbpf.so.1", "libbpf.so")


class bpf_map_batch_opts(ctypes.Structure):
    _fields_ = [("sz", c_size_t), ("elem_flags", c_uint64), ("flags", c_uint64)]


class btf_type(ctypes.Structure):
    # include/uapi/linux/btf.h: name_off, info, union { size; type; }
    _fields_ = [("name_off", c_uint32), ("info", c_uint32), ("size_or_type", c_uint32)]


class btf_param(ctypes.Structure):  # after a FUNC_PROTO
    _fields_ = [("name_off", c_uint32), ("type", c_uint32)]


class btf_enum(ctypes.Structure):  # after an ENUM
    _fields_ = [("name_off", c_uint32), ("val", ctypes.c_int32)]


class btf_var_secinfo(ctypes.Structure):  # after a DATASEC
    _fields_ = [("type", c_uint32), ("offset", c_uint32), ("size", c_uint32)]


class bpf_object_open_opts(ctypes.Structure):
    """libbpf 1.1's struct bpf_object_open_opts (libbpf.h; 80 bytes on 64-bit, checked against the
    C header by tests/unit/test_libbpf_opts.py). libbpf reads only the first `sz` bytes, and
    later versions only appended fields, so this layout is right for every libbpf >= 1.0."""
    _fields_ = [("sz", c_size_t), ("object_name", c_char_p), ("relaxed_maps", c_bool),
                ("pin_root_path", c_char_p), ("_attach_prog_fd", c_uint32),  # removed in 1.0, kept as padding
                ("kconfig", c_char_p), ("btf_custom_path", c_char_p), ("kernel_log_buf", c_char_p),
                ("kernel_log_size", c_size_t), ("kernel_log_level", c_uint32)]


def open_opts(btf_custom_path: str | None = None) -> bpf_object_open_opts:
    """Open options; btf_custom_path: the BTF that CO-RE relocations are made against, instead
    of vmlinux's plus, where vmlinux lacks a type, every kernel module's (listing module BTF,
    BPF_BTF_GET_NEXT_ID and BPF_BTF_GET_FD_BY_ID, needs CAP_SYS_ADMIN)."""
    opts = bpf_object_open_opts(sz=ctypes.sizeof(bpf_object_open_opts))
    if btf_custom_path is not None:
        opts.btf_custom_path = btf_custom_path.encode()
    return opts


class bpf_map_create_opts(ctypes.Structure):
    _fields_ = [("sz", c_size_t), ("btf_fd", c_uint32), ("btf_key_type_id", c_uint32),
                ("btf_value_type_id", c_uint32), ("btf_vmlinux_value_type_id", c_uint32),
                ("inner_map_fd", c_uint32), ("map_flags", c_uint32), ("map_extra", c_uint64),
                ("numa_node", c_uint32), ("map_ifindex", c_uint32)]


class bpf_map_info(ctypes.Structure):  # include/uapi/linux/bpf.h, the fields read here
    _fields_ = [("type", c_uint32), ("id", c_uint32), ("key_size", c_uint32), ("value_size", c_uint32),
                ("max_entries", c_uint32), ("map_flags", c_uint32), ("name", ctypes.c_char * 16),
                ("rest", ctypes.c_uint64 * 8)]  # later fields: zeroed room the kernel may fill


PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)

_PROTOS = {
    # name: (restype, argtypes)
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "libbpf_major_version": (c_uint32, []),
    "libbpf_minor_version": (c_uint32, []),
    "libbpf_num_possible_cpus": (c_int, []),
    "bpf_object__open_file": (c_void_p, [c_char_p, ctypes.POINTER(bpf_object_open_opts)]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__btf": (c_void_p, [c_void_p]),
    "bpf_object__next_program": (c_void_p, [c_void_p, c_void_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__next_map": (c_void_p, [c_void_p, c_void_p]),
    "bpf_map__name": (c_char_p, [c_void_p]),
    "bpf_program__name": (c_char_p, [c_void_p]),
    "bpf_program__set_autoload": (c_int, [c_void_p, c_bool]),
    "bpf_program__fd": (c_int, [c_void_p]),
    "bpf_program__attach": (c_void_p, [c_void_p]),
    "bpf_program__attach_cgroup": (c_void_p, [c_void_p, c_int]),
    "bpf_program__attach_perf_event": (c_void_p, [c_void_p, c_int]),
    "bpf_program__section_name": (c_char_p, [c_void_p]),
    "bpf_link__destroy": (c_int, [c_void_p]),
    "bpf_link__open": (c_void_p, [c_char_p]),
    "bpf_link__fd": (c_int, [c_void_p]),
    "bpf_link__pin": (c_int, [c_void_p, c_char_p]),
    "bpf_link__unpin": (c_int, [c_void_p]),
    "bpf_map__reuse_fd": (c_int, [c_void_p, c_int]),
    "bpf_map__map_flags": (c_uint32, [c_void_p]),
    "bpf_obj_pin": (c_int, [c_int, c_char_p]),
    "bpf_link_update": (c_int, [c_int, c_int, c_void_p]),
    "bpf_map_create": (c_int, [c_int, c_char_p, c_uint32, c_uint32, c_uint32,
                               ctypes.POINTER(bpf_map_create_opts)]),
    "bpf_obj_get": (c_int, [c_char_p]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, c_void_p, ctypes.POINTER(c_uint32)]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, c_uint32]),
    "bpf_map__max_entries": (c_uint32, [c_void_p]),
    "bpf_map__key_size": (c_uint32, [c_void_p]),
    "bpf_map__value_size": (c_uint32, [c_void_p]),
    "bpf_map__type": (c_int, [c_void_p]),
    "bpf_map__initial_value": (c_void_p, [c_void_p, ctypes.POINTER(c_size_t)]),
    "bpf_map_lookup_batch": (c_int, [c_int, c_void_p, c_void_p, c_void_p, c_void_p,
                                     ctypes.POINTER(c_uint32), ctypes.POINTER(bpf_map_batch_opts)]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "btf__load_vmlinux_btf": (c_void_p, []),
    "btf__parse": (c_void_p, [c_char_p, c_void_p]),
    "btf__parse_split": (c_void_p, [c_char_p, c_void_p]),
    "btf__free": (None, [c_void_p]),
    "btf__find_by_name_kind": (c_int, [c_void_p, c_char_p, c_uint32]),
    "btf__type_by_id": (ctypes.POINTER(btf_type), [c_void_p, c_uint32]),
    "btf__name_by_offset": (c_char_p, [c_void_p, c_uint32]),
}

# enum bpf_map_type values used here (include/uapi/linux/bpf.h)
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_PERCPU_HASH = 10
BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE = 21
PERCPU_MAP_TYPES = {BPF_MAP_TYPE_PERCPU_HASH, BPF_MAP_TYPE_PERCPU_ARRAY, BPF_MAP_TYPE_LRU_PERCPU_HASH,
                    BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE}
# map flags
BPF_F_NO_PREALLOC = 1

_lib = None
_lib_lock = threading.Lock()
_print_cb = None
# libbpf's log lines of the current thread's load, kept for error messages
_log_tls = threading.local()


class LibbpfUnavailable(OSError):
    pass


def libc():
    """The C library, errno kept for ctypes.get_errno()."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _vsnprintf():
    fn = libc().vsnprintf
    fn.restype = c_int
    fn.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
    return fn


def lib():
    """The loaded libbpf, prototypes declared and its log routed to logging."""
    global _lib, _print_cb
    with _lib_lock:
        if _lib is not None:
            return _lib
        last = None
        for name in LIBBPF_NAMES:
            try:
                handle = ctypes.CDLL(name, use_errno=True)
                break
            except OSError as e:
                last = e
        else:
            raise LibbpfUnavailable(
                errno_mod.ENOENT,
                f"cannot load libbpf ({last}); install Debian's libbpf1 (make setup does)")
        for fname, (res, args) in _PROTOS.items():
            fn = getattr(handle, fname, None)
            if fn is None:
                raise LibbpfUnavailable(errno_mod.ENOSYS, f"libbpf lacks {fname}(): libbpf >= 1.0 is needed")
            fn.restype = res
            fn.argtypes = args
        vsnprintf = _vsnprintf()

        def _print(level, fmt, ap):
            buf = ctypes.create_string_buffer(4096)
            vsnprintf(buf, len(buf), fmt, ap)
            line = buf.value.decode("utf-8", "replace").rstrip("\n")
            lines = getattr(_log_tls, "lines", None)
            if lines is not None:
                lines.append(line)
            # libbpf levels: 0 warn, 1 info, 2 debug
            # ceemsnet reports the reasons that matter itself; libbpf's own
            # lines are for --log.level=debug
            log.debug("%s", line)
            return 0

        _print_cb = PRINT_FN(_print)
        handle.libbpf_set_print(_print_cb)
        _lib = handle
        return _lib


def version() -> str:
    lb = lib()
    return f"{lb.libbpf_major_version()}.{lb.libbpf_minor_version()}"


def num_possible_cpus() -> int:
    n = lib().libbpf_num_possible_cpus()
    if n < 0:
        raise OSError(-n, "libbpf_num_possible_cpus failed")
    return n


class capture_log:
    """Collect libbpf's log lines (verifier output included) while in the block."""

    def __enter__(self):
        self.lines = []
        _log_tls.lines = self.lines
        return self

    def __exit__(self, *exc):
        _log_tls.lines = None
        return False


def check_rc(rc: int, what: str) -> int:
    if rc < 0:
        err = -rc if rc != -1 else (ctypes.get_errno() or errno_mod.EINVAL)
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return rc

