"""Every program the tests, benchmarks and scripts run is installed by `make setup`.

A fresh Debian 12 machine failed `make test` because `modprobe` (kmod) was not
installed. This reads the sources, without running them, for the programs
they call: Python through its syntax tree (argv[0] of subprocess calls,
shutil.which and require_program arguments), shell scripts and the Makefile's
recipes through a small shell lexer. Each program must be declared after its
package in packaging/apt-packages.txt (`kmod  # programs: modprobe`), and where
dpkg is present, the package must really ship it.
"""

import ast
import glob
import os
import re
import shutil
import subprocess

import pytest

from ..programs import APT_PACKAGES, ROOT, apt_packages, declared_programs, parse_apt_packages

# Shell builtins and keywords (dash and bash): not programs.
BUILTINS = {
    ".", ":", "[", "alias", "break", "cd", "command", "continue", "echo", "eval", "exec", "exit", "export",
    "false", "getopts", "hash", "kill", "local", "printf", "pwd", "read", "readonly", "return", "set",
    "shift", "test", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset", "wait",
}
KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "for", "case", "esac",
            "in", "function", "select", "!", "{", "}", "time"}
# Commands whose arguments hold another command: the number of leading arguments to skip.
WRAPPERS = {"exec": 0, "nice": 0, "nohup": 0, "tests/vm/run.sh": 1}
SUBPROCESS_CALLS = {"run", "call", "check_call", "check_output", "Popen", "getoutput", "getstatusoutput"}
# The sources that tests and `make test` run.
PY_SOURCES = ("tests/**/*.py", "bench/**/*.py")
SHELL_SOURCES = ("tests/**/*.sh", "packaging/*.sh", ".ci/run")
MAKEFILES = ("Makefile",)
# What virtme-ng runs for tests/vm/run.sh (read in its sources: virtme/qemu_helpers.py
# finds qemu-system-<arch>, mkinitramfs.py busybox, commands/run.py depmod and
# modfinder.py modprobe for the kernel's modules (a fresh machine without kmod
# failed every VM run with "Could not find ['depmod']"), and the guest's init
# mounts the shared file systems with the host's /bin/mount).
VIRTME_NG = ("qemu-system-x86_64", "busybox", "mount", "depmod", "modprobe")


# --- shell ------------------------------------------------------------------

_REDIR = re.compile(r"\d*(>>|<<-?|<>|>&|<&|>\||>|<)(&?\d+-?|&?-)?")


def _match_close(s, i, open_="(", close=")"):
    """Index just after the bracket closing the one opened before s[i] (quote-aware)."""
    depth = 1
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            i = s.find("'", i + 1) + 1 or len(s)
            continue
        if c == '"':
            i = _skip_dquote(s, i + 1)
            continue
        if c == open_:
            depth += 1
        elif c == close:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(s)


def _skip_dquote(s, i):
    while i < len(s) and s[i] != '"':
        if s[i] == "\\":
            i += 1
        elif s.startswith("$(", i) or s.startswith("${", i):
            i = _match_close(s, i + 2, s[i + 1], ")" if s[i + 1] == "(" else "}") - 1
        elif s[i] == "`":
            i = s.find("`", i + 1)
        i += 1
    return i + 1


