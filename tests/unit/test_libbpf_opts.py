"""The ctypes mirror of libbpf's struct bpf_object_open_opts has the installed header's layout
(libbpf-dev, Debian 12's 1.1): a wrong offset would hand libbpf a garbage btf_custom_path."""

import ctypes
import subprocess

from ceemsnet.runtime import libbpf

from ..programs import require_program

FIELDS = ("sz", "object_name", "relaxed_maps", "pin_root_path", "kconfig", "btf_custom_path", "kernel_log_buf",
          "kernel_log_size", "kernel_log_level")


def test_open_opts_layout_matches_the_header(tmp_path):
    gcc = require_program("gcc")
    src = tmp_path / "opts.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n#include <bpf/libbpf.h>\nint main(void) {\n"
                   '    printf("%zu", sizeof(struct bpf_object_open_opts));\n'
                   + "".join(f'    printf(" %zu", offsetof(struct bpf_object_open_opts, {f}));\n' for f in FIELDS)
                   + "    return 0;\n}\n")
    p = subprocess.run([gcc, "-o", str(tmp_path / "opts"), str(src)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    c = [int(x) for x in subprocess.run([str(tmp_path / "opts")], capture_output=True, text=True,
                                        check=True).stdout.split()]
    cls = libbpf.bpf_object_open_opts
    assert c == [ctypes.sizeof(cls)] + [getattr(cls, f).offset for f in FIELDS]


def test_open_opts_sets_sz_and_the_path():
    opts = libbpf.open_opts("/sys/kernel/btf/vmlinux")
    assert opts.sz == ctypes.sizeof(libbpf.bpf_object_open_opts)
    assert opts.btf_custom_path == b"/sys/kernel/btf/vmlinux"
    assert libbpf.open_opts().btf_custom_path is None
