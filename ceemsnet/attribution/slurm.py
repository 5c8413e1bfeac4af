"""SLURM's cgroup path grammar (the one place it is written), and SLURM's own
facts about jobs (sacct, squeue).

The grammar (paths relative to the hierarchy root; read in SchedMD/slurm at
284c3b95f0, 2026-08, and the release tags named):

  cgroup v1 (src/plugins/cgroup/v1/xcgroup.c: xcgroup_create_slurm_cg(),
  xcgroup_create_hierarchy(); cgroup_v1.c _handle_task_cgroup() adds task_<t>):
    [<prefix>]/slurm[_<node>]/uid_<u>/job_<j>/step_<s>/task_<t>
  the same in every v1 controller hierarchy (freezer, cpuset, memory, ...).
  `/slurm` is CgroupPrepend's default, `/slurm_<node>` (%n) its default with
  several slurmd per host (MULTIPLE_SLURMD; src/interfaces/cgroup.c). SLURM
  makes it at the root of the hierarchy it sees; <prefix> is where that root
  sits in the host's view (a node in a container, a cgroup namespace).

  cgroup v2 (src/plugins/cgroup/v2/cgroup_v2.c: the tree drawn at its top,
  _set_int_cg_ns(), cgroup_p_step_create(), cgroup_p_task_addto()):
    <prefix>/<CgroupSlice>/[<node>_]slurmstepd.scope/<job dir>/step_<s>/user/task_<t>
                                                      .../step_<s>/user/task_special
                                                      .../step_<s>/slurm  (the slurmstepd)
  <prefix> is the parent of pid 1's cgroup as slurmd sees it
  (_get_init_cg_path(): empty on a host, /docker.slice/docker-<id>.scope in
  a container), <CgroupSlice> system.slice by default, <node>_ with several
  slurmd per host. The scope also holds `system` (stepds waiting for their
  job directory) and, when slurmd makes the scope itself (IgnoreSystemd=yes),
  `slurmd`: no job, not parsed.

  <job dir> (v2 only; v1 always has job_<j>): job_<numeric id> before 26.05,
  and from 26.05.2 with CgroupJobIdPaths=yes (cgroup.conf(5)); by default from
  26.05 the job's SLUID: 's' and 13 Crockford base-32 digits, no I L O U
  (print_sluid() in src/common/sluid.c), e.g. sEKNKTV3WPV500. The numeric id
  cannot be derived from a SLUID.

  step_<s>: log_build_step_id_str(STEP_ID_FLAG_NO_PREFIX | STEP_ID_FLAG_NO_JOB)
  in src/common/log.c: the step number (0, 1, ...), batch, extern or
  interactive (SLURM_BATCH_SCRIPT, SLURM_EXTERN_CONT, SLURM_INTERACTIVE_STEP
  in slurm/slurm.h). SLURM_PENDING_STEP (TBD) is never a running step, so it
  has no cgroup; any other name below a job directory is no step (the path
  counts as the job's own).

Arrays and heterogeneous jobs (both layouts):
  - an array task is a job of its own: its cgroup carries its own job id
    (job_125), which SLURM shows as <array job>_<index> (123_2);
  - a heterogeneous job's components are jobs of their own, each with its own
    unique job id ("Each component of a heterogeneous job will have its own
    unique job_id", doc/html/heterogeneous_jobs.shtml): job_101, shown as
    <leader>+<offset> (100+1). Their steps are plain (step_0): srun sets
    step_het_comp only for a heterogeneous step in a non-heterogeneous
    allocation (src/srun/srun_job.c, local_het_step);
  - such a heterogeneous step (20.11+, `srun ... : ...` in one allocation)
    is step_<n>+<component> (step_0+1) below the job's one directory, on
    releases before 26.05. From 26.05 (commit 8c85bc290b, in 26.05.0) the
    +<component> is printed only for a step without a SLUID, and every job
    has one, so the directory is step_<n>: the components run on distinct
    nodes, so no node holds two.
  The labels 123_2 and 100+1 do not come from the path: SlurmNames maps raw
  ids to them through squeue (running jobs, from slurmctld) and sacct (the
  rest), batched and cached; without them the raw id is the label.

No SLURM protocol here: only `squeue -o` and `sacct -P` output is parsed
(slurm 22.05+).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("ceemsnet.attribution.slurm")

# ---- the cgroup path grammar ------------------------------------------------

# [0-9], not \d (any script's digits), and \Z, not $ (which also matches before a final newline): a
# cgroup may be named "job_٣" or "job_2\n" below a delegated one, and neither is SLURM's
_SLUID = r"s[0-9A-HJKMNP-TV-Z]{13}"
SLUID = re.compile(rf"^{_SLUID}\Z")
_PREFIX = r"(?:/[^/]+)*?"  # whole components, as few as will do
_JOB_V1 = rf"{_PREFIX}/slurm(?:_[^/]+)?/uid_(?P<uid>[0-9]+)/job_(?P<v1job>[0-9]+)"
_JOB_V2 = rf"{_PREFIX}/(?:[^/]+_)?slurmstepd\.scope/(?:job_(?P<v2job>[0-9]+)|(?P<sluid>{_SLUID}))"
_STEP = r"[0-9]+(?:\+[0-9]+)?|batch|extern|interactive"
_PATH = re.compile(rf"^(?P<job_path>{_JOB_V1}|{_JOB_V2})(?P<step_dir>/step_(?P<step>{_STEP}))?(?=/|\Z)")

LEVELS = ("task", "step", "job")  # --cgroup.aggregate with --unit=slurm, finest first


@dataclass(frozen=True)
class SlurmPath:
    job_path: str        # the job's cgroup path
    job: str             # the raw job id: numeric, or the SLUID
    step_path: str       # the step's cgroup path, "" for the job directory itself
    step: str            # SLURM's step name (0, batch, extern, interactive, 0+1), "" if none
    uid: str | None      # cgroup v1 paths carry the uid


def parse(path: str) -> SlurmPath | None:
    """SLURM's view of a cgroup path (v1 or v2 layout), None outside a job."""
    m = _PATH.match(path)
    if m is None:
        return None
    job_path = m["job_path"]
    return SlurmPath(job_path, m["v1job"] or m["v2job"] or m["sluid"],
                     job_path + m["step_dir"] if m["step_dir"] else "", m["step"] or "", m["uid"])