def _lex(src, line0=1):
    """Tokens of a shell script: ("w", text, line) words, ("op", text, line)
    separators and ("redir", text, line); the scripts inside $(...) and
    backquotes come back as ("sub", text, line) to be read on their own."""
    toks, subs = [], []
    word, wline = None, line0
    i, line = 0, line0

    def end_word():
        nonlocal word
        if word is not None:
            toks.append(("w", word, wline))
            word = None

    def add(text):
        nonlocal word, wline
        if word is None:
            word, wline = "", line
        word += text

    while i < len(src):
        c = src[i]
        if c == "\\" and src.startswith("\\\n", i):
            i, line = i + 2, line + 1
        elif c == "\\":
            add(src[i:i + 2])
            i += 2
        elif c == "\n":
            end_word()
            toks.append(("op", "\n", line))
            i, line = i + 1, line + 1
        elif c in " \t":
            end_word()
            i += 1
        elif c == "#" and word is None:
            i = src.find("\n", i) if "\n" in src[i:] else len(src)
        elif c == "'":
            j = src.find("'", i + 1) + 1 or len(src)
            add(src[i:j])
            line += src.count("\n", i, j)
            i = j
        elif c == '"':
            j = _skip_dquote(src, i + 1)
            inner = src[i + 1:j - 1]
            k = 0
            while m := re.compile(r"\$\((?!\()|`").search(inner, k):
                k = m.end()
                e = _match_close(inner, k) - 1 if m.group() == "$(" else inner.find("`", k)
                subs.append(("sub", inner[k:e], line + inner.count("\n", 0, k)))
                k = e + 1
            add(src[i:j])
            line += src.count("\n", i, j)
            i = j
        elif src.startswith("$((", i):
            j = _match_close(src, i + 3) + 1
            subs.extend(t for t in _lex(src[i + 3:j - 2], line)[1])
            add("$ARITH")
            i = j
        elif src.startswith("$(", i):
            j = _match_close(src, i + 2)
            subs.append(("sub", src[i + 2:j - 1], line))
            add("$SUB")
            line += src.count("\n", i, j)
            i = j
        elif src.startswith("${", i):
            j = _match_close(src, i + 2, "{", "}")
            add(src[i:j])
            i = j
        elif c == "`":
            j = src.find("`", i + 1)
            subs.append(("sub", src[i + 1:j], line))
            add("$SUB")
            i = j + 1
        elif word is None and (m := _REDIR.match(src, i)) and (m.group(1) or "").strip():
            toks.append(("redir", m.group(), line))
            i = m.end()
        elif c in ";&|()":
            end_word()
            op = src[i:i + 2] if src[i:i + 2] in (";;", "&&", "||") else c
            toks.append(("op", op, line))
            i += len(op)
        else:
            add(c)
            i += 1
    end_word()
    return toks, subs


def _unquote(word):
    return re.sub(r"""['"]""", "", word)


def _commands(toks):
    """[(line, [words])] of the simple commands in a token list, and the names
    of the functions it defines; case patterns ("6.1)") are dropped."""
    out, cur, depth, functions = [], [], 0, set()
    i = 0
    while i < len(toks):
        kind, text, line = toks[i]
        i += 1
        if kind == "redir":
            # the file name after "> FILE" is not a command word ("2>&1" has none)
            if not re.search(r"&(\d+-?|-)$", text) and i < len(toks) and toks[i][0] == "w":
                i += 1
        elif kind == "w":
            cur.append((line, text))
        elif text == "(" and cur:  # name() { ...: a function definition
            functions.add(_unquote(cur[-1][1]))
            cur = []
            i += 1  # its ")"
        elif text == "(":
            depth += 1
        elif text == ")" and depth == 0:
            cur = []  # the end of a case pattern
        else:
            if text == ")":
                depth -= 1
            if cur:
                out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out, functions


def _command_words(words):
    """The words of one simple command that name programs, wrappers unwrapped."""
    i, found = 0, []
    while i < len(words):
        line, w = words[i]
        if w in KEYWORDS:
            if w in ("for", "case", "select"):
                return found  # for NAME in WORDS / case WORD in: no command here
            i += 1
            continue
        if re.match(r"[A-Za-z_][A-Za-z0-9_]*=", w):
            i += 1  # an assignment before the command
            continue
        name = _unquote(w)
        if name == "trap" and i + 1 < len(words):
            # trap 'CMD' SIGNALS: CMD is a script of its own; trap - SIGNALS resets them
            if _unquote(words[i + 1][1]) != "-":
                found.extend(shell_programs(words[i + 1][1].strip("'\""), line, raw=True))
            return found
        if name == "command" and i + 1 < len(words):
            i += 2 if _unquote(words[i + 1][1]).startswith("-") else 1
            continue
        if name == "env":
            found.append((line, name))
            i += 1
            while i < len(words) and (re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[i][1]) or words[i][1].startswith("-")):
                i += 1
            continue
        if name in WRAPPERS:
            if name not in BUILTINS and "/" not in name:
                found.append((line, name))
            i += 1 + WRAPPERS[name]
            continue
        found.append((line, name))
        return found
    return found


