"""Every `polyvm` command in README.md's and docs/*.md's shell examples works as written.

Each ```sh block is read line by line (with `\\` continuations and `cd` followed within the block). A
`polyvm` command whose file arguments exist runs for real, from a scratch directory holding the
repository's examples/ (so `polyvm new` writes there), and must exit 0. The others need what no test
here may touch or have, so they are checked as far as is possible offline: the same command line with
`--help` appended must parse (the command and every option exist as written), and the reason is recorded:

- `sandbox ...`: makes hosts on this machine (covered by tests/e2e/test_sandbox.py);
- `-H/--host`, `-i/--inventory` (exec, copy, postgres, nginx, apply): a real SSH host (tests/e2e);
- a file the example only names (`vm.yaml`, `new.yaml`, ...).

Lines that are not polyvm commands are not run, each kind for a stated reason (EXCLUDED below).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: First words of non-polyvm lines, and why they are not run here.
EXCLUDED = {
    "pulumi": "no Pulumi CLI on this machine (the programs are planned offline by tests/core/test_scaffold.py)",
    "sh": "scripts/setup installs system packages (CI runs it)",
    "apt-get": "installs system packages",
    "pip": "installs packages (tests/core/test_scaffold.py resolves a project's requirements with pip)",
    "python3": "makes a virtual environment / builds a wheel (tests/test_packaging.py builds the wheel)",
    "psql": "needs a running server (tests/e2e/test_postgres_tls.py connects with psql at verify-full)",
    "PGPASSWORD=...": "needs a running server (tests/e2e/test_postgres_tls.py)",
    "curl": "needs a running server (tests/e2e/test_nginx_e2e.py)",
    "ssh": "needs a real host",
    "ip": "host networking (the local engine's tests)",
    "cd": "followed within the block",
    "export": "environment for the following lines",
    ".venv/bin/python": "runs the test suite (CI)",
    "python": "benchmarks under bench/ (minutes each; docs/performance.md has their results)",
}
POLYVM = re.compile(r"^(?:sudo\s+(?:-E\s+)?)?(?:\S*/)?polyvm(?:\s|$)")


def fenced_blocks(text: str) -> list[tuple[str, list[str]]]:
    """(language, lines) of each fenced code block, fences paired in order."""
    out, lang, body = [], None, []
    for raw in text.splitlines():
        m = re.match(r"^\s*```(\S*)\s*$", raw)
        if m and lang is None:
            lang, body = m.group(1), []
        elif m:
            out.append((lang, body))
            lang = None
        elif lang is not None:
            body.append(raw)
    return out


def shell_lines(text: str) -> list[list[str]]:
    """Each ```sh block's logical lines (continuations joined), and the polyvm lines of unlabelled blocks."""
    blocks = []
    for lang, block in fenced_blocks(text):
        if lang not in ("sh", "bash", "console", ""):
            continue
        lines, cur = [], ""
        for raw in block:
            if raw.rstrip().endswith("\\"):
                cur += raw.rstrip()[:-1] + " "
                continue
            cur += raw
            if cur.strip():
                lines.append(cur.strip())
            cur = ""
        if not lang:
            lines = [ln for ln in lines if POLYVM.match(ln)]
        if lines:
            blocks.append(lines)
    return blocks


def examples() -> list[tuple[str, int, list[str]]]:
    out = []
    for doc in DOCS:
        for i, block in enumerate(shell_lines(doc.read_text())):
            out.append((doc.relative_to(ROOT).as_posix(), i, block))
    return out


def _argv(line: str) -> list[str] | None:
    """The polyvm arguments of a line (after sudo/the binary), comments and shell tails dropped."""
    if not POLYVM.match(line):
        return None
    words = shlex.split(line, comments=True)
    for stop in ("&&", "||", "|", ";", ">", "2>"):
        if stop in words:
            words = words[:words.index(stop)]
    while words and (words[0] in ("sudo", "-E") or not words[0].endswith("polyvm")):
        words.pop(0)
    return words[1:]


def _needs_host(args: list[str]) -> str | None:
    if any(a.startswith("[") or a.endswith("...") or a.endswith("…") for a in args):
        return "a usage synopsis with placeholders"
    if args[:1] == ["sandbox"]:
        return "makes hosts on this machine (tests/e2e/test_sandbox.py)"
    if any(a in ("-H", "--host", "-i", "--inventory") or a.startswith("--host=") for a in args):
        return "needs a real SSH host (tests/e2e)"
    return None


def _files(args: list[str]) -> list[str]:
    return [a for a in args if re.search(r"\.(ya?ml|json)$", a) and not a.startswith("-")]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("docs")
    (d / "examples").symlink_to(ROOT / "examples")
    return d


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(cwd)}  # `polyvm new` looks for ~/.ssh keys: none here
    return subprocess.run([sys.executable, "-m", "polyvm.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600)


CASES = examples()


def test_the_docs_have_shell_examples():
    assert sum(1 for _d, _i, b in CASES for line in b if POLYVM.match(line)) >= 15


@pytest.mark.parametrize("doc,index,block", CASES, ids=[f"{d}#{i}" for d, i, _b in CASES])
def test_shell_example_block(doc, index, block, scratch):
    cwd = scratch
    checked = []
    for line in block:
        args = _argv(line)
        if args is None:
            bare = re.sub(r"^sudo\s+(-E\s+)?", "", line)
            first = bare.split()[0]
            if first == "cd":
                target = cwd / shlex.split(line, comments=True)[1]
                if target.is_dir():
                    cwd = target
                continue
            reason = EXCLUDED.get(first) or next((why for k, why in EXCLUDED.items() if bare.startswith(k)), None)
            assert reason, f"{doc}: a shell line that is neither a polyvm command nor a known exclusion: {line!r}"
            continue
        if not args:
            continue
        why = _needs_host(args) or next((f"names a file the example does not ship ({f})" for f in _files(args)
                                         if not (cwd / f).exists()), None)
        if why is None:
            r = run(args, cwd)
            assert r.returncode == 0, f"{doc}: `{line}` exited {r.returncode}:\n{r.stderr}"
            checked.append(("ran", line))
        else:
            r = run([*args, "--help"], cwd)
            assert r.returncode == 0 and r.stdout.startswith("Usage:"), \
                f"{doc}: `{line}` does not parse as written ({why}):\n{r.stderr}"
            checked.append((f"parsed only: {why}", line))
    print("\n".join(f"{doc}: {how}: {line}" for how, line in checked))


def test_the_spec_example_in_docs_spec_md_validates_as_written(tmp_path):
    text = (ROOT / "docs" / "spec.md").read_text().split("## Example", 1)[1]
    [(lang, body)] = [b for b in fenced_blocks(text) if b[0] == "yaml"][:1]
    (tmp_path / "vm.yaml").write_text("\n".join(body) + "\n")
    for backend in ([], ["--backend", "aws"]):
        r = run(["validate", "--spec", "vm.yaml", *backend], tmp_path)
        assert r.returncode == 0, r.stderr
