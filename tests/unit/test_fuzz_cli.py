"""Fuzzing the command line (ceemsnet/cli.py main): random argv made of the parser's own subcommands,
options and values (good ones, ones of the wrong kind, junk), read from build_parser() so new
flags are fuzzed too.

Every argv ends in an exit code with at most one `ceemsnet: error:` line on stderr, the last one,
never a traceback. Nothing that touches the host runs: in the parsing property every command's
`run` is a stand-in; `serve` runs for real up to its kernel part (build_context, replaced by a
stop), `report` on a store made here, `probe` only with --kernel (rules only, no BPF); a few argvs
run as a real `python -m ceemsnet.cli` child, each ending in an unknown option so none runs."""

import argparse
import contextlib
import io
import os
import subprocess
import sys

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ceemsnet import cli
from ceemsnet.commands import compare, detach, job, probe, record, report, serve
from ceemsnet.serving.store import Store

from .conftest import examples, tally, within

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

JUNK = ["", "-", "--", "-1", "0", "1e9", "\u00e9", "a\nb", "=", "none", "auto", "x" * 300, "nan",
        ":\u00b2", "/", "1,2", "all", "--json"]
# realistic values per destination (the parser's actions give choices and the rest)
VALUES = {
    "listen": [":9977", "127.0.0.1:0", "[::1]:9977", ":\u00b2", ":\u0669\u0669", "[::1", "host:99999", "::1:9977",
               "a]:1", ":0"],
    "telemetry_path": ["/metrics", "/", "metrics", "/a b", "//x", "/m?x"],
    "collectors": ["net", "net,vfs,skb", "", ",", "bogus", "net,net", " vfs "],
    "aggregate": ["auto", "task", "step", "job", "cgroup", "unit", "pod", "container", "x"],
    "hierarchy": ["auto", "v2", "v1:memory", "v1:", "v3"],
    "kernel": ["6.1.0-28-amd64", "5.14.0-427.el9.x86_64", "4.14", "1.0", "99.999", "6." + "1" * 50, "\u0666.1",
               "Ubuntu 6.8.0-45.45-generic 6.8.12", "v7.3"],
    "arch": ["x86_64", "aarch64", "arm64", "riscv64", "ARM64"],
    "since": ["24h", "7d", "2026-01-01", "0001-01-01", "9999-12-31T23:59:59", "1700000000", "x"],
    "until": ["now", "1h", "2030-01-01T00:00+01:00", "-1h"],
    "retention": ["0", "120s", "1w", "-1", "1e400"],
    "storage_interval": ["30", "0", "1m", "inf"],
    "max_requests": ["0", "40", "-1", "1" * 30],
    "maxactive": ["0", "1024", "4097", "-1"],
    "job": ["2", "123_2", "100+1", "999"],
    "sacct": ["none", "sacct"],
    "sacct_cache": ["none"],
    "squeue": ["none"],
    "prometheus": ["http://127.0.0.1:1", "ftp://x", "not a url"],
    "net_slots": ["0", "64", "3", "-2", "1" * 40],
    "vfs_fstypes": ["all", "ext4,xfs", "", "bogus", "default,-tmpfs"],
}


def _subparsers(parser):
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


PARSER = cli.build_parser()
COMMANDS = _subparsers(PARSER)


def _options(p) -> list[argparse.Action]:
    return [a for a in p._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def _value(action, data):
    pool = list(VALUES.get(action.dest, []))
    if action.choices:
        pool += [str(c) for c in action.choices]
    if not pool or data.draw(st.integers(0, 3)) == 0:
        pool += JUNK
    return data.draw(st.one_of(st.sampled_from(pool), st.text(max_size=6)) if data.draw(st.integers(0, 5)) == 0
                     else st.sampled_from(pool))


def _argv_for(command: str, data, extra=(), leave_out=()) -> list[str]:
    p = COMMANDS[command]
    argv = [command]
    opts = [a for a in _options(p) if a.dest not in leave_out]
    for a in data.draw(st.lists(st.sampled_from(opts), max_size=5)) + list(extra):
        name = data.draw(st.sampled_from(a.option_strings))
        if a.nargs == 0:
            argv.append(name)
            continue
        v = _value(a, data)
        if data.draw(st.booleans()):
            argv.append(f"{name}={v}")
        else:
            argv += [name, v]
    return argv


@st.composite
def argvs(draw):
    kind = draw(st.sampled_from(["command"] * 6 + ["top", "junk"]))
    if kind == "top":
        return draw(st.lists(st.sampled_from(["--version", "-h", "--help", "serv", "--json", "-", "--"]), max_size=2))
    if kind == "junk":
        return draw(st.lists(st.one_of(st.sampled_from(JUNK + list(COMMANDS)), st.text(max_size=5)), max_size=4))
    command = draw(st.sampled_from(sorted(COMMANDS)))

    class Data:  # _argv_for's draws, through this composite
        def draw(self, s, label=None):
            return draw(s)
    argv = _argv_for(command, Data())
    if draw(st.integers(0, 4)) == 0:  # a token out of place
        argv.insert(draw(st.integers(0, len(argv))), draw(st.sampled_from(JUNK + ["-x", "--no-such", "--log.level"])))
    return argv


def _call_main(argv) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of cli.main(argv)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def _check_stderr(code: int, err: str) -> None:
    """No traceback; at most one error line, the last, and only with a non-zero exit."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    errors = [ln for ln in lines if ln.startswith("ceemsnet: error:")]
    assert len(errors) <= 1, err
    if errors:
        assert lines[-1] == errors[0] and code != 0, err


class Ran(Exception):
    """A command's run was reached (the stand-in)."""


@contextlib.contextmanager
def stand_ins():
    """Every command's run replaced (per example: the other properties run the real ones)."""
    def fake(args):
        raise Ran(args.command)
    with pytest.MonkeyPatch.context() as mp:
        for mod in (serve, report, job, record, detach, compare, probe):
            mp.setattr(mod, "run", fake)
        yield


@examples(300)
@given(argv=argvs())
@example(argv=["probe", "--log.level=--"])  # argparse's [] as the value: AttributeError in main()
@example(argv=["compare", "a\nb"])  # the error printed the newline: two lines
@example(argv=["probe", "--kernel"])
@example(argv=["serve", "--web.listen-address"])
@example(argv=[])
def test_fuzz_argument_parsing(argv):
    try:
        with within(10, "parsing " + repr(argv)[:80]), stand_ins():
            code, out, err = _call_main(argv)
    except Ran as r:
        tally(f"cli: parsed ({r})")
        return
    tally(f"cli: exit {code}")
    assert isinstance(code, int) and code in (0, 2), (code, err)
    _check_stderr(code, err)
    if code == 2:  # a usage error, or no command: the help
        assert err.splitlines()[-1].startswith("ceemsnet: error:") if err else out.startswith("usage:"), err


# --- commands that run for real, as far as they can without the host -------------------------------------------

class Stop(Exception):
    """serve got past its flag checks to the kernel (build_context): as far as this test goes."""


@contextlib.contextmanager
def serve_until_kernel():
    def stop(args):
        raise Stop()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(serve, "build_context", stop)
        yield


@examples(150)
@given(data=st.data())
@example(data=None)
def test_fuzz_serve_flags(data):
    if data is None:  # the explicit example: the one found
        argv = ["serve", "--web.listen-address=:\u00b2"]  # passed str.isdigit(), int() raised ValueError
    else:
        argv = _argv_for("serve", data)
    try:
        with within(10, "serve's checks"), serve_until_kernel():
            code, out, err = _call_main(argv)
    except Stop:
        tally("serve: reached the kernel part")
        return
    tally(f"serve: exit {code}")
    _check_stderr(code, err)
    assert code in (1, 2), (code, err)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("clistore") / "acc.db")
    s = Store(path, unit_of=lambda p: p.split("/job_")[1].split("/")[0] if "/job_" in p else None)
    s.write({"/slurm/uid_1/job_2/step_0": {"net_egress_bytes": 5}, "/slurm/uid_1/job_3": {"vfs_ops": 2}})
    s.close()
    return path


