"""A kernel's (or an opened object's) BTF through libbpf's btf__* API:
function and tracepoint prototypes, enums, data section layouts."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass

from ceemsnet import CeemsnetError
from ceemsnet.runtime import libbpf


@dataclass(frozen=True)
class Signature:
    """A function prototype as BTF gives it: return type and (name, type) params."""
    ret: str
    params: tuple[tuple[str, str], ...]

    def render(self, name: str = "") -> str:
        args = ", ".join(f"{t} {n}".replace("* ", "*") if n else t for n, t in self.params)
        return f"{self.ret} {name}({args})"


# the running kernel's BTF: a file any process may read (mode 0444), no capability needed
VMLINUX = "/sys/kernel/btf/vmlinux"

# BTF kinds read here (include/uapi/linux/btf.h)
BTF_KIND_PTR, BTF_KIND_STRUCT, BTF_KIND_UNION = 2, 4, 5
BTF_KIND_ENUM, BTF_KIND_FWD, BTF_KIND_TYPEDEF, BTF_KIND_VOLATILE, BTF_KIND_CONST = 6, 7, 8, 9, 10
BTF_KIND_RESTRICT, BTF_KIND_FUNC, BTF_KIND_FUNC_PROTO = 11, 12, 13
BTF_KIND_DATASEC, BTF_KIND_TYPE_TAG, BTF_KIND_ENUM64 = 15, 18, 19
_QUALIFIERS = {BTF_KIND_VOLATILE, BTF_KIND_CONST, BTF_KIND_RESTRICT, BTF_KIND_TYPE_TAG}


class KernelBTF:
    """Function and tracepoint prototypes, enums and data sections from a kernel's or an
    object's BTF (via libbpf)."""

    def __init__(self, path: str | None = None, borrowed=None, base: "KernelBTF | None" = None):
        self._lb = libbpf.lib()
        self._owned = borrowed is None
        self._base = base  # a module's split BTF refers to the kernel's: keep it alive
        if borrowed is not None:  # an opened object's BTF, libbpf's to free
            ptr, what = borrowed, "an opened object"
        elif path is None:
            if not os.path.exists(VMLINUX):
                raise CeemsnetError(
                    "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): "
                    "ceemsnet needs a kernel built with CONFIG_DEBUG_INFO_BTF=y")
            ptr = self._lb.btf__load_vmlinux_btf()
            what = VMLINUX
        elif base is not None:  # a module's BTF (/sys/kernel/btf/<module>), split from the kernel's
            ptr = self._lb.btf__parse_split(path.encode(), base._btf)
            what = path
        else:
            ptr = self._lb.btf__parse(path.encode(), None)
            what = path
        if not ptr:
            raise CeemsnetError(f"cannot read BTF from {what}: {os.strerror(ctypes.get_errno() or 22)}")
        self._btf = ptr
        self._cache: dict[str, Signature | None] = {}

    def close(self):
        if self._btf and self._owned:
            self._lb.btf__free(self._btf)
            self._btf = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _type(self, tid: int):
        return self._lb.btf__type_by_id(self._btf, tid).contents

    def _name(self, off: int) -> str:
        n = self._lb.btf__name_by_offset(self._btf, off)
        return n.decode() if n else ""

    def render_type(self, tid: int, depth: int = 0) -> str:
        if tid == 0:
            return "void"
        if depth > 20:
            return "?"
        t = self._type(tid)
        kind = (t.info >> 24) & 0x1F
        name = self._name(t.name_off)
        if kind in _QUALIFIERS:
            return self.render_type(t.size_or_type, depth + 1)
        if kind == BTF_KIND_PTR:
            target = self.render_type(t.size_or_type, depth + 1)
            return target + ("*" if target.endswith("*") else " *")  # "struct inode **"
        if kind in (BTF_KIND_STRUCT,):
            return f"struct {name}"
        if kind == BTF_KIND_UNION:
            return f"union {name}"
        if kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return f"enum {name}"
        if kind == BTF_KIND_FWD:
            return f"{'union' if t.info >> 31 else 'struct'} {name}"
        if kind == BTF_KIND_FUNC_PROTO:
            return "fnptr"
        return name or "?"

    def _records(self, tid: int, cls):
        """The type's vlen and the array of `cls` records that follows it in BTF."""
        t = self._lb.btf__type_by_id(self._btf, tid)
        records = ctypes.cast(ctypes.addressof(t.contents) + ctypes.sizeof(t.contents), ctypes.POINTER(cls))
        return t.contents, t.contents.info & 0xFFFF, records

    def _proto(self, proto_id: int) -> Signature:
        t, vlen, params = self._records(proto_id, libbpf.btf_param)
        return Signature(ret=self.render_type(t.size_or_type),
                         params=tuple((self._name(params[i].name_off), self.render_type(params[i].type))
                                      for i in range(vlen)))

    def function(self, name: str) -> Signature | None:
        """The prototype of kernel function `name`, or None if BTF has no such function."""
        key = "f:" + name
        if key not in self._cache:
            tid = self._lb.btf__find_by_name_kind(self._btf, name.encode(), BTF_KIND_FUNC)
            self._cache[key] = None if tid <= 0 else self._proto(self._type(tid).size_or_type)
        return self._cache[key]

    def tracepoint(self, name: str) -> Signature | None:
        """A raw tracepoint's prototype (btf_trace_<name>), its leading `void *__data` dropped."""
        key = "t:" + name
        if key not in self._cache:
            sig = None
            tid = self._lb.btf__find_by_name_kind(self._btf, f"btf_trace_{name}".encode(), BTF_KIND_TYPEDEF)
            if tid > 0:
                ptr = self._type(self._type(tid).size_or_type)
                if (ptr.info >> 24) & 0x1F == BTF_KIND_PTR:
                    full = self._proto(ptr.size_or_type)
                    sig = Signature(ret=full.ret, params=full.params[1:])
            self._cache[key] = sig
        return self._cache[key]

    def enum_values(self, name: str) -> dict[str, int] | None:
        """{enumerator: value} of `enum name` (32-bit), or None if BTF has no such enum."""
        tid = self._lb.btf__find_by_name_kind(self._btf, name.encode(), BTF_KIND_ENUM)
        if tid <= 0:
            return None
        _, vlen, values = self._records(tid, libbpf.btf_enum)
        return {self._name(values[i].name_off): values[i].val for i in range(vlen)}

    def datasec_vars(self, section: str) -> dict[str, tuple[int, int]]:
        """{variable: (offset, size)} of a data section (".rodata") in an object's BTF."""
        tid = self._lb.btf__find_by_name_kind(self._btf, section.encode(), BTF_KIND_DATASEC)
        if tid <= 0:
            return {}
        _, vlen, infos = self._records(tid, libbpf.btf_var_secinfo)
        return {self._name(self._type(infos[i].type).name_off): (infos[i].offset, infos[i].size)
                for i in range(vlen)}


BTF_DIR = "/sys/kernel/btf"


class ModuleBTF:
    """Prototypes of the kernel's functions and of some modules' (their split BTF in
    /sys/kernel/btf/<module>, 5.11+): a subsystem that hooks module functions (rdma) plans
    against this. A module that is not loaded has no BTF there: its functions are absent."""

    def __init__(self, kernel: KernelBTF, modules: tuple[str, ...], btf_dir: str = BTF_DIR):
        self.kernel = kernel
        self.modules: dict[str, KernelBTF] = {}
        self.missing: list[str] = []
        for m in modules:
            path = os.path.join(btf_dir, m)
            try:
                self.modules[m] = KernelBTF(path, base=kernel)
            except (CeemsnetError, OSError):
                self.missing.append(m)

    def function(self, name: str) -> Signature | None:
        for b in (self.kernel, *self.modules.values()):
            sig = b.function(name)
            if sig is not None:
                return sig
        return None

    def tracepoint(self, name: str) -> Signature | None:
        return self.kernel.tracepoint(name)

    def close(self) -> None:
        for b in self.modules.values():
            b.close()
