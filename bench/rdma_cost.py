#!/usr/bin/env python3
"""Per-event cost of the rdma programs (bpf/rdma/rdma.bpf.c) beside empty programs on the same
functions, and what they cost a soft-RoCE workload, in the same run.

Needs root, a kernel with the rdma_rxe module (the VM guests: this development host's kernel has
no modules) and perftest. The bed is tests/kernel/rdma.py's: rxe on a dummy netdev holding
127.0.0.3. The catalogue's rdma object for this kernel and --family (fexit: fexit/fentry;
kretprobe: kprobe, and a kretprobe on rdma_restrack_add) is loaded with the programs the plan
attaches here; bench/rdma_empty.bpf.c holds programs of the same names and kinds that only return.
With the kernel's run time statistics on (BPF_ENABLE_STATS), one perftest run (--tool, --iters
messages of --size bytes; server and client each in a fresh cgroup) is made per variant and
round, in turn: nothing attached, the empty programs, ceemsnet's programs. Each program's
run_time_ns / run_cnt is read from its fdinfo. Printed, per hooked function: the events (calls)
per workload and the kernel run time per event of ours and of the empty programs (medians over
the rounds; a kretprobe event is the entry and the return probe's runs added); and perftest's
average bandwidth with each variant. The bytes ceemsnet's object counted for the sender's cgroup
are checked against iters x size per round (exit 1 otherwise). --rows prints bench/rows.py's rows.

    tests/vm/run.sh 6.12 .venv/bin/python bench/rdma_cost.py --family=fexit
"""

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from packaging.version import Version  # noqa: E402

from ceemsnet import CeemsnetError  # noqa: E402
from ceemsnet.attribution.cgroups import find_cgroup2_root  # noqa: E402
from ceemsnet.planning.catalogue import SUBSYSTEM_MODULES, BpfObject  # noqa: E402
from ceemsnet.planning.choice import plan_family  # noqa: E402
from ceemsnet.planning.kernel import normalize_arch, parse_kernel_version, running_release  # noqa: E402
from ceemsnet.planning.structs import RDMA_DIRS, decode_rdma_bytes  # noqa: E402
from ceemsnet.runtime.btf import KernelBTF, ModuleBTF  # noqa: E402
from ceemsnet.runtime.collection import ObjectSpec, load  # noqa: E402
from tests.kernel.rdma import have_rxe_module, soft_roce  # noqa: E402
from bpfstats import RunTimeStats, program_stats  # noqa: E402  (bench/, this script's folder)
from hookcost import build_empty, run_main  # noqa: E402
from rows import add_rows_flag, emit, row  # noqa: E402

SCRIPT = "bench/rdma_cost.py"
VARIANTS = ("none", "empty", "ours")
EGRESS = next(k for k, v in RDMA_DIRS.items() if v == "egress")


