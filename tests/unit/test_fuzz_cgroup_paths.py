"""Fuzzing the cgroup path grammars: SLURM's (ceemsnet/attribution/slurm.py: v1, v2, SLUIDs, steps,
heterogeneous steps) and the systemd and Kubernetes parsers and folders (ceemsnet/attribution/workloads.py).

Paths are generated as SLURM, systemd and the kubelet make them, so the expected job, step and uid
are known and checked exactly; then mutated (a character changed, inserted or deleted, a component
doubled, a trailing newline, digits from other scripts), where the properties are those every
answer must have: a job path is a whole-component prefix of the path, folding is idempotent, and
folding keeps the job, unit or pod."""

import re

from hypothesis import example, given
from hypothesis import strategies as st

from ceemsnet.attribution import slurm, workloads

from .conftest import examples, tally, within

NUM = st.integers(0, 2**32).map(str)
NAME = st.text(st.characters(codec="ascii", exclude_characters="/\0"), min_size=1, max_size=8)
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
SLUIDS = st.text(st.sampled_from(CROCKFORD), min_size=13, max_size=13).map(lambda s: "s" + s)
STEPS = st.one_of(NUM, st.builds(lambda n, c: f"{n}+{c}", NUM, st.integers(0, 9)),
                  st.sampled_from(["batch", "extern", "interactive"]))
PREFIX = st.lists(st.one_of(NAME, st.sampled_from(["docker.slice", "docker-abc.scope", "slurm", "uid_1",
                                                     "job_2", "system.slice"])), max_size=2)


@st.composite
def slurm_paths(draw):
    """(path, expected SlurmPath) of a cgroup SLURM makes, in either layout (the prefix: where the
    hierarchy SLURM sees sits in the host's, e.g. a container's cgroup)."""
    prefix = "".join("/" + c for c in draw(PREFIX))
    if draw(st.booleans()):  # cgroup v1
        uid, job = draw(NUM), draw(NUM)
        node = draw(st.one_of(st.just(""), NAME.map(lambda n: "_" + n)))
        job_path = f"{prefix}/slurm{node}/uid_{uid}/job_{job}"
        tail_kind = "v1"
    else:
        uid = None
        job = draw(st.one_of(NUM, SLUIDS))
        node = draw(st.sampled_from(["", "node1_", "a_b_"]))
        slice_ = draw(st.sampled_from(["system.slice", "slurm.slice", "x"]))
        job_path = f"{prefix}/{slice_}/{node}slurmstepd.scope/" + (job if job.startswith("s") else f"job_{job}")
        tail_kind = "v2"
    step = draw(st.one_of(st.none(), STEPS))
    path, step_path = job_path, ""
    if step is not None:
        step_path = path = f"{job_path}/step_{step}"
        below = (["task_0", "task_12"] if tail_kind == "v1"
                 else ["user/task_0", "user/task_special", "slurm", "user"])
        path += draw(st.sampled_from([""] + ["/" + b for b in below]))
    else:
        path += draw(st.sampled_from(["", "/step_TBD", "/user", "/stepx_0", "/step_"]))
    want = slurm.SlurmPath(job_path, job, step_path, step or "", uid)
    return path, want


# what the grammar decides on (separators, digits, a newline `$` would accept, digits of other scripts)
EDITS = st.sampled_from(["/", "_", "+", "\n", "\n", "٣", "0", "9", ".", "s", "Z", " ", "\0", "²", "//", "step_",
                         "job_"])


@st.composite
def mutated(draw, paths):
    """A path with one or two edits: a character changed, inserted or deleted."""
    path = draw(paths)
    for _ in range(draw(st.integers(1, 2))):
        # half the edits at a component's edge (the grammar's decisions are there), half anywhere
        edges = [i for i, c in enumerate(path) if c == "/"] + [len(path)]
        i = draw(st.one_of(st.integers(0, len(path)), st.sampled_from(edges).map(lambda e: max(0, e - 1)),
                           st.sampled_from(edges)))
        how = draw(st.sampled_from(("insert", "delete", "replace")))
        if how == "insert":
            path = path[:i] + draw(EDITS) + path[i:]
        elif how == "delete":
            path = path[:i] + path[i + 1:]
        else:
            path = path[:i] + draw(EDITS) + path[i + 1:]
    return path


_STEP = re.compile(r"(?:[0-9]+(?:\+[0-9]+)?|batch|extern|interactive)\Z")


def _component_prefix(short: str, path: str) -> bool:
    return path.startswith(short) and (len(path) == len(short) or path[len(short)] == "/")


def check_slurm(path: str):
    with within(5, "slurm.parse"):
        p = slurm.parse(path)
        folds = {lvl: slurm.fold(path, lvl) for lvl in slurm.LEVELS}
    assert folds["task"] == path
    if p is None:
        tally("slurm: no job")
        assert folds["step"] == folds["job"] == path and workloads.slurm_job(path) is None
        return None
    tally("slurm: step" if p.step else "slurm: job")
    assert _component_prefix(p.job_path, path)
    assert re.fullmatch(r"[0-9]+", p.job) or slurm.SLUID.match(p.job), p
    assert p.job_path.endswith(("/job_" + p.job) if p.job[0].isdigit() else "/" + p.job)
    assert p.uid is None or re.fullmatch(r"[0-9]+", p.uid), p
    assert bool(p.step) == bool(p.step_path)
    if p.step:
        assert _STEP.match(p.step), p
        assert p.step_path == f"{p.job_path}/step_{p.step}" and _component_prefix(p.step_path, path)
    # the job and step paths parse to the same job; folding twice is folding once
    assert slurm.parse(p.job_path) == slurm.SlurmPath(p.job_path, p.job, "", "", p.uid)
    if p.step:
        assert slurm.parse(p.step_path) == slurm.SlurmPath(p.job_path, p.job, p.step_path, p.step, p.uid)
    for lvl, f in folds.items():
        assert slurm.fold(f, lvl) == f
    assert folds["job"] == p.job_path and folds["step"] == (p.step_path or p.job_path)
    assert workloads.slurm_job(path) == p.job
    for lvl in ("step", "job"):
        assert workloads.folder("slurm", lvl)(path) == folds[lvl]
    return p


