"""docs/accuracy.md's recorder (tests/kernel/accuracy.py) and renderer (tests/accuracy_table.py):
a record survives its line, VM logs and host files are read alike, the latest record of a
comparison wins, and a comparison that differs stands out."""

import datetime
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import accuracy_table as table
from tests.kernel import accuracy

from .conftest import examples

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

NOW = datetime.datetime(2026, 12, 6, 10, 30, tzinfo=datetime.timezone.utc)
HOOK_INFO = {("ceemsnet_hook_info", (("function", f), ("hook", "fexit"), ("object", "/x/net-fexit-5.19-x86-slots.bpf.o"),
                                     ("subsystem", "net"))): 1 for f in ("tcp_sendmsg", "udp_sendmsg")}
HOOK_INFO[("ceemsnet_hook_info", (("function", "vfs_read"), ("hook", "kretprobe"),
                                  ("object", "/x/vfs-kretprobe-5.12-x86.bpf.o"), ("subsystem", "vfs")))] = 1


def rec(**kw):
    r = dict(workload="w", truth="the plan", metric="ceemsnet_net_egress_bytes_total{proto=tcp,family=ipv4}",
             unit="bytes", expected=100, counted=100, kernel="6.12.118-amd64", arch="x86_64", run="6.12", **{"pass": "fexit"},
             hook="fexit: net-fexit-5.19-x86-slots", node="tests/kernel/test_net.py::test_x", at="2026-12-05T10:00:00Z")
    r.update(kw)
    return r


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """The recorder with no pending records, its files under tmp_path, outside any VM run."""
    monkeypatch.setattr(accuracy, "_pending", [])
    monkeypatch.setattr(accuracy, "_atexit", True)  # no exit handler from a unit test
    monkeypatch.setattr(accuracy, "RECORDS_DIR", str(tmp_path / "accuracy"))
    for k in ("CEEMSNET_VM", "CEEMSNET_VM_RUN", "CEEMSNET_TEST_PASS", "CEEMSNET_TEST_HOOK"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def test_a_record_names_run_pass_and_the_object_that_counted(fresh, monkeypatch):
    monkeypatch.setenv("CEEMSNET_VM", "6.18")
    monkeypatch.setenv("CEEMSNET_VM_RUN", "6.18-voluntary")
    monkeypatch.setenv("CEEMSNET_TEST_PASS", "fexit:hash")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "tests/kernel/test_net.py::test_x[a b] (call)")
    accuracy.record("w", "t", "m", 100_000, 100_000.0, samples=HOOK_INFO)
    accuracy.record("w", "t", "m2", 7, None, "ops", samples=HOOK_INFO, subsystem="vfs")
    first, second = accuracy._pending
    assert (first["run"], first["pass"], first["node"]) == ("6.18-voluntary", "fexit:hash", "tests/kernel/test_net.py::test_x[a b]")
    assert first["hook"] == "fexit: net-fexit-5.19-x86-slots"
    assert first["counted"] == 100_000 and isinstance(first["counted"], int)
    assert first["kernel"] == os.uname().release
    assert (second["hook"], second["counted"], second["unit"]) == ("kretprobe: vfs-kretprobe-5.12-x86", None, "ops")


def test_without_samples_the_requested_family_is_named(fresh, monkeypatch):
    monkeypatch.setenv("CEEMSNET_TEST_HOOK", "kretprobe")
    accuracy.record("w", "t", "m", 1, 1)
    assert accuracy._pending[0]["hook"] == "kretprobe"
    assert accuracy._pending[0]["pass"] == "kretprobe"
    assert accuracy._pending[0]["run"] == "host"


def test_flush_saves_on_the_host_replacing_only_the_tests_that_recorded(fresh, monkeypatch):
    monkeypatch.setenv("CEEMSNET_TEST_PASS", "tracepoint:hash")
    path = accuracy.records_file()
    assert path == str(fresh / "accuracy" / "host-tracepoint_hash.jsonl")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        for r in (rec(node="a", metric="old a"), rec(node="b", metric="old b")):
            f.write(accuracy.to_line(r)[len(accuracy.PREFIX):] + "\n")
    monkeypatch.setenv("PYTEST_CURRENT_TEST", "b (call)")
    accuracy.record("w", "t", "new b", 1, 1)
    lines = []
    assert accuracy.flush(lines.append) == 1
    assert [accuracy.parse_line(ln)["metric"] for ln in lines] == ["new b"]
    assert [r["metric"] for r in table.read_records(path)] == ["old a", "new b"]
    assert accuracy.flush(lines.append) == 0 and len(lines) == 1  # flushed once


