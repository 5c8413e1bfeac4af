"""A real SLURM (Debian's 22.05, cgroup/v2) runs jobs; ceemsnet counts them exactly.

Runs inside `tests/vm/run.sh 6.12 tests/slurm/run.sh ...` (a single-node
cluster with slurmdbd; see tests/slurm/run.sh), one pytest session for all
scenarios: three exporters (`--unit=slurm`, `--cgroup.aggregate` task, step
and job) watch every job from the start.

What is exact, and why. A job's cgroups also hold SLURM's own processes:
slurmstepd in `step_<s>/slurm`, which talks to srun, slurmd and slurmctld
over TCP (IPv4 loopback here), and srun in the batch step. Those bytes are
the job's too, but no test can know them in advance. So the workloads
(tests/slurm/workload.py) move their bytes over IPv6 loopback, which SLURM
does not use in this cluster, and do their file IO on a ramfs mounted here
for them alone (the exporters count only ramfs): the ipv6 series and the
ramfs series of a job hold exactly the workloads' bytes, which each workload
also tallies itself from its calls' return values.
"""

import datetime
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(
    not (os.environ.get("CEEMSNET_SLURM_DIR") and os.environ.get("SLURM_CONF") and shutil.which("sbatch")),
    reason="needs the SLURM suite's cluster: tests/vm/run.sh 6.12 tests/slurm/run.sh .venv/bin/python -m pytest tests/slurm")

from ..kernel.accuracy import record  # noqa: E402
from ..kernel.helpers import Exporter  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TALLIES = "the workloads' own tallies (their calls' return values)"
ROOT = os.path.dirname(os.path.dirname(HERE))
RUN_SH = os.path.join(HERE, "run.sh")
WORKLOAD = os.path.join(HERE, "workload.py")
# where SLURM's cgroup/v2 plugin puts jobs when it makes its scope itself (IgnoreSystemd=yes)
CGROOT = "/sys/fs/cgroup"
SCOPE = "/system.slice/slurmstepd.scope"
if not os.path.isdir(CGROOT + SCOPE):  # slurmd -N <node> names it <node>_slurmstepd.scope
    SCOPE = next((p[len(CGROOT):] for p in sorted(glob.glob(CGROOT + "/system.slice/*_slurmstepd.scope"))), SCOPE)
LEVELS = ("task", "step", "job")
DONE = ("COMPLETED", "CANCELLED", "FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE",
        "PREEMPTED")
# per cgroup that moved TCP and UDP both ways over one family: 2 protocols x 2 directions x
# bytes, calls, errors (docs/reports.md, "Series per job")
NET_SERIES_PER_FAMILY = 12
# what each finished scenario leaves for the report test: job id -> expectations
FINISHED: dict[str, dict] = {}


# --- the cluster, the exporters ----------------------------------------------

def sh(*argv, check=True, timeout=120, **kw) -> str:
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {p.returncode}: {p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


def wait_until(what, fn, timeout=180, every=0.2):
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def job_state(job: str) -> str:
    out = sh("scontrol", "show", "job", "-o", job, check=False)
    for word in out.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return ""


def sbatch(*args) -> str:
    return sh("sbatch", "--parsable", *args).strip().split(";")[0]


def wait_job_end(job: str, timeout=300) -> str:
    return wait_until(f"job {job} to end", lambda: (s := job_state(job)) in DONE and s, timeout)


@pytest.fixture(scope="module")
def state_dir():
    d = tempfile.mkdtemp(dir=os.environ["CEEMSNET_SLURM_DIR"], prefix="tests.")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def ramfs(state_dir):
    """A ramfs for the workloads' file IO alone (nothing else in the guest uses ramfs)."""
    d = os.path.join(state_dir, "ramfs")
    os.mkdir(d)
    sh("mount", "-t", "ramfs", "ramfs", d)
    try:
        yield d
    finally:
        sh("umount", d, check=False)


@pytest.fixture(scope="module")
def exporters(state_dir):
    """{level: Exporter}: three at once, watching every job; the task one keeps the store."""
    common = ("--unit=slurm", "--collectors=net,vfs", "--vfs.fstypes=ramfs", "--cgroup.retention=1h")
    ex = {}
    try:
        for lv in LEVELS:
            extra = common + (f"--cgroup.aggregate={lv}",)
            if lv == "task":  # the store keeps the exporter's level: per task, report --by=cgroup is exact
                extra += (f"--storage.path={state_dir}/accounting.db", "--storage.interval=1s")
            ex[lv] = Exporter(extra=extra, collectors="net,vfs")
        yield ex
    finally:
        for e in ex.values():
            if e.proc.poll() is None:
                e.stop()


@pytest.fixture
def results(state_dir):
    d = tempfile.mkdtemp(dir=state_dir, prefix="job.")
    return d


# --- reading the exporters -------------------------------------------------------

def net_by_cgroup(samples, below, family="ipv6") -> dict[str, dict[str, float]]:
    """{cgroup: {"tcp/egress": bytes, ...}} of the series of `family` at or below `below`."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), v in samples.items():
        d = dict(labels)
        cg = d.get("cgroup", "")
        if not (cg == below or cg.startswith(below + "/")) or d.get("family") != family:
            continue
        for direction in ("egress", "ingress"):
            if name == f"ceemsnet_net_{direction}_bytes_total":
                k = f"{d['proto']}/{direction}"
                out.setdefault(cg, {})[k] = out.setdefault(cg, {}).get(k, 0) + v
    return out


def vfs_by_cgroup(samples, below) -> dict[str, dict[str, float]]:
    """{cgroup: {"read": bytes, "write": bytes}} of the ramfs series at or below `below`."""
    out: dict[str, dict[str, float]] = {}
    for (name, labels), v in samples.items():
        d = dict(labels)
        cg = d.get("cgroup", "")
        if not (cg == below or cg.startswith(below + "/")) or d.get("fstype") != "ramfs":
            continue
        for op in ("read", "write"):
            if name == f"ceemsnet_vfs_{op}_bytes_total":
                out.setdefault(cg, {})[op] = out.setdefault(cg, {}).get(op, 0) + v
    return out


def job_sums(samples, job_label) -> dict[str, float]:
    """The per-job sums the exporter exports for `job_label`, all families and file systems."""
    out: dict[str, float] = {}
    for (name, labels), v in samples.items():
        if name.startswith("ceemsnet_job_") and ("job", job_label) in labels:
            out[name] = out.get(name, 0) + v
    return out


def job_series(samples, below, family=None) -> dict[str, int]:
    """{cgroup: number of ceemsnet_net_* series (of `family`, or all)} at or below `below`."""
    out: dict[str, int] = {}
    for (name, labels), _ in samples.items():
        d = dict(labels)
        cg = d.get("cgroup", "")
        if (name.startswith("ceemsnet_net_") and (cg == below or cg.startswith(below + "/"))
                and family in (None, d.get("family"))):
            out[cg] = out.get(cg, 0) + 1
    return out


def leaf(jd, step) -> str:
    """The cgroup a step's single task ran in: user/task_0, or user/task_special (22.05 when
    task/cgroup constrains nothing), whichever the exporters saw."""
    return f"{jd}/step_{step}/user/task_{TASK_LEAF}"


TASK_LEAF = os.environ.get("CEEMSNET_SLURM_TASK_LEAF", "special")


def tally(results, name) -> dict:
    with open(os.path.join(results, name + ".json")) as f:
        return json.load(f)


def net_of(t: dict) -> dict:
    return {k: v for k, v in t.items() if "/" in k and v}


def vfs_of(t: dict) -> dict:
    return {k: v for k, v in t.items() if k in ("read", "write") and v}


def add(*dicts) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def series(key: str) -> str:
    """The series a tally key ("tcp/egress", "read") is compared with."""
    if "/" in key:
        proto, d = key.split("/")
        return f"ceemsnet_net_{d}_bytes_total{{proto={proto},family=ipv6}}"
    return f"ceemsnet_vfs_{key}_bytes_total{{fstype=ramfs}}"


def record_sums(what, level, want, got, samples):
    """For docs/accuracy.md, before a test compares {cgroup: {key: bytes}}: each key summed over the
    job's cgroups at one --cgroup.aggregate level, expected (tallies) and counted."""
    w, g = add(*want.values()), add(*got.values())
    for k in sorted(set(w) | set(g)):
        record(what, TALLIES, f"{series(k)}, job sum, --cgroup.aggregate={level}", w.get(k, 0), g.get(k, 0),
               samples=samples, subsystem="net" if "/" in k else "vfs")


