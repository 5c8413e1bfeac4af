"""README.md is the front door and docs/ holds the rest: README stays at most 200
lines, its first two commands are `make serve` and `make test` (CI and the team's
rules rely on that), it links every file of docs/ and links none that is missing,
and every relative link and anchor in README.md and docs/ leads somewhere."""

import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
DOCS = os.path.join(ROOT, "docs")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
SHELL = {"sh", "bash", "shell", "console", ""}


def read(path):
    with open(path) as f:
        return f.read()


def blocks(text):
    """(info string, lines) of every fenced code block, in order."""
    out, cur = [], None
    for line in text.splitlines():
        if line.startswith("```"):
            if cur is None:
                cur = (line[3:].strip(), [])
            else:
                out.append(cur)
                cur = None
        elif cur is not None:
            cur[1].append(line)
    return out


def prose(text):
    """The text outside fenced code blocks."""
    return re.sub(r"^```.*?^```[^\n]*$", "", text, flags=re.M | re.S)


def commands(text):
    """The shell commands of the file's code blocks, in order, without their comments.
    In sh/bash blocks every line is a command; in console and unlabelled blocks, the
    lines after a `$ ` prompt."""
    out = []
    for info, lines in blocks(text):
        lang = info.split()[0] if info else ""
        if lang not in SHELL:
            continue
        for line in lines:
            if lang in ("console", ""):
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = re.sub(r"(^|\s)#.*$", "", line).strip()
            if line:
                out.append(" ".join(line.split()))
    return out


def slug(heading):
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces to -."""
    h = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return h.replace(" ", "-")


def anchors(path):
    seen, out = {}, set()
    for line in prose(read(path)).splitlines():
        m = re.match(r"#{1,6} (.*)", line)
        if m:
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def relative_links(path):
    return [t for t in LINK.findall(prose(read(path))) if not re.match(r"[a-z]+:", t)]


def test_parsers_see_what_they_should():
    text = "x\n```sh\nmake a   # one\n\nmake  b\n```\n```yaml\nk: v\n```\n```console\n$ c d\nout\n```\n"
    assert commands(text) == ["make a", "make b", "c d"]
    assert slug("Sizing `--kretprobe.maxactive`") == "sizing---kretprobemaxactive"
    assert slug("The cgroup_skb backend (`--collectors=skb`) and `ceemsnet compare`") == \
        "the-cgroup_skb-backend---collectorsskb-and-ceemsnet-compare"
    assert relative_links(README)


def test_readme_is_at_most_200_lines():
    n = len(read(README).splitlines())
    assert n <= 200, f"README.md has {n} lines: move the detail to docs/"


def test_readme_first_two_commands_are_make_serve_and_make_test():
    cmds = commands(read(README))
    assert cmds[:2] == ["make serve", "make test"], cmds[:3]


def test_readme_links_every_docs_file_and_only_existing_ones():
    linked = {os.path.normpath(os.path.join(ROOT, t.split("#")[0])) for t in relative_links(README)}
    docs = {os.path.normpath(p) for p in glob.glob(os.path.join(DOCS, "*.md"))}
    assert docs, "no docs/*.md"
    unlinked = sorted(os.path.relpath(p, ROOT) for p in docs - linked)
    assert not unlinked, f"README.md does not link {unlinked}"
    missing = sorted(os.path.relpath(p, ROOT) for p in linked if p.startswith(DOCS + os.sep) and not os.path.exists(p))
    assert not missing, f"README.md links {missing}, which do not exist"


def test_relative_links_and_anchors_resolve():
    bad = []
    for path in [README] + sorted(glob.glob(os.path.join(DOCS, "*.md"))):
        for target in relative_links(path):
            file, _, anchor = target.partition("#")
            dest = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            where = f"{os.path.relpath(path, ROOT)} -> {target}"
            if not os.path.exists(dest):
                bad.append(f"{where}: no such file")
            elif anchor and dest.endswith(".md") and anchor not in anchors(dest):
                bad.append(f"{where}: no such heading")
    assert not bad, "\n".join(bad)


def test_docs_cite_no_readme_sections():
    # what moved to docs/ is cited by its file there, not as README "Section" (bpf/README.md is fine)
    for path in [README] + sorted(glob.glob(os.path.join(DOCS, "*.md"))):
        cited = re.findall(r"README[:,]? \"?[A-Z][\w ]*", read(path))
        assert not cited, f"{os.path.relpath(path, ROOT)} cites README sections that moved to docs/: {cited}"