def test_in_a_vm_nothing_is_written_to_the_checkout_and_every_record_is_printed(fresh, monkeypatch):
    monkeypatch.setenv("CEEMSNET_VM", "6.12")
    accuracy.record("w", "t", "m", 1, 2)
    lines = []
    accuracy.flush(lines.append)
    assert not os.path.exists(fresh / "accuracy")
    assert [accuracy.parse_line(ln)["counted"] for ln in lines] == [2]


TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
NUMBER = st.one_of(st.none(), st.integers(-(10**15), 10**15))


@examples(200)
@given(st.fixed_dictionaries({k: TEXT for k in accuracy.FIELDS if k not in ("expected", "counted")}),
       NUMBER, NUMBER, TEXT.filter(lambda s: accuracy.PREFIX not in s))
def test_every_record_line_round_trips(fields, expected, counted, before):
    """Any record, as the line a session prints, comes back whole: a console's text before it
    and a carriage return after do not matter, and it stays one line."""
    r = {**fields, "expected": expected, "counted": counted}
    line = accuracy.to_line(r)
    assert "\n" not in line and "\r" not in line
    assert accuracy.parse_line(line) == r
    assert accuracy.parse_line(before.replace("\n", " ").replace("\r", " ") + line + "\r") == r


@pytest.mark.parametrize("line", ["", "CEEMSNET-ACCURACY", "CEEMSNET-ACCURACY {", "CEEMSNET-ACCURACY [1]",
                                  'CEEMSNET-ACCURACY {"workload": "w"}', "PASSED tests/kernel/test_net.py"])
def test_lines_without_a_whole_record_are_not_records(line):
    assert accuracy.parse_line(line) is None


def write_log(path, records, noise=True):
    with open(path, "w") as f:
        if noise:
            f.write("== 6.12 --hook=fexit: full suite\n..........  [100%]\n")
        for r in records:
            f.write(("[  12.3] " if noise else "") + accuracy.to_line(r) + "\r\n")
    return str(path)


def test_logs_and_host_files_are_read_and_the_latest_record_wins(tmp_path):
    host = tmp_path / "records"
    host.mkdir()
    (host / "host-auto.jsonl").write_text("".join(
        accuracy.to_line(r)[len(accuracy.PREFIX):] + "\n"
        for r in (rec(run="host", **{"pass": "auto"}), rec(run="host", metric="m2", **{"pass": "auto"}))))
    vm = tmp_path / "vm-logs"
    vm.mkdir()
    write_log(vm / "6.12.log", [rec(counted=99, at="2026-12-04T00:00:00Z")])
    saved = write_log(tmp_path / "saved.log", [rec(at="2026-12-05T00:00:00Z"), rec(kernel="x", at="2026-12-03T00:00:00Z")])
    paths = table.sources_of(str(host), str(vm), [saved])
    assert [os.path.basename(p) for p in paths] == ["host-auto.jsonl", "6.12.log", "saved.log"]
    recs = table.latest([r for p in paths for r in table.read_records(p)])
    assert len(recs) == 3
    vm_rec = next(r for r in recs if r["run"] == "6.12")
    assert (vm_rec["counted"], vm_rec["kernel"]) == (100, "6.12.118-amd64")  # the 5th's, not the 4th's or 3rd's


def render(records):
    return table.render(table.latest(records), ["a.jsonl"], NOW)


