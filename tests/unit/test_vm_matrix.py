"""Every committed BPF object is loaded by some run of `make test` (tests/vm/matrix.py)."""

import importlib.util
import os
import sys

from ceemsnet.planning.catalogue import CATALOGUE, OBJ_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location("vm_matrix", os.path.join(ROOT, "tests", "vm", "matrix.py"))
matrix = sys.modules["vm_matrix"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(matrix)


def test_every_committed_object_is_exercised_by_a_run():
    committed = {f for f in os.listdir(OBJ_DIR) if f.endswith(".bpf.o")}
    missing = sorted(committed - set(matrix.exercised()) - set(matrix.NOT_RUN))
    assert not missing, f"objects no run of make test loads (add a run to tests/vm/matrix.py): {missing}"


def test_not_run_lists_only_objects_no_run_loads():
    # an object that gets a run leaves the list, so that the list stays the truth
    assert not set(matrix.NOT_RUN) & set(matrix.exercised())
    assert set(matrix.NOT_RUN) <= {o.file for o in CATALOGUE}


def test_the_matrix_names_only_catalogue_objects():
    known = {o.file for o in CATALOGUE}
    assert set(matrix.exercised()) <= known, sorted(set(matrix.exercised()) - known)


def test_each_run_lists_one_net_and_one_vfs_object_of_its_family():
    by_file = {o.file: o for o in CATALOGUE}
    for run in matrix.RUNS:
        assert run.suite in matrix.SUITES
        for key, objs in run.objects.items():
            hook, _, layout = key.partition(":")
            assert layout in ("", "hash", "vfs"), (run.kernel, key)
            net, vfs = objs
            assert (net == "") == (layout == "vfs"), (run.kernel, key)
            assert [by_file[o].subsystem for o in objs if o] == ["net", "vfs"][1 if layout == "vfs" else 0:]
            assert all(by_file[o].family == hook for o in objs if o), (run.kernel, key)
            if layout == "hash":
                assert by_file[objs[0]].layout == "hash", (run.kernel, key)


def test_suites_name_existing_test_files():
    for files in matrix.SUITES.values():
        for f in files:
            path, _, test = f.partition("::")
            assert os.path.exists(os.path.join(ROOT, path)), f
            if test:
                with open(os.path.join(ROOT, path)) as src:
                    assert f"def {test}(" in src.read(), f
    for run in matrix.RUNS:
        assert set(run.pass_suites) <= set(run.objects) and set(run.pass_suites.values()) <= set(matrix.SUITES)


def test_make_test_vm_runs_the_matrix():
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert "tests/vm/matrix.py run" in f.read()


def test_selection_narrows_and_refuses_unknown_kernels():
    sel = matrix.selected(["6.12"], ["fexit"])
    assert [(r.kernel, passes) for r, passes in sel] == [("6.12", ("fexit",))]
    try:
        matrix.selected(["9.9"], None)
    except SystemExit as e:
        assert "unknown VM kernel" in str(e)
    else:
        raise AssertionError("an unknown kernel was accepted")


def test_kernel_tables_say_where_each_object_was_tested():
    # docs/kernels.md's tables: each object's "tested on" cell names a run that loads it
    import re

    from .test_bpf_readme import names_in, tables
    checked = 0
    for header, rows in tables(os.path.join(ROOT, "docs", "kernels.md")):
        if header[0] != "kernel" or not header[-1].startswith("tested on"):
            continue
        for r in rows:
            tested = r[-1]
            for name in (n for cell in r[1:-1] for n in names_in(cell)):
                obj = name + ".bpf.o"
                if obj in matrix.NOT_RUN:
                    assert "not yet" in tested, (r[0], name)
                    continue
                runs = {run.split("/")[0] for run in matrix.exercised().get(obj, [])}
                assert runs, f"docs/kernels.md names {name}, which no run loads"
                assert any(re.search(rf"(?<![\w.-]){re.escape(k)}(?![\w.])", tested) for k in runs), \
                    f"docs/kernels.md's row {r[0]!r}: {name} is loaded by the {sorted(runs)} runs, " \
                    f"the row says {tested!r}"
                checked += 1
    assert checked >= 15, "docs/kernels.md's kernel tables have no 'tested on' column"


def test_repeat_shows_the_warnings_of_a_run_that_passed(tmp_path):
    """make repeat: a test that passes on its second try keeps the first try's numbers as a warning;
    the repeat harness finds them in pytest's output (none where the run gave no warning)."""
    import subprocess
    (tmp_path / "test_w.py").write_text(
        "import warnings\n"
        "def test_second_try():\n    warnings.warn('round 1: 3 counted + 60 missed != 64')\n"
        "def test_plain():\n    assert True\n")
    out = {}
    for name in ("test_second_try", "test_plain"):
        r = subprocess.run([sys.executable, "-m", "pytest", *matrix.PYTEST_OPTS, "-q", "-x",
                            f"{tmp_path / 'test_w.py'}::{name}"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stdout
        out[name] = matrix.warning_lines(r.stdout)
    assert any("round 1: 3 counted + 60 missed != 64" in ln for ln in out["test_second_try"])
    assert out["test_plain"] == []