def fold(path: str, level: str) -> str:
    """The cgroup path whose series `path` counts in at an aggregation level:
    task (every cgroup its own), step (below a step: the step) or job. Paths
    outside a job, and those above the level, stay as they are."""
    if level == "task":
        return path
    p = parse(path)
    if p is None:
        return path
    if level == "step" and p.step_path:
        return p.step_path
    return p.job_path


# ---- SLURM's facts about jobs: sacct ------------------------------------

# sacct --format fields (all present in 22.05) -> report keys
FIELDS = ("JobIDRaw", "JobID", "User", "Account", "Partition", "JobName", "State", "Start", "End",
          "Elapsed", "NodeList")
FACTS = ("user", "account", "partition", "job_name", "state", "start", "end", "elapsed", "nodes")
_KEYS = dict(zip(FIELDS[2:], FACTS))
# states after which a job's facts no longer change (sacct --helpstate)
FINAL_STATES = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
                "PREEMPTED", "TIMEOUT", "REVOKED"}
BATCH = 200          # job ids per sacct call
# start, end: asked for as Unix seconds, reported as ISO 8601 with the node's UTC offset (sacct's
# default has none). Not asked for as "%Y-%m-%dT%H:%M:%S%z": 22.05's sacct prints a date into a
# buffer of the field's width (19 characters for Start and End: print_fields_date()), which cuts
# the offset off
TIME_FORMAT = "%s"
_UNKNOWN = {"", "Unknown", "None", "None assigned"}


def parse_sacct(text: str, fields: tuple[str, ...] = FIELDS, key: str = "JobIDRaw") -> dict[str, dict]:
    """`sacct -P --noheader --format=<fields>` output -> {job's `key` field: facts} (pure).

    Only allocation lines count (a JobID without a '.'); for array and
    heterogeneous jobs JobIDRaw is the cgroup's id and JobID what SLURM
    shows (123_2, 100+1). Lines with the wrong number of fields are skipped.
    A job listed twice (requeued) keeps its last record. A job name may hold
    anything its user typed: '|' (sacct -P does not quote it; the other
    fields cannot hold one) and the characters splitlines() would split at."""
    out: dict[str, dict] = {}
    name = fields.index("JobName") if "JobName" in fields else None
    for line in text.split("\n"):
        cols = line.split("|")
        if len(cols) > len(fields) and name is not None:
            extra = len(cols) - len(fields)
            cols[name:name + extra + 1] = ["|".join(cols[name:name + extra + 1])]
        if len(cols) != len(fields):
            continue
        row = dict(zip(fields, cols))
        raw, jid = row["JobIDRaw"].strip(), row["JobID"].strip()
        if not raw or "." in raw or "." in jid:
            continue
        facts = {"job": jid or raw}
        for f, k in _KEYS.items():
            v = row[f].strip()
            facts[k] = None if v in _UNKNOWN else v
        if facts["state"]:
            facts["state"] = facts["state"].split()[0]  # "CANCELLED by 1000" -> CANCELLED
        for k in ("start", "end"):
            facts[k] = _iso(facts[k])
        if row[key].strip():  # an empty SLUID: a job no cgroup is named after
            out[row[key].strip()] = facts
    return out


