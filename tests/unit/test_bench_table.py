"""bench/table.py --vm: every script runs in one boot, and each one's rows and exit code are
told apart by the marker lines (the boot replaced here by running the guest command locally)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench"))

import table  # noqa: E402

ROW = dict(what="w", value=1, unit="ns", baseline=2, baseline_what="b", ratio=0.5, target="-", meets=True)


def script(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(body)
    return str(p)


def test_one_boot_runs_every_script_and_keeps_their_outcomes_apart(tmp_path, monkeypatch):
    good = script(tmp_path, "good.py", f"import sys\nprint('noise')\nprint({json.dumps(json.dumps(ROW))})\n"
                                       "print(sys.argv[2:])\n")
    bad = script(tmp_path, "bad.py", f"print({json.dumps(json.dumps(ROW))})\nraise SystemExit(3)\n")
    boots = []
    real = subprocess.run

    def boot(argv, **kw):
        assert argv[:2] == ["tests/vm/run.sh", "6.1"]
        boots.append(argv)
        return real(argv[2:], **kw)  # env PYTHONDONTWRITEBYTECODE=1 sh -c GUEST, here
    monkeypatch.setattr(table.subprocess, "run", boot)
    monkeypatch.setattr(table, "argv_of", lambda spec: (spec.partition(":")[0], [
        sys.executable, spec.partition(":")[0], "--rows", *spec.partition(":")[2].split()]))
    rows, notes = table.run_vm([good + ":--x 1", bad, "bench/none.py"], "6.1")
    assert len(boots) == 1
    assert [r["where"] for r in rows] == ["VM 6.1", "VM 6.1"]
    assert notes == ["bench/none.py: not in this checkout, skipped", f"{bad} (VM 6.1): exited 3 (see its output above)"]


def test_a_script_cut_short_by_the_vm_is_reported():
    assert table.verdict("s.py", "VM 6.1", [ROW], 0, None).startswith("s.py (VM 6.1): did not finish")
    assert table.verdict("s.py", "host", [], 2, 0) == "s.py (host): printed no rows (2 malformed)"
    assert table.verdict("s.py", "host", [ROW], 0, 0) is None