def test_a_difference_stands_out_and_exact_rows_alike_merge():
    recs = [rec(), rec(run="6.1", kernel="6.1.0-57-amd64", **{"pass": "fexit:hash"}),
            rec(node="tests/kernel/test_vfs.py::test_y", metric="ceemsnet_vfs_ops_total{op=open}", unit="ops",
                expected=8, counted=8, hook="kretprobe: vfs-kretprobe-5.12-x86"),
            rec(run="7", kernel="7.3.4+deb13-amd64", counted=11_717, expected=12_000, metric="x{a=b}, sender 1"),
            rec(run="7", kernel="7.3.4+deb13-amd64", counted=None, metric="missing"),
            rec(node="tests/slurm/test_slurm.py::test_z", metric="job sum"),
            rec(node="tests/kernel/test_continuity.py::test_c", metric="c")]
    md = render(recs)
    lines = md.splitlines()
    assert lines[0] == '# Accuracy: what "exact" was checked against'
    assert "Generated 2026-12-06 10:30 UTC from 7 comparisons in 3 runs (run/pass of the matrix), read from `a.jsonl`." in md
    heads = [ln for ln in lines if ln.startswith("## ")]
    assert heads == ["## Differences", '## What "exact" means here, and what is not exact', "## Network", "## File IO",
                     "## Continuity", "## SLURM"]
    assert "2 of 7 comparisons differ" in md
    diff = next(ln for ln in lines if "sender 1" in ln and ln.startswith("|"))
    # its workload is the row above's, but a differing row names it
    assert diff.startswith("| **≠** w | the plan | `x{a=b}`, sender 1 (bytes) | 12,000 | **11,717** | **-283 (differs)** |")
    missing = next(ln for ln in lines if "`missing`" in ln and ln.startswith("|"))
    assert "| **no series** | **differs** |" in missing
    merged = next(ln for ln in lines if ln.startswith("| w | the plan | `ceemsnet_net_egress_bytes_total"))
    assert lines[lines.index(merged) + 2].startswith("| **≠** w |")  # the 2nd row: workload given once
    assert "| 100 | 100 | 0 | 6.12.118-amd64<br>6.1.0-57-amd64 |" in merged
    assert merged.endswith("fexit: net-fexit-5.19-x86-slots (6.12/fexit)<br>fexit: net-fexit-5.19-x86-slots (6.1/fexit:hash) |")
    run_row = next(ln for ln in lines if ln.startswith("| 7/fexit |"))
    assert run_row.endswith("| 2 | **2** | 2026-12-05 |")
    assert "Tests: `tests/kernel/test_vfs.py::test_y`." in md


def test_rows_of_one_metric_stay_together_across_runs():
    recs = [rec(metric="a", counted=1, expected=1), rec(metric="b"), rec(workload="v", metric="c"),
            rec(run="7", metric="a", counted=2, expected=2), rec(run="7", workload="v", metric="c", counted=5)]
    got = [(r["workload"], r["metric"], r["counted"]) for r in table.rows(recs)]
    assert got == [("w", "a", 1), ("w", "a", 2), ("w", "b", 100), ("v", "c", 100), ("v", "c", 5)]


def test_all_exact_says_so_and_pipes_do_not_break_the_table():
    md = render([rec(workload="a | b", metric="x{a=1}")])
    assert "None: all 1 comparisons were exact." in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| a \\| b |"))
    assert row.count(" | ") == 7 and "`x{a=1}` (bytes)" in row


def test_main_writes_the_file_and_says_what_it_read(tmp_path, capsys):
    out = tmp_path / "accuracy.md"
    log = write_log(tmp_path / "make-test.log", [rec(), rec(metric="m2", counted=1)])
    rc = table.main([log, f"--out={out}", f"--records={tmp_path}/none", f"--vm-logs={tmp_path}/none"])
    assert rc == 0
    assert capsys.readouterr().out.strip().endswith(": 2 comparisons from 1 files, 1 differ")
    assert f"read from `{log}`" in out.read_text()


def test_main_errors_are_one_line(tmp_path, capsys):
    none = [f"--records={tmp_path}/none", f"--vm-logs={tmp_path}/none", f"--out={tmp_path}/a.md"]
    assert table.main(none) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no accuracy records" in err
    assert table.main([str(tmp_path / "missing.log"), *none]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot read" in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "a.md")


def test_the_committed_table_is_generated_and_well_formed():
    """docs/accuracy.md comes from this script: its header, and 8 cells in every comparison's row."""
    with open(os.path.join(ROOT, "docs", "accuracy.md")) as f:
        md = f.read()
    assert md.startswith('# Accuracy: what "exact" was checked against\n')
    assert "<!-- generated by `make accuracy`" in md and "## Differences" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("| ") and ln.count(" | ") == 7]
    assert rows, "no comparison rows"
    assert all(ln.replace("\\|", "").count("|") == 9 for ln in rows if "`" in ln)
