"""Every committed BPF object is loaded by some run of `make test` (tests/vm/matrix.py)."""

import importlib.util
import os
import sys

from ceemsnet.objects import CATALOGUE, OBJ_DIR

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
            assert os.path.exists(os.path.join(ROOT, f)), f


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
