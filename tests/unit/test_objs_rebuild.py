"""The committed objects are what the sources build (clang-19, see Makefile).

clang-19 and llvm-strip-19 output is deterministic for the same inputs and
the Makefile compiles with relative paths, so the check is byte equality.
"""

import filecmp
import os
import subprocess

from ceemsnet.planning.catalogue import CATALOGUE, OBJ_DIR

from ..programs import require_program

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_committed_objects_match_a_rebuild(tmp_path):
    require_program("clang-19")
    require_program("llvm-strip-19")
    out = tmp_path / "objs"
    out.mkdir()
    rel = os.path.relpath(out, ROOT)
    p = subprocess.run([require_program("make"), "--no-print-directory", "-B", f"OBJDIR={rel}", "objs"], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    differ = [o.file for o in CATALOGUE
              if not filecmp.cmp(out / o.file, os.path.join(OBJ_DIR, o.file), shallow=False)]
    assert not differ, f"rebuild differs from bpf/objs for {differ}: run 'make objs' and commit"