def _iso(v: str | None) -> str | None:
    """sacct's Unix seconds (SLURM_TIME_FORMAT=%s) -> ISO 8601 in the node's time zone, with its
    offset; a value already in another form (an older cache, a test's fake sacct) as it is."""
    if v is None or not v.isdigit():
        return v
    return datetime.datetime.fromtimestamp(int(v)).astimezone().isoformat(timespec="seconds")


def _valid_facts(v) -> bool:
    """A cache entry as parse_sacct makes them: the job as SLURM shows it, each fact a string or null
    (anything else, e.g. a list as the state, would fail in is_final or in the report)."""
    return (isinstance(v, dict) and isinstance(v.get("job"), str) and bool(v["job"])
            and all(v.get(k) is None or isinstance(v.get(k), str) for k in FACTS))


def is_final(facts: dict) -> bool:
    return (facts.get("state") or "") in FINAL_STATES and facts.get("end") is not None


class SacctError(Exception):
    """sacct is missing or failed: the one-line reason."""


class Runner:
    """subprocess.run for sacct and squeue that stop() can end from another thread.

    Each program runs in a session of its own and, on its timeout or at stop(), its
    whole process group is killed: a wrapper script's own children (a `sleep` in a
    shell script) hold its output pipes, and subprocess.run's timeout kills only the
    direct child, then waits for those pipes to close."""

    def __init__(self):
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self.stopped = False

    def __call__(self, argv, *, timeout: float, env=None, capture_output=True, text=True, errors=None):
        with self._lock:
            if self.stopped:
                raise OSError(0, "the exporter is stopping")
            p = self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=text, errors=errors, env=env,
                                              start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill(p)
            p.communicate()
            raise
        finally:
            with self._lock:
                self._proc = None
        if self.stopped:
            raise OSError(0, "the exporter is stopping")
        return subprocess.CompletedProcess(argv, p.returncode, out, err)

    @staticmethod
    def _kill(p: subprocess.Popen) -> None:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the group id is its pid
        except OSError:
            pass

    def stop(self) -> None:
        """End the program running now, if any, and refuse to start another."""
        with self._lock:
            self.stopped = True
            if self._proc is not None:
                self._kill(self._proc)


def run_sacct(ids: list[str], timeout: float = 30.0, sacct: str = "sacct", run=subprocess.run) -> dict[str, dict]:
    """Facts of these raw job ids (numeric or SLUIDs), BATCH ids per sacct call
    (run: subprocess.run, or a Runner that stop() can end)."""
    exe = shutil.which(sacct)
    if exe is None:
        raise SacctError("sacct is not installed (not on PATH)")
    out: dict[str, dict] = {}
    # 26.05's SLUID job directories: asked with the SLUID field (which 22.05's sacct does not have)
    sluids = [i for i in ids if SLUID.match(i)]
    # nothing else: one id sacct cannot parse ("Bad job/step specified") fails the whole call
    numeric = [i for i in ids if i.isascii() and i.isdigit()]
    for group, fields, key in ((numeric, FIELDS, "JobIDRaw"), (sluids, FIELDS + ("SLUID",), "SLUID")):
        for i in range(0, len(group), BATCH):
            out.update(_sacct_call(exe, group[i:i + BATCH], fields, key, timeout, run))
    return out


def _sacct_call(exe: str, part: list[str], fields, key: str, timeout: float, run=subprocess.run) -> dict[str, dict]:
    # no -X: for a heterogeneous job, -X shows the leader alone; allocation lines are filtered in parsing.
    # --starttime: sacct's default window is today only (since midnight) when -j is not given; with -j
    # it is all time, but say so, for older releases
    argv = [exe, "-P", "--noheader", "--format=" + ",".join(fields), "--starttime=1970-01-01",
            "-j", ",".join(part)]
    try:
        # errors="replace": a job name typed in Latin-1 (b'caf\xe9') is no UnicodeDecodeError
        r = run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                env={**os.environ, "SLURM_TIME_FORMAT": TIME_FORMAT})
    except subprocess.TimeoutExpired:
        raise SacctError(f"sacct did not answer within {timeout:g} s") from None
    except OSError as e:
        raise SacctError(f"cannot run sacct: {e.strerror or e}") from None
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        raise SacctError(f"sacct failed: {msg}")
    return parse_sacct(r.stdout, fields, key)