def workload(role, results, name, **opts) -> str:
    return f"{sys.executable} {WORKLOAD} {role} {results} {name} '{json.dumps(opts)}'"


def two_step_job(results, name, server, second):
    """sbatch a job whose step 0 runs `server` and step 1 (named second[0]) the command second[1]
    once the server listens; after both, the job lives on until RESULTS/done exists, so that
    a test can look at it with its steps gone."""
    script = os.path.join(results, "job.sh")
    with open(script, "w") as f:
        f.write(f"""#!/bin/sh
srun -n1 --overlap --job-name=server {server} &
while [ ! -e {results}/server.ports ]; do sleep 0.1; done
srun -n1 --overlap --job-name={second[0]} {second[1]}
wait
while [ ! -e {results}/done ]; do sleep 0.2; done
""")
    return sbatch("-n1", "-J", name, "-o", f"{results}/out", script)


class Watch:
    """Scrapes the exporters every ~0.3 s in a thread while a job runs: each level's per-job
    sums, in order, to check that none ever decreases."""

    def __init__(self, exporters, labels):
        self.exporters, self.labels = exporters, labels
        self.seen = {lv: [] for lv in exporters}
        self.errors = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            for lv, e in self.exporters.items():
                try:
                    s = e.samples()
                except Exception as err:  # noqa: BLE001 - reported by check()
                    self.errors.append(f"{lv}: {err}")
                    continue
                self.seen[lv].append(add(*(job_sums(s, lb) for lb in self.labels)))
            time.sleep(0.3)

    def check(self):
        self._stop.set()
        self._t.join()
        assert not self.errors, self.errors
        for lv, seq in self.seen.items():
            assert seq, f"{lv}: no scrape while the job ran"
            for a, b in zip(seq, seq[1:]):
                down = {k: (a[k], b.get(k, 0)) for k in a if b.get(k, 0) < a[k]}
                assert not down, f"{lv}: a job sum went down between scrapes: {down}"


def label_ready(exporters, job_label):
    """Every exporter labels the job as SLURM shows it (sacct answered)."""
    return all(any(("job", job_label) in lb for (_, lb) in e.samples()) for e in exporters.values())


def wait_labels(exporters, labels, timeout=120):
    """Wait until every exporter labels these jobs as SLURM shows them; if not, fail with what
    sacct answers now (and how long it took) and the exporters' logs."""
    try:
        wait_until(f"job labels {labels} from sacct", lambda: all(label_ready(exporters, lb) for lb in labels),
                   timeout=timeout, every=1)
    except AssertionError as e:
        t0 = time.time()
        p = subprocess.run(["sacct", "-P", "--noheader", "--format=JobIDRaw,JobID,State", "-j",
                            ",".join(lb.split("_")[0] for lb in labels)], capture_output=True, text=True)
        seen = {lv: sorted({dict(lb).get("job") for (_, lb) in ex.samples()} - {None}) for lv, ex in exporters.items()}
        logs = {lv: ex.log()[-1500:] for lv, ex in exporters.items()}
        raise AssertionError(f"{e}; sacct now ({time.time() - t0:.1f} s, rc {p.returncode}): {p.stdout!r} "
                             f"{p.stderr!r}; job labels exported: {seen}; logs: {logs}") from None


