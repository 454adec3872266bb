"""Every `invoke ...` command a user is shown (the README, docs/, the recipes' header comments, k8s/
and images/ notes) parses with the tasks tasks.py really declares: a renamed flag (`--recipe` became
`--config`) or a task that does not exist fails here, not in a newcomer's terminal.

Commands are taken from fenced code blocks (lines starting `invoke ` or `$ invoke `), from inline
code spans that start with `invoke `, and from YAML/shell comment lines (`#   invoke ...`). Placeholders
are filled before parsing: `[--x]` (optional) keeps `--x`, `<...>`, `{...}` and `...` become a value.
"""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from invoke import Collection
from invoke.exceptions import ParseError
from invoke.parser import Parser

REPO = Path(__file__).resolve().parents[1]
SOURCES = [REPO / "README.md", REPO / "docker-compose.yml", REPO / "Dockerfile", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "recipes").glob("*.yaml")),
           *sorted((REPO / "k8s").rglob("*.yaml")), *sorted((REPO / "k8s").rglob("*.md")),
           *sorted((REPO / "images").rglob("*.md")), *sorted((REPO / "images").rglob("*.sh"))]

_INLINE = re.compile(r"`(invoke [^`]+)`")
_COMMENT = re.compile(r"^\s*#\s*(invoke\s.*)$")
# an invoke command inside a comment's prose: the task, then flags each with at most one value
_IN_PROSE = re.compile(r"\binvoke [a-z][\w.-]*(?:\s+--?[\w-]+(?:\s+(?!-)(?:<[^>]*>|[^\s,;]+))?)*")


def shown_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for every invoke command shown in `path`."""
    found, fenced = [], False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        stripped = line.strip()
        if fenced and re.match(r"^(\$ )?invoke\s", stripped):
            found.append((number, stripped.removeprefix("$ ")))
        found += [(number, m.group(1)) for m in _INLINE.finditer(line)]
        comment = _COMMENT.match(line)
        if comment and not fenced:
            found.append((number, comment.group(1)))
        elif stripped.startswith("#") and not fenced and "`" not in line:
            found += [(number, m.group(0)) for m in _IN_PROSE.finditer(line)]
    return found


def to_argv(command: str) -> list[str]:
    """The command as argv without `invoke`: chained commands (&&, ;, |) cut, comments dropped,
    placeholders filled (see the module docstring)."""
    command = re.split(r"\s+(?:&&|;|\|\|)\s+|\s+#|\s{2,}\(", command)[0]
    command = re.sub(r"\[(--?[^\]]+)\]", r"\1", command)          # [--rerun] -> --rerun
    command = re.sub(r"<[^>]*>|\{[^}]*\}|\.\.\.", "X", command)   # <dir>, {stack}, ... -> a value
    return shlex.split(command)[1:]


def _parser() -> Parser:
    import tasks

    return Parser(contexts=Collection.from_module(tasks).to_contexts())


def _names_a_task(command: str) -> bool:
    """`invoke --list`, `invoke bench.<name>` or `invoke bench.*` show invoke itself or a family of tasks,
    not one command."""
    argv = to_argv(command)
    return bool(argv) and not argv[0].startswith("-") and not re.search(r"X|\*", argv[0])


CASES = [(f"{p.relative_to(REPO)}:{n}", c) for p in SOURCES for n, c in shown_commands(p) if _names_a_task(c)]


def test_the_commands_are_found():
    """The extractor finds the README's own quick-start commands (a broken extractor would pass every
    file vacuously)."""
    readme = [c for where, c in CASES if where.startswith("README.md:")]
    assert "invoke pipeline" in " ".join(readme)
    assert any(c.startswith("invoke k8s.render") for c in readme)
    assert len(CASES) > 30


@pytest.mark.parametrize("where,command", CASES, ids=[w for w, _ in CASES])
def test_shown_command_parses(where, command):
    try:
        _parser().parse_argv(to_argv(command))
    except ParseError as exc:
        pytest.fail(f"{where}: `{command}` does not parse: {exc}", pytrace=False)


def test_a_renamed_flag_fails():
    """The check itself: the old spelling the recipes used must not parse."""
    with pytest.raises(ParseError):
        _parser().parse_argv(to_argv("invoke plan --recipe recipes/stage1-llama3-8b.yaml --rows 90000"))