class FactsCache:
    """Per-job sacct facts, kept in a JSON file between runs: a finished job's
    facts never change, so only those are kept; a running job is asked again."""

    def __init__(self, path: str | None):
        self.path = path
        self.jobs: dict[str, dict] = {}
        if path:
            try:
                with open(path) as f:
                    doc = json.load(f)
            except FileNotFoundError:
                return
            # ValueError: not JSON, not UTF-8; RecursionError: nested too deep for json.load
            except (OSError, ValueError, RecursionError) as e:
                log.warning("ignoring the sacct cache %s: %s", path, " ".join(str(e).split())[:200])
                return
            jobs = doc.get("jobs") if isinstance(doc, dict) else None
            if not isinstance(jobs, dict):
                log.warning("ignoring the sacct cache %s: not {\"jobs\": {...}}", path)
                return
            self.jobs = {k: v for k, v in jobs.items() if _valid_facts(v)}
            if len(self.jobs) < len(jobs):  # the next save() leaves them out
                log.warning("ignoring %d of the %d entries of the sacct cache %s: not as ceemsnet writes them",
                            len(jobs) - len(self.jobs), len(jobs), path)

    def save(self) -> None:
        if not self.path:
            return
        keep = {k: v for k, v in self.jobs.items() if is_final(v)}
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            with open(tmp, "w") as f:
                json.dump({"jobs": keep}, f)
            os.replace(tmp, self.path)
        except OSError as e:
            log.debug("cannot write the sacct cache %s: %s", self.path, e)
            try:
                os.unlink(tmp)
            except OSError:
                pass


def job_facts(ids, cache: FactsCache | None = None, sacct: str = "sacct",
              timeout: float = 30.0) -> tuple[dict[str, dict], str | None]:
    """({raw id: facts} for the jobs sacct knows, a one-line note of what is missing or None)."""
    cache = cache or FactsCache(None)
    ids = sorted({i for i in ids if i})
    want = [i for i in ids if not is_final(cache.jobs.get(i, {}))]
    note = None
    if want:
        try:
            cache.jobs.update(run_sacct(want, timeout, sacct))
            cache.save()
        except SacctError as e:
            note = (f"{e}: rows carry no {', '.join(FACTS)}"
                    + (" (those of finished jobs come from the cache)" if len(want) < len(ids) else ""))
    got = {i: cache.jobs[i] for i in ids if i in cache.jobs}
    unknown = [i for i in ids if i not in got]
    if note is None and unknown:
        note = (f"sacct knows nothing of {len(unknown)} job(s) ({', '.join(unknown[:5])}"
                f"{', ...' if len(unknown) > 5 else ''}): their rows carry no SLURM facts")
    return got, note


def run_squeue(ids: list[str], timeout: float = 5.0, squeue: str = "squeue", run=subprocess.run) -> dict[str, str]:
    """{raw job id: the id SLURM shows (123_2, 100+1)} for the numeric ids slurmctld has in
    memory: running jobs at once (sacct learns of a job only once slurmdbd has its record,
    and may be slow to answer), ended ones for MinJobAge. `squeue -h -a -t all -o %A|%i -j ids`."""
    exe = shutil.which(squeue)
    if exe is None:
        raise SacctError(f"{squeue} is not installed (not on PATH)")
    numeric = [i for i in ids if i.isascii() and i.isdigit()]
    out: dict[str, str] = {}
    for i in range(0, len(numeric), BATCH):
        part = numeric[i:i + BATCH]
        argv = [exe, "-h", "-a", "-t", "all", "-o", "%A|%i", "-j", ",".join(part)]
        try:
            r = run(argv, capture_output=True, text=True, errors="replace", timeout=timeout)  # as sacct's
        except subprocess.TimeoutExpired:
            raise SacctError(f"squeue did not answer within {timeout:g} s") from None
        except OSError as e:
            raise SacctError(f"cannot run squeue: {e.strerror or e}") from None
        if r.returncode != 0:
            # one id asked alone and unknown to slurmctld (ended long ago): no error, just not known
            if "Invalid job id" in r.stderr:
                continue
            msg = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
            raise SacctError(f"squeue failed: {msg}")
        for line in r.stdout.splitlines():
            raw, _, shown = line.strip().partition("|")
            # a pending array's own record shows as 123_[1-2]: no cgroup has that
            if raw in part and shown and "[" not in shown:
                out[raw] = shown
    return out


