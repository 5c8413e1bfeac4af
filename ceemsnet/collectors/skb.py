"""cgroup_skb backend: IP-layer bytes and packets per cgroup, for comparison.

Two modes (--skb.mode):
  root        one pair of programs attached to the cgroup2 root (or the
              --skb.root subtree); every skb is counted in a hash map keyed
              by bpf_skb_cgroup_id(), the cgroup its socket was created in.
  per-cgroup  the programs attached to every cgroup whose path matches
              --skb.cgroups (a glob such as /slurm/*/job_*), counting into
              per-CPU cgroup storage; cgroups are followed as they appear
              and disappear (a cgroup's last counts are kept after it goes).
Programs are attached with BPF links, which are multi-attach (the kernel
treats them as BPF_F_ALLOW_MULTI): other programs on the same cgroups, such
as systemd's IP accounting, keep running, and only our links are removed.
A link also goes away with the exporter process, so a crash leaves nothing
attached.
"""

from __future__ import annotations

import ctypes
import errno
import fnmatch
import logging
import os
import threading

from .. import CeemsnetError, libbpf
from ..cgroups import scan_cgroup_ids
from ..choice import HookChoice
from ..loader import BpfMap
from ..metrics import Family
from ..objects import SKB_OBJECTS
from ..structs import NET_DIR, NET_FAMILY, decode_drops, decode_skb, decode_skb_storage

log = logging.getLogger("ceemsnet.skb")
MODES = ("root", "per-cgroup")
PROGRAMS = ("cgroup_skb_egress", "cgroup_skb_ingress")


class SkbBackend:
    def __init__(self, cgroup_root: str, mode: str = "root", subtree: str = "/", pattern: str | None = None,
                 map_entries: int = 65536):
        if mode not in MODES:
            raise CeemsnetError(f"unknown --skb.mode {mode!r}: choose root or per-cgroup")
        if mode == "per-cgroup" and not pattern:
            raise CeemsnetError("--skb.mode=per-cgroup needs --skb.cgroups=GLOB (e.g. '/slurm/*/job_*')")
        self.root = cgroup_root
        self.mode = mode
        self.subtree = "/" + subtree.strip("/") if subtree.strip("/") else "/"
        self.pattern = pattern
        self.spec = SKB_OBJECTS[mode]
        self.lock = threading.RLock()
        self.attached: dict[str, tuple[int, list[int]]] = {}  # path -> (cgroup id, links)
        self.final: dict[tuple[int, int, int], tuple] = {}    # counts of cgroups that went away
        lb = libbpf.lib()
        self._obj = lb.bpf_object__open_file(self.spec.path.encode(), None)
        if not self._obj:
            raise CeemsnetError(f"cannot open {self.spec.path}: {os.strerror(ctypes.get_errno())}")
        try:
            if mode == "root":
                m = lb.bpf_object__find_map_by_name(self._obj, b"skb_stats")
                libbpf.check_rc(lb.bpf_map__set_max_entries(m, map_entries), "resize skb_stats")
            with libbpf.capture_log():
                rc = lb.bpf_object__load(self._obj)
            if rc < 0:
                raise CeemsnetError(f"loading {self.spec.file} failed: {os.strerror(-rc)}"
                                    + (" (needs root)" if -rc == errno.EPERM and os.geteuid() else ""))
            self.progs = {n: lb.bpf_object__find_program_by_name(self._obj, n.encode()) for n in PROGRAMS}
            name = "skb_stats" if mode == "root" else "skb_cgroup_storage"
            mp = lb.bpf_object__find_map_by_name(self._obj, name.encode())
            self.map = BpfMap.from_libbpf(name, mp)
            dp = lb.bpf_object__find_map_by_name(self._obj, b"skb_drops")
            self.drops = BpfMap.from_libbpf("skb_drops", dp) if dp else None
            if mode == "root":
                path = os.path.join(self.root, self.subtree.lstrip("/"))
                if not os.path.isdir(path):
                    raise CeemsnetError(f"--skb.root {self.subtree} is not a cgroup under {self.root}")
                self._attach(self.subtree, path)
            else:
                self.sync()
        except BaseException:
            self.close()
            raise

    def _attach(self, rel: str, path: str) -> None:
        lb = libbpf.lib()
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        links = []
        try:
            for name in PROGRAMS:
                link = lb.bpf_program__attach_cgroup(self.progs[name], fd)
                if not link:
                    err = ctypes.get_errno() or errno.EINVAL
                    for ln in links:
                        lb.bpf_link__destroy(ln)
                    hint = (": a program attached there without BPF_F_ALLOW_MULTI excludes others"
                            if err == errno.EPERM and os.geteuid() == 0 else "")
                    raise OSError(err, f"attach {name} to {rel}: {os.strerror(err)}{hint}")
                links.append(link)
            self.attached[rel] = (os.fstat(fd).st_ino, links)
        finally:
            os.close(fd)

    def sync(self) -> None:
        """per-cgroup: attach to new matching cgroups, let go of removed ones."""
        if self.mode != "per-cgroup":
            return
        with self.lock:
            ids = scan_cgroup_ids(self.root)
            want = {p: i for i, p in ids.items() if fnmatch.fnmatchcase(p, self.pattern)}
            gone = [p for p, (cid, _) in self.attached.items() if want.get(p) != cid]
            if gone:
                # keep the final counts: the storage dies with the links
                live = self._read_storage()
                lb = libbpf.lib()
                for p in gone:
                    cid, links = self.attached.pop(p)
                    for k, v in live.items():
                        if k[0] == cid:
                            self.final[k] = v
                    for ln in links:
                        lb.bpf_link__destroy(ln)
            for p, cid in want.items():
                if p not in self.attached:
                    try:
                        self._attach(p, os.path.join(self.root, p.lstrip("/")))
                    except OSError as e:
                        if e.errno != errno.ENOENT:  # removed while we looked: not an error
                            log.warning("skb: %s", e)

    def _read_storage(self) -> dict:
        keys, values, n = self.map.read_all()
        return decode_skb_storage(keys, values, n, self.map.ncpus)

    def read(self) -> dict[tuple[int, int, int], tuple]:
        """{(cgroup id, family, dir): (bytes, packets, segments)}."""
        with self.lock:
            if self.mode == "root":
                keys, values, n = self.map.read_all()
                return decode_skb(keys, values, n, self.map.ncpus)
            out = dict(self.final)
            for k, v in self._read_storage().items():
                out[k] = v
            return out

    def attached_ids(self) -> set[int]:
        with self.lock:
            return {cid for cid, _ in self.attached.values()}

    def close(self) -> None:
        lb = libbpf.lib()
        with self.lock:
            for _, links in self.attached.values():
                for ln in links:
                    lb.bpf_link__destroy(ln)
            self.attached.clear()
            if self._obj:
                lb.bpf_object__close(self._obj)
                self._obj = 0

    def hooks(self) -> list[HookChoice]:
        where = self.subtree if self.mode == "root" else self.pattern
        return [HookChoice("skb", h.function, "cgroup_skb", self.spec.file, "ok",
                           f"{self.mode} mode on {where}", h.programs) for h in self.spec.hooks]