def listening(port: int) -> bool:
    """A TCP socket listens on this port (IPv4 or IPv6): perftest's server is ready for its client."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    w = line.split()
                    if w[3] == "0A" and int(w[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except OSError:
            continue
    return False


def in_cgroup(path):
    """preexec_fn: the child moves itself into the cgroup before exec, so everything it creates is charged there."""
    def move():
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write("0")
    return move


def perftest(bed, a, port: int, cgroups: dict) -> float:
    """One perftest run (server, then client): the client's average bandwidth in MB/s."""
    args = ("-n", str(a.iters), "-s", str(a.size), "-p", str(port))
    server = subprocess.Popen(bed.perftest(a.tool, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, preexec_fn=in_cgroup(cgroups["server"]))
    try:
        deadline = time.time() + 60
        while not listening(port):
            if server.poll() is not None or time.time() > deadline:
                raise CeemsnetError(f"{a.tool} server did not listen on port {port}: {server.stderr.read().strip()}")
            time.sleep(0.1)
        client = subprocess.run(bed.perftest(a.tool, *args, server=bed.address), capture_output=True, text=True,
                                timeout=1800, preexec_fn=in_cgroup(cgroups["client"]))
        if client.returncode:
            raise CeemsnetError(f"{a.tool} client failed (exit {client.returncode}): {client.stderr.strip()[-300:]}")
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
    for line in client.stdout.splitlines():
        w = line.split()
        # " #bytes #iterations BW peak[MB/sec] BW average[MB/sec] MsgRate[Mpps]"
        if len(w) >= 4 and w[0] == str(a.size) and w[1] == str(a.iters):
            return float(w[3])
    raise CeemsnetError(f"{a.tool}: no result line in its output: {client.stdout.strip()[-300:]}")


@contextlib.contextmanager
def bed_up():
    """tests/kernel/rdma.py's soft-RoCE bed on 127.0.0.3; its failures as one line."""
    try:
        with soft_roce(octet=3) as bed:
            yield bed
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise CeemsnetError(f"the soft-RoCE bed: {e}") from None


def stats(coll, progs: dict) -> dict:
    """{function: (run_time_ns, events)} now; events: the runs of the function's first program."""
    out = {}
    for f, names in progs.items():
        runs = [program_stats(coll, n) for n in names]
        out[f] = (sum(t for t, _ in runs), runs[0][1])
    return out


def sent_bytes(coll, cgroup_id: int) -> int:
    """Egress bytes ceemsnet's object counted for a cgroup, over its devices and ports."""
    return sum(v for (cg, _, _, d), v in decode_rdma_bytes(*coll.maps["rdma_bytes"].read_all()).items()
               if cg == cgroup_id and d == EGRESS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", default="fexit", choices=("fexit", "kretprobe"))
    ap.add_argument("--tool", default="ib_write_bw", choices=("ib_write_bw", "ib_send_bw", "ib_read_bw"))
    ap.add_argument("--iters", type=int, default=2000, help="messages per perftest run (perftest -n)")
    ap.add_argument("--size", type=int, default=65536, help="bytes per message (perftest -s)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the three variants (none, empty, ours)")
    add_rows_flag(ap)
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit(f"{SCRIPT}: needs root")
    if a.rounds < 1 or a.iters < 1 or a.size < 1:
        sys.exit(f"{SCRIPT}: --rounds, --iters and --size must be >= 1")
    missing = [p for p in ("modprobe", "ip", "rdma", a.tool) if shutil.which(p) is None]
    if missing:
        sys.exit(f"{SCRIPT}: {', '.join(missing)} not installed (packaging/apt-packages.txt: iproute2, kmod, perftest)")
    why = have_rxe_module()
    if why:
        sys.exit(f"{SCRIPT}: {why}")
    if shutil.which("clang-19") is None and not os.environ.get("CEEMSNET_BENCH_EMPTY_DIR"):
        sys.exit(f"{SCRIPT}: clang-19 is needed to build the empty programs (make setup)")
    root = find_cgroup2_root()
    tag = uuid.uuid4().hex[:8]
    cgroups = {side: os.path.join(root, f"ceemsnet-bench-rdma-{side}-{tag}") for side in ("server", "client")}
    sender = "server" if a.tool == "ib_read_bw" else "client"
    tmp = os.path.join("/tmp", f"ceemsnet-bench-rdma-{tag}")
    os.mkdir(tmp)
    colls, made = [], []
    try:
        with bed_up() as bed:
            # the modules are loaded now: plan against their BTF
            kernel_btf = KernelBTF()
            sigs = ModuleBTF(kernel_btf, SUBSYSTEM_MODULES["rdma"])
            try:
                plan = plan_family("rdma", a.family, parse_kernel_version(running_release()),
                                   normalize_arch(os.uname().machine), sigs)
            finally:
                sigs.close()
            if plan.refused:
                raise CeemsnetError(f"the rdma {a.family} family cannot run here: {plan.refused}")
            progs = {h.function: list(h.programs) for h in plan.hooks if h.status == "ok" and h.programs}
            skipped = [h.function for h in plan.hooks if h.status != "ok"]
            names = tuple(n for ns in progs.values() for n in ns)
            empty_file = build_empty("rdma_empty.bpf.c", tmp).path
            empty = load(ObjectSpec(BpfObject(empty_file, "rdma", a.family, (plan.obj.arches[0],), Version("0"), None,
                                              modules=plan.obj.modules), programs=names))
            colls.append(empty)
            ours = load(ObjectSpec(plan.obj, programs=names))
            colls.append(ours)
            for p in cgroups.values():
                os.mkdir(p)
                made.append(p)
            port = 18515 + os.getpid() % 10000
            rate = {v: [] for v in VARIANTS}
            per = {v: {f: [] for f in progs} for v in ("empty", "ours")}  # [(ns, events)] per round
            with RunTimeStats():
                for _ in range(a.rounds):
                    for v in VARIANTS:
                        coll = {"empty": empty, "ours": ours}.get(v)
                        if coll is not None:
                            for n in names:
                                coll.attach(n)
                        try:
                            before = stats(coll, progs) if coll else {}
                            rate[v].append(perftest(bed, a, port, cgroups))
                            after = stats(coll, progs) if coll else {}
                        finally:
                            if coll is not None:
                                coll.detach(list(coll.links))
                        for f in progs if coll else ():
                            per[v][f].append((after[f][0] - before[f][0], after[f][1] - before[f][1]))
            counted = sent_bytes(ours, os.stat(cgroups[sender]).st_ino)
    finally:
        for c in colls:
            c.close()
        for p in made:
            os.rmdir(p)
        shutil.rmtree(tmp, ignore_errors=True)
    want = a.rounds * a.iters * a.size
    if counted != want:
        raise CeemsnetError(f"ceemsnet's object counted {counted} bytes sent by the {sender}'s cgroup in "
                            f"{a.rounds} rounds, not {want} ({a.rounds} x {a.iters} x {a.size}): its figures "
                            "would not be those of a working collector")
    obj = plan.obj.file.removesuffix(".bpf.o")
    load_what = f"{a.tool} {a.iters} x {a.size} B on rdma_rxe"
    rows = []
    for f in progs:
        med = {}
        for v in ("empty", "ours"):
            rs = per[v][f]
            med[v] = (statistics.median(t / e if e else 0.0 for t, e in rs), statistics.median(e for _, e in rs))
        if not med["ours"][1]:
            continue  # not called by this workload (rdma_restrack_commit_del on 6.1, rxe_comp_queue_pkt without READ)
        what = f"rdma {f} ({a.family}, {obj}, {load_what}): kernel run time per event"
        rows.append({**row(what, med["ours"][0], "ns", med["empty"][0],
                           f"empty {a.family} program{'s' if len(progs[f]) > 1 else ''} on the same function, "
                           "same run"), "events": med["ours"][1], "empty_events": med["empty"][1],
                     "programs": progs[f]})
    bw = {v: statistics.median(rate[v]) for v in VARIANTS}
    rows.append(row(f"{a.tool} bandwidth with {obj} attached ({load_what})", bw["ours"], "MB/s", bw["none"],
                    "nothing attached, same run"))
    rows.append(row(f"{a.tool} bandwidth with empty {a.family} programs attached ({load_what})", bw["empty"],
                    "MB/s", bw["none"], "nothing attached, same run"))
    if a.rows:
        for r in rows:
            emit(r)
        return 0
    print(f"kernel {os.uname().release}, {plan.obj.file}, {load_what}, {a.rounds} rounds (medians); "
          f"bytes counted for the {sender}'s cgroup: {counted} (exact)"
          + (f"; not hooked here: {', '.join(skipped)}" if skipped else ""))
    for r in rows[:-2]:
        fn = r["what"].split(" (")[0].removeprefix("rdma ")
        print(f"  {fn:26s} {r['events']:>8.0f} events/run  ours {r['value']:8.1f} ns/event | empty "
              f"{r['baseline']:8.1f} ns/event | above empty {r['value'] - r['baseline']:+8.1f} ns/event")
    for r in rows[-2:]:
        print(f"  {r['what'].split(' (')[0]}: {r['value']:.2f} MB/s vs {r['baseline']:.2f} nothing attached "
              f"(ratio {r['ratio']:.3f})")
    return 0


if __name__ == "__main__":
    run_main(SCRIPT, main)