class SlurmNames:
    """Raw job id -> the id SLURM shows (123_2 for an array task, 100+1 for a
    heterogeneous component), for the exporter's `job` label. New ids are asked
    in one call per learn() (the exporter calls it from BackgroundNames' thread, never
    from a scrape): squeue first (slurmctld knows a
    running job at once), then sacct for those squeue does not know (ended
    jobs, e.g. retired cgroups after a restart), at most every `retry` seconds
    for ids neither knew; answers are kept. Without either (missing, failing:
    logged once each, then left alone for `retry` seconds) the raw id is the label."""

    def __init__(self, sacct: str = "sacct", retry: float = 30.0, timeout: float = 5.0, clock=time.monotonic,
                 squeue: str = "squeue", run=subprocess.run):
        self.sacct, self.squeue, self.retry, self.timeout, self._clock = sacct, squeue, retry, timeout, clock
        self._run = run  # subprocess.run, or a Runner (BackgroundNames: ended at stop)
        self.names: dict[str, str] = {}
        self._asked: dict[str, float] = {}
        self._off_until = {"squeue": 0.0, "sacct": 0.0}
        self._warned: set[str] = set()

    def display(self, raw: str) -> str:
        return self.names.get(raw, raw)

    def _ask(self, what: str, fn, ids: list[str], now: float) -> dict[str, str]:
        if not ids or now < self._off_until[what]:
            return {}
        try:
            return fn(ids)
        except SacctError as e:
            if getattr(self._run, "stopped", False):
                return {}  # ended by the exporter's stop, not a failure of SLURM's
            if what not in self._warned:
                log.warning("%s: job labels of array tasks and heterogeneous components may be the cgroups' raw "
                            "job ids (not shown as SLURM shows them) while it fails", e)
                self._warned.add(what)
            self._off_until[what] = now + self.retry
            return {}

    def learn(self, raws) -> None:
        """Ask squeue, then sacct, about the raw ids not known yet (not more often than `retry`)."""
        now = self._clock()
        new = sorted(r for r in raws if r not in self.names and now - self._asked.get(r, -1e18) >= self.retry)
        if not new:
            return
        for r in new:
            self._asked[r] = now
        if self.squeue != "none":
            self.names.update(self._ask("squeue", lambda ids: run_squeue(ids, self.timeout, self.squeue, self._run),
                                        new, now))
        rest = [r for r in new if r not in self.names] if self.sacct != "none" else []
        facts = self._ask("sacct", lambda ids: run_sacct(ids, self.timeout, self.sacct, self._run), rest, now)
        for raw, f in facts.items():
            self.names[raw] = f["job"]
        if len(self._asked) > 100_000:
            self._asked.clear()


class BackgroundNames:
    """SlurmNames asked from a thread of its own, so that a scrape never waits on SLURM.

    learn() (each scrape) only hands the raw ids not named yet to the thread and
    returns; display() answers from what is known now: a job with no answer yet keeps
    its raw id as label, and takes SLURM's name at the first scrape after the answer.
    Bounded: one lookup in flight (the one thread, each program call with SlurmNames'
    timeout), SlurmNames' back-off on failure and retry for unknown ids, at most
    MAX_PENDING ids waiting (the rest are handed in again by a later scrape). stop()
    ends the program running now and the thread."""

    MAX_PENDING = 10 * BATCH

    def __init__(self, sacct: str = "sacct", squeue: str = "squeue", retry: float = 30.0, timeout: float = 5.0,
                 clock=time.monotonic):
        self.runner = Runner()
        self.lookup = SlurmNames(sacct, retry, timeout, clock, squeue, run=self.runner)
        self._pending: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.rounds = 0  # lookups done (tests wait on it)

    def display(self, raw: str) -> str:
        return self.lookup.names.get(raw, raw)

    def learn(self, raws) -> None:
        known = self.lookup.names
        new = [r for r in raws if r not in known]
        if not new or self._stopping.is_set():
            return
        with self._lock:
            room = self.MAX_PENDING - len(self._pending)
            if room > 0:
                self._pending.update(new[:room])
            if self._thread is None:
                # started by the first scrape: after serve has dropped its capabilities, which a
                # new thread inherits (ceemsnet/serving/caps.py)
                self._thread = threading.Thread(target=self._run, name="slurm-names", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping.is_set():
                return
            with self._lock:
                ids, self._pending = self._pending, set()
            try:
                self.lookup.learn(ids)
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one lookup
                log.warning("looking up SLURM job names failed: %s", e)
            self.rounds += 1

    def stop(self, timeout: float = 2.0) -> None:
        """End the lookup in flight (its program is killed) and the thread."""
        self._stopping.set()
        self.runner.stop()
        self._wake.set()
        t = self._thread
        if t is not None:
            t.join(timeout)
