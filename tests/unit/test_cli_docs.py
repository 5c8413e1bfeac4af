"""docs/cli.md is generated from the parser (ceemsnet.cli.build_parser), so the
documented synopsis and flags cannot drift from the code.

Regenerate after changing a flag:  .venv/bin/python tests/unit/test_cli_docs.py
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from ceemsnet.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI_MD = os.path.join(ROOT, "docs", "cli.md")
REGENERATE = ".venv/bin/python tests/unit/test_cli_docs.py"
WIDTH = 100  # synopsis lines wrap here


def _subcommands(parser: argparse.ArgumentParser) -> tuple[argparse._SubParsersAction, dict]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action, action.choices


def _documented(parser: argparse.ArgumentParser):
    """The options --help lists: not -h/--help, not the suppressed ones."""
    skip = (argparse._HelpAction, argparse._SubParsersAction)
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS and not isinstance(a, skip)]


def _flag(action: argparse.Action) -> str:
    """--name=VALUE as a user types it: choices as a|b|c, else the metavar, else DEST."""
    name = max(action.option_strings, key=len) if action.option_strings else ""
    if action.option_strings and action.nargs == 0:
        return name
    if action.metavar is not None:
        value = action.metavar
    elif action.choices is not None:
        value = "|".join(action.choices)
    else:
        value = action.dest.upper()
    return f"{name}={value}" if name else value


def synopsis(prog: str, actions) -> str:
    """`prog [--a=X] [--b] ...`, wrapped at WIDTH under the first flag."""
    lines, line = [], prog
    indent = " " * (len(prog) + 1)
    for a in actions:
        item = f"[{_flag(a)}]" if a.option_strings or a.nargs in ("?", "*") else _flag(a)
        if len(line) + 1 + len(item) > WIDTH and line.strip():
            lines.append(line)
            line = indent + item
        else:
            line += " " + item
    lines.append(line)
    return "\n".join(lines)


_CODE = re.compile(r"(`[^`]*`)")


def _md(text: str) -> str:
    """Help text as Markdown: code spans kept; outside them, what would start emphasis or an HTML tag escaped."""
    out = []
    for i, part in enumerate(_CODE.split(text)):
        if i % 2 == 0:
            part = part.replace("\\", "\\\\").replace("*", "\\*").replace("<", "\\<")
            part = re.sub(r"(?<!\w)_|_(?!\w)", r"\\_", part)
        out.append(part)
    return "".join(out)


def _help(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The flag's help as --help shows it (%(default)s and the like expanded); the default added where
    the help does not say it."""
    text = parser._get_formatter()._expand_help(action) if action.help else ""
    if "default" not in text and action.default not in (None, False):
        text += f"; default `{action.default}`"
    return _md(text)


def _flags(parser: argparse.ArgumentParser, actions) -> list[str]:
    return [f"- `{_flag(a)}`: {_help(parser, a)}" for a in actions]


def markdown(parser: argparse.ArgumentParser) -> str:
    """docs/cli.md: the top synopsis, then each subcommand's synopsis and flags, in --help's order."""
    sub_action, subs = _subcommands(parser)
    helps = {a.dest: a.help for a in sub_action._choices_actions}
    out = ["# Command line", "",
           f"<!-- Generated from the parser (ceemsnet/cli.py, ceemsnet/commands/) by `{REGENERATE}`: "
           "do not edit by hand; tests/unit/test_cli_docs.py fails when this file and the parser differ. -->",
           "", _md(parser.description), "",
           "```", synopsis(parser.prog, _documented(parser)) + " COMMAND [FLAGS]", "```", "",
           "Every command also takes `-h`/`--help`.", ""]
    out += [f"- [`{name}`](#{parser.prog}-{name}): {_md(helps[name])}" for name in subs]
    for name, sp in subs.items():
        out += ["", f"## {sp.prog}", "", _md(sp.description), "", "```", synopsis(sp.prog, _documented(sp)), "```"]
        for group in sp._action_groups:
            actions = [a for a in _documented(sp) if a in group._group_actions]
            if not actions:
                continue
            if group.title not in ("options", "optional arguments", "positional arguments"):
                out += ["", f"### {group.title}"] + (["", _md(group.description)] if group.description else [])
            out += [""] + _flags(sp, actions)
    return "\n".join(out) + "\n"