# --- scenarios -----------------------------------------------------------------------

def test_the_cluster_runs_jobs_in_cgroup_v2_steps():
    """The environment itself: slurmd's cgroup/v2 scope; AccountingStorageEnforce=associations, as
    sites run it: a job naming no account gets root's default account, one naming an account root
    has no association with is refused."""
    assert os.path.isdir(CGROOT + SCOPE), f"no {SCOPE}: slurmd's cgroup/v2 plugin made its scope elsewhere"
    conf = sh("scontrol", "show", "config")
    (enforce,) = [ln.split("=", 1)[1].strip() for ln in conf.splitlines() if ln.startswith("AccountingStorageEnforce")]
    assert "associations" in enforce.split(","), enforce
    # no account from the environment: the job's account must come from slurmctld's association cache
    env = {k: v for k, v in os.environ.items() if not k.endswith("_ACCOUNT")}
    out = sh("srun", "-n1", "sh", "-c", "cat /proc/self/cgroup; echo $SLURM_JOB_ID", env=env)
    cg, job = out.split()
    # 0::/system.slice/slurmstepd.scope/job_<j>/step_0/user/task_0; seen in 22.05 with
    # task/cgroup constraining nothing: user/task_special (slurmstepd's cgroup for tasks)
    assert cg in (f"0::{SCOPE}/job_{job}/step_0/user/task_0", f"0::{SCOPE}/job_{job}/step_0/user/task_special"), cg
    assert "Account=ceemsnet " in sh("scontrol", "show", "job", "-o", job), sh("scontrol", "show", "job", "-o", job)
    assert "DefAccount=ceemsnet " in sh("scontrol", "show", "assoc_mgr", "users=root", "flags=users")
    p = subprocess.run(["sbatch", "-A", "nosuch", "--wrap", "true"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode != 0 and "Invalid account" in p.stderr, (p.returncode, p.stdout, p.stderr)


def test_two_step_job_tcp_udp_and_files_exact_per_job_and_step(exporters, ramfs, results):
    """sbatch: step 0 serves, step 1 sends to it over TCP and UDP (::1) and both write and read
    files; per task, step and job, at every aggregate level, the exporters show exactly the
    workloads' own tallies; the job's sums never go down while its steps end; the three
    levels give identical job sums and the series counts docs/reports.md gives."""
    plan = dict(dir=ramfs)
    server = workload("server", results, "server", reply=40_000, datagrams=3, udp_reply=700, file=12_345, **plan)
    client = workload("client", results, "client", server="server", send=100_000, udp=[1000, 2000, 3000],
                      udp_reply=700, file=23_456, **plan)
    job = two_step_job(results, "two-step", server, ("client", client))
    watch = Watch(exporters, [job])
    try:
        wait_until("both steps' tallies", lambda: all(os.path.exists(f"{results}/{n}.json") for n in ("server", "client")),
                   timeout=300)
        jd = f"{SCOPE}/job_{job}"
        # the steps' cgroups go with them; the job's stays
        wait_until("steps 0 and 1 cgroups to go", lambda: not any(
            os.path.isdir(f"{CGROOT}{jd}/step_{s}") for s in (0, 1)), timeout=120)
        assert os.path.isdir(CGROOT + jd)
        wait_labels(exporters, [job])
        ts, tc = tally(results, "server"), tally(results, "client")
        # the workloads did what was planned (their own tallies)
        assert net_of(tc) == {"tcp/egress": 100_000, "tcp/ingress": 40_000, "udp/egress": 6_000, "udp/ingress": 2_100}
        assert net_of(ts) == {"tcp/egress": 40_000, "tcp/ingress": 100_000, "udp/egress": 2_100, "udp/ingress": 6_000}
        assert vfs_of(ts) == {"read": 12_345, "write": 12_345} and vfs_of(tc) == {"read": 23_456, "write": 23_456}

        s = {lv: e.samples() for lv, e in exporters.items()}
        task = {leaf(jd, 0): ts, leaf(jd, 1): tc}
        steps = {f"{jd}/step_0": ts, f"{jd}/step_1": tc}
        want_net = {"task": {k: net_of(t) for k, t in task.items()},
                    "step": {k: net_of(t) for k, t in steps.items()},
                    "job": {jd: add(net_of(ts), net_of(tc))}}
        want_vfs = {"task": {k: vfs_of(t) for k, t in task.items()},
                    "step": {k: vfs_of(t) for k, t in steps.items()},
                    "job": {jd: add(vfs_of(ts), vfs_of(tc))}}
        for lv in LEVELS:
            for want, got in ((want_net[lv], net_by_cgroup(s[lv], jd)), (want_vfs[lv], vfs_by_cgroup(s[lv], jd))):
                record_sums("sbatch, 2 steps: TCP and UDP (::1) between them, files on ramfs", lv, want, got, s[lv])
        for lv in LEVELS:
            assert net_by_cgroup(s[lv], jd) == want_net[lv], lv
            assert vfs_by_cgroup(s[lv], jd) == want_vfs[lv], lv
        # series: 12 ipv6 ones per cgroup of the level (2 tasks, 2 steps, 1 job)
        ipv6 = {lv: sum(job_series(s[lv], jd, "ipv6").values()) for lv in LEVELS}
        assert ipv6 == {"task": 2 * NET_SERIES_PER_FAMILY, "step": 2 * NET_SERIES_PER_FAMILY,
                        "job": NET_SERIES_PER_FAMILY}
        # every family: which cgroups each level exports for the job (SLURM's own traffic included)
        per = {lv: job_series(s[lv], jd) for lv in LEVELS}
        assert set(per["job"]) == {jd}
        assert set(per["step"]) <= {f"{jd}/step_{x}" for x in ("0", "1", "batch", "extern")}
        assert {f"{jd}/step_0", f"{jd}/step_1"} <= set(per["step"])
        assert all(cg.count("/") > jd.count("/") + 1 for cg in per["task"]), per["task"]
        assert len(per["task"]) >= len(per["step"])
        # the step label, as sacct names the steps
        steplabels = {dict(lb).get("step") for (n, lb) in s["step"]
                      if n == "ceemsnet_net_egress_bytes_total" and dict(lb).get("cgroup", "").startswith(jd + "/")}
        assert {f"{job}.0", f"{job}.1"} <= steplabels
    finally:
        open(f"{results}/done", "w").close()
    state = wait_job_end(job)
    s = {lv: e.samples() for lv, e in exporters.items()}
    watch.check()
    assert state == "COMPLETED"
    # after the end: the same exact bytes at every level, and identical job sums across levels
    for lv in LEVELS:
        assert net_by_cgroup(s[lv], jd) == want_net[lv], lv
    sums = {lv: job_sums(s[lv], job) for lv in LEVELS}
    assert sums["task"] == sums["step"] == sums["job"], sums
    FINISHED[job] = {"net": add(net_of(ts), net_of(tc)), "vfs": add(vfs_of(ts), vfs_of(tc)), "state": "COMPLETED",
                     "sums": sums["step"], "cgroups": task}


def test_array_job_of_three_tasks_labelled_as_slurm_shows_them(exporters, ramfs, results):
    """An array of 3: each task sends its own bytes to itself over TCP and does file IO; each is
    its own job `<array>_<i>` with exactly its bytes."""
    sizes = {0: 11_111, 1: 22_222, 2: 33_333}
    script = os.path.join(results, "array.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n" + workload("self", results, "task", dir=ramfs, send=11_111, file=1000, array=True) + "\n")
    array = sbatch("-n1", "--array=0-2", "-J", "array", "-o", f"{results}/out-%a", script)
    for i in range(3):
        wait_job_end(f"{array}_{i}")
    labels = [f"{array}_{i}" for i in range(3)]
    wait_labels(exporters, labels)
    raw = {}
    for line in sh("sacct", "-n", "-P", "-X", "-j", array, "--format=JobID,JobIDRaw,State").split():
        jid, rawid, state = line.split("|")
        raw[jid] = (rawid, state)
    assert set(raw) == set(labels), raw
    for i, lb in enumerate(labels):
        t = tally(results, f"task{i}")
        assert net_of(t) == {"tcp/egress": sizes[i], "tcp/ingress": sizes[i]}
        assert vfs_of(t) == {"read": 1000 * (i + 1), "write": 1000 * (i + 1)}
        rawid, state = raw[lb]
        jd = f"{SCOPE}/job_{rawid}"
        for lv, e in exporters.items():
            s = e.samples()
            for want, got in ((net_of(t), net_by_cgroup(s, jd)), (vfs_of(t), vfs_by_cgroup(s, jd))):
                record_sums(f"job array of 3, task {i}: TCP to itself, files on ramfs", lv, {jd: want}, got, s)
            assert add(*net_by_cgroup(s, jd).values()) == net_of(t), (lv, lb)
            assert add(*vfs_by_cgroup(s, jd).values()) == vfs_of(t), (lv, lb)
            # the task's batch step, labelled as sacct names it
            steps = {dict(l).get("step") for (n, l) in s if n == "ceemsnet_net_egress_bytes_total"
                     and ("family", "ipv6") in l and dict(l).get("cgroup", "").startswith(jd)}
            # (at the job level the series is the job's own cgroup: no step)
            assert steps == ({""} if lv == "job" else {f"{lb}.batch"}), (lv, steps)
            assert job_sums(s, lb).get("ceemsnet_job_net_egress_bytes_total", 0) >= sizes[i]
        FINISHED[lb] = {"net": net_of(t), "vfs": vfs_of(t), "state": state}


def test_interactive_step(exporters, ramfs, results):
    """salloc without a command starts the interactive step (LaunchParameters=use_interactive_step):
    its shell runs the workload, counted exactly under `<job>.interactive`."""
    cmd = workload("self", results, "inter", dir=ramfs, send=44_444, file=4_444)
    p = subprocess.run(["salloc", "-n1", "-J", "interactive"], input=f"echo JOB=$SLURM_JOB_ID\n{cmd}\nexit\n",
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    job = [w.split("=", 1)[1] for w in p.stdout.split() if w.startswith("JOB=")][0]
    t = tally(results, "inter")
    assert net_of(t) == {"tcp/egress": 44_444, "tcp/ingress": 44_444}
    wait_job_end(job)
    wait_labels(exporters, [job])
    jd = f"{SCOPE}/job_{job}"
    for lv, e in exporters.items():
        s = e.samples()
        got = net_by_cgroup(s, jd)
        for want, counted in ((net_of(t), got), (vfs_of(t), vfs_by_cgroup(s, jd))):
            record_sums("salloc, the interactive step: TCP to itself, files on ramfs", lv, {jd: want}, counted, s)
        assert add(*got.values()) == net_of(t), lv
        assert add(*vfs_by_cgroup(s, jd).values()) == vfs_of(t), lv
        if lv != "job":
            assert all(cg.startswith(f"{jd}/step_interactive") for cg in got), (lv, got)
            steps = {dict(l).get("step") for (n, l) in s if n == "ceemsnet_net_egress_bytes_total"
                     and ("family", "ipv6") in l and dict(l).get("cgroup", "").startswith(jd)}
            assert steps == {f"{job}.interactive"}, (lv, steps)
    FINISHED[job] = {"net": net_of(t), "vfs": vfs_of(t), "state": "COMPLETED"}


def _stream_job(results, name):
    """A job: step 0 receives, step 1 streams to it until told to stop or cancelled."""
    return two_step_job(results, name, workload("server", results, "server"),
                        ("stream", workload("stream", results, "stream", server="server", every=0.05)))


def _check_stream(exporters, results, job, cancelled):
    """The receiver read all the sender sent; the exporters count exactly that, per step."""
    ts = tally(results, "server")
    sent = ts["tcp/ingress"]
    assert sent > 0
    if not cancelled or os.path.exists(f"{results}/stream.json"):
        # the sender's own count (scancel's SIGTERM lets it write it; a SIGKILL would not)
        assert tally(results, "stream")["tcp/egress"] == sent
    wait_labels(exporters, [job])
    jd = f"{SCOPE}/job_{job}"
    for lv, e in exporters.items():
        s = e.samples()
        got = net_by_cgroup(s, jd)
        record_sums("2 steps, one streaming TCP to the other, " + ("scancel of the sender" if cancelled
                    else "slurmd restarted meanwhile"), lv, {jd: {"tcp/egress": sent, "tcp/ingress": sent}}, got, s)
        if lv == "job":
            assert got == {jd: {"tcp/egress": sent, "tcp/ingress": sent}}, lv
        else:
            step = {cg.split("/")[len(jd.split("/"))]: v for cg, v in got.items()}
            assert step == {"step_0": {"tcp/ingress": sent}, "step_1": {"tcp/egress": sent}}, (lv, got)
    return sent


def test_scancel_of_a_step_in_the_middle_of_traffic(exporters, results):
    job = _stream_job(results, "scancel")
    watch = Watch(exporters, [job])
    try:
        wait_until("the stream to flow", lambda: os.path.exists(f"{results}/stream.started"), timeout=300)
        time.sleep(2)
        sh("scancel", f"{job}.1")
        wait_until("the receiver's tally", lambda: os.path.exists(f"{results}/server.json"), timeout=120)
    finally:
        open(f"{results}/done", "w").close()
    wait_job_end(job)
    watch.check()
    sent = _check_stream(exporters, results, job, cancelled=True)
    step1 = sh("sacct", "-n", "-P", "-j", f"{job}.1", "--format=State").split()
    assert step1 and step1[0].startswith("CANCELLED"), step1
    FINISHED[job] = {"net": {"tcp/egress": sent, "tcp/ingress": sent}, "vfs": {}, "state": "COMPLETED"}


def test_slurmd_restart_during_a_job(exporters, results):
    job = _stream_job(results, "restart")
    watch = Watch(exporters, [job])
    try:
        wait_until("the stream to flow", lambda: os.path.exists(f"{results}/stream.started"), timeout=300)
        sh(RUN_SH, "--restart-slurmd", timeout=300)
        assert job_state(job) == "RUNNING"
        time.sleep(1)
        open(f"{results}/STOP", "w").close()
        wait_until("both tallies", lambda: all(os.path.exists(f"{results}/{n}.json") for n in ("server", "stream")),
                   timeout=120)
    finally:
        open(f"{results}/done", "w").close()
    assert wait_job_end(job) == "COMPLETED"
    watch.check()
    sent = _check_stream(exporters, results, job, cancelled=False)
    FINISHED[job] = {"net": {"tcp/egress": sent, "tcp/ingress": sent}, "vfs": {}, "state": "COMPLETED"}


# --- the job's record in SLURM (ceemsnet record, as EpilogSlurmctld) -------------------------------

EPILOG = os.path.join(ROOT, "packaging", "slurm", "ceemsnet-record-epilog.sh")
# the multi-step job and its record as the real epilog wrote it, for the test that runs the wrapper by hand
RECORDED: dict[str, dict] = {}


@pytest.fixture(scope="module")
def prom(exporters, state_dir):
    """Debian's prometheus scraping the step-level exporter every second, its instance named
    after the node (as a cluster's scrape config would), so `record` checks nodes. While it runs,
    the cluster's EpilogSlurmctld (the packaged wrapper, tests/slurm/run.sh) writes every job's
    record: its settings file names this server."""
    import pathlib
    from ..promserver import PROMETHEUS, PrometheusServer
    if PROMETHEUS is None:
        pytest.skip("Debian's prometheus is not installed")
    node = open(os.path.join(os.environ["CEEMSNET_SLURM_DIR"], "node")).read().strip()
    d = pathlib.Path(tempfile.mkdtemp(dir=state_dir, prefix="prom."))
    srv = PrometheusServer(d, [], extra_jobs=[{
        "job_name": "nodes", "targets": [f"127.0.0.1:{exporters['step'].port}"], "honor_labels": True,
        "relabel_configs": [{"target_label": "instance", "replacement": f"{node}:9977"}]}],
        interval="3s")  # three exporters in an emulated guest: a 1 s scrape may time out
    defaults = os.environ["CEEMSNET_SLURM_RECORD_DEFAULTS"]
    with open(defaults) as f:
        before = f.read()
    try:
        with open(defaults, "a") as f:
            f.write(f"CEEMSNET_PROMETHEUS={srv.url}\nCEEMSNET_RECORD_ARGS=\"{RECORD_ARGS}\"\n")
        yield srv
    finally:
        with open(defaults, "w") as f:
            f.write(before)
        srv.stop()


RECORD_ARGS = "--timeout=90s --per-node"
# the real epilog's log (CEEMSNET_RECORD_LOG in the settings tests/slurm/run.sh writes)
RECORD_LOG = os.path.join(os.environ.get("CEEMSNET_SLURM_DIR", ""), "record.log")


def real_record_log(job) -> str:
    """The real epilog's log lines of this job (raw id), as the wrapper wrote them."""
    try:
        with open(RECORD_LOG) as f:
            return "".join(ln for ln in f if f" job {job}: " in ln)
    except FileNotFoundError:
        return ""


def wait_record(job, raw=None, name="SystemComment", timeout=180) -> dict:
    """After the job ended: wait (bounded) until slurmctld's EpilogSlurmctld has written the job's
    record and sacct shows it; the record, decoded. The epilog waits for the final scrape (at most
    its --timeout, 90 s) while slurmctld holds the job COMPLETING."""
    from ceemsnet.report.record import decode
    try:
        text = wait_until(f"the ceemsnet record of job {job} in sacct's {name} (written by EpilogSlurmctld)",
                          lambda: "ceemsnet:" in (t := field(job, name)) and t, timeout=timeout, every=1)
    except AssertionError as e:
        raise AssertionError(f"{e}; sacct shows {field(job, name)!r}; the epilog's log: "
                             f"{real_record_log(raw or job)!r}") from None
    log = real_record_log(raw or job)
    assert "exit 0" in log and "complete=false" not in log, log
    rec = decode(text)
    assert rec is not None, f"no ceemsnet record in {name} of {job}: {text!r}"
    return rec


def epilog_by_hand(prom, state_dir, job, **env):
    """The packaged EpilogSlurmctld wrapper, run by hand as slurmctld runs it (SLURM_JOB_ID in the
    environment), with its settings from the environment; its log line."""
    shim = os.path.join(state_dir, "ceemsnet")
    if not os.path.exists(shim):
        with open(shim, "w") as f:
            f.write(f"#!/bin/sh\ncd {ROOT} && exec {sys.executable} -m ceemsnet.cli \"$@\"\n")
        os.chmod(shim, 0o755)
    log = os.path.join(state_dir, f"record-{job}.log")
    e = {**os.environ, "SLURM_JOB_ID": job, "CEEMSNET_PROMETHEUS": prom.url, "CEEMSNET": shim,
         "CEEMSNET_RECORD_LOG": log, "CEEMSNET_RECORD_DEFAULTS": "/nonexistent",
         "CEEMSNET_RECORD_ARGS": RECORD_ARGS, **env}
    p = subprocess.run([EPILOG], env=e, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    with open(log) as f:
        return f.read()


def field(job, name="SystemComment") -> str:
    """The field's text in the job's record, as sacct prints it."""
    out = sh("sacct", "-X", "-n", "-P", "-j", job, f"--format=JobID,{name}")
    assert out.startswith(job + "|"), out
    return out[len(job) + 1:].rstrip("\n")


def decoded(job, name="SystemComment") -> dict:
    from ceemsnet.report.record import decode
    rec = decode(field(job, name))
    assert rec is not None, f"no ceemsnet record in {name} of {job}: {field(job, name)!r}"
    return rec


def check_record(rec, exporters, job, vfs):
    """The record's bytes: the ramfs reads and writes exactly the workloads' (the exporters count
    only ramfs), the net bytes exactly the exporter's own job sums (SLURM's RPCs included)."""
    sums = job_sums(exporters["step"].samples(), job)
    for k, want in (("vfs_read_bytes", vfs["read"]), ("vfs_write_bytes", vfs["write"]),
                    ("net_egress_bytes", sums["ceemsnet_job_net_egress_bytes_total"]),
                    ("net_ingress_bytes", sums["ceemsnet_job_net_ingress_bytes_total"])):
        record("ceemsnet record -> sacct SystemComment", TALLIES if k.startswith("vfs") else "the exporter's job sums",
               f"{k}, job {job}", want, rec.get(k), subsystem="vfs" if k.startswith("vfs") else "net")
        assert rec.get(k) == want, (k, rec, sums)
    assert rec["v"] == 1 and rec["complete"] is True and rec["sources"] == 1 and "missing" not in rec, rec
    assert rec["end"] >= rec["start"] > 0, rec


def test_record_multi_step_job_into_system_comment(exporters, ramfs, results, prom, state_dir):
    """A job of three steps (batch, 0, 1), each doing TCP to itself and ramfs IO: once it ends,
    slurmctld's EpilogSlurmctld (the packaged wrapper) writes its totals into SystemComment, and
    `report` reads them back for a job its source does not have."""
    script = os.path.join(results, "steps.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n" + workload("self", results, "b", dir=ramfs, send=5_000, file=1_111) + "\n"
                + "srun -n1 " + workload("self", results, "s0", dir=ramfs, send=7_000, file=2_222) + "\n"
                + "srun -n1 " + workload("self", results, "s1", dir=ramfs, send=9_000, file=3_333) + "\n")
    job = sbatch("-n1", "-J", "steps", "-o", f"{results}/out", script)
    assert wait_job_end(job) == "COMPLETED"
    ts = [tally(results, n) for n in ("b", "s0", "s1")]
    vfs = add(*(vfs_of(t) for t in ts))
    assert vfs == {"read": 6_666, "write": 6_666}
    rec = wait_record(job)
    wait_labels(exporters, [job])   # the exporter's own job sums, to compare the net bytes with
    check_record(rec, exporters, job, vfs)
    assert set(rec["nodes"]) == {open(os.path.join(os.environ["CEEMSNET_SLURM_DIR"], "node")).read().strip().lower()}
    assert field(job).count("ceemsnet:") == 1, field(job)
    RECORDED["steps"] = {"job": job, "rec": rec, "vfs": vfs}
    # report reads it back for a job the source does not have (here: no store at all)
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", "report", f"--storage.path={state_dir}/none.db",
                        f"--job={job}", "--format=json", "--slurm.sacct-cache=none"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    (row,) = json.loads(p.stdout)
    assert (row["job"], row["vfs_read_bytes"], row["net_egress_bytes"], row["state"]) == \
        (job, 6_666, rec["net_egress_bytes"], "COMPLETED"), row


def test_record_by_hand_keeps_other_tools_content(exporters, prom, state_dir):
    """What slurmctld's own runs cannot show here (no burst buffer, no jobstats in this cluster):
    the wrapper, run by hand as slurmctld runs it, on the multi-step job. A burst buffer's line
    already in SystemComment stays byte for byte, the ceemsnet line after it holds the same bytes
    as the real epilog's record; a second run replaces that line, not adds one; jobstats' JS1:
    payload in AdminComment is refused and left as it was."""
    if "steps" not in RECORDED:
        pytest.skip("needs test_record_multi_step_job_into_system_comment's job")
    job, real, vfs = RECORDED["steps"]["job"], RECORDED["steps"]["rec"], RECORDED["steps"]["vfs"]
    other = "08/20/26 10:00:00 burst_buffer/lua: stage_out: done"
    sh("sacctmgr", "-i", "modify", "job", "where", f"jobid={job}", "set", f"SystemComment={other}")
    assert field(job) == other
    log = epilog_by_hand(prom, state_dir, job)
    assert "exit 0" in log and "complete=false" not in log, log
    text = field(job)
    assert text.split("\n")[0] == other, text          # the other tool's line, byte for byte
    rec = decoded(job)
    check_record(rec, exporters, job, vfs)
    from ceemsnet.report.record import COLUMNS
    assert {c: rec.get(c) for c in COLUMNS} == {c: real.get(c) for c in COLUMNS}, (rec, real)
    # again: the ceemsnet line is replaced, not added
    epilog_by_hand(prom, state_dir, job)
    assert field(job).count("ceemsnet:") == 1 and field(job).startswith(other)
    # jobstats' JS1: payload in AdminComment must be the whole field: refused, left as it was
    sh("sacctmgr", "-i", "modify", "job", "where", f"jobid={job}", "set", "AdminComment=JS1:abc")
    log = epilog_by_hand(prom, state_dir, job, CEEMSNET_RECORD_ARGS="--timeout=30s --field=AdminComment")
    assert "exit 1" in log and "jobstats" in log, log
    assert field(job, "AdminComment").lower() == "js1:abc"   # 22.05's sacctmgr lower-cased it itself


def test_record_array_tasks_each_their_own(exporters, ramfs, results, prom, state_dir):
    """An array of 2: slurmctld runs the epilog once per task, with the task's raw id (one of them
    keeps the array's own id, which as `jobid=<it>` in sacctmgr would name every task); each task's
    record holds that task's bytes alone."""
    script = os.path.join(results, "array.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n" + workload("self", results, "t", dir=ramfs, send=3_000, file=500, array=True) + "\n")
    array = sbatch("-n1", "--array=0-1", "-J", "rec-array", "-o", f"{results}/out-%a", script)
    for i in range(2):
        wait_job_end(f"{array}_{i}")
    raw = dict(line.split("|") for line in sh("sacct", "-n", "-P", "-X", "-j", array,
                                                "--format=JobID,JobIDRaw").split())
    assert array in raw.values(), raw   # one task kept the array's id
    recs = {i: wait_record(f"{array}_{i}", raw=raw[f"{array}_{i}"]) for i in range(2)}
    wait_labels(exporters, [f"{array}_0", f"{array}_1"])
    for i, rec in recs.items():
        assert rec["job"] == f"{array}_{i}", rec
        check_record(rec, exporters, f"{array}_{i}", {"read": 500 * (i + 1), "write": 500 * (i + 1)})


def test_record_cancelled_job(exporters, ramfs, results, prom, state_dir):
    """scancel of a job whose workload is done and that then sleeps: the epilog slurmctld runs for
    the cancelled job writes its bytes."""
    script = os.path.join(results, "cancel.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n" + workload("self", results, "c", dir=ramfs, send=4_321, file=777) + "\nsleep 600\n")
    job = sbatch("-n1", "-J", "rec-cancel", "-o", f"{results}/out", script)
    wait_until("the workload's tally", lambda: os.path.exists(f"{results}/c.json"), timeout=300)
    sh("scancel", job)
    assert wait_job_end(job) == "CANCELLED"
    rec = wait_record(job)
    wait_labels(exporters, [job])
    check_record(rec, exporters, job, {"read": 777, "write": 777})


# --- ceemsnet job: one job as its user reads it -----------------------------------------

def test_job_view_of_a_multi_step_job(exporters, ramfs, results, prom, state_dir):
    """`ceemsnet job J`: sacct's facts, the job's totals per step exactly the workloads' ramfs bytes,
    its node, rate lines; after its record is written, the same totals from the record alone
    (no --prometheus). The table is printed for docs/reports.md (pytest -s)."""
    script = os.path.join(results, "view.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\n" + workload("self", results, "vb", dir=ramfs, send=5_000, file=1_111) + "\nsleep 4\n"
                + "srun -n1 " + workload("self", results, "v0", dir=ramfs, send=70_000, file=200_000) + "\nsleep 4\n"
                + "srun -n1 " + workload("self", results, "v1", dir=ramfs, send=9_000, file=3_333) + "\n")
    job = sbatch("-n1", "-J", "view", "-o", f"{results}/out", script)
    assert wait_job_end(job) == "COMPLETED"
    wait_labels(exporters, [job])
    wait_record(job)   # slurmctld's epilog waited for the final scrape, and wrote the record
    base = [sys.executable, "-m", "ceemsnet.cli", "job", job, "--rates.step=3s"]   # the guest scrapes every 3 s
    p = subprocess.run(base + [f"--prometheus={prom.url}", "--format=json"], capture_output=True, text=True,
                       timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["source"] == "prometheus" and doc["facts"]["state"] == "COMPLETED" and doc["facts"]["user"] == "root"
    steps = {s["step"]: s for s in doc["steps"]}
    for step, n in (("batch", 1_111), ("0", 200_000), ("1", 3_333)):
        record("ceemsnet job, per step", TALLIES, f"vfs_write_bytes (ramfs), step {step}", n,
               steps.get(step, {}).get("vfs_write_bytes"))
        assert (steps[step]["vfs_read_bytes"], steps[step]["vfs_write_bytes"]) == (n, n), steps
    assert doc["totals"]["vfs_write_bytes"] == 204_444 and len(doc["nodes"]) == 1, doc
    sums = job_sums(exporters["step"].samples(), job)
    assert doc["totals"]["net_egress_bytes"] == sums["ceemsnet_job_net_egress_bytes_total"], (doc, sums)
    assert doc["rates"].get("vfs_write_bytes"), doc["rates"]
    p = subprocess.run(base + [f"--prometheus={prom.url}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0 and "Per step" in p.stdout, p.stderr
    print("\n" + p.stdout)
    rec = decoded(job)
    p = subprocess.run(base + ["--format=json"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    back = json.loads(p.stdout)
    assert back["source"] == "record" and back["totals"]["vfs_write_bytes"] == rec["vfs_write_bytes"] == 204_444
    p = subprocess.run(base, capture_output=True, text=True, timeout=300, cwd=ROOT)
    print("\n" + p.stdout)


# --- the report, after the jobs ---------------------------------------------------------

def test_report_by_job_carries_exact_bytes_and_sacct_facts(exporters, state_dir):
    """After the jobs: the task exporter stops (its store is written), and `ceemsnet report
    --by=job --format=json` gives each job's bytes and sacct's user, account, partition, state;
    the ramfs bytes are exactly the workloads', the net bytes the exporter's own job sums (they
    include SLURM's IPv4 RPCs), and `--by=cgroup` gives the two-step job's task cgroups exactly."""
    if not FINISHED:
        pytest.skip("no scenario finished a job")
    rc, err = exporters["task"].stop()
    assert rc == 0, err
    base = [sys.executable, "-m", "ceemsnet.cli", "report", f"--storage.path={state_dir}/accounting.db",
            "--slurm.sacct-cache=none", "--format=json"]
    p = subprocess.run(base + ["--by=job"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    rows = {r["job"]: r for r in json.loads(p.stdout)}
    for job, want in FINISHED.items():
        r = rows.get(job)
        assert r, f"job {job} not in the report: {sorted(rows)}"
        assert (r["user"], r["account"], r["partition"], r["state"]) == ("root", "ceemsnet", "debug", want["state"]), r
        assert r["nodes"] and r["start"] and r["end"] and r["elapsed"], r
        # whole ISO 8601 times with the node's offset (22.05 cut it off when asked for %z)
        start, end = datetime.datetime.fromisoformat(r["start"]), datetime.datetime.fromisoformat(r["end"])
        assert start.utcoffset() is not None and end >= start, r
        if want["vfs"]:
            for op in ("read", "write"):
                record("ceemsnet report --by=job, from the store", TALLIES, f"vfs_{op}_bytes (ramfs), job {job}",
                       want["vfs"][op], r[f"vfs_{op}_bytes"])
            assert (r["vfs_read_bytes"], r["vfs_write_bytes"]) == (want["vfs"]["read"], want["vfs"]["write"]), r
        assert r["net_egress_bytes"] >= want["net"].get("tcp/egress", 0) + want["net"].get("udp/egress", 0), r
        if "sums" in want:
            assert r["net_egress_bytes"] == want["sums"]["ceemsnet_job_net_egress_bytes_total"], r
            assert r["net_ingress_bytes"] == want["sums"]["ceemsnet_job_net_ingress_bytes_total"], r
    two = [j for j, w in FINISHED.items() if "cgroups" in w]
    if two:
        job = two[0]
        p = subprocess.run(base + ["--by=cgroup", f"--job={job}"], capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
        assert p.returncode == 0, p.stderr
        rows = {r["cgroup"]: r for r in json.loads(p.stdout)}
        for cg, t in FINISHED[job]["cgroups"].items():
            assert cg in rows, (cg, sorted(rows))
            r = rows[cg]
            for k, want in (("net_egress_bytes", t["tcp/egress"] + t["udp/egress"]),
                            ("net_ingress_bytes", t["tcp/ingress"] + t["udp/ingress"]),
                            ("vfs_read_bytes", t["read"]), ("vfs_write_bytes", t["write"])):
                record("ceemsnet report --by=cgroup of the 2-step job", TALLIES,
                       f"{k}, task cgroup {cg.rsplit('/', 3)[-3]}", want, r[k])
            assert r["net_egress_bytes"] == t["tcp/egress"] + t["udp/egress"], r
            assert r["net_ingress_bytes"] == t["tcp/ingress"] + t["udp/ingress"], r
            assert (r["vfs_read_bytes"], r["vfs_write_bytes"]) == (t["read"], t["write"]), r
            assert (r["user"], r["account"], r["job"]) == ("root", "ceemsnet", job), r