def _program(name):
    """The program a command word runs, or None for builtins, expansions and the checkout's own files."""
    if not name or "$" in name or name in BUILTINS or name in KEYWORDS:
        return None
    if "/" in name:
        return os.path.basename(name) if name.startswith("/") else None
    return name


def shell_programs(src, line0=1, raw=False):
    """[(line, program)] of the external programs a shell script runs
    (raw: command words, before builtins and the script's functions go)."""
    found, functions = [], set()
    todo = [(src, line0)]
    if src.startswith("#!"):
        interp = src.split("\n", 1)[0][2:].split()
        found.append((line0, os.path.basename(interp[0])))
        if os.path.basename(interp[0]) == "env" and len(interp) > 1:
            found.append((line0, interp[1]))
    while todo:
        text, l0 = todo.pop()
        toks, subs = _lex(text, l0)
        todo.extend((s, ln) for _, s, ln in subs)
        cmds, fns = _commands(toks)
        functions |= fns
        for words in cmds:
            found.extend(_command_words(words))
    if raw:
        return found
    return [(ln, p) for ln, w in found if (p := _program(w)) and p not in functions]


# --- Makefile ---------------------------------------------------------------

_MAKE_FUNCS = {"abspath", "addprefix", "addsuffix", "and", "basename", "call", "dir", "error", "eval", "filter",
               "filter-out", "findstring", "firstword", "foreach", "if", "info", "join", "lastword", "notdir",
               "or", "origin", "patsubst", "realpath", "sort", "strip", "subst", "suffix", "value", "warning",
               "wildcard", "word", "wordlist", "words"}
# functions whose value is one of their argument words ($(firstword $(wildcard .venv/bin/python) python3))
_WORD_FUNCS = {"firstword", "lastword", "sort", "strip", "wildcard"}


def _split_args(s):
    """Make function arguments: split at the commas outside parentheses."""
    args, depth, cur = [], 0, ""
    for c in s:
        if c == "," and depth == 0:
            args.append(cur)
            cur = ""
            continue
        depth += (c == "(") - (c == ")")
        cur += c
    return args + [cur]