def skb_families(stats: dict, paths: dict[int, str]) -> list[Family]:
    """ceemsnet_skb_* families from decoded counts (pure); ids with one path are summed."""
    totals: dict[tuple[str, str, int], list[int]] = {}
    for (cid, fam, d), vals in stats.items():
        acc = totals.setdefault((paths[cid], NET_FAMILY.get(fam, str(fam)), d), [0, 0, 0])
        for i in range(3):
            acc[i] += vals[i]
    ordered = sorted(totals.items())
    out = []
    for d, direction in sorted(NET_DIR.items()):
        for i, (field, doc) in enumerate((("bytes", "IP-layer bytes (headers included, skb->len)"),
                                          ("packets", "skbs (a GSO super-packet counts once)"),
                                          ("segments", "GSO segments: the packets on the wire"))):
            f = Family(f"ceemsnet_skb_{direction}_{field}",
                       f"cgroup_skb {direction}: {doc}, per cgroup the socket was created in",
                       "counter", ("cgroup", "family"))
            f.rows = [((cg, fam), v[i]) for (cg, fam, dd), v in ordered if dd == d]
            out.append(f)
    return out


class SkbCollector:
    name = "skb"

    def __init__(self, backend: SkbBackend, resolver, sync_interval: float = 1.0):
        self.backend = backend
        self.resolver = resolver
        self._stop = threading.Event()
        self._thread = None
        if backend.mode == "per-cgroup" and sync_interval > 0:
            self._thread = threading.Thread(target=self._follow, args=(sync_interval,), name="skb-sync",
                                            daemon=True)
            self._thread.start()

    def _follow(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.backend.sync()
            except Exception as e:  # keep following; the next round may succeed
                log.warning("skb: following cgroups failed: %s", e)

    def collect(self) -> list[Family]:
        self.backend.sync()
        stats = self.backend.read()
        if self.backend.mode == "per-cgroup":  # attached cgroups show up at 0 before their first packet
            for cid in self.backend.attached_ids():
                for fam in (0, 1):
                    for d in (0, 1):
                        stats.setdefault((cid, fam, d), (0, 0, 0))
        paths = self.resolver.resolve({k[0] for k in stats})
        fams = skb_families(stats, paths)
        att = Family("ceemsnet_skb_attached_cgroups", "Cgroups the cgroup_skb programs are attached to",
                     "gauge", ("mode",))
        att.add((self.backend.mode,), len(self.backend.attached))
        fams.append(att)
        if self.backend.drops is not None:
            _, dv, dn = self.backend.drops.read_all()
            m = Family("ceemsnet_map_update_failures",
                       "Events a BPF program could not count because a map was full", "counter", ("map",))
            m.add(("skb_stats",), decode_drops(dv, dn, self.backend.drops.ncpus).get("stats_full", 0))
            fams.append(m)
        return fams

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        self.backend.close()