def first_difference(want: str, have: str) -> str | None:
    """'line N: ...' for the first line where `have` differs from `want`, or None if they are equal."""
    a, b = want.splitlines(), have.splitlines()
    for n, (x, y) in enumerate(zip(a, b), 1):
        if x != y:
            return f"line {n}: the parser gives\n  {x!r}\nbut the file has\n  {y!r}"
    if len(a) != len(b):
        n = min(len(a), len(b)) + 1
        return f"line {n}: " + (f"the parser gives {a[n - 1]!r}, the file ends" if len(a) > len(b)
                                else f"the file has {b[n - 1]!r} beyond what the parser gives")
    return None if want == have else "the files differ only in their line endings"


def test_cli_md_matches_the_parser():
    with open(CLI_MD) as f:
        have = f.read()
    diff = first_difference(markdown(build_parser()), have)
    assert diff is None, f"docs/cli.md differs from the parser at {diff}\nregenerate it: {REGENERATE}"


def test_every_flag_of_every_command_is_documented():
    parser = build_parser()
    text = markdown(parser)
    _, subs = _subcommands(parser)
    assert set(subs) == {"serve", "probe", "compare", "report", "job", "record", "detach"}
    for name, sp in subs.items():
        section = text.split(f"\n## ceemsnet {name}\n", 1)[1].split("\n## ", 1)[0]
        for a in _documented(sp):
            assert f"- `{_flag(a)}`: " in section, (name, a.option_strings)
            # in the synopsis: optional ones in brackets, a required positional (job's JOBID) as it is
            item = f"[{_flag(a)}]" if a.option_strings or a.nargs in ("?", "*") else f" {_flag(a)}"
            assert item in section.replace("\n" + " " * len(f"ceemsnet {name} "), " "), \
                (name, a.option_strings)
    # the flags the README's old hand-written synopsis had lost
    for flag in ("--cgroup.aggregate=LEVEL", "--slurm.sacct=PROGRAM|none", "--slurm.squeue=PROGRAM|none",
                 "--prometheus.selector=MATCHERS", "--by=job|cgroup|user|account", "--kretprobe.maxactive=N"):
        assert f"`{flag}`" in text, flag
    assert "--log.level" not in text.split("\n## ceemsnet detach\n", 1)[1].split("\n## ", 1)[0]  # hidden there


def test_synopsis_and_markdown_forms():
    p = argparse.ArgumentParser(prog="x y")
    p.add_argument("--json", action="store_true", help="as JSON")
    p.add_argument("--hook", default="auto", choices=("auto", "fexit"), help="the family")
    p.add_argument("--path", metavar="DIR|none", default="/d", help="where (default /d)")
    p.add_argument("--job", help="one job")
    acts = _documented(p)
    assert [_flag(a) for a in acts] == ["--json", "--hook=auto|fexit", "--path=DIR|none", "--job=JOB"]
    assert synopsis("x y", acts) == "x y [--json] [--hook=auto|fexit] [--path=DIR|none] [--job=JOB]"
    long = synopsis("x y", acts * 4).splitlines()
    assert len(long) > 1 and all(len(ln) <= WIDTH for ln in long) and long[1].startswith("    [--")
    assert _help(p, acts[1]) == "the family; default `auto`"
    assert _help(p, acts[2]) == "where (default /d)"
    assert _md("labels job_id, series ceemsnet_job_* and <controller>; `a_*` kept") == \
        "labels job_id, series ceemsnet_job\\_\\* and \\<controller>; `a_*` kept"


def test_first_difference_names_the_line():
    assert first_difference("a\nb\n", "a\nb\n") is None
    assert first_difference("a\nb\nc\n", "a\nB\nc\n").startswith("line 2: ")
    assert first_difference("a\nb\n", "a\n").startswith("line 2: the parser gives 'b'")
    assert first_difference("a\n", "a\nz\n").startswith("line 2: the file has 'z'")


if __name__ == "__main__":
    with open(CLI_MD, "w") as f:
        f.write(markdown(build_parser()))
    print(f"wrote {os.path.relpath(CLI_MD, ROOT)}", file=sys.stderr)