def _make_expand(s, defs, alts, seen=()):
    """s with make's variables expanded, $(shell X) turned into the shell's $(X),
    and each other function call into a MAKEFN<n> word; alts[n] lists the
    scripts that word may stand for (the branches of $(if), the words of $(firstword))."""
    out, i = [], 0
    while i < len(s):
        if s[i] != "$":
            out.append(s[i])
            i += 1
            continue
        nxt = s[i + 1:i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt in ("(", "{"):
            j = _match_close(s, i + 2, nxt, ")" if nxt == "(" else "}")
            inner = s[i + 2:j - 1]
            fn, _, rest = inner.partition(" ")
            if fn == "shell":
                out.append("$(" + _make_expand(rest, defs, alts, seen) + ")")
            elif fn in _MAKE_FUNCS and rest:
                args = [_make_expand(a, defs, alts, seen) for a in _split_args(rest)]
                if fn == "if":
                    choices = args[1:]
                elif fn in ("and", "or"):
                    choices = args
                elif fn in _WORD_FUNCS:
                    choices = " ".join(args).split()
                else:
                    choices = []  # a computed value: not a program name we can know
                alts.append(choices)
                out.append(f"MAKEFN{len(alts) - 1}")
            elif inner == "MAKE":
                out.append("make")
            elif inner in defs and inner not in seen:
                out.append(_make_expand(defs[inner], defs, alts, seen + (inner,)))
            else:
                out.append("$AUTO")  # automatic ($(@D)), positional ($(1)) or unset variables
            i = j
        else:
            out.append("$AUTO")  # $@, $<, $^, ...
            i += 2
    return "".join(out)


def makefile_programs(src):
    """[(line, program)] of the programs the Makefile runs: its recipes (with
    variables, $(shell ...) and $(if ...) expanded as make would) and the
    $(shell ...) calls make makes while reading it."""
    lines = src.split("\n")
    defs, scripts = {}, []
    in_define, n = False, 0
    while n < len(lines):
        start, text = n + 1, lines[n]
        while text.endswith("\\") and n + 1 < len(lines):
            n += 1
            text = text[:-1] + " " + lines[n].lstrip("\t")
        n += 1
        if text.startswith("define "):
            in_define = True
            continue
        if text.startswith("endef"):
            in_define = False
            continue
        if text.startswith("\t"):
            # a define body is expanded once by $(eval): $$ there is make's $
            scripts.append((start, text[1:].replace("$$", "$") if in_define else text[1:]))
            continue
        if text.lstrip().startswith("#"):
            continue
        for m in re.finditer(r"\$\(shell ", text):
            scripts.append((start, text[m.start():_match_close(text, m.end())]))
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(?::=|\?=|=)\s*(.*)$", text)
        if m and not in_define and m.group(1) not in defs:
            defs[m.group(1)] = m.group(2)
    defs["Q"] = ""
    found = []
    for start, text in scripts:
        alts = []
        todo = [re.sub(r"^[@+-]+", "", _make_expand(text, defs, alts).lstrip())]
        while todo:
            for ln, w in shell_programs(todo.pop(), start, raw=True):
                m = re.fullmatch(r"MAKEFN(\d+)", w)
                if m:
                    todo.extend(alts[int(m.group(1))])
                elif p := _program(w):
                    found.append((ln, p))
    return found


# --- Python -----------------------------------------------------------------

def _dotted(node):
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def python_programs(src):
    """[(line, program)] of the programs a Python source runs: argv[0] string
    literals of subprocess calls and os.exec*/os.spawn*, shell strings of
    os.system and shell=True, and the arguments of shutil.which and
    require_program. sys.executable and other expressions are not programs."""
    tree = ast.parse(src)
    found = []
    if src.startswith("#!"):  # bench/*.py: #!/usr/bin/env python3
        found.extend(shell_programs(src.split("\n", 1)[0] + "\n", raw=True))
    consts = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    consts[t.id] = node.value.value

    def literal(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return consts.get(node.id)
        return None

    # bare names count when imported: "from subprocess import run", "from shutil import which"
    imported = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("subprocess", "shutil", "os"):
            for a in node.names:
                imported[a.asname or a.name] = f"{node.module}.{a.name}"

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func) or ""
        name = imported.get(name, name)
        short = name.rsplit(".", 1)[-1]
        args = list(node.args) + [k.value for k in node.keywords if k.arg in ("args", "cmd")]
        shell = any(k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value for k in node.keywords)
        if short in SUBPROCESS_CALLS and name == f"subprocess.{short}" and args:
            argv = args[0]
            if isinstance(argv, (ast.List, ast.Tuple)) and argv.elts:
                prog = literal(argv.elts[0])
                if prog:
                    found.append((node.lineno, prog))
            elif (s := literal(argv)) is not None:
                if shell or short in ("getoutput", "getstatusoutput"):
                    found.extend((node.lineno + ln - 1, p) for ln, p in shell_programs(s))
                else:
                    found.append((node.lineno, s))
        elif name in ("os.system", "os.popen") and args and (s := literal(args[0])) is not None:
            found.extend((node.lineno + ln - 1, p) for ln, p in shell_programs(s))
        elif re.fullmatch(r"os\.(exec|spawn)[lv]p?e?", name) and args:
            first = args[1] if name.startswith("os.spawn") and len(args) > 1 else args[0]
            if (s := literal(first)) is not None:
                found.append((node.lineno, s))
        elif (name == "shutil.which" or short == "require_program") and args and (s := literal(args[0])) is not None:
            found.append((node.lineno, s))
    return [(ln, p) for ln, raw in found if (p := _program(raw))]


# --- the checks -------------------------------------------------------------

def _files(patterns):
    out = set()
    for pat in patterns:
        out |= {f for f in glob.glob(os.path.join(ROOT, pat), recursive=True)
                if "/cache/" not in f and os.path.isfile(f)}
    return sorted(out)


def scan_checkout():
    """[(path relative to the checkout, line, program)] of every program run."""
    found = []
    for kind, patterns in (("py", PY_SOURCES), ("sh", SHELL_SOURCES), ("make", MAKEFILES)):
        for path in _files(patterns):
            with open(path) as f:
                src = f.read()
            scan = {"py": python_programs, "sh": shell_programs, "make": makefile_programs}[kind]
            rel = os.path.relpath(path, ROOT)
            found.extend((rel, ln, p) for ln, p in scan(src))
    found.extend(("tests/vm/run.sh (through virtme-ng)", 0, p) for p in VIRTME_NG)
    return found


def undeclared(found, declared):
    """The scan's entries whose program packaging/apt-packages.txt does not declare."""
    return [(f, ln, p) for f, ln, p in found if p not in declared]


def test_every_program_a_test_or_script_runs_is_declared():
    found = scan_checkout()
    assert {p for _, _, p in found} >= {"mount", "modprobe", "mkfs.ext4", "qemu-system-x86_64", "clang-19"}, \
        "the scan misses calls it should see"
    missing = undeclared(found, declared_programs())
    assert not missing, "programs that make setup does not install (add them after their Debian package in " \
        "packaging/apt-packages.txt, 'package  # programs: a, b'):\n" + \
        "\n".join(f"  {p}  ({f}:{ln})" for f, ln, p in missing)


# Synthetic sources: what the scan must see (and not see) in each language.
CASES = [
    ("py", 'import subprocess\nsubprocess.run(["frobnicate", "-x"], check=True)\n', {"frobnicate"}),
    ("py", 'from subprocess import Popen\nPopen(["/usr/sbin/frobnicate"])\n', {"frobnicate"}),
    ("py", 'import shutil\nif not shutil.which("frobnicate"): pass\n', {"frobnicate"}),
    ("py", 'import os\nos.system("frobnicate --all | grep x")\n', {"frobnicate", "grep"}),
    ("py", 'import subprocess\nsubprocess.run("frobnicate && mount", shell=True)\n', {"frobnicate", "mount"}),
    ("py", 'FROB = "frobnicate"\nimport subprocess\nsubprocess.check_output([FROB])\n', {"frobnicate"}),
    ("py", 'import subprocess, sys\nsubprocess.run([sys.executable, "-m", "x"])\n'
           'subprocess.run(["./tests/vm/run.sh", "6.1"])\n', set()),
    ("py", 'x = require_program("frobnicate")\n', {"frobnicate"}),
    ("py", '#!/usr/bin/env python3\nprint(1)\n', {"env", "python3"}),
    ("sh", '#!/bin/sh\nset -eu\ncommand -v frobnicate >/dev/null || { echo no; exit 1; }\n', {"sh", "frobnicate"}),
    ("sh", 'die() { echo "$*" >&2; exit 1; }\ndie x\nv=$(frobnicate -q "$1" | awk \'{print $2}\')\n',
     {"frobnicate", "awk"}),
    ("sh", 'case "$1" in\n  6.1)  meta=a ;;\n  *) echo no; exit 2 ;;\nesac\n', set()),
    ("sh", 'x="$(frobnicate "$(basename "$0")")"\n', {"frobnicate", "basename"}),
    ("sh", '{ { "$vng" --run k; echo $? >"$rc"; } 2>&1 1>&3 | cat >&2; } 3>&1 | frobnicate\n',
     {"cat", "frobnicate"}),
    ("sh", 'for k in a b; do n=$((n+1)); FOO=1 env A=b frobnicate "$k"; done\n', {"env", "frobnicate"}),
    ("sh", "trap 'frobnicate \"$rcfile\"' EXIT\n", {"frobnicate"}),
    ("sh", "trap - EXIT\n", set()),
    ("py", 'from subprocess import run as r\ndef run(*a): pass\nrun("probe")\nr(["frobnicate"])\n', {"frobnicate"}),
    ("sh", 'cd "$repo" && exec frobnicate\ntmp=$(mktemp -d) # frobnicate not here\n', {"frobnicate", "mktemp"}),
    ("make", "X ?= frobnicate\nall:\n\t$(Q)$(X) -c a.c | tr a-z A-Z\n\t@echo $$(date +%s)\n",
     {"frobnicate", "tr", "date"}),
    ("make", "P := $(shell frobnicate list)\nsetup:\n\t./setup.sh $(P)\n", {"frobnicate"}),
    ("make", "PY ?= $(firstword $(wildcard .venv/bin/python) frobnicate)\nS := $(shell $(PY) -m x 2>/dev/null)\n"
             "objs:\n\t$(if $(S),true,$(PY) -m x && echo no >&2; false)\n", {"frobnicate"}),
    ("make", "define r\n$(1).o:\n\t$(Q)mkdir -p $$(@D) && $(MAKE) x\nendef\n", {"mkdir", "make"}),
]


@pytest.mark.parametrize("kind,src,want", CASES, ids=[f"{k}{n}" for n, (k, _, _) in enumerate(CASES)])
def test_the_scan_sees_each_kind_of_call(kind, src, want):
    scan = {"py": python_programs, "sh": shell_programs, "make": makefile_programs}[kind]
    found = {p for _, p in scan(src)}
    assert found == want
    # and the check fails on a program apt-packages.txt does not declare
    missing = {p for _, _, p in undeclared([("x", 1, p) for p in found], declared_programs())}
    assert missing == ({"frobnicate"} if "frobnicate" in want else set())


def test_apt_packages_format():
    pkgs = parse_apt_packages("# c\nkmod   # programs: modprobe, depmod\nlibbpf1\ngcc # the compiler\n\n")
    assert pkgs == {"kmod": ["modprobe", "depmod"], "libbpf1": [], "gcc": []}
    with pytest.raises(ValueError):
        parse_apt_packages("Not A Package\n")
    assert apt_packages(), "packaging/apt-packages.txt lists no package"


def test_make_setup_installs_exactly_the_listed_packages():
    """The Makefile's APT_PACKAGES (what make setup installs) holds the package names, no annotations."""
    make = shutil.which("make")
    if not make:
        pytest.skip("make (Debian package make) is missing")
    p = subprocess.run([make, "--no-print-directory", "-s", "--eval", "print-apt: ; @echo $(APT_PACKAGES)",
                        "print-apt"], cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == list(apt_packages()), p.stderr


def _dpkg_files(pkg):
    p = subprocess.run(["dpkg", "-L", pkg], capture_output=True, text=True)
    return p.stdout.split("\n") if p.returncode == 0 else None


@pytest.mark.parametrize("pkg", [p for p, progs in apt_packages().items() if progs])
def test_declared_programs_come_from_their_package(pkg):
    """The annotations cannot lie: `dpkg -L PKG` ships each program in a bin/ folder
    (or the file an alternatives link resolves to, e.g. awk -> mawk)."""
    if not shutil.which("dpkg"):
        pytest.skip("no dpkg: not a Debian system")
    files = _dpkg_files(pkg)
    if files is None:
        pytest.skip(f"{pkg} is not installed here (make setup installs it)")
    shipped = {os.path.basename(f) for f in files if re.search(r"/s?bin/[^/]+$", f)}
    wrong = []
    for prog in apt_packages()[pkg]:
        if prog in shipped:
            continue
        path = shutil.which(prog)
        if path and os.path.basename(os.path.realpath(path)) in shipped:
            continue
        wrong.append(prog)
    assert not wrong, f"{pkg} ships no {', '.join(wrong)} ({APT_PACKAGES}): " + "; ".join(
        f"{w} comes from {_owner(w)}" for w in wrong)


def _owner(prog):
    path = shutil.which(prog)
    candidates = [f"/usr/{d}/{prog}" for d in ("bin", "sbin")] + [f"/{d}/{prog}" for d in ("bin", "sbin")]
    if path:
        candidates[:0] = [path, os.path.realpath(path)]
    for candidate in candidates:
        p = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
        if p.returncode == 0:
            return p.stdout.split(":", 1)[0]
    return "no installed Debian package"