REPORT_FLAGS = ("--since", "--until", "--by", "--job", "--format", "--log.level")


@examples(150)
@given(data=st.data())
@example(data=None)
@example(data="job")
def test_fuzz_report_flags(store_path, data):
    report_parser = COMMANDS["report"]
    acts = [a for a in _options(report_parser) if set(a.option_strings) & set(REPORT_FLAGS)]
    if data is None:
        argv = ["report", "--since", "0001-01-01"]  # datetime.timestamp(): ValueError, year 0 is out of range
    elif data == "job":
        argv = ["report", "--job", "a\nb"]  # "no job a" and "b in <store>": the error on two lines
    else:
        # this node's store and no network: no --prometheus* nor --storage.path drawn
        leave_out = {a.dest for a in _options(report_parser)
                     if any(o.startswith(("--prometheus", "--storage.path")) for o in a.option_strings)}
        argv = _argv_for("report", data, data.draw(st.lists(st.sampled_from(acts), max_size=4)), leave_out)
    argv += ["--storage.path", store_path, "--slurm.sacct", "none", "--slurm.sacct-cache", "none"]
    with within(20, "report"):
        code, out, err = _call_main(argv)
    tally(f"report: exit {code}")
    _check_stderr(code, err)
    assert code in (0, 1, 2), (code, err)


@examples(150)
@given(kernel=st.one_of(st.sampled_from(VALUES["kernel"]), st.text(max_size=12)),
       arch=st.one_of(st.none(), st.sampled_from(VALUES["arch"]), st.text(max_size=6)),
       rest=st.lists(st.sampled_from(["--json", "--hook=fexit", "--hook=kretprobe", "--hook=tracepoint", "--hook=x",
                                      "--kretprobe.maxactive=0", "--kretprobe.maxactive=9999", "--log.level=debug"]),
                     max_size=3))
def test_fuzz_probe_for_another_kernel(kernel, arch, rest):
    argv = ["probe", f"--kernel={kernel}"] + ([f"--arch={arch}"] if arch is not None else []) + rest
    with within(20, "probe --kernel"):
        code, out, err = _call_main(argv)
    tally(f"probe: exit {code}")
    _check_stderr(code, err)
    assert code in (0, 1, 2), (code, err)
    if code == 0:
        assert out.startswith("{") or out.startswith("kernel ")


# --- a real child process ------------------------------------------------------------------------------------

@examples(8)
@given(argv=argvs())
def test_fuzz_cli_in_a_child_process(argv):
    """The console entry point as a user runs it (logging set up, real stderr): the argv ends with an
    unknown option, so argparse refuses it after converting every value and no command runs."""
    argv = [a for a in argv if a not in ("-h", "--help", "--version") and "\0" not in a
            and a == a.encode("utf-8", "surrogateescape").decode("utf-8", "surrogateescape")]
    argv = [a for a in argv if not any("\ud800" <= c <= "\udfff" for c in a)] + ["--no-such-fuzz-option"]
    p = subprocess.run([sys.executable, "-m", "ceemsnet.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                       timeout=60, errors="replace")
    assert p.returncode == 2, (argv, p.returncode, p.stderr)
    _check_stderr(p.returncode, p.stderr)
    assert p.stderr.splitlines()[-1].startswith("ceemsnet: error:")