@examples(300)
@given(case=slurm_paths())
def test_fuzz_slurm_paths_as_slurm_makes_them(case):
    path, want = case
    got = check_slurm(path)
    if want is not None:
        assert got == want


@examples(400)
@given(path=mutated(st.one_of(slurm_paths().map(lambda c: c[0]), st.sampled_from([
    "/slurm/uid_1000/job_42/step_0/task_1", "/system.slice/slurmstepd.scope/job_42/step_batch/user/task_0",
    "/system.slice/node1_slurmstepd.scope/sEKNKTV3WPV500/step_0+1/slurm"]))))
@example(path="/slurm/uid_1/job_2\n")  # `$` matched before a final newline: a sibling "job_2\n" was job 2
@example(path="/system.slice/slurmstepd.scope/job_7/step_0\n/x")
@example(path="/slurm/uid_1/job_٣")  # \d took any script's digits as a job id
def test_fuzz_slurm_paths_mutated(path):
    check_slurm(path)


# --- systemd and Kubernetes ------------------------------------------------------------------------------------

UNIT = st.builds(lambda n, s: n + s, st.sampled_from(["sshd", "user@1000", "session-3", "cron", "a-b", "x"]),
                 st.sampled_from([".service", ".scope", ".socket", ".mount", ".swap", ".slice"]))
SYSTEMD = st.lists(st.one_of(UNIT, NAME, st.sampled_from(["-.slice", "init.scope", "system.slice",
                                                          "user.slice", "user-1000.slice"])),
                   min_size=0, max_size=4).map(lambda cs: "/" + "/".join(cs))
UID = st.uuids().map(str)
K8S = st.one_of(
    st.builds(lambda q, u, c: f"/kubepods.slice/kubepods-{q}.slice/kubepods-{q}-pod{u.replace('-', '_')}.slice{c}",
              st.sampled_from(["burstable", "besteffort"]), UID,
              st.sampled_from(["", "/cri-containerd-0123abcd.scope", "/crio-1.scope/x"])),
    st.builds(lambda u, c: f"/kubepods.slice/kubepods-pod{u.replace('-', '_')}.slice{c}", UID,
              st.sampled_from(["", "/docker-1.scope"])),
    st.builds(lambda q, u, c: f"/kubepods/{q}pod{u}{c}", st.sampled_from(["", "burstable/", "besteffort/"]), UID,
              st.sampled_from(["", "/0123456789abcdef", "/a/b"])),
)
_UNIT_SUFFIX = (".service", ".scope", ".socket", ".mount", ".swap", ".slice")


@examples(300)
@given(path=st.one_of(SYSTEMD, mutated(SYSTEMD)))
@example(path="/system.slice/a.service\n")  # `$` matched before a final newline: unit "a.service\n"
def test_fuzz_systemd_units(path):
    with within(5, "systemd_unit"):
        unit = workloads.systemd_unit(path)
        folded = workloads.folder("systemd", "unit")(path)
    parts = path.split("/")
    tally("systemd: unit" if unit else "systemd: none")
    if unit is not None:
        assert unit in parts and unit.endswith(_UNIT_SUFFIX) and unit != "-.slice", unit
    assert _component_prefix(folded, path)
    assert workloads.folder("systemd", "unit")(folded) == folded
    if folded != path:  # cut after a unit: the deepest one
        assert folded.rsplit("/", 1)[1].endswith(_UNIT_SUFFIX[:-1])


@examples(300)
@given(path=st.one_of(K8S, mutated(K8S)))
@example(path="/kubepods/pod0123abcd-0000-0000-0000-000000000000\n")  # `$` again: a sibling was the pod
def test_fuzz_kubernetes_pods(path):
    with within(5, "k8s_pod"):
        pod = workloads.k8s_pod(path)
        folded = workloads.folder("k8s", "pod")(path)
    tally("k8s: pod" if pod else "k8s: none")
    if pod is None:
        assert folded == path
        return
    assert re.fullmatch(r"[0-9a-fA-F-]{8,}", pod)
    # one whole component is the pod's: pod<uid> (cgroupfs driver) or kubepods[-<qos>]-pod<uid with _>.slice
    assert any(re.fullmatch(r"(?:kubepods(?:-[a-z]+)?-)?pod[0-9a-fA-F_-]{8,}(?:\.slice)?", c)
               and c.replace("_", "-").removesuffix(".slice").endswith("pod" + pod)
               for c in path.split("/")), (path, pod)
    assert _component_prefix(folded, path) and workloads.k8s_pod(folded) == pod
    assert workloads.folder("k8s", "pod")(folded) == folded
