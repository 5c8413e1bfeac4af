"""Fuzzing what SLURM's commands print (ceemsnet/attribution/slurm.py): `sacct -P` output (parse_sacct),
`squeue -o %A|%i` output (run_squeue's parser, through its `run` argument), the bytes either program
may print (a job name in Latin-1), and the sacct cache file `report` keeps.

The text is made of the lines sacct prints for arrays, heterogeneous jobs, steps and requeued jobs,
with the free-text field (JobName) holding anything a user may type; every well-formed allocation
line must come out exactly, the rest be skipped, never an exception."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ceemsnet.attribution import slurm

from .conftest import examples, tally, within

NUM = st.integers(1, 10**7).map(str)
JOB_NAMES = st.one_of(st.sampled_from(["train", "a b", "", "Unknown", "x|y", "a||b", "caf\u00e9", "a\x85b",
                                       "a\u2028b", "a\x1cb", "a\rb", "  pad  ", "|", "None"]),
                      st.text(st.characters(exclude_characters="\n"), max_size=10))
STATES = st.sampled_from(["COMPLETED", "RUNNING", "PENDING", "CANCELLED by 1000", "FAILED", "TIMEOUT", "OUT_OF_MEMORY",
                          "Unknown", "", "NODE_FAIL", "REQUEUED"])
TIMES = st.sampled_from(["2026-01-02T03:04:05+0100", "Unknown", "None", "", "2026-01-02T03:04:05"])


@st.composite
def sacct_records(draw):
    """(line fields as sacct prints them) for one record: an allocation or one of its steps."""
    raw = draw(NUM)
    kind = draw(st.sampled_from(["plain", "array", "het", "step", "arraystep"]))
    shown = {"plain": raw, "array": f"{draw(NUM)}_{draw(st.integers(0, 99))}", "het": f"{draw(NUM)}+1",
             "step": raw, "arraystep": f"{draw(NUM)}_3"}[kind]
    raw_col = raw
    if kind in ("step", "arraystep"):
        suffix = "." + draw(st.sampled_from(["batch", "extern", "0", "1", "interactive"]))
        raw_col, shown = raw + suffix, shown + suffix
    return {"JobIDRaw": raw_col, "JobID": shown, "User": draw(st.sampled_from(["alice", "", "root"])),
            "Account": draw(st.sampled_from(["phys", "", "None assigned"])),
            "Partition": draw(st.sampled_from(["cpu", "gpu,cpu", ""])), "JobName": draw(JOB_NAMES),
            "State": draw(STATES), "Start": draw(TIMES), "End": draw(TIMES),
            "Elapsed": draw(st.sampled_from(["00:01:02", "1-00:00:00", ""])),
            "NodeList": draw(st.sampled_from(["node[1-4]", "None assigned", "n1"])),
            "SLUID": draw(st.sampled_from(["sEKNKTV3WPV500", "s0000000000000", ""]))}


def _expected(records, fields, key):
    """What parse_sacct must give for well-formed lines: allocation records, the last one of a job."""
    out = {}
    for r in records:
        if "." in r["JobIDRaw"] or not r[key].strip():
            continue
        facts = {"job": r["JobID"]}
        for f, k in slurm._KEYS.items():
            v = r[f].strip()
            facts[k] = None if v in slurm._UNKNOWN else v
        if facts["state"]:
            facts["state"] = facts["state"].split()[0]
        out[r[key].strip()] = facts
    return out


def _check_facts(out: dict, fields):
    for k, facts in out.items():
        assert isinstance(k, str) and k and k == k.strip()
        assert set(facts) == {"job", *slurm.FACTS}
        assert facts["job"] and "." not in facts["job"]
        for name in slurm.FACTS:
            v = facts[name]
            assert v is None or (isinstance(v, str) and v and v == v.strip() and v not in slurm._UNKNOWN)
        assert facts["state"] is None or not any(c.isspace() for c in facts["state"])
        slurm.is_final(facts)


@examples(200)
@given(records=st.lists(sacct_records(), max_size=6), sluid=st.booleans())
@example(records=[{"JobIDRaw": "7", "JobID": "7", "User": "u", "Account": "a", "Partition": "p",
                   "JobName": "a\x85b", "State": "COMPLETED", "Start": "s", "End": "e", "Elapsed": "1",
                   "NodeList": "n", "SLUID": "s0000000000000"}], sluid=False)  # splitlines() split the name
@example(records=[{"JobIDRaw": "7", "JobID": "7", "User": "u", "Account": "a", "Partition": "p",
                   "JobName": "x|y", "State": "COMPLETED", "Start": "s", "End": "e", "Elapsed": "1",
                   "NodeList": "n", "SLUID": "s0000000000000"}], sluid=True)  # a '|' in a job name
def test_fuzz_sacct_output_as_sacct_prints_it(records, sluid):
    fields, key = (slurm.FIELDS + ("SLUID",), "SLUID") if sluid else (slurm.FIELDS, "JobIDRaw")
    text = "".join("|".join(r[f] for f in fields) + "\n" for r in records)
    with within(5, "parse_sacct"):
        out = slurm.parse_sacct(text, fields, key)
    _check_facts(out, fields)
    tally(f"sacct: {len(out)} jobs")
    assert out == _expected(records, fields, key)


TEXT_EDITS = st.sampled_from(["|", "||", "\n", "\r\n", ".", " ", "\x85", "\u2028", "\0", "Unknown", "_", "+"])


@examples(200)
@given(records=st.lists(sacct_records(), max_size=5), edits=st.lists(st.tuples(st.integers(0, 10**4), TEXT_EDITS,
                                                                              st.booleans()), max_size=4),
       sluid=st.booleans())
def test_fuzz_sacct_output_mutated(records, edits, sluid):
    fields, key = (slurm.FIELDS + ("SLUID",), "SLUID") if sluid else (slurm.FIELDS, "JobIDRaw")
    text = "".join("|".join(r[f] for f in fields) + "\n" for r in records)
    for at, s, delete in edits:
        at = at % (len(text) + 1)
        text = text[:at] + ("" if delete else s) + text[at + (1 if delete else 0):]
    with within(5, "parse_sacct"):
        out = slurm.parse_sacct(text, fields, key)
    _check_facts(out, fields)


# --- squeue: `squeue -h -a -t all -o %A|%i -j ids`, through run_squeue's `run` -----------------------------

def _fake_run(stdout, returncode=0, stderr=""):
    def run(argv, **kw):
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)
    return run


SQUEUE_LINES = st.one_of(
    st.builds(lambda a, b: f"{a}|{b}", NUM, st.one_of(NUM, st.builds(lambda a, i: f"{a}_{i}", NUM, st.integers(0, 9)),
                                                      st.builds(lambda a: f"{a}_[1-5%2]", NUM),
                                                      st.builds(lambda a: f"{a}+2", NUM))),
    st.text(max_size=12), st.sampled_from(["", "|", "1|", "|1", " 5 | 5_1 ", "5|5|5", "JOBID|JOBID"]))


@examples(300)
@given(ids=st.lists(st.one_of(NUM, st.sampled_from(["5", "sEKNKTV3WPV500", "", "٣", "1.0"])), max_size=5),
       lines=st.lists(SQUEUE_LINES, max_size=8), sep=st.sampled_from(["\n", "\r\n", "\x85"]))
def test_fuzz_squeue_output(ids, lines, sep):
    with within(5, "run_squeue"):
        out = slurm.run_squeue(ids, squeue=sys.executable, run=_fake_run(sep.join(lines)))
    asked = {i for i in ids if i.isascii() and i.isdigit()}
    assert set(out) <= asked
    for raw, shown in out.items():
        assert shown and "[" not in shown and "\n" not in shown
    for line in lines:  # a well-formed line for an asked id is read (the last one of an id wins)
        raw, _, shown = line.partition("|")
        if raw in asked and shown and "[" not in shown and "|" not in shown and shown == shown.strip() \
                and "\n" not in shown and "\r" not in shown and "\x85" not in line:
            assert raw in out
    tally(f"squeue: {len(out)} ids")


# --- bytes: what the programs really print, decoded by the code that runs them -------------------------------

def _program(tmp_path, data: bytes) -> str:
    out = tmp_path / "out.bin"
    out.write_bytes(data)
    exe = tmp_path / "prog"
    exe.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.buffer.write(open({str(out)!r}, 'rb').read())\n")
    exe.chmod(0o755)
    return str(exe)


@pytest.fixture(scope="module")
def prog_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("slurmprog")


@examples(15)
@given(line=st.binary(max_size=40), which=st.sampled_from(["sacct", "squeue"]))
@example(line=b"1|1|u|a|p|caf\xe9|COMPLETED|s|e|1|n", which="sacct")  # was a UnicodeDecodeError
@example(line=b"1|1_\xe9", which="squeue")
def test_fuzz_sacct_and_squeue_bytes(prog_dir, line, which):
    exe = _program(prog_dir, line + b"\n")
    with within(20, which):
        try:
            if which == "sacct":
                out = slurm.run_sacct(["1"], timeout=15, sacct=exe)
            else:
                out = slurm.run_squeue(["1"], timeout=15, squeue=exe)
        except slurm.SacctError as e:
            assert "\n" not in str(e)
            return
    assert isinstance(out, dict)


# --- the sacct cache file (report --slurm.sacct-cache) ----------------------------------------------------------

CACHE_DOCS = st.one_of(
    st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
                 lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)),
                 max_leaves=10).map(lambda v: {"jobs": {"1": v}} if not isinstance(v, dict) else {"jobs": v}),
    st.fixed_dictionaries({"jobs": st.dictionaries(NUM, st.fixed_dictionaries(
        {"job": NUM, "state": st.one_of(STATES, st.lists(st.text(max_size=2)), st.integers()),
         "end": st.one_of(st.none(), st.text(max_size=3), st.lists(st.integers()))}), max_size=3)}),
)


@examples(100)
@given(doc=CACHE_DOCS, raw=st.one_of(st.none(), st.sampled_from(["[" * 100000, "{", "\xff", "null", "[]"])))
@example(doc={"jobs": {"1": {"job": "1", "state": ["x"], "end": "e"}}}, raw=None)  # was a TypeError in is_final
@example(doc={}, raw="[" * 100000)  # was a RecursionError from json.load
def test_fuzz_sacct_cache_file(prog_dir, doc, raw):
    path = os.path.join(prog_dir, "sacct.json")
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(raw if raw is not None else json.dumps(doc))
    with within(10, "FactsCache"):
        cache = slurm.FactsCache(path)
        got, note = slurm.job_facts(list(cache.jobs)[:3], cache, sacct="none-such-sacct-program")
    assert isinstance(got, dict) and (note is None or "\n" not in note)
